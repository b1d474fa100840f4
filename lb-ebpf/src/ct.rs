//! Connection tracking: lookup, expiry, the kernel's TCP state machine, and creation of a
//! connection's two entries (CONNS as the client sends, REPLIES as the server answers), with
//! the first rolled back when the second cannot be made. Both maps are plain hashes, not
//! LRUs: a full table refuses new connections and never evicts a live one (userspace
//! reclaims expired entries, both halves together).
use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use lb_common::{
    path, tcp_state, Config, ConnValue, DestStats, FlowKey, ReplyValue, DEST_F_LIVE, PROTO_TCP,
    TCP_STATES, UDP_STATE,
};

use crate::maps::{CONNS, DESTS, DEST_STATS, REPLIES};
use crate::parse::{Pkt, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

pub const DIR_INPUT: usize = 0;
pub const DIR_OUTPUT: usize = 1;

#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The kernel's tcp_state_idx: rst, then syn, then fin, then ack; None leaves the state.
#[inline(always)]
fn tcp_event(flags: u8) -> Option<usize> {
    if flags & TCP_RST != 0 {
        Some(3)
    } else if flags & TCP_SYN != 0 {
        Some(0)
    } else if flags & TCP_FIN != 0 {
        Some(1)
    } else if flags & TCP_ACK != 0 {
        Some(2)
    } else {
        None
    }
}

#[inline(always)]
pub fn next_state(proto: u8, dir: usize, flags: u8, state: u8) -> u8 {
    if proto != PROTO_TCP {
        return UDP_STATE;
    }
    match tcp_event(flags) {
        // set_tcp_state: a segment with none of the flags moves the connection to CLOSE.
        None => tcp_state::CLOSE,
        Some(ev) => match TCP_STATES[dir & 1][ev & 3].get(state as usize) {
            Some(s) => *s,
            None => tcp_state::CLOSE,
        },
    }
}

#[inline(always)]
fn timeout_ns(cfg: &Config, state: u8) -> u64 {
    // Masked, not only bounds-checked: older verifiers (Linux 6.1) lose the bound of a
    // compared index once LLVM reorders the check, and refuse the program. Every state is
    // below N_TIMEOUTS (16, a power of two), so the mask changes nothing.
    const _: () = assert!(lb_common::N_TIMEOUTS.is_power_of_two());
    match cfg
        .timeouts_ns
        .get(state as usize & (lb_common::N_TIMEOUTS - 1))
    {
        Some(t) => *t,
        None => 0,
    }
}

#[inline(always)]
pub fn expired(cfg: &Config, c: &ConnValue, now: u64) -> bool {
    now.wrapping_sub(c.last_seen_ns) > timeout_ns(cfg, c.state)
}

/// Whether the connection's destination is still the one it was made with and in the table.
#[inline(always)]
pub fn dest_live(c: &ConnValue) -> bool {
    match DESTS.get(c.dest_id) {
        Some(d) => d.gen == c.dest_gen && d.flags & DEST_F_LIVE != 0,
        None => false,
    }
}

/// The client's key of a packet (as the client sends it).
#[inline(always)]
pub fn client_key(p: &Pkt) -> FlowKey {
    FlowKey {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        _pad: [0; 3],
    }
}

#[inline(always)]
pub fn lookup(key: &FlowKey) -> Option<&'static mut ConnValue> {
    CONNS.get_ptr_mut(key).map(|c| unsafe { &mut *c })
}

/// The REPLIES key of a connection: as the real server (`rs`) answers the client.
#[inline(always)]
fn reply_key(proto: u8, rs: (u32, u16), client: (u32, u16)) -> FlowKey {
    FlowKey {
        saddr: rs.0,
        daddr: client.0,
        sport: rs.1,
        dport: client.1,
        proto,
        _pad: [0; 3],
    }
}

/// The live connection that real server `rs` and `client` (addresses and ports as in
/// packets) belong to, with its VIP and port: REPLIES names the VIP, CONNS holds the
/// connection, which must still go to that real server and not have expired. Err: the path
/// code of what is missing (no reply entry: not ours; no live connection: REPLY_NO_CONN).
#[inline(always)]
pub fn of_reply(
    cfg: &Config,
    now: u64,
    proto: u8,
    rs: (u32, u16),
    client: (u32, u16),
) -> Result<(u32, u16, &'static mut ConnValue), u32> {
    let Some(r) = (unsafe { REPLIES.get(&reply_key(proto, rs, client)) }) else {
        return Err(path::PASS_NOT_VIP);
    };
    let (vip, vport) = (r.vip, r.vport);
    let fkey = FlowKey {
        saddr: client.0,
        daddr: vip,
        sport: client.1,
        dport: vport,
        proto,
        _pad: [0; 3],
    };
    let Some(c) = lookup(&fkey) else {
        return Err(path::REPLY_NO_CONN);
    };
    // The client's connection may since have been rescheduled elsewhere, or be over.
    if c.rip != rs.0 || c.rport != rs.1 || expired(cfg, c, now) {
        return Err(path::REPLY_NO_CONN);
    }
    Ok((vip, vport, c))
}

/// Moves an existing connection on by one packet in direction `dir`.
#[inline(always)]
pub fn touch(c: &mut ConnValue, p: &Pkt, dir: usize, now: u64) {
    c.state = next_state(p.proto, dir, p.tcp_flags, c.state);
    c.last_seen_ns = now;
}

/// Why a connection could not be created.
pub enum CreateError {
    /// The table is full (or the kernel refused the entry): nothing was left behind.
    Full,
}

/// Creates the connection of `p` to (rip, rport) with both entries, or neither.
#[inline(always)]
pub fn create(
    p: &Pkt,
    key: &FlowKey,
    dest_id: u32,
    dest_gen: u32,
    rip: u32,
    rport: u16,
    now: u64,
) -> Result<(), CreateError> {
    let conn = ConnValue {
        dest_id,
        dest_gen,
        rip,
        rport,
        state: next_state(p.proto, DIR_INPUT, p.tcp_flags, tcp_state::NONE),
        flags: 0,
        last_seen_ns: now,
    };
    let rkey = reply_key(p.proto, (rip, rport), (p.saddr, p.sport));
    let rval = ReplyValue {
        vip: p.daddr,
        vport: p.dport,
        _pad: 0,
    };
    if REPLIES.insert(&rkey, &rval, 0).is_err() {
        return Err(CreateError::Full);
    }
    if CONNS.insert(key, &conn, 0).is_err() {
        // Roll back the half made: forward and reply state stay consistent.
        let _ = REPLIES.remove(&rkey);
        return Err(CreateError::Full);
    }
    Ok(())
}

/// Counts a packet (and a new connection) on its destination, as IPVS's ip_vs_in_stats /
/// ip_vs_out_stats / ip_vs_conn_stats do.
#[inline(always)]
pub fn account(dest_id: u32, new_conn: bool, inbound: bool, bytes: u32) {
    if let Some(s) = DEST_STATS.get_ptr_mut(dest_id) {
        // Per-CPU slot: plain adds are safe.
        let s: &mut DestStats = unsafe { &mut *s };
        if new_conn {
            s.conns += 1;
        }
        if inbound {
            s.inpkts += 1;
            s.inbytes += bytes as u64;
        } else {
            s.outpkts += 1;
            s.outbytes += bytes as u64;
        }
    }
}

/// Counts a new connection on its destination without a packet (socket-level balancing: the
/// socket talks to the real server directly, its packets never pass the balancer).
#[inline(always)]
pub fn account_conn(dest_id: u32) {
    if let Some(s) = DEST_STATS.get_ptr_mut(dest_id) {
        unsafe { (*s).conns += 1 };
    }
}
