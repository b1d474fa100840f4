//! Mirrors the table into the BPF maps, one batch of model changes at a time.
//!
//! Per batch: (1) replay the changes on copies of the touched services, carrying each
//! scheduler's state exactly as the kernel would (its per-change hook runs once per change,
//! after the state was advanced by the picks the fast path made since the last table);
//! (2) check everything fits; only then (3) write: new destinations first, then each new
//! table into a fresh region, then the service entry that points at it (an atomic map update,
//! so a service is never without destinations while it changes), then retire what went away.

use std::collections::{BTreeMap, BTreeSet, HashMap as StdHashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues};
use aya::util::nr_cpus;
use aya::Ebpf;
use lb_common::{
    map_names as names, DestStats, DestValue, L4Addr, SchedSlot, SvcValue, DEST_F_LIVE, NO_DEST,
    SCHED_RR, SCHED_SH, SCHED_WRR, SVC_F_SH_PORT,
};

use super::alloc::{IdAlloc, RegionAlloc};
use super::FastPathError;
use crate::model::{Change, Destination, Forward, Protocol, ServiceConfig, ServiceKey};
use crate::sched::{Pick, SchedDest, SchedKind, ServiceSched};

/// Test hook: `XVSD_TEST_ABORT=<point>` makes the daemon abort (as a SIGKILL would end it) at
/// that point of the first table change: `after-switch` (the batch serves packets, its
/// retirements and durable record are not done), `before-journal` (all done but the durable
/// record and the answer). The crash tests use it to hit those moments exactly.
pub fn abort_at(point: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT
        .get_or_init(|| std::env::var("XVSD_TEST_ABORT").ok())
        .as_deref()
        == Some(point)
    {
        eprintln!("XVSD_TEST_ABORT={point}: aborting");
        std::process::abort();
    }
}

/// The SERVICES value of a service a batch removes, between the batch's switch and the entry's
/// deletion right after it: no table, so it schedules nothing (the program passes new
/// connections to the kernel as for an absent service). `svc_id` marks it.
pub const SVC_ID_REMOVED: u32 = u32::MAX;
const TOMBSTONE: SvcValue = SvcValue {
    svc_id: SVC_ID_REMOVED,
    sched: SCHED_RR,
    flags: 0,
    _pad: 0,
    table_off: 0,
    table_len: 0,
    cursor: 0,
};

/// A region freed while BPF programs might still read it rests this long before reuse.
const RETIRE_GRACE: Duration = Duration::from_millis(100);

/// Why a service cannot be served by the fast path (it may go to kernel IPVS instead).
pub fn unsupported_reason(
    key: &ServiceKey,
    config: &ServiceConfig,
    dests: &[Destination],
) -> Option<String> {
    match key {
        ServiceKey::Fwmark { .. } => {
            return Some("fwmark services are not supported by the fast path".into())
        }
        ServiceKey::Inet { proto, addr, .. } => {
            if *proto == Protocol::Sctp {
                return Some("SCTP is not supported by the fast path".into());
            }
            if addr.is_ipv6() {
                return Some("IPv6 is not supported by the fast path yet".into());
            }
        }
    }
    if SchedKind::from_config(config).is_none() {
        return Some(format!(
            "scheduler {} is not supported by the fast path (rr, wrr, sh are)",
            config.scheduler
        ));
    }
    if config.flags.persistent {
        return Some("persistence (-p) is not supported by the fast path yet".into());
    }
    if config.flags.onepacket {
        return Some("one-packet scheduling (-o) is not supported by the fast path".into());
    }
    for d in dests {
        if let Some(r) = unsupported_dest_reason(d) {
            return Some(r);
        }
    }
    None
}

fn unsupported_dest_reason(d: &Destination) -> Option<String> {
    if d.forward != Forward::Masq {
        return Some(format!(
            "forwarding method {} of {} is not supported by the fast path (masquerading is)",
            d.forward.name(),
            crate::model::fmt_addr_port(&d.addr, d.port)
        ));
    }
    if d.u_thresh != 0 || d.l_thresh != 0 {
        return Some(format!(
            "connection thresholds (-x/-y) of {} are not supported by the fast path",
            crate::model::fmt_addr_port(&d.addr, d.port)
        ));
    }
    None
}

fn v4(addr: &IpAddr) -> Ipv4Addr {
    match addr {
        IpAddr::V4(a) => *a,
        // unsupported_reason() keeps IPv6 out of the engine.
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

fn l4(addr: &IpAddr, port: u16, proto: Protocol) -> L4Addr {
    L4Addr {
        addr: u32::from(v4(addr)).to_be(),
        port: port.to_be(),
        proto: proto.number(),
        _pad: 0,
    }
}

/// A destination as the engine tracks it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DestEntry {
    dest: Destination,
    /// DESTS index; None until the commit phase allocates it.
    id: Option<u32>,
    /// That id's generation when this destination took it (0 in states saved before it was
    /// recorded: consistent for as long as the id is not reused).
    #[serde(default)]
    gen: u32,
}

/// One service as mirrored in the maps.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SvcState {
    svc_id: u32,
    proto: Protocol,
    vip: L4Addr,
    config: ServiceConfig,
    kind: SchedKind,
    /// The destinations in list order (newest first).
    dests: Vec<DestEntry>,
    sched: ServiceSched,
    /// The published table, and the list it was built from (Pick.dest indexes into it).
    table: Vec<Pick>,
    table_list: Vec<SchedDest>,
    /// SCHED_SLOTS region: header slot + table (None before the first publish).
    region: Option<(u32, u32)>,
    /// Whether the state was already advanced by the fast path's picks in this batch.
    advanced: bool,
    /// Counters of deleted destinations, kept in the service's totals as IPVS keeps them.
    retired: DestStats,
}

impl SvcState {
    fn sched_list(&self) -> Vec<SchedDest> {
        self.dests
            .iter()
            .map(|d| SchedDest {
                key: (d.dest.addr, d.dest.port),
                weight: d.dest.weight,
                overloaded: false,
            })
            .collect()
    }

    fn bpf_flags(&self) -> u8 {
        match self.kind {
            SchedKind::Sh { port: true, .. } => SVC_F_SH_PORT,
            _ => 0,
        }
    }

    /// The SERVICES entry for this state's table at region `off` (header slot) of `len` picks.
    fn value_at(&self, off: u32, len: u32) -> SvcValue {
        SvcValue {
            svc_id: self.svc_id,
            sched: self.bpf_sched(),
            flags: self.bpf_flags(),
            _pad: 0,
            table_off: off + 1,
            table_len: len,
            cursor: 0,
        }
    }

    fn bpf_sched(&self) -> u8 {
        match self.kind {
            SchedKind::Rr => SCHED_RR,
            SchedKind::Wrr => SCHED_WRR,
            SchedKind::Sh { .. } => SCHED_SH,
        }
    }
}

/// Per-destination figures read back from the maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

impl Counters {
    fn sum(&mut self, c: &Counters) {
        self.conns += c.conns;
        self.inpkts += c.inpkts;
        self.outpkts += c.outpkts;
        self.inbytes += c.inbytes;
        self.outbytes += c.outbytes;
    }

    fn add(&mut self, s: &DestStats) {
        self.conns += s.conns;
        self.inpkts += s.inpkts;
        self.outpkts += s.outpkts;
        self.inbytes += s.inbytes;
        self.outbytes += s.outbytes;
    }
}

/// Every destination's counters at one moment, indexed by destination id.
#[derive(Clone, Debug, Default)]
pub struct DestCounters {
    counts: Vec<Counters>,
    /// The engine's reading epoch when the reading was taken (`Engine::is_current`).
    epoch: u64,
}

/// A pending reading of every destination's counters: a duplicate of the stats map's fd, so
/// it can run without the engine (and the daemon's lock).
pub struct DestStatsRead {
    fd: std::os::fd::OwnedFd,
    n: u32,
    ncpus: usize,
    epoch: u64,
}

impl DestStatsRead {
    pub fn read(self) -> Result<DestCounters, FastPathError> {
        let mut counts = vec![Counters::default(); self.n as usize];
        super::batch::read_percpu_array::<DestStats>(
            self.fd.as_fd(),
            self.n,
            self.ncpus,
            |id, per| {
                if let Some(c) = counts.get_mut(id as usize) {
                    for s in per {
                        c.add(s);
                    }
                }
            },
        )
        .map_err(|e| FastPathError::Map(format!("DEST_STATS: batch read: {e}")))?;
        Ok(DestCounters {
            counts,
            epoch: self.epoch,
        })
    }
}

/// One live destination in a reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestReading {
    pub dest: (IpAddr, u16),
    /// Its DESTS id and the id's generation: together they name this destination only.
    pub id: u32,
    pub gen: u32,
    pub counters: Counters,
}

/// A service's counters in a reading: totals (deleted destinations included, as IPVS keeps
/// them) and each live destination in list order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceReading {
    pub total: Counters,
    pub dests: Vec<DestReading>,
}

/// A service's total counters and those of each live destination, in list order.
pub type ServiceCounters = (Counters, Vec<((IpAddr, u16), Counters)>);

/// Sizes of the maps and limits of the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_services: u32,
    pub max_dests: u32,
    pub sched_slots: u32,
    /// Longest rr/wrr period the fast path precomputes (wrr with large co-prime weights).
    pub max_period: usize,
}

/// Everything the engine knows that the maps alone do not say (ids, regions, scheduler
/// states); saved by a stopping daemon so the next one adopts the pinned maps exactly.
#[derive(Serialize, Deserialize)]
pub struct Engine {
    limits: Limits,
    #[serde(with = "as_pairs")]
    services: BTreeMap<ServiceKey, SvcState>,
    svc_ids: IdAlloc,
    dest_ids: IdAlloc,
    /// Generation of each destination id (bumped on reuse).
    dest_gen: StdHashMap<u32, u32>,
    /// Bumped whenever a counter reading taken before would mislead: a freed destination id
    /// handed out again (the reading may name another destination) or counters zeroed (the
    /// reading holds counts from before). See `DestCounters`.
    #[serde(default)]
    epoch: u64,
    regions: RegionAlloc,
    /// Regions waiting out RETIRE_GRACE. Not saved: a stopping daemon frees them first.
    #[serde(skip)]
    retiring: Vec<(Instant, u32, u32)>,
    #[serde(with = "as_pairs")]
    backends: StdHashMap<L4Addr, u32>,
    /// Services written since the last `take_changed` (what the daemon's journal records).
    #[serde(skip)]
    dirty: BTreeSet<ServiceKey>,
}

/// One service's engine state as the daemon's durable store keeps it (opaque outside the
/// engine): with the table it was built from, enough to take the maps over after a crash.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EngineService(SvcState);

/// What `Engine::rebuild` found in the maps and put right.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// SERVICES entries rewritten to the durable state (an unacknowledged batch rolled back).
    pub services_rewritten: usize,
    /// SERVICES entries the durable state does not have, deleted.
    pub services_removed: usize,
    /// DESTS entries set back to the durable state (destinations revived).
    pub dests_rewritten: usize,
    /// Live DESTS entries no durable service names, marked dead (staged, never published).
    pub dests_killed: usize,
    /// BACKENDS entries added or removed.
    pub backends_fixed: usize,
    /// Scheduler tables whose SCHED_SLOTS region did not hold what was published, rewritten.
    pub tables_rewritten: usize,
}

/// JSON objects need string keys: maps keyed by structs are saved as lists of pairs.
mod as_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<'a, M, K, V, S>(m: &'a M, s: S) -> Result<S::Ok, S::Error>
    where
        &'a M: IntoIterator<Item = (&'a K, &'a V)>,
        K: Serialize + 'a,
        V: Serialize + 'a,
        S: Serializer,
    {
        s.collect_seq(m)
    }

    pub fn deserialize<'de, M, K, V, D>(d: D) -> Result<M, D::Error>
    where
        M: FromIterator<(K, V)>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

impl Engine {
    pub fn new(limits: Limits) -> Self {
        Engine {
            svc_ids: IdAlloc::new(limits.max_services),
            dest_ids: IdAlloc::new(limits.max_dests),
            regions: RegionAlloc::new(limits.sched_slots),
            limits,
            services: BTreeMap::new(),
            dest_gen: StdHashMap::new(),
            epoch: 0,
            retiring: Vec::new(),
            backends: StdHashMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    /// The services written since the last call, each with its state now (None: removed).
    pub fn take_changed(&mut self) -> Vec<(ServiceKey, Option<EngineService>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|k| {
                let st = self.services.get(&k).cloned().map(EngineService);
                (k, st)
            })
            .collect()
    }

    /// Every service's state (a durable snapshot).
    pub fn services_state(&self) -> Vec<(ServiceKey, EngineService)> {
        self.services
            .iter()
            .map(|(k, st)| (*k, EngineService(st.clone())))
            .collect()
    }

    /// Forgets the services written so far (their states are in a snapshot).
    pub fn clear_changed(&mut self) {
        self.dirty.clear();
    }

    /// Takes over maps a previous daemon left pinned without saving its state (it was killed
    /// or crashed), from the services' states as the durable store last acknowledged them:
    /// allocators, generations and backend references are rebuilt, then the maps are made to
    /// say exactly that. What the dead daemon staged or switched after its last acknowledged
    /// change is rolled back; destinations it retired since are revived with their ids and
    /// generations, so connections to them continue.
    pub fn rebuild(
        &mut self,
        ebpf: &mut Ebpf,
        services: Vec<(ServiceKey, EngineService)>,
    ) -> Result<Reconciled, FastPathError> {
        let mut rep = Reconciled::default();
        let limits = self.limits.clone();
        let t0 = Instant::now();
        let services: BTreeMap<ServiceKey, SvcState> = services
            .into_iter()
            .map(|(k, EngineService(mut st))| {
                st.advanced = false;
                (k, st)
            })
            .collect();
        let mut svc_used = BTreeSet::new();
        let mut dest_used = BTreeSet::new();
        let mut regions = RegionAlloc::new(limits.sched_slots);
        let mut backends: StdHashMap<L4Addr, u32> = StdHashMap::new();
        for (k, st) in &services {
            let bad = |what: &str| FastPathError::Load(format!("durable state: {k}: {what}"));
            if st.svc_id >= limits.max_services || !svc_used.insert(st.svc_id) {
                return Err(bad("service id out of range or shared"));
            }
            let Some((off, len)) = st.region else {
                return Err(bad("no table region"));
            };
            if !regions.reserve(off, len) {
                return Err(bad("table regions overlap"));
            }
            for e in &st.dests {
                let Some(id) = e.id else {
                    return Err(bad("destination without an id"));
                };
                if id >= limits.max_dests || !dest_used.insert(id) {
                    return Err(bad("destination id out of range or shared"));
                }
                *backends
                    .entry(l4(&e.dest.addr, e.dest.port, st.proto))
                    .or_insert(0) += 1;
            }
        }
        // Every generation the DESTS map holds: a freed id is handed out again one above it.
        let mut dest_gen: StdHashMap<u32, u32> = StdHashMap::new();
        let mut live_in_map: Vec<(u32, DestValue)> = Vec::new();
        {
            let fd = map_fd(ebpf, names::DESTS)?;
            super::batch::read_percpu_array::<DestValue>(fd, limits.max_dests, 1, |id, v| {
                let v = v[0];
                if v.gen != 0 {
                    dest_gen.insert(id, v.gen);
                }
                if v.flags & DEST_F_LIVE != 0 {
                    live_in_map.push((id, v));
                }
            })
            .map_err(|e| FastPathError::Map(format!("DESTS: batch read: {e}")))?;
        }
        tracing::debug!(took = ?t0.elapsed(), "rebuild: states checked, DESTS read");
        // DESTS: every durable destination exactly as published (revived if a later, never
        // acknowledged batch retired it); every other live entry dead.
        let mut dest_fix: Vec<(u32, DestValue)> = Vec::new();
        let mut have: Vec<Option<DestValue>> = vec![None; limits.max_dests as usize];
        for (id, v) in &live_in_map {
            have[*id as usize] = Some(*v);
        }
        for st in services.values() {
            for e in &st.dests {
                let id = e.id.expect("checked");
                let want = DestValue {
                    addr: u32::from(v4(&e.dest.addr)).to_be(),
                    port: e.dest.port.to_be(),
                    flags: DEST_F_LIVE,
                    _pad: 0,
                    gen: e.gen,
                    svc_id: st.svc_id,
                };
                let g = dest_gen.entry(id).or_insert(e.gen);
                *g = (*g).max(e.gen);
                match have[id as usize].take() {
                    Some(v) if v == want => {}
                    _ => dest_fix.push((id, want)),
                }
            }
        }
        rep.dests_rewritten = dest_fix.len();
        for (id, mut v) in have
            .into_iter()
            .enumerate()
            .filter_map(|(id, v)| Some((id as u32, v?)))
        {
            v.flags &= !DEST_F_LIVE;
            dest_fix.push((id, v));
            rep.dests_killed += 1;
        }
        dest_fix.sort_by_key(|(id, _)| *id);
        super::batch::update_all(map_fd(ebpf, names::DESTS)?, &dest_fix)
            .map_err(|e| FastPathError::Map(format!("DESTS: {e}")))?;
        tracing::debug!(took = ?t0.elapsed(), "rebuild: DESTS reconciled");
        // SCHED_SLOTS: every durable table's region as published (a daemon killed while it
        // programmed new maps may have left other contents there).
        {
            // Only as far as the regions in use reach (the array is sized for the worst case).
            let end = services
                .values()
                .filter_map(|st| st.region.map(|(o, l)| o + l))
                .max()
                .unwrap_or(0);
            let mut have: Vec<SchedSlot> = vec![SchedSlot::default(); end as usize];
            let fd = map_fd(ebpf, names::SCHED_SLOTS)?;
            super::batch::read_percpu_array::<SchedSlot>(fd, end, 1, |i, v| {
                if let Some(h) = have.get_mut(i as usize) {
                    *h = v[0];
                }
            })
            .map_err(|e| FastPathError::Map(format!("SCHED_SLOTS: batch read: {e}")))?;
            let mut fix: Vec<(u32, SchedSlot)> = Vec::new();
            for st in services.values() {
                let (off, _) = st.region.expect("checked");
                let want = region_slots(&st.dests, &st.table, &st.table_list, off);
                if want.iter().any(|(i, v)| have.get(*i as usize) != Some(v)) {
                    rep.tables_rewritten += 1;
                    fix.extend(want);
                }
            }
            super::batch::update_all(fd, &fix)
                .map_err(|e| FastPathError::Map(format!("SCHED_SLOTS: {e}")))?;
        }
        tracing::debug!(took = ?t0.elapsed(), "rebuild: SCHED_SLOTS reconciled");
        // BACKENDS: exactly the durable destinations' addresses.
        {
            let mut b: HashMap<&mut MapData, L4Addr, u32> = typed(ebpf, names::BACKENDS)?;
            let keys: Vec<L4Addr> = b.keys().filter_map(|k| k.ok()).collect();
            let present: HashSet<L4Addr> = keys.iter().copied().collect();
            for k in keys.iter().filter(|k| !backends.contains_key(k)) {
                let _ = b.remove(k);
                rep.backends_fixed += 1;
            }
            for k in backends.keys().filter(|k| !present.contains(k)) {
                b.insert(*k, 1, 0).map_err(map_err("BACKENDS"))?;
                rep.backends_fixed += 1;
            }
        }
        tracing::debug!(took = ?t0.elapsed(), "rebuild: BACKENDS reconciled");
        // SERVICES: an entry that already points at the durable table keeps its cursor (the
        // scheduler goes on where it was); any other is switched back to it.
        {
            let m: HashMap<&MapData, L4Addr, SvcValue> = typed_ref(ebpf, names::SERVICES)?;
            let mut present: StdHashMap<L4Addr, SvcValue> = StdHashMap::new();
            for k in m.keys().filter_map(|k| k.ok()) {
                if let Ok(v) = m.get(&k, 0) {
                    present.insert(k, v);
                }
            }
            let mut fix: Vec<(L4Addr, SvcValue)> = Vec::new();
            for st in services.values() {
                let (off, len) = st.region.expect("checked");
                let want = st.value_at(off, len - 1);
                match present.remove(&st.vip) {
                    Some(v)
                        if (v.svc_id, v.sched, v.flags, v.table_off, v.table_len)
                            == (
                                want.svc_id,
                                want.sched,
                                want.flags,
                                want.table_off,
                                want.table_len,
                            ) => {}
                    _ => fix.push((st.vip, want)),
                }
            }
            let gone: Vec<L4Addr> = present.into_keys().collect();
            rep.services_rewritten = fix.len();
            rep.services_removed = gone.len();
            let fd = map_fd(ebpf, names::SERVICES)?;
            super::batch::update_all(fd, &fix)
                .map_err(|e| FastPathError::Map(format!("SERVICES: {e}")))?;
            super::batch::delete_all(fd, &gone)
                .map_err(|e| FastPathError::Map(format!("SERVICES: {e}")))?;
        }
        tracing::debug!(took = ?t0.elapsed(), "rebuild: SERVICES reconciled");
        self.svc_ids = IdAlloc::with_used(limits.max_services, &svc_used);
        self.dest_ids = IdAlloc::with_used(limits.max_dests, &dest_used);
        self.dest_gen = dest_gen;
        self.epoch += 1;
        self.regions = regions;
        self.retiring.clear();
        self.backends = backends;
        self.services = services;
        self.dirty.clear();
        Ok(rep)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Scheduler-table slots taken (by live tables and by regions resting before reuse).
    pub fn sched_slots_used(&self) -> u64 {
        self.limits.sched_slots as u64 - self.regions.free_slots()
    }

    /// Serialises the state for a successor daemon (retiring regions are freed first: by the
    /// time a successor runs, no program still reads them).
    pub fn save(&mut self) -> Result<Vec<u8>, FastPathError> {
        self.reap_retired(true);
        serde_json::to_vec(self)
            .map_err(|e| FastPathError::Map(format!("saving engine state: {e}")))
    }

    pub fn restore(bytes: &[u8]) -> Result<Engine, FastPathError> {
        serde_json::from_slice(bytes)
            .map_err(|e| FastPathError::Load(format!("reading saved engine state: {e}")))
    }

    /// A fresh engine over maps a previous instance left pinned without saving its state (it
    /// crashed): drop every service and backend entry, mark every destination dead so their
    /// connections expire, and continue each id's generation so none can match again.
    pub fn reset_maps(&mut self, ebpf: &mut Ebpf) -> Result<(), FastPathError> {
        {
            let mut svcs = services_map(ebpf)?;
            let keys: Vec<L4Addr> = svcs.keys().filter_map(|k| k.ok()).collect();
            for k in keys {
                let _ = svcs.remove(&k);
            }
        }
        {
            let mut b: HashMap<&mut MapData, L4Addr, u32> = typed(ebpf, names::BACKENDS)?;
            let keys: Vec<L4Addr> = b.keys().filter_map(|k| k.ok()).collect();
            for k in keys {
                let _ = b.remove(&k);
            }
        }
        let mut dests = dests_map(ebpf)?;
        for id in 0..self.limits.max_dests {
            let Ok(mut v) = dests.get(&id, 0) else {
                continue;
            };
            if v.gen != 0 {
                self.dest_gen.insert(id, v.gen);
                v.flags = 0;
                dests.set(id, v, 0).map_err(map_err("DESTS"))?;
            }
        }
        Ok(())
    }

    pub fn has_service(&self, key: &ServiceKey) -> bool {
        self.services.contains_key(key)
    }

    /// Applies a batch of changes (as returned by the model's operations, in order). On error
    /// nothing was written.
    pub fn apply(&mut self, ebpf: &mut Ebpf, changes: &[Change]) -> Result<(), FastPathError> {
        // Phase 1: replay on copies of the touched services.
        let mut staged: BTreeMap<ServiceKey, Option<SvcState>> = BTreeMap::new();
        let mut new_svcs = 0u32;
        for ch in changes {
            self.stage(ebpf, &mut staged, ch, &mut new_svcs)?;
        }
        // Phase 2: compute the tables and check capacity.
        let mut tables: BTreeMap<ServiceKey, (Vec<Pick>, Vec<SchedDest>)> = BTreeMap::new();
        let mut slots_needed: u64 = 0;
        let mut new_dests: u64 = 0;
        for (key, st) in &staged {
            let Some(st) = st else { continue };
            let list = st.sched_list();
            let table = st
                .sched
                .table(&list, self.limits.max_period)
                .map_err(|e| FastPathError::Unsupported(format!("{key}: {e}")))?;
            slots_needed += table.len() as u64 + 1;
            new_dests += st.dests.iter().filter(|d| d.id.is_none()).count() as u64;
            tables.insert(*key, (table, list));
        }
        if slots_needed > self.regions.free_slots() {
            return Err(FastPathError::Full(format!(
                "scheduler tables need {slots_needed} slots, {} free (raise --sched-slots)",
                self.regions.free_slots()
            )));
        }
        // Every live destination holds an id: counting ids keeps a one-destination change
        // from walking all 50,000 services.
        let live_dests = self.dest_ids.in_use() as u64;
        debug_assert_eq!(
            live_dests,
            self.services
                .values()
                .map(|s| s.dests.iter().filter(|d| d.id.is_some()).count() as u64)
                .sum::<u64>(),
            "destination ids in use differ from the live destinations"
        );
        if live_dests + new_dests > self.limits.max_dests as u64 {
            return Err(FastPathError::Full(format!(
                "{} destinations exceed the fast path's {} (raise --max-dests)",
                live_dests + new_dests,
                self.limits.max_dests
            )));
        }
        if self.services.len() as u64 + new_svcs as u64 > self.limits.max_services as u64 {
            return Err(FastPathError::Full(format!(
                "more than {} services (raise --max-services)",
                self.limits.max_services
            )));
        }
        // Phase 3: write. (a) Stage: every new destination and every new table of the batch
        // goes into entries nothing points at yet. (b) Switch: all the batch's SERVICES
        // entries in one BPF_MAP_UPDATE_BATCH syscall, removed services included as
        // tombstones (no table: they schedule nothing, as an absent service). A process is
        // killed only on its way back to userspace, so a daemon killed during the batch
        // leaves the packet path with the old table or the new one, never a part (two
        // syscalls would not do: a SIGKILL arriving during the first ends the process right
        // after it). (c) Retire what the switch left behind, tombstones included.
        self.reap_retired(false);
        let mut switch: Vec<(L4Addr, SvcValue)> = Vec::new();
        let mut gone: Vec<L4Addr> = Vec::new();
        let mut replaced: Vec<(ServiceKey, Option<SvcState>)> = Vec::new();
        let mut removed: Vec<SvcState> = Vec::new();
        for (key, st) in staged {
            self.dirty.insert(key);
            match st {
                None => {
                    if let Some(st) = self.services.remove(&key) {
                        gone.push(st.vip);
                        switch.push((st.vip, TOMBSTONE));
                        removed.push(st);
                    }
                }
                Some(st) => {
                    let (table, list) = tables.remove(&key).expect("table computed above");
                    let (vip, value, old) = self.stage_publish(ebpf, key, st, table, list)?;
                    switch.push((vip, value));
                    replaced.push((key, old));
                }
            }
        }
        {
            let t0 = Instant::now();
            let fd = map_fd(ebpf, names::SERVICES)?;
            super::batch::update_all(fd, &switch)
                .map_err(|e| FastPathError::Map(format!("SERVICES: batch update: {e}")))?;
            tracing::debug!(
                entries = switch.len(),
                removed = gone.len(),
                took = ?t0.elapsed(),
                "batch switched"
            );
            abort_at("after-switch");
            super::batch::delete_all(fd, &gone)
                .map_err(|e| FastPathError::Map(format!("SERVICES: batch delete: {e}")))?;
        }
        for (key, old) in replaced {
            self.retire_replaced(ebpf, &key, old)?;
        }
        for st in removed {
            self.retire_removed(ebpf, st)?;
        }
        Ok(())
    }

    fn stage(
        &self,
        ebpf: &Ebpf,
        staged: &mut BTreeMap<ServiceKey, Option<SvcState>>,
        ch: &Change,
        new_svcs: &mut u32,
    ) -> Result<(), FastPathError> {
        let key = match ch {
            Change::AddService(k, _)
            | Change::EditService(k, _)
            | Change::DelService(k)
            | Change::AddDest(k, _)
            | Change::EditDest(k, _)
            | Change::DelDest(k, _) => *k,
        };
        let slot = staged
            .entry(key)
            .or_insert_with(|| self.services.get(&key).cloned());
        match ch {
            Change::AddService(k, cfg) => {
                if slot.is_some() {
                    return Err(FastPathError::Table(format!("Service already exists: {k}")));
                }
                if let Some(r) = unsupported_reason(k, cfg, &[]) {
                    return Err(FastPathError::Unsupported(format!("{k}: {r}")));
                }
                let ServiceKey::Inet { proto, addr, port } = k else {
                    unreachable!()
                };
                let kind = SchedKind::from_config(cfg).expect("checked supported");
                *new_svcs += 1;
                *slot = Some(SvcState {
                    svc_id: u32::MAX,
                    proto: *proto,
                    vip: l4(addr, *port, *proto),
                    config: cfg.clone(),
                    kind,
                    dests: Vec::new(),
                    sched: ServiceSched::new(kind),
                    table: Vec::new(),
                    table_list: Vec::new(),
                    region: None,
                    advanced: true,
                    retired: DestStats::default(),
                });
            }
            Change::EditService(k, cfg) => {
                let st = slot
                    .as_mut()
                    .ok_or_else(|| FastPathError::Table(format!("No such service: {k}")))?;
                let dests: Vec<Destination> = st.dests.iter().map(|d| d.dest.clone()).collect();
                if let Some(r) = unsupported_reason(k, cfg, &dests) {
                    return Err(FastPathError::Unsupported(format!("{k}: {r}")));
                }
                let kind = SchedKind::from_config(cfg).expect("checked supported");
                if cfg.scheduler != st.config.scheduler {
                    // The kernel binds a fresh scheduler instance: its state starts over.
                    st.sched = ServiceSched::init(kind, &st.sched_list());
                    st.advanced = true;
                } else {
                    advance(ebpf, st)?;
                    if matches!(kind, SchedKind::Sh { .. }) {
                        // sh keeps no state; its flags shape the table.
                        st.sched = ServiceSched::new(kind);
                    }
                }
                st.kind = kind;
                st.config = cfg.clone();
            }
            Change::DelService(k) => {
                if slot.is_none() {
                    return Err(FastPathError::Table(format!("No such service: {k}")));
                }
                *slot = None;
            }
            Change::AddDest(k, d) => {
                let (st, before) = dest_change(ebpf, slot, k, Some(d))?;
                st.dests.insert(
                    0,
                    DestEntry {
                        dest: d.clone(),
                        id: None,
                        gen: 0,
                    },
                );
                st.sched.on_change(&before, &st.sched_list());
            }
            Change::EditDest(k, d) => {
                let (st, before) = dest_change(ebpf, slot, k, Some(d))?;
                let e = st
                    .dests
                    .iter_mut()
                    .find(|e| e.dest.id() == d.id())
                    .ok_or_else(|| FastPathError::Table(format!("{k}: no such destination")))?;
                e.dest = d.clone();
                st.sched.on_change(&before, &st.sched_list());
            }
            Change::DelDest(k, id) => {
                let (st, before) = dest_change(ebpf, slot, k, None)?;
                let i = st
                    .dests
                    .iter()
                    .position(|e| e.dest.id() == *id)
                    .ok_or_else(|| FastPathError::Table(format!("{k}: no such destination")))?;
                st.dests.remove(i);
                st.sched.on_change(&before, &st.sched_list());
            }
        }
        Ok(())
    }

    /// Stages a service's new state: ids and DESTS entries for its new destinations, its table
    /// in a fresh region. Returns the SERVICES entry that switches to it (written by the
    /// caller, with the rest of the batch) and the state it replaces.
    fn stage_publish(
        &mut self,
        ebpf: &mut Ebpf,
        key: ServiceKey,
        mut st: SvcState,
        table: Vec<Pick>,
        list: Vec<SchedDest>,
    ) -> Result<(L4Addr, SvcValue, Option<SvcState>), FastPathError> {
        let old = self.services.remove(&key);
        if st.svc_id == u32::MAX {
            st.svc_id = self.svc_ids.alloc().expect("capacity checked");
        }
        // New destinations: ids, DESTS entries and zeroed counters, before any table names them.
        for e in st.dests.iter_mut().filter(|e| e.id.is_none()) {
            let id = self.dest_ids.alloc().expect("capacity checked");
            let epoch = &mut self.epoch;
            let gen = self
                .dest_gen
                .entry(id)
                .and_modify(|g| {
                    *g = g.wrapping_add(1);
                    *epoch += 1;
                })
                .or_insert(1);
            e.gen = *gen;
            let v = DestValue {
                addr: u32::from(v4(&e.dest.addr)).to_be(),
                port: e.dest.port.to_be(),
                flags: DEST_F_LIVE,
                _pad: 0,
                gen: *gen,
                svc_id: st.svc_id,
            };
            zero_dest_stats(ebpf, id)?;
            dests_map(ebpf)?.set(id, v, 0).map_err(map_err("DESTS"))?;
            let b = l4(&e.dest.addr, e.dest.port, st.proto);
            self.backend_ref(ebpf, b, true)?;
            e.id = Some(id);
        }
        // The table, into a fresh region: header slot (reserved for the scheduler's state at
        // creation) then one slot per pick, in one batch write.
        let len = table.len() as u32;
        let off = self.regions.alloc(len + 1).expect("capacity checked");
        let slots = region_slots(&st.dests, &table, &list, off);
        super::batch::update_all(map_fd(ebpf, names::SCHED_SLOTS)?, &slots)
            .map_err(|e| FastPathError::Map(format!("SCHED_SLOTS: {e}")))?;
        let value = st.value_at(off, len);
        if let Some((o, l)) = st.region.replace((off, len + 1)) {
            self.retiring.push((Instant::now(), o, l));
        }
        st.table = table;
        st.table_list = list;
        st.advanced = false;
        let vip = st.vip;
        self.services.insert(key, st);
        Ok((vip, value, old))
    }

    /// After the switch: destinations a service no longer has expire their connections (their
    /// counters stay in the service's totals); a service re-created under the same key gives
    /// its old id back.
    fn retire_replaced(
        &mut self,
        ebpf: &mut Ebpf,
        key: &ServiceKey,
        old: Option<SvcState>,
    ) -> Result<(), FastPathError> {
        let Some(old) = old else { return Ok(()) };
        let st = self.services.get(key).expect("just published");
        let kept: HashSet<u32> = st.dests.iter().filter_map(|e| e.id).collect();
        let (proto, new_svc_id) = (st.proto, st.svc_id);
        let mut retired = DestStats::default();
        for e in old
            .dests
            .iter()
            .filter(|e| e.id.is_some_and(|id| !kept.contains(&id)))
        {
            let id = e.id.unwrap();
            let s = read_dest_stats(ebpf, id)?;
            retired.conns += s.conns;
            retired.inpkts += s.inpkts;
            retired.outpkts += s.outpkts;
            retired.inbytes += s.inbytes;
            retired.outbytes += s.outbytes;
            self.kill_dest(ebpf, id, l4(&e.dest.addr, e.dest.port, proto))?;
        }
        self.services
            .get_mut(key)
            .expect("just published")
            .retired_add(retired);
        if old.svc_id != new_svc_id {
            self.svc_ids.free(old.svc_id);
        }
        Ok(())
    }

    fn retire_removed(&mut self, ebpf: &mut Ebpf, st: SvcState) -> Result<(), FastPathError> {
        for e in &st.dests {
            if let Some(id) = e.id {
                self.kill_dest(ebpf, id, l4(&e.dest.addr, e.dest.port, st.proto))?;
            }
        }
        if let Some((o, l)) = st.region {
            self.retiring.push((Instant::now(), o, l));
        }
        self.svc_ids.free(st.svc_id);
        Ok(())
    }

    fn kill_dest(
        &mut self,
        ebpf: &mut Ebpf,
        id: u32,
        backend: L4Addr,
    ) -> Result<(), FastPathError> {
        let mut dests = dests_map(ebpf)?;
        let mut v = dests.get(&id, 0).map_err(map_err("DESTS"))?;
        v.flags &= !DEST_F_LIVE;
        dests.set(id, v, 0).map_err(map_err("DESTS"))?;
        self.dest_ids.free(id);
        self.backend_ref(ebpf, backend, false)
    }

    fn backend_ref(&mut self, ebpf: &mut Ebpf, b: L4Addr, add: bool) -> Result<(), FastPathError> {
        let mut map: HashMap<&mut MapData, L4Addr, u32> = typed(ebpf, names::BACKENDS)?;
        let n = self.backends.entry(b).or_insert(0);
        if add {
            *n += 1;
            if *n == 1 {
                map.insert(b, 1, 0).map_err(map_err("BACKENDS"))?;
            }
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.backends.remove(&b);
                let _ = map.remove(&b);
            }
        }
        Ok(())
    }

    fn reap_retired(&mut self, all: bool) {
        let now = Instant::now();
        let regions = &mut self.regions;
        self.retiring.retain(|&(t, o, l)| {
            if all || now.duration_since(t) >= RETIRE_GRACE {
                regions.free(o, l);
                false
            } else {
                true
            }
        });
    }

    /// Counters of a service (its live destinations plus those deleted) and of each live
    /// destination, in list order. One syscall per destination: for one service. For all of
    /// them, read `dest_counters` once and use `reading`.
    pub fn counters(
        &self,
        ebpf: &Ebpf,
        key: &ServiceKey,
    ) -> Result<Option<ServiceCounters>, FastPathError> {
        let Some(st) = self.services.get(key) else {
            return Ok(None);
        };
        let mut total = Counters::default();
        total.add(&st.retired);
        let mut per = Vec::with_capacity(st.dests.len());
        for e in &st.dests {
            let mut c = Counters::default();
            if let Some(id) = e.id {
                c.add(&read_dest_stats(ebpf, id)?);
            }
            total.sum(&c);
            per.push((e.dest.id(), c));
        }
        Ok(Some((total, per)))
    }

    /// What reading every destination's counters needs, taken under the caller's lock; the
    /// reading itself (`DestStatsRead::read`) can then run without it.
    pub fn dest_stats_read(&self, ebpf: &Ebpf) -> Result<DestStatsRead, FastPathError> {
        let ncpus = nr_cpus().map_err(|(_, e)| FastPathError::Map(format!("nr_cpus: {e}")))?;
        let m = ebpf
            .map(names::DEST_STATS)
            .ok_or_else(|| FastPathError::Map("DEST_STATS missing from the object".into()))?;
        let aya::maps::Map::PerCpuArray(data) = m else {
            return Err(FastPathError::Map(
                "DEST_STATS is not a per-CPU array".into(),
            ));
        };
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| FastPathError::Map(format!("DEST_STATS: dup: {e}")))?;
        Ok(DestStatsRead {
            fd,
            n: self.dest_ids.high_water(),
            ncpus,
            epoch: self.epoch,
        })
    }

    /// Every destination's counters, read in batches: the daemon's estimator and
    /// `ipvsadm -L --stats` need all of them at once.
    pub fn dest_counters(&self, ebpf: &Ebpf) -> Result<DestCounters, FastPathError> {
        self.dest_stats_read(ebpf)?.read()
    }

    /// Whether a reading still holds for the destinations the engine has now: no id was
    /// reused and nothing zeroed since it was taken (ids allocated since are new and read as
    /// zero, which they were).
    pub fn is_current(&self, all: &DestCounters) -> bool {
        all.epoch == self.epoch
    }

    /// A service's counters from a reading, with each destination's id (None: not a fast-path
    /// service).
    pub fn reading(&self, key: &ServiceKey, all: &DestCounters) -> Option<ServiceReading> {
        let st = self.services.get(key)?;
        let mut total = Counters::default();
        total.add(&st.retired);
        let mut dests = Vec::with_capacity(st.dests.len());
        for e in &st.dests {
            let Some(id) = e.id else { continue };
            let c = all.counts.get(id as usize).copied().unwrap_or_default();
            total.sum(&c);
            dests.push(DestReading {
                dest: e.dest.id(),
                id,
                gen: e.gen,
                counters: c,
            });
        }
        Some(ServiceReading { total, dests })
    }

    /// Zeroes the counters of one service or of all (ipvsadm -Z).
    pub fn zero(&mut self, ebpf: &mut Ebpf, key: Option<&ServiceKey>) -> Result<(), FastPathError> {
        self.epoch += 1;
        let ids: Vec<u32> = self
            .services
            .iter_mut()
            .filter(|(k, _)| key.is_none_or(|want| *k == want))
            .flat_map(|(_, st)| {
                st.retired = DestStats::default();
                st.dests.iter().filter_map(|e| e.id).collect::<Vec<_>>()
            })
            .collect();
        for id in ids {
            zero_dest_stats(ebpf, id)?;
        }
        Ok(())
    }

    /// Which service and destination a destination id belongs to (for connection listings).
    pub fn dest_by_id(&self) -> StdHashMap<u32, (ServiceKey, (IpAddr, u16))> {
        let mut m = StdHashMap::new();
        for (k, st) in &self.services {
            for e in &st.dests {
                if let Some(id) = e.id {
                    m.insert(id, (*k, e.dest.id()));
                }
            }
        }
        m
    }
}

impl SvcState {
    fn retired_add(&mut self, s: DestStats) {
        self.retired.conns += s.conns;
        self.retired.inpkts += s.inpkts;
        self.retired.outpkts += s.outpkts;
        self.retired.inbytes += s.inbytes;
        self.retired.outbytes += s.outbytes;
    }
}

/// A table's SCHED_SLOTS entries at region `off`: the header slot, then one per pick (the
/// destination's id, from `dests`; `list` is what the picks index).
fn region_slots(
    dests: &[DestEntry],
    table: &[Pick],
    list: &[SchedDest],
    off: u32,
) -> Vec<(u32, SchedSlot)> {
    let mut slots: Vec<(u32, SchedSlot)> = Vec::with_capacity(table.len() + 1);
    slots.push((
        off,
        SchedSlot {
            dest_id: NO_DEST,
            aux: 0,
        },
    ));
    for (i, p) in table.iter().enumerate() {
        let dest_id = match p.dest {
            Some(ix) => {
                let k = list[ix].key;
                dests
                    .iter()
                    .find(|e| (e.dest.addr, e.dest.port) == k)
                    .and_then(|e| e.id)
                    .unwrap_or(NO_DEST)
            }
            None => NO_DEST,
        };
        slots.push((
            off + 1 + i as u32,
            SchedSlot {
                dest_id,
                aux: p.aux,
            },
        ));
    }
    slots
}

/// What every destination change starts with: the service must exist and the destination be
/// servable; the scheduler state is advanced past the fast path's picks, and the list before
/// the change is kept for the kernel's per-change hook.
fn dest_change<'a>(
    ebpf: &Ebpf,
    slot: &'a mut Option<SvcState>,
    k: &ServiceKey,
    d: Option<&Destination>,
) -> Result<(&'a mut SvcState, Vec<SchedDest>), FastPathError> {
    let st = slot
        .as_mut()
        .ok_or_else(|| FastPathError::Table(format!("No such service: {k}")))?;
    if let Some(r) = d.and_then(unsupported_dest_reason) {
        return Err(FastPathError::Unsupported(format!("{k}: {r}")));
    }
    advance(ebpf, st)?;
    let before = st.sched_list();
    Ok((st, before))
}

/// Moves the scheduler state past the picks the fast path made from the published table.
fn advance(ebpf: &Ebpf, st: &mut SvcState) -> Result<(), FastPathError> {
    if st.advanced {
        return Ok(());
    }
    st.advanced = true;
    if st.region.is_none() {
        return Ok(());
    }
    let map: HashMap<&MapData, L4Addr, SvcValue> = typed_ref(ebpf, names::SERVICES)?;
    let v = map.get(&st.vip, 0).map_err(map_err("SERVICES"))?;
    st.sched.advance(&st.table_list, &st.table, v.cursor);
    Ok(())
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> FastPathError {
    move |e| FastPathError::Map(format!("{name}: {e}"))
}

pub(crate) fn typed<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<T, FastPathError>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf
        .map_mut(name)
        .ok_or_else(|| FastPathError::Map(format!("map {name} missing from the object")))?;
    T::try_from(m).map_err(|e| FastPathError::Map(format!("{name}: {e}")))
}

pub(crate) fn typed_ref<'a, T>(ebpf: &'a Ebpf, name: &str) -> Result<T, FastPathError>
where
    T: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf
        .map(name)
        .ok_or_else(|| FastPathError::Map(format!("map {name} missing from the object")))?;
    T::try_from(m).map_err(|e| FastPathError::Map(format!("{name}: {e}")))
}

/// A map's descriptor, for the raw batch operations.
fn map_fd<'a>(ebpf: &'a Ebpf, name: &str) -> Result<BorrowedFd<'a>, FastPathError> {
    use aya::maps::Map;
    match ebpf.map(name) {
        Some(
            Map::HashMap(d)
            | Map::Array(d)
            | Map::PerCpuArray(d)
            | Map::LruHashMap(d)
            | Map::DevMapHash(d),
        ) => Ok(d.fd().as_fd()),
        Some(_) => Err(FastPathError::Map(format!("{name}: unexpected map type"))),
        None => Err(FastPathError::Map(format!(
            "map {name} missing from the object"
        ))),
    }
}

fn services_map(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, L4Addr, SvcValue>, FastPathError> {
    typed(ebpf, names::SERVICES)
}

fn dests_map(ebpf: &mut Ebpf) -> Result<Array<&mut MapData, DestValue>, FastPathError> {
    typed(ebpf, names::DESTS)
}

fn zero_dest_stats(ebpf: &mut Ebpf, id: u32) -> Result<(), FastPathError> {
    let n = nr_cpus().map_err(|(_, e)| FastPathError::Map(format!("nr_cpus: {e}")))?;
    let mut m: PerCpuArray<&mut MapData, DestStats> = typed(ebpf, names::DEST_STATS)?;
    let zeros = PerCpuValues::try_from(vec![DestStats::default(); n])
        .map_err(|e| FastPathError::Map(format!("DEST_STATS: {e}")))?;
    m.set(id, zeros, 0).map_err(map_err("DEST_STATS"))
}

fn read_dest_stats(ebpf: &Ebpf, id: u32) -> Result<DestStats, FastPathError> {
    let m: PerCpuArray<&MapData, DestStats> = typed_ref(ebpf, names::DEST_STATS)?;
    let per = m.get(&id, 0).map_err(map_err("DEST_STATS"))?;
    let mut s = DestStats::default();
    for v in per.iter() {
        s.conns += v.conns;
        s.inpkts += v.inpkts;
        s.outpkts += v.outpkts;
        s.inbytes += v.inbytes;
        s.outbytes += v.outbytes;
    }
    Ok(s)
}
