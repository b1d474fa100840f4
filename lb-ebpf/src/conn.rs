//! The balancer's decision for one parsed packet: connection lookup first (an existing
//! connection keeps its destination whatever the table now says), else schedule a new one;
//! replies from a real server are matched back to their connection.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use lb_common::{
    path, tcp_state, Config, ConnValue, CONN_F_KERNEL, DestStats, FlowKey, L4Addr, ReplyValue, SvcValue,
    DEST_F_LIVE, NO_DEST, PROTO_TCP, SCHED_SH, SVC_F_SH_PORT, TCP_STATES, UDP_STATE,
};

use crate::maps::{count, BACKENDS, CONFIG, CONNS, DESTS, DEST_STATS, REPLIES, SCHED_SLOTS, SERVICES};
use crate::parse::{Pkt, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// What to do with a packet. A plain struct rather than an enum with data: LLVM fills an
/// enum's unused payload from undefined registers, which the verifier refuses to read.
pub struct Decision {
    pub action: u32,
    pub addr: u32,
    pub port: u16,
    /// The lb_common::path code of what happened (for logging).
    pub why: u32,
}

/// Leave it to the kernel untouched (the reason was counted in PATH_STATS).
pub const PASS: u32 = 0;
/// Client -> VIP: rewrite the destination to the real server.
pub const DNAT: u32 = 1;
/// Real server -> client: rewrite the source back to the VIP.
pub const SNAT: u32 = 2;

impl Decision {
    const fn pass(why: u32) -> Decision {
        Decision {
            action: PASS,
            addr: 0,
            port: 0,
            why,
        }
    }
}

const DIR_INPUT: usize = 0;
const DIR_OUTPUT: usize = 1;

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
fn next_state(proto: u8, dir: usize, flags: u8, state: u8) -> u8 {
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
    match cfg.timeouts_ns.get(state as usize) {
        Some(t) => *t,
        None => 0,
    }
}

#[inline(always)]
fn expired(cfg: &Config, c: &ConnValue, now: u64) -> bool {
    now.wrapping_sub(c.last_seen_ns) > timeout_ns(cfg, c.state)
}

#[inline(always)]
fn account(dest_id: u32, new_conn: bool, inbound: bool, bytes: u32) {
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

#[inline(always)]
pub fn decide(p: &Pkt) -> Decision {
    let vip = L4Addr {
        addr: p.daddr,
        port: p.dport,
        proto: p.proto,
        _pad: 0,
    };
    match SERVICES.get_ptr_mut(&vip) {
        Some(svc) => forward(p, svc),
        None => reply(p),
    }
}

#[inline(always)]
fn forward(p: &Pkt, svc: *mut SvcValue) -> Decision {
    let Some(cfg) = CONFIG.get(0) else {
        return Decision::pass(path::PASS_NOT_VIP);
    };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let key = FlowKey {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        _pad: [0; 3],
    };
    let new_tcp = p.tcp_flags & (TCP_SYN | TCP_RST) == TCP_SYN;

    if let Some(c) = CONNS.get_ptr_mut(&key) {
        let c = unsafe { &mut *c };
        if c.flags & CONN_F_KERNEL != 0 {
            // A flow kernel IPVS held before the takeover stays the kernel's while it lives.
            if !expired(cfg, c, now) {
                c.last_seen_ns = now;
                count(path::PASS_KERNEL_FLOW);
                return Decision::pass(path::PASS_KERNEL_FLOW);
            }
        } else {
            let live = match DESTS.get(c.dest_id) {
                Some(d) => d.gen == c.dest_gen && d.flags & DEST_F_LIVE != 0,
                None => false,
            };
            // conn_reuse_mode=1: a SYN on a connection in TIME_WAIT/CLOSE is a new one (the
            // kernel's is_new_conn looks at the SYN flag alone).
            let reuse = p.proto == PROTO_TCP
                && p.tcp_flags & TCP_SYN != 0
                && (c.state == tcp_state::TIME_WAIT || c.state == tcp_state::CLOSE);
            if !live {
                // expire_nodest_conn=1: the connection is expired; the packet is treated as new.
                count(path::CONN_NODEST);
            } else if expired(cfg, c, now) {
                count(path::CONN_EXPIRED);
            } else if reuse {
                count(path::CONN_REUSED);
            } else {
                c.state = next_state(p.proto, DIR_INPUT, p.tcp_flags, c.state);
                c.last_seen_ns = now;
                account(c.dest_id, false, true, p.ip_len);
                count(path::FWD_ESTABLISHED);
                return Decision {
                    action: DNAT,
                    addr: c.rip,
                    port: c.rport,
                    why: path::FWD_ESTABLISHED,
                };
            }
        }
    }

    // A new connection. TCP schedules only on SYN (tcp_conn_schedule); anything else without a
    // connection goes to the kernel, which may know it (kernel IPVS in mirror mode) or reset it.
    if p.proto == PROTO_TCP && !new_tcp {
        count(path::PASS_TCP_NOT_SYN);
        return Decision::pass(path::PASS_TCP_NOT_SYN);
    }
    let svc = unsafe { &mut *svc };
    let len = svc.table_len;
    let idx = if svc.sched == SCHED_SH {
        let port = if svc.flags & SVC_F_SH_PORT != 0 {
            u16::from_be(p.sport)
        } else {
            0
        };
        lb_common::sh_hash(u32::from_be(p.saddr), port)
    } else {
        // Counted even when the table is empty: a refused wrr pick moves the kernel's state,
        // and userspace replays the count. SeqCst: LLVM 22 miscompiles a Relaxed fetch-add on
        // BPF (see toolchain notes).
        let n = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&mut svc.cursor, 1) };
        if len == 0 {
            0
        } else {
            (n % len as u64) as u32
        }
    };
    if idx >= len {
        count(path::PASS_NO_DEST);
        return Decision::pass(path::PASS_NO_DEST);
    }
    let Some(slot) = SCHED_SLOTS.get(svc.table_off.wrapping_add(idx)) else {
        count(path::PASS_NO_DEST);
        return Decision::pass(path::PASS_NO_DEST);
    };
    let dest_id = slot.dest_id;
    if dest_id == NO_DEST {
        count(path::PASS_NO_DEST);
        return Decision::pass(path::PASS_NO_DEST);
    }
    let Some(dest) = DESTS.get(dest_id) else {
        count(path::PASS_NO_DEST);
        return Decision::pass(path::PASS_NO_DEST);
    };
    let conn = ConnValue {
        dest_id,
        dest_gen: dest.gen,
        rip: dest.addr,
        rport: dest.port,
        state: next_state(p.proto, DIR_INPUT, p.tcp_flags, tcp_state::NONE),
        flags: 0,
        last_seen_ns: now,
    };
    let rkey = FlowKey {
        saddr: dest.addr,
        daddr: p.saddr,
        sport: dest.port,
        dport: p.sport,
        proto: p.proto,
        _pad: [0; 3],
    };
    let rval = ReplyValue {
        vip: p.daddr,
        vport: p.dport,
        _pad: 0,
    };
    if REPLIES.insert(&rkey, &rval, 0).is_err() || CONNS.insert(&key, &conn, 0).is_err() {
        count(path::INSERT_FAILED);
    }
    account(dest_id, true, true, p.ip_len);
    count(path::FWD_NEW);
    Decision {
        action: DNAT,
        addr: dest.addr,
        port: dest.port,
        why: path::FWD_NEW,
    }
}

#[inline(always)]
fn reply(p: &Pkt) -> Decision {
    let src = L4Addr {
        addr: p.saddr,
        port: p.sport,
        proto: p.proto,
        _pad: 0,
    };
    if unsafe { BACKENDS.get(&src) }.is_none() {
        count(path::PASS_NOT_VIP);
        return Decision::pass(path::PASS_NOT_VIP);
    }
    let rkey = FlowKey {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        _pad: [0; 3],
    };
    let Some(r) = (unsafe { REPLIES.get(&rkey) }) else {
        count(path::PASS_NOT_VIP);
        return Decision::pass(path::PASS_NOT_VIP);
    };
    let (vip, vport) = (r.vip, r.vport);
    let fkey = FlowKey {
        saddr: p.daddr,
        daddr: vip,
        sport: p.dport,
        dport: vport,
        proto: p.proto,
        _pad: [0; 3],
    };
    let Some(cfg) = CONFIG.get(0) else {
        return Decision::pass(path::PASS_NOT_VIP);
    };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let Some(c) = CONNS.get_ptr_mut(&fkey) else {
        count(path::REPLY_NO_CONN);
        return Decision::pass(path::REPLY_NO_CONN);
    };
    let c = unsafe { &mut *c };
    // The client's connection may since have been rescheduled elsewhere, or be over.
    if c.rip != p.saddr || c.rport != p.sport || expired(cfg, c, now) {
        count(path::REPLY_NO_CONN);
        return Decision::pass(path::REPLY_NO_CONN);
    }
    c.state = next_state(p.proto, DIR_OUTPUT, p.tcp_flags, c.state);
    c.last_seen_ns = now;
    account(c.dest_id, false, false, p.ip_len);
    count(path::REPLY);
    Decision { action: SNAT, addr: vip, port: vport, why: path::REPLY }
}
