//! The node daemon's core: the table as the operator wants it, mirrored into the fast path.
//! Every change goes through `Node::apply`: all operations are checked on a copy of the table
//! and by the engine before anything is written, so a bad batch changes nothing.
pub mod checks;
pub mod estimator;
pub mod rules;
pub mod server;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::ctl::NumberedOp;
use crate::fastpath::{conns::state_name, unsupported_reason, Counters, FastPath};
use crate::model::{Op, Protocol, ServiceKey, Table};
use crate::snapshot::{ConnView, DestView, EngineKind, ServiceView, Snapshot};
use estimator::Estimator;

pub struct Node {
    table: Table,
    fp: FastPath,
    /// Rate estimators per service and per (service, destination).
    est: HashMap<ServiceKey, Estimator>,
    dest_est: HashMap<(ServiceKey, (IpAddr, u16)), Estimator>,
}

fn where_(line: Option<usize>) -> String {
    match line {
        Some(l) => format!("line {l}: "),
        None => String::new(),
    }
}

impl Node {
    pub fn new(fp: FastPath, table: Table) -> Node {
        Node {
            table,
            fp,
            est: HashMap::new(),
            dest_est: HashMap::new(),
        }
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn fast_path(&mut self) -> &mut FastPath {
        &mut self.fp
    }

    /// Applies all operations or none; an error names the line of the first bad operation.
    pub fn apply(&mut self, ops: &[NumberedOp]) -> Result<(), String> {
        let mut t = self.table.clone();
        let mut changes = Vec::new();
        for nop in ops {
            let c = t
                .apply_op(&nop.op)
                .map_err(|e| format!("{}{e}", where_(nop.line)))?;
            // Refuse what the fast path cannot serve before anything is written, naming the line.
            if let Some(key) = op_service(&nop.op) {
                if let Some(svc) = t.service(&key) {
                    if let Some(r) = unsupported_reason(&svc.key, &svc.config, &svc.dests) {
                        return Err(format!(
                            "{}{key}: {r} (and kernel IPVS fallback is not available on this node)",
                            where_(nop.line)
                        ));
                    }
                }
            }
            changes.extend(c);
        }
        self.fp.apply(&changes).map_err(|e| e.to_string())?;
        self.table = t;
        Ok(())
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

    /// Advances the rate estimators (call every estimator::TICK).
    pub fn tick(&mut self) {
        for s in self.table.services() {
            let Ok(Some((total, per))) = self.fp.counters(&s.key) else {
                continue;
            };
            self.est
                .entry(s.key)
                .or_insert_with(|| Estimator::new(total))
                .tick(total);
            for (d, c) in per {
                self.dest_est
                    .entry((s.key, d))
                    .or_insert_with(|| Estimator::new(c))
                    .tick(c);
            }
        }
        let keys: Vec<ServiceKey> = self.table.services().iter().map(|s| s.key).collect();
        self.est.retain(|k, _| keys.contains(k));
        self.dest_est.retain(|(k, _), _| keys.contains(k));
    }

    pub fn snapshot(&self, with_conns: bool) -> Result<Snapshot, String> {
        let fp = &self.fp;
        let by_id = fp.engine().dest_by_id();
        let mut counts: HashMap<(ServiceKey, (IpAddr, u16)), (u32, u32)> = HashMap::new();
        let conns = fp.connections().map_err(|e| e.to_string())?;
        for c in conns.iter().filter(|c| c.dest_live) {
            if let Some(&(svc, d)) = by_id.get(&c.dest_id) {
                let e = counts.entry((svc, d)).or_default();
                if c.active() {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
        }
        let mut services = Vec::new();
        for s in self.table.services() {
            let (total, per) = fp
                .counters(&s.key)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let per: HashMap<(IpAddr, u16), Counters> = per.into_iter().collect();
            let est = self.est.get(&s.key).copied().unwrap_or_default();
            let dests = s
                .dests
                .iter()
                .map(|d| {
                    let c = per.get(&d.id()).copied().unwrap_or_default();
                    let (active, inactive) =
                        counts.get(&(s.key, d.id())).copied().unwrap_or_default();
                    let de = self
                        .dest_est
                        .get(&(s.key, d.id()))
                        .copied()
                        .unwrap_or_default();
                    DestView {
                        dest: d.clone(),
                        active,
                        inactive,
                        persist: 0,
                        stats: de.stats(c),
                        tunnel: None,
                    }
                })
                .collect();
            services.push(ServiceView {
                key: s.key,
                config: s.config.clone(),
                engine: EngineKind::FastPath,
                pe_name: None,
                stats: est.stats(total),
                dests,
            });
        }
        let conns = if with_conns {
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
        Ok(Snapshot {
            conn_tab_size: fp.config().conn_table_size,
            services,
            conns,
            timeouts: fp.timeouts().map_err(|e| e.to_string())?,
        })
    }
}

fn v4((a, p): (Ipv4Addr, u16)) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(a), p)
}

fn op_service(op: &Op) -> Option<ServiceKey> {
    match op {
        Op::AddService(k, _) | Op::EditService(k, _) | Op::AddDest(k, _) | Op::EditDest(k, _) => {
            Some(*k)
        }
        Op::DelService(_) | Op::DelDest(..) | Op::Clear => None,
    }
}
