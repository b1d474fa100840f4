//! XDP: rewrite in place with incremental checksums, then forward by a FIB lookup and a
//! devmap redirect where userspace allowed it, else hand the packet to the kernel stack.
use core::mem::size_of;

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action},
    helpers::generated::bpf_fib_lookup,
    programs::XdpContext,
};
use lb_common::{path, CFG_F_FIB_REDIRECT, PROTO_TCP};

use aya_log_ebpf::{debug, info};

use crate::conn::{decide, Decision, DNAT, PASS};
use crate::csum;
use crate::maps::{count, CONFIG, TX_PORTS};
use crate::parse::{parse, ptr_at, EthHdr, Ipv4Hdr, Pkt, Ports, Skip, IP_OFF, L4_OFF, TCP_CSUM_OFF, UDP_CSUM_OFF};

const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
const AF_INET: u8 = 2;

pub fn run(ctx: &XdpContext) -> u32 {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let p = match parse(data, data_end) {
        Ok(p) => p,
        Err(skip) => {
            count(match skip {
                Skip::NotIpv4 => path::PASS_NOT_IPV4,
                Skip::Truncated => path::PASS_TRUNCATED,
                Skip::IpOptions => path::PASS_IP_OPTIONS,
                Skip::Fragment => path::PASS_FRAGMENT,
                Skip::OtherProto => path::PASS_OTHER_PROTO,
            });
            return xdp_action::XDP_PASS;
        }
    };
    let d = decide(&p);
    log_decision(ctx, &p, &d);
    if d.action == PASS {
        return xdp_action::XDP_PASS;
    }
    if rewrite(data, data_end, p.proto, d.action == DNAT, d.addr, d.port).is_none() {
        return xdp_action::XDP_PASS;
    }
    forward(ctx, data, data_end)
}

/// Logs new connections (debug) and refusals for want of a destination (info) through
/// aya-log. Off unless the loader enabled it: then AYA_LOG_LEVEL is 0 at load, the verifier
/// sees the branch is dead and removes it, and it costs nothing.
#[inline(always)]
fn log_decision(ctx: &XdpContext, p: &Pkt, d: &Decision) {
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

/// Replaces the destination (or source) address and port, fixing the IP and L4 checksums.
#[inline(always)]
fn rewrite(data: usize, data_end: usize, proto: u8, is_dst: bool, addr: u32, port: u16) -> Option<()> {
    let ip: *mut Ipv4Hdr = ptr_at(data, data_end, IP_OFF)?;
    let ports: *mut Ports = ptr_at(data, data_end, L4_OFF)?;
    let (ip, ports) = unsafe { (&mut *ip, &mut *ports) };
    let (old_addr, old_port) = if is_dst {
        (ip.daddr, ports.dport)
    } else {
        (ip.saddr, ports.sport)
    };
    let addr_diff = csum::diff32(old_addr, addr);
    let l4_diff = addr_diff + csum::diff16(old_port, port);
    if proto == PROTO_TCP {
        let c: *mut u16 = ptr_at(data, data_end, TCP_CSUM_OFF)?;
        unsafe { *c = csum::apply(*c, l4_diff) };
    } else {
        let c: *mut u16 = ptr_at(data, data_end, UDP_CSUM_OFF)?;
        let old = unsafe { *c };
        // UDP checksum 0 means "none" and stays so; a computed 0 is sent as 0xffff.
        if old != 0 {
            let new = csum::apply(old, l4_diff);
            unsafe { *c = if new == 0 { 0xffff } else { new } };
        }
    }
    ip.check = csum::apply(ip.check, addr_diff);
    if is_dst {
        ip.daddr = addr;
        ports.dport = port;
    } else {
        ip.saddr = addr;
        ports.sport = port;
    }
    Some(())
}

/// Sends the rewritten packet straight out of the egress interface when the FIB knows the
/// next hop and userspace listed that interface in TX_PORTS; otherwise XDP_PASS, and the
/// kernel routes it (needs ip_forward on the balancer).
#[inline(always)]
fn forward(ctx: &XdpContext, data: usize, data_end: usize) -> u32 {
    let fib_on = match CONFIG.get(0) {
        Some(c) => c.flags & CFG_F_FIB_REDIRECT != 0,
        None => false,
    };
    if !fib_on {
        count(path::TX_PASS);
        return xdp_action::XDP_PASS;
    }
    let (Some(eth), Some(ip)) = (
        ptr_at::<EthHdr>(data, data_end, 0),
        ptr_at::<Ipv4Hdr>(data, data_end, IP_OFF),
    ) else {
        return xdp_action::XDP_PASS;
    };
    let (eth, ip) = unsafe { (&mut *eth, &mut *ip) };
    // TTL 1 would expire here: the kernel sends the ICMP time-exceeded.
    if ip.ttl <= 1 {
        count(path::TX_PASS);
        return xdp_action::XDP_PASS;
    }
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = ip.proto;
    params.__bindgen_anon_1.tot_len = u16::from_be(ip.tot_len);
    params.__bindgen_anon_2.tos = ip.tos;
    params.__bindgen_anon_3.ipv4_src = ip.saddr;
    params.__bindgen_anon_4.ipv4_dst = ip.daddr;
    params.ifindex = ctx.ingress_ifindex() as u32;
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            &mut params,
            size_of::<FibParams>() as i32,
            0,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS || TX_PORTS.get(params.ifindex).is_none() {
        count(path::TX_PASS);
        return xdp_action::XDP_PASS;
    }
    // Forwarding: decrement TTL (checksum +0x0100 in network order per RFC 1624).
    ip.ttl -= 1;
    ip.check = csum::apply(ip.check, csum::diff16(0x0100u16.to_be() , 0));
    eth.dst = params.dmac;
    eth.src = params.smac;
    count(path::TX_REDIRECT);
    match TX_PORTS.redirect(params.ifindex, 0) {
        Ok(a) | Err(a) => a,
    }
}
