//! The balancer's decision for one parsed packet, and the one driver both hooks run:
//! parse -> service or reply lookup -> connection (existing, or scheduled and created) ->
//! NAT -> forward. Every packet's path is counted here, once.
use aya_ebpf::EbpfContext;
use aya_log_ebpf::{debug, info};
use lb_common::{path, tcp_state, Config, L4Addr, SvcValue, CONN_F_KERNEL, PROTO_TCP};

use crate::ct::{self, CreateError, DIR_INPUT, DIR_OUTPUT};
use crate::ctx::{PacketCtx, Verdict};
use crate::fwd;
use crate::maps::{count, BACKENDS, CONFIG, REPLIES, SERVICES};
use crate::nat::{self, Side};
use crate::parse::{parse, Pkt, Skip, TCP_RST, TCP_SYN};
use crate::sched;

/// What to do with a packet. A plain struct rather than an enum with data: LLVM fills an
/// enum's unused payload from undefined registers, which the verifier refuses to read.
pub struct Decision {
    pub action: u32,
    pub addr: u32,
    pub port: u16,
    /// The lb_common::path code of what happened.
    pub why: u32,
}

/// Leave it to the kernel untouched.
pub const PASS: u32 = 0;
/// Client -> VIP: rewrite the destination to the real server.
pub const DNAT: u32 = 1;
/// Real server -> client: rewrite the source back to the VIP.
pub const SNAT: u32 = 2;
/// Refuse it (a full connection table).
pub const DROP: u32 = 3;

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

/// Runs the balancer on one packet of either hook and returns the hook's verdict.
#[inline(always)]
pub fn run<C: PacketCtx, E: EbpfContext>(ctx: &mut C, log: &E) -> u32 {
    let p = match parse(ctx) {
        Ok(p) => p,
        Err(skip) => {
            count(match skip {
                Skip::NotIpv4 => path::PASS_NOT_IPV4,
                Skip::Truncated => path::PASS_TRUNCATED,
                Skip::Malformed => path::PASS_MALFORMED,
                Skip::Fragment => path::PASS_FRAGMENT,
                Skip::OtherProto => path::PASS_OTHER_PROTO,
            });
            return ctx.verdict(Verdict::Pass);
        }
    };
    if ctx.defer_to_tc(&p) {
        count(path::PASS_CSUM_PARTIAL);
        return ctx.verdict(Verdict::Pass);
    }
    let Some(cfg) = CONFIG.get(0) else {
        return ctx.verdict(Verdict::Pass);
    };
    let d = decide(&p, cfg);
    count(d.why);
    log_decision(log, &p, &d);
    let side = match d.action {
        DNAT => Side::Dst,
        SNAT => Side::Src,
        DROP => return ctx.verdict(Verdict::Drop),
        _ => return ctx.verdict(Verdict::Pass),
    };
    if nat::rewrite(ctx, &p, side, d.addr, d.port).is_none() {
        return ctx.verdict(Verdict::Pass);
    }
    let tx = fwd::forward(ctx, &p, cfg);
    count(tx.why);
    tx.action
}

/// Logs new connections (debug) and refusals for want of a destination (info) through
/// aya-log. Off unless the loader enabled it: then AYA_LOG_LEVEL is 0 at load, the verifier
/// sees the branch is dead and removes it, and it costs nothing.
#[inline(always)]
fn log_decision<E: EbpfContext>(ctx: &E, p: &Pkt, d: &Decision) {
    if d.why == path::FWD_NEW {
        debug!(
            ctx,
            "new connection proto {} {:i}:{} -> {:i}:{} scheduled to {:i}:{}",
            p.proto,
            u32::from_be(p.saddr),
            u16::from_be(p.sport),
            u32::from_be(p.daddr),
            u16::from_be(p.dport),
            u32::from_be(d.addr),
            u16::from_be(d.port)
        );
    } else if d.why == path::PASS_NO_DEST {
        info!(
            ctx,
            "no destination available for {:i}:{} (proto {}): passed to the kernel",
            u32::from_be(p.daddr),
            u16::from_be(p.dport),
            p.proto
        );
    }
}

#[inline(always)]
pub fn decide(p: &Pkt, cfg: &Config) -> Decision {
    let vip = L4Addr {
        addr: p.daddr,
        port: p.dport,
        proto: p.proto,
        _pad: 0,
    };
    match SERVICES.get_ptr_mut(&vip) {
        Some(svc) => to_service(p, unsafe { &mut *svc }, cfg),
        None => reply(p, cfg),
    }
}

/// A packet to a VIP: its connection's destination, or a new connection.
#[inline(always)]
fn to_service(p: &Pkt, svc: &mut SvcValue, cfg: &Config) -> Decision {
    let now = ct::now();
    let key = ct::client_key(p);
    if let Some(c) = ct::lookup(&key) {
        if c.flags & CONN_F_KERNEL != 0 {
            // A flow kernel IPVS held before the takeover stays the kernel's while it lives.
            if !ct::expired(cfg, c, now) {
                c.last_seen_ns = now;
                return Decision::pass(path::PASS_KERNEL_FLOW);
            }
        } else {
            // conn_reuse_mode=1: a SYN on a connection in TIME_WAIT/CLOSE is a new one (the
            // kernel's is_new_conn looks at the SYN flag alone).
            let reuse = p.proto == PROTO_TCP
                && p.tcp_flags & TCP_SYN != 0
                && (c.state == tcp_state::TIME_WAIT || c.state == tcp_state::CLOSE);
            if !ct::dest_live(c) {
                // expire_nodest_conn=1: the connection is expired; the packet is treated as new.
                count(path::CONN_NODEST);
            } else if ct::expired(cfg, c, now) {
                count(path::CONN_EXPIRED);
            } else if reuse {
                count(path::CONN_REUSED);
            } else {
                ct::touch(c, p, DIR_INPUT, now);
                ct::account(c.dest_id, false, true, p.ip_len);
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
    if p.proto == PROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_RST) != TCP_SYN {
        return Decision::pass(path::PASS_TCP_NOT_SYN);
    }
    let Some((dest_id, dest)) = sched::pick(svc, p.saddr, p.sport) else {
        return Decision::pass(path::PASS_NO_DEST);
    };
    if let Err(CreateError::Full) =
        ct::create(p, &key, dest_id, dest.gen, dest.addr, dest.port, now)
    {
        return Decision {
            action: DROP,
            addr: 0,
            port: 0,
            why: path::DROP_TABLE_FULL,
        };
    }
    ct::account(dest_id, true, true, p.ip_len);
    Decision {
        action: DNAT,
        addr: dest.addr,
        port: dest.port,
        why: path::FWD_NEW,
    }
}

/// A packet from a real server endpoint: a reply of one of its connections, or not ours.
#[inline(always)]
fn reply(p: &Pkt, cfg: &Config) -> Decision {
    let src = L4Addr {
        addr: p.saddr,
        port: p.sport,
        proto: p.proto,
        _pad: 0,
    };
    if unsafe { BACKENDS.get(&src) }.is_none() {
        return Decision::pass(path::PASS_NOT_VIP);
    }
    let rkey = ct::client_key(p);
    let Some(r) = (unsafe { REPLIES.get(&rkey) }) else {
        return Decision::pass(path::PASS_NOT_VIP);
    };
    let (vip, vport) = (r.vip, r.vport);
    let fkey = lb_common::FlowKey {
        saddr: p.daddr,
        daddr: vip,
        sport: p.dport,
        dport: vport,
        proto: p.proto,
        _pad: [0; 3],
    };
    let now = ct::now();
    let Some(c) = ct::lookup(&fkey) else {
        return Decision::pass(path::REPLY_NO_CONN);
    };
    // The client's connection may since have been rescheduled elsewhere, or be over.
    if c.rip != p.saddr || c.rport != p.sport || ct::expired(cfg, c, now) {
        return Decision::pass(path::REPLY_NO_CONN);
    }
    ct::touch(c, p, DIR_OUTPUT, now);
    ct::account(c.dest_id, false, false, p.ip_len);
    Decision {
        action: SNAT,
        addr: vip,
        port: vport,
        why: path::REPLY,
    }
}
