//! The node daemon's core: the table as the operator wants it, served by two engines: the XDP
//! fast path for what it supports, kernel IPVS (through netlink) for the rest when the kernel
//! has it. Every change goes through `Node::apply`: all operations are checked on a copy of the
//! table and by the engines before anything is written, so a bad batch changes nothing.
//!
//! In mirror mode the table is kernel IPVS's own (programmed by kube-proxy or ipvsadm): the
//! daemon only reads it, every sync period, and accelerates what the fast path supports.
pub mod adopt;
pub mod checks;
pub mod durable;
pub mod estimator;
pub mod ifaces;
pub mod ifwatch;
pub mod kernel;
pub mod neigh;
pub mod rules;
pub mod server;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::ctl::NumberedOp;
use crate::fastpath::{
    conns::state_name, unsupported_reason, AttachMode, Counters, DestCounters, DestReading,
    DestStatsRead, FastPath,
};
use crate::ipvs_nl::{self, IpvsClient, KernelService};
use crate::model::{Change, Op, Protocol, Service, ServiceKey, Table};
use crate::snapshot::{ConnView, DestView, EngineKind, ServiceView, Snapshot, Stats};
use durable::{Durable, Record, Timeouts};
use estimator::Estimator;

/// Who owns the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// xvsd does (rules file, xvsadm); unsupported services fall back to kernel IPVS.
    Own,
    /// Kernel IPVS does (kube-proxy); xvsd mirrors it and never writes to it.
    Mirror,
}

pub struct Node {
    mode: Mode,
    table: Table,
    fp: FastPath,
    /// None when this kernel has no IPVS; the reason says why.
    kernel: Result<IpvsClient, String>,
    est: HashMap<ServiceKey, Estimator>,
    /// Per destination, indexed by its DESTS id; the id's generation says whose it is.
    dest_est: Vec<Option<DestEstimator>>,
    /// Where acknowledged changes are recorded (None: nowhere, as in tests of the core).
    durable: Option<Durable>,
    control: ControlStats,
    /// Mirror mode: when kernel IPVS was last read successfully, and failed reads since start.
    last_sync: Option<Instant>,
    sync_failures: u64,
}

/// Control-plane changes (`Node::apply`: xvsadm, restores, reloads): how many were applied
/// and refused, and how long applying took. Shared handles: a clone sees the same counts.
#[derive(Clone, Debug)]
pub struct ControlStats {
    pub applied: Counter,
    pub refused: Counter,
    /// Seconds per `apply` (validation and map writes, both engines), applied or refused.
    pub latency: Histogram,
}

impl Default for ControlStats {
    fn default() -> Self {
        ControlStats {
            applied: Counter::default(),
            refused: Counter::default(),
            // 50 us to ~13 s: one xvsadm change to a 50,000-service restore.
            latency: Histogram::new(exponential_buckets(0.00005, 4.0, 10)),
        }
    }
}

/// What the metrics show beside the listing's snapshot (see `crate::metrics`).
#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub mode: Mode,
    /// Packets per fast-path verdict, indexed by `lb_common::path`.
    pub path: Vec<u64>,
    /// Live (unexpired) entries of the connection table, and its size.
    pub conn_entries: u64,
    pub conn_capacity: u32,
    pub sched_slots_used: u64,
    pub sched_slots: u32,
    /// Attached interfaces and their hooks.
    pub ifaces: Vec<(String, AttachMode)>,
    pub control: ControlStats,
    /// Mirror mode: time since kernel IPVS was last read successfully (None before the
    /// first read, and in own mode), and failed reads.
    pub sync_lag: Option<Duration>,
    pub sync_failures: u64,
}

/// A destination's rate estimator, tagged with the generation of the id it was created for.
#[derive(Clone, Copy, Debug)]
struct DestEstimator {
    gen: u32,
    est: Estimator,
}

fn where_(line: Option<usize>) -> String {
    match line {
        Some(l) => format!("line {l}: "),
        None => String::new(),
    }
}

/// The engine that serves a service: the fast path whenever it can.
pub fn engine_of(s: &Service) -> EngineKind {
    match unsupported_reason(&s.key, &s.config, &s.dests) {
        None => EngineKind::FastPath,
        Some(_) => EngineKind::Kernel,
    }
}

fn change_key(c: &Change) -> ServiceKey {
    match c {
        Change::AddService(k, _)
        | Change::EditService(k, _)
        | Change::DelService(k)
        | Change::AddDest(k, _)
        | Change::EditDest(k, _)
        | Change::DelDest(k, _) => *k,
    }
}

fn op_key(op: &Op) -> Option<ServiceKey> {
    match op {
        Op::AddService(k, _)
        | Op::EditService(k, _)
        | Op::DelService(k)
        | Op::AddDest(k, _)
        | Op::EditDest(k, _)
        | Op::DelDest(k, ..) => Some(*k),
        Op::Clear => None,
    }
}

/// The changes that build `s` from nothing, in an order that reproduces its list order.
fn build_changes(s: &Service) -> Vec<Change> {
    let mut v = vec![Change::AddService(s.key, s.config.clone())];
    v.extend(
        s.dests
            .iter()
            .rev()
            .map(|d| Change::AddDest(s.key, d.clone())),
    );
    v
}

/// The part of a table the fast path serves.
fn fast_subset(t: &Table) -> Table {
    let mut out = Table::new();
    for s in t
        .services()
        .iter()
        .filter(|s| engine_of(s) == EngineKind::FastPath)
    {
        for c in build_changes(s) {
            let op = match c {
                Change::AddService(k, cfg) => Op::AddService(k, cfg),
                Change::AddDest(k, d) => Op::AddDest(k, d),
                _ => unreachable!(),
            };
            let _ = out.apply_op(&op);
        }
    }
    out
}

fn add_stats(a: Stats, b: Stats) -> Stats {
    Stats {
        conns: a.conns + b.conns,
        inpkts: a.inpkts + b.inpkts,
        outpkts: a.outpkts + b.outpkts,
        inbytes: a.inbytes + b.inbytes,
        outbytes: a.outbytes + b.outbytes,
        cps: a.cps + b.cps,
        inpps: a.inpps + b.inpps,
        outpps: a.outpps + b.outpps,
        inbps: a.inbps + b.inbps,
        outbps: a.outbps + b.outbps,
    }
}

impl Node {
    pub fn new(fp: FastPath, table: Table, kernel: Result<IpvsClient, String>, mode: Mode) -> Node {
        Node {
            mode,
            table,
            fp,
            kernel,
            est: HashMap::new(),
            dest_est: Vec::new(),
            durable: None,
            control: ControlStats::default(),
            last_sync: None,
            sync_failures: 0,
        }
    }

    /// Records every change from now on in `d`. `snapshot`: start with a snapshot of the
    /// whole state (not needed when the state was just read from `d`: at 50,000 services a
    /// snapshot takes about 1.5 s).
    pub fn set_durable(&mut self, d: Durable, snapshot: bool) -> Result<(), String> {
        self.durable = Some(d);
        if snapshot {
            self.persist_snapshot()
        } else {
            self.fp.take_changed();
            Ok(())
        }
    }

    /// Writes the whole state to the durable store (and empties its journal).
    pub fn persist_snapshot(&mut self) -> Result<(), String> {
        let table = self.table_to_save();
        let timeouts = self.fp.timeouts().map_err(|e| e.to_string())?;
        let limits = self.fp.engine().limits().clone();
        let engine = self.fp.services_state();
        let Some(d) = self.durable.as_mut() else {
            return Ok(());
        };
        d.snapshot(Some(&limits), timeouts, &table, engine)
            .map_err(|e| format!("saving the table to {}: {e}", "the state directory"))
    }

    /// Records one acknowledged change: the new state of the services it touched.
    fn persist(
        &mut self,
        services: Vec<(ServiceKey, Option<Service>)>,
        timeouts: Option<Timeouts>,
    ) -> Result<(), String> {
        let Some(d) = self.durable.as_mut() else {
            return Ok(());
        };
        let t0 = std::time::Instant::now();
        let n = services.len();
        if d.wants_snapshot(n, self.table.services().len()) {
            self.persist_snapshot()?;
            tracing::debug!(services = n, took = ?t0.elapsed(), "change saved (snapshot)");
            return Ok(());
        }
        let engine = self.fp.take_changed();
        let d = self.durable.as_mut().expect("checked");
        d.append(Record {
            timeouts,
            services,
            engine,
            ..Default::default()
        })
        .map_err(|e| format!("recording the change on disk: {e}"))?;
        tracing::debug!(services = n, took = ?t0.elapsed(), "change saved (journal)");
        Ok(())
    }

    fn not_saved(e: String) -> String {
        format!("the change is live but could not be saved, so a restart would lose it: {e}")
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    /// What a stopping daemon saves for its successor. In mirror mode only the part the fast
    /// path serves: the rest is kube-proxy's, which xvsd never writes (not even at teardown).
    pub fn table_to_save(&self) -> Table {
        match self.mode {
            Mode::Own => self.table.clone(),
            Mode::Mirror => fast_subset(&self.table),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn fast_path(&mut self) -> &mut FastPath {
        &mut self.fp
    }

    /// Applies all operations or none; an error names the line of the first bad operation.
    pub fn apply(&mut self, ops: &[NumberedOp]) -> Result<(), String> {
        if self.mode == Mode::Mirror {
            return Err(
                "xvsd mirrors kernel IPVS here (--mirror-ipvs): change the table with \
                        ipvsadm or kube-proxy; xvsadm only lists it"
                    .into(),
            );
        }
        // Applied in place with an undo log of each touched service's previous state: no
        // copy of a 50,000-service table per command.
        let start = Instant::now();
        let result = self.apply_and_persist(ops);
        if result.is_err() {
            self.control.refused.inc();
        } else {
            self.control.applied.inc();
        }
        self.control.latency.observe(start.elapsed().as_secs_f64());
        result
    }

    /// Applies `ops` (all or none) and records the result durably before returning.
    fn apply_and_persist(&mut self, ops: &[NumberedOp]) -> Result<(), String> {
        let mut undo: Vec<(ServiceKey, Option<Service>)> = Vec::new();
        let result = self.apply_logged(ops, &mut undo);
        if result.is_err() {
            for (k, prev) in undo.into_iter().rev() {
                self.table.restore_service(&k, prev);
            }
            return result;
        }
        crate::fastpath::engine::abort_at("before-journal");
        // On disk before the answer: the undo log names every service the batch touched.
        let touched: Vec<(ServiceKey, Option<Service>)> = undo
            .into_iter()
            .map(|(k, _)| {
                let now = self.table.service(&k).cloned();
                (k, now)
            })
            .collect();
        self.persist(touched, None).map_err(Self::not_saved)
    }

    fn apply_logged(
        &mut self,
        ops: &[NumberedOp],
        undo: &mut Vec<(ServiceKey, Option<Service>)>,
    ) -> Result<(), String> {
        let t = &mut self.table;
        let mut fast = Vec::new();
        let mut kern = Vec::new();
        // The undo log keeps a service's state from before its first operation in the batch
        // only: that is what a failure restores, and a copy per operation would clone a
        // service once per destination added to it (hundreds of MiB for a 50,000-service
        // restore).
        let mut logged: HashSet<ServiceKey> = HashSet::new();
        for nop in ops {
            // Engines before the operation, of the services it can touch (Clear: all).
            let before: HashMap<ServiceKey, EngineKind> = match op_key(&nop.op) {
                Some(k) => {
                    if logged.insert(k) {
                        undo.push((k, t.service(&k).cloned()));
                    }
                    t.service(&k)
                        .map(|s| (k, engine_of(s)))
                        .into_iter()
                        .collect()
                }
                None => {
                    for s in t.services() {
                        if logged.insert(s.key) {
                            undo.push((s.key, Some(s.clone())));
                        }
                    }
                    t.services().iter().map(|s| (s.key, engine_of(s))).collect()
                }
            };
            let changes = t
                .apply_op(&nop.op)
                .map_err(|e| format!("{}{e}", where_(nop.line)))?;
            for c in changes {
                let key = change_key(&c);
                let was = before.get(&key).copied();
                let now = t.service(&key).map(engine_of);
                match (was, now) {
                    (Some(a), Some(b)) if a != b => {
                        // The service changes engine: out of one, rebuilt whole in the other.
                        let (from, to) = match a {
                            EngineKind::FastPath => (&mut fast, &mut kern),
                            EngineKind::Kernel => (&mut kern, &mut fast),
                        };
                        from.push(Change::DelService(key));
                        to.extend(build_changes(t.service(&key).unwrap()));
                    }
                    (_, Some(EngineKind::Kernel)) | (Some(EngineKind::Kernel), None) => {
                        kern.push(c)
                    }
                    _ => fast.push(c),
                }
            }
            if let Err(why) = &self.kernel {
                if !kern.is_empty() {
                    let key = change_key(&kern[0]);
                    let reason = t
                        .service(&key)
                        .and_then(|s| unsupported_reason(&s.key, &s.config, &s.dests))
                        .unwrap_or_default();
                    return Err(format!(
                        "{}{key}: {reason}, and kernel IPVS cannot take it as a fallback: {why}",
                        where_(nop.line)
                    ));
                }
            }
        }
        // Kernel first: it is the engine that can fail on outside state (kube-proxy's own
        // services, for one). Undo it if anything after fails.
        if let Ok(k) = &self.kernel {
            for (i, c) in kern.iter().enumerate() {
                if let Err(e) = kernel::apply(k, c) {
                    Self::restore_kernel(k, undo, &kern[..i]);
                    return Err(format!("kernel IPVS refused {}: {e}", change_key(c)));
                }
            }
        }
        if let Err(e) = self.fp.apply(&fast) {
            if let Ok(k) = &self.kernel {
                Self::restore_kernel(k, undo, &kern);
            }
            return Err(e.to_string());
        }
        Ok(())
    }

    /// Puts the kernel services touched by `done` back as they were before the batch (the
    /// first undo entry of each service is its state before the batch).
    fn restore_kernel(k: &IpvsClient, undo: &[(ServiceKey, Option<Service>)], done: &[Change]) {
        let keys: HashSet<ServiceKey> = done.iter().map(change_key).collect();
        for key in keys {
            let _ = k.del_service(&key);
            let prev = undo
                .iter()
                .find(|(k2, _)| *k2 == key)
                .and_then(|(_, p)| p.as_ref());
            if let Some(s) = prev.filter(|s| engine_of(s) == EngineKind::Kernel) {
                for c in build_changes(s) {
                    let _ = kernel::apply(k, &c);
                }
            }
        }
    }

    /// Replaces the table by `target`, applying only the differences.
    pub fn reload(&mut self, target: &Table) -> Result<usize, String> {
        let ops: Vec<NumberedOp> = self
            .table
            .diff_ops(target)
            .into_iter()
            .map(|op| NumberedOp { line: None, op })
            .collect();
        let n = ops.len();
        self.apply(&ops)?;
        Ok(n)
    }

    /// A fresh start in own mode: kernel services of `target` that a previous, crashed xvsd
    /// left in the kernel are removed first, so the table can be programmed from scratch.
    pub fn clear_kernel_leftovers(&self, target: &Table) {
        let Ok(k) = &self.kernel else { return };
        for s in target
            .services()
            .iter()
            .filter(|s| engine_of(s) == EngineKind::Kernel)
        {
            let _ = k.del_service(&s.key);
        }
    }

    /// Mirror mode: one sync with kernel IPVS. Returns the number of fast-path changes.
    pub fn sync_from_kernel(&mut self) -> Result<usize, String> {
        let r = self.sync_from_kernel_once();
        match r {
            Ok(_) => self.last_sync = Some(Instant::now()),
            Err(_) => self.sync_failures += 1,
        }
        r
    }

    fn sync_from_kernel_once(&mut self) -> Result<usize, String> {
        let k = self.kernel.as_ref().map_err(|e| e.clone())?;
        let dump = k.services().map_err(|e| e.to_string())?;
        let full = ipvs_nl::to_table(&dump).map_err(|e| e.to_string())?;
        let old_fast = fast_subset(&self.table);
        let new_fast = fast_subset(&full);
        let mut t = old_fast.clone();
        let mut changes = Vec::new();
        for op in old_fast.diff_ops(&new_fast) {
            changes.extend(t.apply_op(&op).map_err(|e| e.to_string())?);
        }
        let fresh: Vec<ServiceKey> = new_fast
            .services()
            .iter()
            .filter(|s| old_fast.service(&s.key).is_none())
            .map(|s| s.key)
            .collect();
        if !changes.is_empty() {
            self.fp.apply(&changes).map_err(|e| e.to_string())?;
        }
        let touched: Vec<(ServiceKey, Option<Service>)> = {
            let keys: std::collections::BTreeSet<ServiceKey> =
                changes.iter().map(change_key).collect();
            keys.into_iter()
                .map(|k| (k, new_fast.service(&k).cloned()))
                .collect()
        };
        if let Ok(t) = k.timeouts() {
            let _ = self.fp.set_timeouts(t.tcp, t.tcp_fin, t.udp);
        }
        // Newly accelerated services: UDP flows kernel IPVS already holds stay the kernel's
        // until they go idle (imported as kernel-owned, passed untouched), so neither their
        // destination nor kernel IPVS's conntrack entries change under them. TCP needs no
        // import: a segment that is not a SYN and has no fast-path connection passes to the
        // kernel, which still holds it.
        if !fresh.is_empty() {
            for c in kernel::read_proc_conns()
                .into_iter()
                .filter(|c| c.proto == Protocol::Udp)
            {
                if fresh.contains(&ServiceKey::udp(c.vip.0, c.vip.1)) {
                    let _ = self.fp.import_kernel_flow(
                        lb_common::PROTO_UDP,
                        c.client,
                        c.vip,
                        lb_common::UDP_STATE,
                        c.expires_in,
                    );
                }
            }
        }
        self.table = full;
        if !touched.is_empty() {
            self.persist(touched, None)?;
        }
        Ok(changes.len())
    }

    /// Advances the rate estimators (call every estimator::TICK). Under a lock, prefer
    /// `tick_read` there, `DestStatsRead::read` outside it, then `tick_with`.
    pub fn tick(&mut self) {
        match self.fp.dest_counters() {
            Ok(all) => self.tick_with(all),
            Err(e) => tracing::warn!("rate estimator: {e}"),
        }
    }

    /// What the estimator's reading needs (cheap: a duplicated fd and a count).
    pub fn tick_read(&self) -> Result<DestStatsRead, String> {
        self.fp.dest_stats_read().map_err(|e| e.to_string())
    }

    /// One estimator step from a reading of every destination's counters (one batched read of
    /// the stats map, not a syscall per destination: at 50,000 services x 10 the reading is
    /// ~0.15 s and this fold a few tens of ms). A reading older than a destination id's reuse
    /// is taken again here, so no estimator ever sees another destination's counters.
    pub fn tick_with(&mut self, all: DestCounters) {
        let all = if self.fp.engine().is_current(&all) {
            all
        } else {
            match self.fp.dest_counters() {
                Ok(all) => all,
                Err(e) => {
                    tracing::warn!("rate estimator: {e}");
                    return;
                }
            }
        };
        let mut live: HashSet<ServiceKey> = HashSet::with_capacity(self.table.services().len());
        for s in self.table.services() {
            live.insert(s.key);
            let Some(r) = self.fp.engine().reading(&s.key, &all) else {
                continue;
            };
            self.est
                .entry(s.key)
                .or_insert_with(|| Estimator::new(r.total))
                .tick(r.total);
            for d in &r.dests {
                let i = d.id as usize;
                if self.dest_est.len() <= i {
                    self.dest_est.resize(i + 1, None);
                }
                match &mut self.dest_est[i] {
                    Some(e) if e.gen == d.gen => e.est.tick(d.counters),
                    slot => {
                        *slot = Some(DestEstimator {
                            gen: d.gen,
                            est: Estimator::new(d.counters),
                        })
                    }
                }
            }
        }
        self.est.retain(|k, _| live.contains(k));
    }

    /// A destination's estimator, if it is the one of this reading's destination.
    fn dest_estimator(&self, d: &DestReading) -> Estimator {
        match self.dest_est.get(d.id as usize) {
            Some(Some(e)) if e.gen == d.gen => e.est,
            _ => Estimator::default(),
        }
    }

    /// Zeroes counters (ipvsadm -Z): the fast path's, and kernel IPVS's for the services this
    /// xvsd put there (never in mirror mode, which does not write to the kernel).
    pub fn zero(&mut self, key: Option<&ServiceKey>) -> Result<(), String> {
        self.fp.zero(key).map_err(|e| e.to_string())?;
        // The kernel zeroes the rates too and restarts its estimators from the zeroed counters
        // (ip_vs_zero_estimator): the next tick measures from here.
        let zeroed = DestCounters::default();
        for s in self.table.services() {
            if key.is_some_and(|want| *want != s.key) {
                continue;
            }
            let Some(r) = self.fp.engine().reading(&s.key, &zeroed) else {
                continue;
            };
            self.est.insert(s.key, Estimator::new(r.total));
            for d in &r.dests {
                if let Some(slot) = self.dest_est.get_mut(d.id as usize) {
                    *slot = Some(DestEstimator {
                        gen: d.gen,
                        est: Estimator::new(d.counters),
                    });
                }
            }
        }
        if self.mode == Mode::Own {
            if let Ok(k) = &self.kernel {
                for s in self.table.services() {
                    if engine_of(s) == EngineKind::Kernel && key.is_none_or(|want| *want == s.key) {
                        k.zero_service(&s.key).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// ipvsadm --set: both engines (kernel IPVS only when xvsd owns the table).
    pub fn set_timeouts(&mut self, tcp: u32, tcpfin: u32, udp: u32) -> Result<(), String> {
        self.fp
            .set_timeouts(tcp, tcpfin, udp)
            .map_err(|e| e.to_string())?;
        if self.mode == Mode::Own {
            if let Ok(k) = &self.kernel {
                let t = ipvs_nl::Timeouts {
                    tcp,
                    tcp_fin: tcpfin,
                    udp,
                };
                k.set_timeouts(&t).map_err(|e| e.to_string())?;
            }
        }
        let now = self.fp.timeouts().map_err(|e| e.to_string())?;
        self.persist(Vec::new(), Some(now)).map_err(Self::not_saved)
    }

    pub fn snapshot(&self, with_conns: bool) -> Result<Snapshot, String> {
        self.snapshot_counted(with_conns).map(|(s, _)| s)
    }

    /// The listing's snapshot (without connections) and what the metrics add to it, read
    /// together (`crate::metrics` formats both).
    pub fn status(&self) -> Result<(Snapshot, NodeStatus), String> {
        let (snap, conn_entries) = self.snapshot_counted(false)?;
        let status = NodeStatus {
            mode: self.mode,
            path: self.fp.path_stats().map_err(|e| e.to_string())?,
            conn_entries,
            conn_capacity: self.fp.config().conn_table_size,
            sched_slots_used: self.fp.engine().sched_slots_used(),
            sched_slots: self.fp.engine().limits().sched_slots,
            ifaces: self
                .fp
                .attachments()
                .iter()
                .map(|(i, m)| (i.clone(), *m))
                .collect(),
            control: self.control.clone(),
            sync_lag: match self.mode {
                Mode::Mirror => self.last_sync.map(|t| t.elapsed()),
                Mode::Own => None,
            },
            sync_failures: self.sync_failures,
        };
        Ok((snap, status))
    }

    /// The snapshot and the number of live fast-path connections (read once for both).
    fn snapshot_counted(&self, with_conns: bool) -> Result<(Snapshot, u64), String> {
        let fp = &self.fp;
        // Active/inactive connections per destination id (a live connection's id is its
        // destination's: dest_live checked the generation).
        let mut counts: HashMap<u32, (u32, u32)> = HashMap::new();
        let conns = fp.connections().map_err(|e| e.to_string())?;
        let all = fp.dest_counters().map_err(|e| e.to_string())?;
        for c in conns.iter().filter(|c| c.dest_live) {
            let e = counts.entry(c.dest_id).or_default();
            if c.active() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        let kernel: HashMap<ServiceKey, KernelService> = match &self.kernel {
            Ok(k)
                if self
                    .table
                    .services()
                    .iter()
                    .any(|s| engine_of(s) == EngineKind::Kernel)
                    || self.mode == Mode::Mirror =>
            {
                k.services()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|ks| (ks.service.key, ks))
                    .collect()
            }
            _ => HashMap::new(),
        };
        let mut services = Vec::new();
        for s in self.table.services() {
            let engine = engine_of(s);
            let ks = kernel.get(&s.key);
            let kdest = |d: (IpAddr, u16)| {
                ks.and_then(|ks| {
                    ks.service
                        .dests
                        .iter()
                        .zip(&ks.dest_state)
                        .find(|(kd, _)| kd.id() == d)
                        .map(|(_, st)| st)
                })
            };
            let reading = if engine == EngineKind::FastPath {
                fp.engine().reading(&s.key, &all).unwrap_or_default()
            } else {
                Default::default()
            };
            let per: HashMap<(IpAddr, u16), &DestReading> =
                reading.dests.iter().map(|d| (d.dest, d)).collect();
            let est = self.est.get(&s.key).copied().unwrap_or_default();
            let dests = s
                .dests
                .iter()
                .map(|d| {
                    let (mut stats, (mut active, mut inactive)) = match per.get(&d.id()) {
                        Some(r) => (
                            self.dest_estimator(r).stats(r.counters),
                            counts.get(&r.id).copied().unwrap_or_default(),
                        ),
                        None => (Estimator::default().stats(Counters::default()), (0, 0)),
                    };
                    let mut persist = 0;
                    // What kernel IPVS holds for it: all of a kernel-served service, and in
                    // mirror mode the connections it held before the takeover.
                    if let Some(st) = kdest(d.id()) {
                        stats = add_stats(stats, st.stats);
                        active += st.active_conns;
                        inactive += st.inactive_conns;
                        persist = st.persist_conns;
                    }
                    DestView {
                        dest: d.clone(),
                        active,
                        inactive,
                        persist,
                        stats,
                        tunnel: None,
                    }
                })
                .collect();
            let mut stats = est.stats(reading.total);
            if let Some(ks) = ks {
                stats = add_stats(stats, ks.stats);
            }
            services.push(ServiceView {
                key: s.key,
                config: s.config.clone(),
                engine,
                pe_name: ks.and_then(|ks| ks.options.pe_name.clone()),
                stats,
                dests,
            });
        }
        let mut conn_views: Vec<ConnView> = if with_conns {
            conns
                .iter()
                .map(|c| ConnView {
                    proto: if c.proto == lb_common::PROTO_TCP {
                        Protocol::Tcp
                    } else {
                        Protocol::Udp
                    },
                    client: v4(c.client),
                    vip: v4(c.vip),
                    dest: v4(c.dest),
                    state: state_name(c.state).to_string(),
                    expires_in_s: c.expires_in.as_secs(),
                })
                .collect()
        } else {
            Vec::new()
        };
        if with_conns && !kernel.is_empty() {
            conn_views.extend(kernel::read_proc_conns().into_iter().map(|c| ConnView {
                proto: c.proto,
                client: v4(c.client),
                vip: v4(c.vip),
                dest: v4(c.dest),
                state: c.state,
                expires_in_s: c.expires_in.as_secs(),
            }));
        }
        Ok((
            Snapshot {
                conn_tab_size: fp.config().conn_table_size,
                services,
                conns: conn_views,
                timeouts: fp.timeouts().map_err(|e| e.to_string())?,
            },
            conns.len() as u64,
        ))
    }
}

fn v4((a, p): (Ipv4Addr, u16)) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(a), p)
}
