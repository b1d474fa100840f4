//! Reading the connection table back: listings (ipvsadm -c), per-destination active and
//! inactive counts, and reclaiming expired entries.

use std::collections::HashMap as StdHashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use aya::maps::{Array, HashMap, MapData};
use lb_common::{
    map_names as names, tcp_state, ConnValue, DestValue, FlowKey, SockConnValue, SockKey,
    N_TIMEOUTS, PROTO_TCP, UDP_STATE,
};

use super::{engine, FastPath, FastPathError};

/// Bytes one connection takes in the maps: a CONNS entry (16-byte key, 24-byte value) and a
/// REPLIES entry (16 + 8), each with the kernel's hash-element overhead (~48 bytes) and
/// rounding (measured in BENCHMARKS.md section 3: 192 B per connection with both LRU maps).
pub const BYTES_PER_CONN: u64 = 170;

/// The default connection-table size: about 1 % of the node's memory, a power of two
/// between 2^16 and 2^22.
pub fn default_table_size() -> u32 {
    let mem = unsafe {
        libc::sysconf(libc::_SC_PHYS_PAGES) as u64 * libc::sysconf(libc::_SC_PAGESIZE) as u64
    };
    table_size_for_memory(mem)
}

pub fn table_size_for_memory(mem_bytes: u64) -> u32 {
    let want = (mem_bytes / 100 / BYTES_PER_CONN).clamp(1 << 16, 1 << 22);
    // The largest power of two not above it.
    1u32 << (63 - want.leading_zeros())
}

/// What one reclaim pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Expired connections removed (both halves).
    pub expired: usize,
    /// Half-open connections (SYN_RECV, idle over a second) removed because the table was
    /// near full: the kernel's drop_entry defence against SYN floods.
    pub half_open: usize,
    /// Fast-path connections left in CONNS.
    pub entries: usize,
}

/// Half-open connections older than this are dropped when the table is near full.
const HALF_OPEN_GRACE_NS: u64 = 1_000_000_000;

/// One connection of the fast path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnEntry {
    pub proto: u8,
    pub client: (Ipv4Addr, u16),
    pub vip: (Ipv4Addr, u16),
    pub dest: (Ipv4Addr, u16),
    pub dest_id: u32,
    /// tcp_state::* or UDP_STATE.
    pub state: u8,
    /// Time left before the entry expires.
    pub expires_in: Duration,
    /// Its destination is still in the table (not deleted since).
    pub dest_live: bool,
}

impl ConnEntry {
    /// Counted as ActiveConn (kernel: only ESTABLISHED TCP) rather than InActConn.
    pub fn active(&self) -> bool {
        self.proto == PROTO_TCP && self.state == tcp_state::ESTABLISHED
    }
}

/// The kernel's state names (tcp_state_name_table; "UDP" for UDP).
pub fn state_name(state: u8) -> &'static str {
    const TCP: [&str; 11] = [
        "NONE",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "SYNACK",
    ];
    if state == UDP_STATE {
        return "UDP";
    }
    TCP.get(state as usize).copied().unwrap_or("ERR!")
}

/// CLOCK_MONOTONIC_COARSE in ns: the clock bpf_ktime_get_coarse_ns() reads.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn ip(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(be))
}

fn remaining(timeouts: &[u64; N_TIMEOUTS], v: &ConnValue, now: u64) -> Option<Duration> {
    let t = *timeouts.get(v.state as usize)?;
    let idle = now.saturating_sub(v.last_seen_ns);
    (idle <= t).then(|| Duration::from_nanos(t - idle))
}

impl FastPath {
    /// Every connection that has not expired, with its destination's liveness.
    pub fn connections(&self) -> Result<Vec<ConnEntry>, FastPathError> {
        let timeouts = self.timeouts_ns()?;
        let now = now_ns();
        let conns: HashMap<&MapData, FlowKey, ConnValue> =
            engine::typed_ref(self.ebpf(), names::CONNS)?;
        let dests: Array<&MapData, DestValue> = engine::typed_ref(self.ebpf(), names::DESTS)?;
        let dest_live = |v: &ConnValue| {
            dests
                .get(&v.dest_id, 0)
                .map(|d| d.gen == v.dest_gen && d.flags & lb_common::DEST_F_LIVE != 0)
                .unwrap_or(false)
        };
        // (proto, client, vip, connection) of every table, listed alike.
        let entry = |proto: u8, client: (u32, u16), vip: (u32, u16), v: &ConnValue| {
            Some(ConnEntry {
                proto,
                client: (ip(client.0), u16::from_be(client.1)),
                vip: (ip(vip.0), u16::from_be(vip.1)),
                dest: (ip(v.rip), u16::from_be(v.rport)),
                dest_id: v.dest_id,
                state: v.state,
                expires_in: remaining(&timeouts, v, now)?,
                dest_live: dest_live(v),
            })
        };
        let mut out: Vec<ConnEntry> = conns
            .iter()
            .filter_map(|r| r.ok())
            // Flows left to kernel IPVS are listed by kernel IPVS.
            .filter(|(_, v)| v.flags & lb_common::CONN_F_KERNEL == 0)
            .filter_map(|(k, v)| entry(k.proto, (k.saddr, k.sport), (k.daddr, k.dport), &v))
            .collect();
        // The node's own connections, balanced at the socket, are connections like the others.
        let socks: HashMap<&MapData, SockKey, SockConnValue> =
            engine::typed_ref(self.ebpf(), names::SOCK_CONNS)?;
        out.extend(socks.iter().filter_map(|r| r.ok()).filter_map(|(k, s)| {
            entry(
                k.proto,
                (s.client_addr, s.client_port),
                (k.addr, k.port),
                &s.conn,
            )
        }));
        Ok(out)
    }

    /// How many reply entries (REPLIES) exist: one per fast-path connection when forward and
    /// reply state are consistent.
    pub fn reply_entries(&self) -> Result<usize, FastPathError> {
        let replies: HashMap<&MapData, FlowKey, lb_common::ReplyValue> =
            engine::typed_ref(self.ebpf(), names::REPLIES)?;
        Ok(replies.keys().filter(|k| k.is_ok()).count())
    }

    /// (active, inactive) connections per destination id, counting live connections only.
    pub fn conn_counts(&self) -> Result<StdHashMap<u32, (u32, u32)>, FastPathError> {
        let mut m: StdHashMap<u32, (u32, u32)> = StdHashMap::new();
        for c in self.connections()?.into_iter().filter(|c| c.dest_live) {
            let e = m.entry(c.dest_id).or_default();
            if c.active() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        Ok(m)
    }

    /// Marks a flow kernel IPVS already holds (mirror mode takeover): the fast path passes
    /// its packets to the kernel untouched until it has been idle for its timeout, so kernel
    /// IPVS and its conntrack entries keep serving it. `expires_in` is what the kernel reported.
    pub fn import_kernel_flow(
        &mut self,
        proto: u8,
        client: (Ipv4Addr, u16),
        vip: (Ipv4Addr, u16),
        state: u8,
        expires_in: Duration,
    ) -> Result<(), FastPathError> {
        let timeouts = self.timeouts_ns()?;
        let timeout = timeouts.get(state as usize).copied().unwrap_or(0);
        let left = (expires_in.as_nanos() as u64).min(timeout);
        // Back-date the last packet so the entry expires when the kernel's would.
        let last_seen_ns = now_ns().saturating_sub(timeout - left);
        let be = |a: Ipv4Addr| u32::from(a).to_be();
        let k = FlowKey {
            saddr: be(client.0),
            daddr: be(vip.0),
            sport: client.1.to_be(),
            dport: vip.1.to_be(),
            proto,
            _pad: [0; 3],
        };
        let v = ConnValue {
            dest_id: lb_common::NO_DEST,
            dest_gen: 0,
            rip: 0,
            rport: 0,
            state,
            flags: lb_common::CONN_F_KERNEL,
            last_seen_ns,
        };
        let mut conns: HashMap<&mut MapData, FlowKey, ConnValue> =
            engine::typed(self.ebpf_mut(), names::CONNS)?;
        conns
            .insert(k, v, 0)
            .map_err(|e| FastPathError::Map(format!("CONNS: {e}")))
    }

    /// Deletes expired connections (and their reply entries); returns how many went.
    pub fn reclaim_expired(&mut self) -> Result<usize, FastPathError> {
        Ok(self.reclaim(false)?.expired)
    }

    /// Deletes expired connections (and their reply entries), and with `pressure` also
    /// half-open ones (SYN_RECV, idle over a second), as the kernel's drop_entry does under a
    /// SYN flood: an established connection is never removed before it expires.
    pub fn reclaim(&mut self, pressure: bool) -> Result<Reclaimed, FastPathError> {
        let timeouts = self.timeouts_ns()?;
        let now = now_ns();
        let mut entries = 0usize;
        let mut half_open = 0usize;
        let dead: Vec<(FlowKey, ConnValue)> = {
            let conns: HashMap<&MapData, FlowKey, ConnValue> =
                engine::typed_ref(self.ebpf(), names::CONNS)?;
            conns
                .iter()
                .filter_map(|r| r.ok())
                .filter(|(_, v)| {
                    entries += 1;
                    if remaining(&timeouts, v, now).is_none() {
                        return true;
                    }
                    let drop = pressure
                        && v.flags & lb_common::CONN_F_KERNEL == 0
                        && v.state == tcp_state::SYN_RECV
                        && now.saturating_sub(v.last_seen_ns) > HALF_OPEN_GRACE_NS;
                    half_open += drop as usize;
                    drop
                })
                .collect()
        };
        {
            let mut conns: HashMap<&mut MapData, FlowKey, ConnValue> =
                engine::typed(self.ebpf_mut(), names::CONNS)?;
            for (k, _) in &dead {
                let _ = conns.remove(k);
            }
        }
        {
            let mut replies: HashMap<&mut MapData, FlowKey, lb_common::ReplyValue> =
                engine::typed(self.ebpf_mut(), names::REPLIES)?;
            for (k, v) in &dead {
                // A reply entry belongs to this connection only if it still points back at it.
                let rk = FlowKey {
                    saddr: v.rip,
                    daddr: k.saddr,
                    sport: v.rport,
                    dport: k.sport,
                    proto: k.proto,
                    _pad: [0; 3],
                };
                let _ = replies.remove(&rk);
            }
        }
        let sockets = self.reclaim_expired_sockets(&timeouts, now)?;
        Ok(Reclaimed {
            expired: dead.len() - half_open + sockets,
            half_open,
            entries: entries - dead.len(),
        })
    }

    /// Deletes the node's own expired socket-level connections with their reverse entries.
    fn reclaim_expired_sockets(
        &mut self,
        timeouts: &[u64; N_TIMEOUTS],
        now: u64,
    ) -> Result<usize, FastPathError> {
        let dead: Vec<(SockKey, SockConnValue)> = {
            let socks: HashMap<&MapData, SockKey, SockConnValue> =
                engine::typed_ref(self.ebpf(), names::SOCK_CONNS)?;
            socks
                .iter()
                .filter_map(|r| r.ok())
                .filter(|(_, v)| remaining(timeouts, &v.conn, now).is_none())
                .collect()
        };
        {
            let mut socks: HashMap<&mut MapData, SockKey, SockConnValue> =
                engine::typed(self.ebpf_mut(), names::SOCK_CONNS)?;
            for (k, _) in &dead {
                let _ = socks.remove(k);
            }
        }
        let mut rev: HashMap<&mut MapData, SockKey, lb_common::L4Addr> =
            engine::typed(self.ebpf_mut(), names::SOCK_REV)?;
        for (k, v) in &dead {
            let rk = SockKey {
                cookie: k.cookie,
                addr: v.conn.rip,
                port: v.conn.rport,
                proto: k.proto,
                _pad: 0,
            };
            let _ = rev.remove(&rk);
        }
        Ok(dead.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_table_follows_memory_in_powers_of_two() {
        const GIB: u64 = 1 << 30;
        assert_eq!(table_size_for_memory(24 * GIB), 1 << 20);
        assert_eq!(table_size_for_memory(2 * GIB), 1 << 16);
        assert_eq!(table_size_for_memory(8 * GIB), 1 << 18);
        assert_eq!(table_size_for_memory(GIB / 4), 1 << 16);
        assert_eq!(table_size_for_memory(1024 * GIB), 1 << 22);
    }
}
