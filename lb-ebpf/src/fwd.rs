//! Forwarding a rewritten packet: the next hop from the FIB, then a redirect out of the
//! egress interface where the hook allows it; otherwise up the stack, which routes it.
use aya_ebpf::bindings::bpf_fib_lookup as FibParams;
use lb_common::{path, Config, NeighKey, CFG_F_FIB_REDIRECT};

use crate::csum;
use crate::ctx::{at, PacketCtx, Verdict, FIB_NO_NEIGH, FIB_SUCCESS};
use crate::maps::NEIGH_WANTED;
use crate::parse::{EthHdr, Ipv4Hdr, Pkt};

/// What forwarding did (counted once by the caller) and the hook's return code.
pub struct Tx {
    pub why: u32,
    pub action: u32,
}

#[inline(always)]
fn pass<C: PacketCtx>(ctx: &C) -> Tx {
    Tx {
        why: path::TX_PASS,
        action: ctx.verdict(Verdict::Pass),
    }
}

#[inline(always)]
pub fn forward<C: PacketCtx>(ctx: &mut C, p: &Pkt, cfg: &Config) -> Tx {
    if cfg.flags & CFG_F_FIB_REDIRECT == 0 {
        return pass(ctx);
    }
    let (Some(eth), Some(ip)) = (at::<C, EthHdr>(ctx, 0), at::<C, Ipv4Hdr>(ctx, p.l3_off)) else {
        return pass(ctx);
    };
    let (eth, ip) = unsafe { (&mut *eth, &mut *ip) };
    // TTL 1 would expire here: the kernel sends the ICMP time-exceeded.
    if ip.ttl <= 1 {
        return pass(ctx);
    }
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = p.family;
    params.l4_protocol = ip.proto;
    params.__bindgen_anon_1.tot_len = u16::from_be(ip.tot_len);
    params.__bindgen_anon_2.tos = ip.tos;
    params.__bindgen_anon_3.ipv4_src = ip.saddr;
    params.__bindgen_anon_4.ipv4_dst = ip.daddr;
    params.ifindex = ctx.ifindex();
    let rc = ctx.fib_lookup(&mut params);
    if rc != FIB_SUCCESS && rc != FIB_NO_NEIGH {
        return pass(ctx);
    }
    let ifindex = params.ifindex;
    if rc == FIB_NO_NEIGH {
        // No neighbour entry yet: tc lets the kernel resolve it (a reply never depends on an
        // entry nothing resolves); XDP cannot, and leaves the packet to the stack.
        if !ctx.can_redirect_neigh() {
            // XDP: ask the daemon to have it resolved (NEIGH_WANTED), so the next packet
            // finds it; this one goes to the stack.
            let key = NeighKey {
                ifindex,
                addr: unsafe { params.__bindgen_anon_4.ipv4_dst },
            };
            if unsafe { NEIGH_WANTED.get(&key) }.is_none() {
                let _ = NEIGH_WANTED.insert(&key, &crate::ct::now(), 0);
            }
            return pass(ctx);
        }
        decrement_ttl(ip);
        return Tx {
            why: path::TX_REDIRECT_NEIGH,
            action: ctx.redirect_neigh(ifindex),
        };
    }
    if !ctx.can_redirect(ifindex) {
        return pass(ctx);
    }
    decrement_ttl(ip);
    eth.dst = params.dmac;
    eth.src = params.smac;
    Tx {
        why: path::TX_REDIRECT,
        action: ctx.redirect(ifindex),
    }
}

/// Forwarding decrements the TTL (checksum +0x0100 in network order, RFC 1624).
#[inline(always)]
fn decrement_ttl(ip: &mut Ipv4Hdr) {
    ip.ttl -= 1;
    ip.check = csum::apply(ip.check, csum::diff16(0x0100u16.to_be(), 0));
}
