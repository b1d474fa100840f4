//! The balancer's decision for one parsed packet, and the one driver both hooks run:
//! parse -> service or reply lookup -> connection (existing, or scheduled and created) ->
//! NAT -> forward. Every packet's path is counted here, once.
use aya_ebpf::EbpfContext;
use aya_log_ebpf::{debug, info};
use lb_common::{
    path, tcp_state, Config, FlowKey, FragKey, FragValue, L4Addr, SvcValue, CONN_F_KERNEL,
    PROTO_TCP,
};

use crate::ct::{self, CreateError, DIR_INPUT, DIR_OUTPUT};
use crate::ctx::{PacketCtx, Verdict};
use crate::fwd;
use crate::maps::{count, BACKENDS, CONFIG, FRAGS, SERVICES};
use crate::nat::{self, Side};
use crate::parse::{parse, Pkt, Skip, ETH_HLEN, FRAG_FIRST, FRAG_LATER, TCP_RST, TCP_SYN};
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
    let mut p = match parse(ctx) {
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
    // ICMP errors and later fragments have no TCP/UDP checksum to look at (and are never sent
    // with a partial one).
    if !p.icmp && p.frag != FRAG_LATER && ctx.defer_to_tc(&p) {
        count(path::PASS_CSUM_PARTIAL);
        return ctx.verdict(Verdict::Pass);
    }
    let Some(cfg) = CONFIG.get(0) else {
        return ctx.verdict(Verdict::Pass);
    };
    // A later fragment follows its datagram's first fragment; without one seen, the kernel
    // gets it untouched.
    if p.frag == FRAG_LATER && !frag_follow(&mut p) {
        count(path::PASS_FRAGMENT);
        return ctx.verdict(Verdict::Pass);
    }
    let d = if p.icmp {
        icmp_error(&p, cfg)
    } else {
        decide(&p, cfg)
    };
    count(d.why);
    log_decision(log, &p, &d);
    let side = match d.action {
        DNAT => Side::Dst,
        SNAT => Side::Src,
        DROP => return ctx.verdict(Verdict::Drop),
        _ => return ctx.verdict(Verdict::Pass),
    };
    if p.frag == FRAG_FIRST {
        frag_record(&p);
    }
    let done = if p.icmp {
        nat::rewrite_icmp(ctx, &p, side, d.addr, d.port)
    } else {
        nat::rewrite(ctx, &p, side, d.addr, d.port)
    };
    if done.is_none() {
        return ctx.verdict(Verdict::Pass);
    }
    if p.frag == FRAG_LATER {
        count(path::FWD_FRAGMENT);
    }
    // TTL <= 1 toward a real server: the balancer stands for the VIP, it is not a hop that
    // expires the packet (IPVS forwards from LOCAL_IN without touching the TTL). The kernel's
    // time-exceeded would otherwise name the real server to the client.
    if side == Side::Dst && p.ttl <= 1 {
        if nat::keep_ttl(ctx, &p).is_none() {
            return ctx.verdict(Verdict::Pass);
        }
        count(path::FWD_TTL_KEPT);
    }
    // A frame that still carries a VLAN tag goes to the kernel, which knows the VLAN's device.
    if p.l3_off != ETH_HLEN {
        count(path::TX_PASS);
        return ctx.verdict(Verdict::Pass);
    }
    let tx = fwd::forward(ctx, &p, cfg);
    count(tx.why);
    tx.action
}

#[inline(always)]
fn frag_key(p: &Pkt) -> FragKey {
    FragKey {
        saddr: p.saddr,
        daddr: p.daddr,
        id: p.ip_id,
        proto: p.proto,
        _pad: 0,
    }
}

/// Fills a later fragment's ports (and TCP flags) from its first fragment, if that was seen.
#[inline(always)]
fn frag_follow(p: &mut Pkt) -> bool {
    match unsafe { FRAGS.get(&frag_key(p)) } {
        Some(v) => {
            p.sport = v.sport;
            p.dport = v.dport;
            p.tcp_flags = v.tcp_flags;
            true
        }
        None => false,
    }
}

/// Remembers a balanced first fragment's ports for the rest of its datagram.
#[inline(always)]
fn frag_record(p: &Pkt) {
    let v = FragValue {
        sport: p.sport,
        dport: p.dport,
        tcp_flags: p.tcp_flags,
        _pad: [0; 3],
    };
    let _ = FRAGS.insert(&frag_key(p), &v, 0);
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
    // A reply that expires here is left to the kernel as it came: its time-exceeded goes to
    // the real server, as it would from a kernel IPVS node (ip_forward checks the TTL before
    // IPVS rewrites the reply).
    if p.ttl <= 1 {
        return Decision::pass(path::PASS_TTL_EXPIRED);
    }
    let now = ct::now();
    let (vip, vport, c) =
        match ct::of_reply(cfg, now, p.proto, (p.saddr, p.sport), (p.daddr, p.dport)) {
            Ok(found) => found,
            Err(why) => return Decision::pass(why),
        };
    ct::touch(c, p, DIR_OUTPUT, now);
    ct::account(c.dest_id, false, false, p.ip_len);
    Decision {
        action: SNAT,
        addr: vip,
        port: vport,
        why: path::REPLY,
    }
}

/// An ICMP error about a packet of a connection, looked up with the embedded tuple reversed
/// (ip_vs_out_icmp / ip_vs_in_icmp). The error goes to the embedded packet's source, so the
/// outer destination must be that source.
#[inline(always)]
fn icmp_error(p: &Pkt, cfg: &Config) -> Decision {
    if p.daddr != p.in_saddr {
        return Decision::pass(path::PASS_NOT_VIP);
    }
    let now = ct::now();
    // About a packet sent to a real server (client -> RIP:rport), from the real server or a
    // router on its side: to the client, from the VIP.
    let rs = L4Addr {
        addr: p.in_daddr,
        port: p.dport,
        proto: p.proto,
        _pad: 0,
    };
    if unsafe { BACKENDS.get(&rs) }.is_some() {
        let found = ct::of_reply(
            cfg,
            now,
            p.proto,
            (p.in_daddr, p.dport),
            (p.in_saddr, p.sport),
        );
        if let Ok((vip, vport, c)) = found {
            if p.ttl <= 1 {
                return Decision::pass(path::PASS_TTL_EXPIRED);
            }
            ct::account(c.dest_id, false, false, p.ip_len);
            return Decision {
                action: SNAT,
                addr: vip,
                port: vport,
                why: path::ICMP_TO_CLIENT,
            };
        }
    }
    // About a reply (VIP:vport -> client), from the client or a router on its side: to the
    // real server.
    let vip = L4Addr {
        addr: p.in_saddr,
        port: p.sport,
        proto: p.proto,
        _pad: 0,
    };
    if unsafe { SERVICES.get(&vip) }.is_some() {
        let key = FlowKey {
            saddr: p.in_daddr,
            daddr: p.in_saddr,
            sport: p.dport,
            dport: p.sport,
            proto: p.proto,
            _pad: [0; 3],
        };
        if let Some(c) = ct::lookup(&key) {
            if c.flags & CONN_F_KERNEL == 0 && ct::dest_live(c) && !ct::expired(cfg, c, now) {
                ct::account(c.dest_id, false, true, p.ip_len);
                return Decision {
                    action: DNAT,
                    addr: c.rip,
                    port: c.rport,
                    why: path::ICMP_TO_REAL,
                };
            }
        }
    }
    Decision::pass(path::PASS_NOT_VIP)
}
