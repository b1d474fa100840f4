//! The NAT rewrite, written once for both hooks: the context's checksum helpers do the
//! arithmetic (by hand in XDP, through the kernel in tc).
use lb_common::PROTO_UDP;

use crate::ctx::{at, PacketCtx};
use crate::parse::{Pkt, FRAG_LATER, ICMP_CSUM, IPV4_CHECK, IPV4_DADDR, IPV4_SADDR, IPV4_TTL};

/// Which end of the packet is rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Client -> VIP: the destination becomes the real server.
    Dst,
    /// Real server -> client: the source becomes the VIP.
    Src,
}

/// Replaces one end's address and port, fixing the IP and L4 checksums. A later fragment has
/// no L4 header: only its address changes (the datagram's L4 checksum, in the first fragment,
/// was updated there for the address and the port).
#[inline(always)]
pub fn rewrite<C: PacketCtx>(ctx: &mut C, p: &Pkt, side: Side, addr: u32, port: u16) -> Option<()> {
    let (old_addr, old_port, addr_off, port_off) = match side {
        Side::Dst => (p.daddr, p.dport, p.l3_off + IPV4_DADDR, p.l4_off + 2),
        Side::Src => (p.saddr, p.sport, p.l3_off + IPV4_SADDR, p.l4_off),
    };
    if p.frag != FRAG_LATER {
        let udp = p.proto == PROTO_UDP;
        let csum = p.l4_csum_off();
        ctx.l4_csum_replace(csum, old_addr, addr, 4, true, udp)?;
        if old_port != port {
            ctx.l4_csum_replace(csum, old_port as u32, port as u32, 2, false, udp)?;
        }
        ctx.store_u16(port_off, port)?;
    }
    ctx.l3_csum_replace(p.l3_off + IPV4_CHECK, old_addr, addr)?;
    ctx.store_u32(addr_off, addr)
}

/// Translates an ICMP error as ip_vs_nat_icmp does. Toward the client (`Side::Src`: the error
/// is about a packet sent to a real server): the outer source, the embedded destination and
/// destination port become the VIP's. Toward the real server (`Side::Dst`: about a reply): the
/// outer destination, the embedded source and source port become the real server's. The
/// outer and embedded IP checksums and the ICMP checksum follow; the embedded TCP/UDP
/// checksum is left as it is, as IPVS leaves it (the embedded packet is usually cut short, and
/// receivers do not check it).
#[inline(always)]
pub fn rewrite_icmp<C: PacketCtx>(
    ctx: &mut C,
    p: &Pkt,
    side: Side,
    addr: u32,
    port: u16,
) -> Option<()> {
    let (old_outer, outer_off, old_in, in_addr_off, old_port, in_port_off) = match side {
        Side::Src => (
            p.saddr,
            p.l3_off + IPV4_SADDR,
            p.in_daddr,
            p.in_off + IPV4_DADDR,
            p.dport,
            p.in_l4_off + 2,
        ),
        Side::Dst => (
            p.daddr,
            p.l3_off + IPV4_DADDR,
            p.in_saddr,
            p.in_off + IPV4_SADDR,
            p.sport,
            p.in_l4_off,
        ),
    };
    let icmp_csum = p.l4_off + ICMP_CSUM;
    // The embedded address and the embedded IP checksum change together, so their sum (and
    // with it the ICMP checksum) stays the same; the ICMP checksum sees both explicitly all
    // the same, which keeps it exact whatever the embedded checksum held.
    let in_check_off = p.in_off + IPV4_CHECK;
    let old_check: u16 = unsafe { *at::<C, u16>(ctx, in_check_off)? };
    ctx.l3_csum_replace(in_check_off, old_in, addr)?;
    let new_check: u16 = unsafe { *at::<C, u16>(ctx, in_check_off)? };
    ctx.l4_csum_replace(icmp_csum, old_in, addr, 4, false, false)?;
    ctx.l4_csum_replace(
        icmp_csum,
        old_check as u32,
        new_check as u32,
        2,
        false,
        false,
    )?;
    ctx.store_u32(in_addr_off, addr)?;
    if old_port != port {
        ctx.l4_csum_replace(icmp_csum, old_port as u32, port as u32, 2, false, false)?;
        ctx.store_u16(in_port_off, port)?;
    }
    ctx.l3_csum_replace(p.l3_off + IPV4_CHECK, old_outer, addr)?;
    ctx.store_u32(outer_off, addr)
}

/// Sets the TTL of a packet whose TTL is `old` (<= 1) to 2, so the one decrement of the
/// forwarding that follows (the redirect's or the kernel's) sends it on with TTL 1.
#[inline(always)]
pub fn keep_ttl<C: PacketCtx>(ctx: &mut C, p: &Pkt) -> Option<()> {
    let off = p.l3_off + IPV4_TTL;
    // TTL and protocol are one 16-bit word of the header checksum; a zero-extended 32-bit
    // replace adds nothing for the upper half.
    let old: u16 = unsafe { *at::<C, u16>(ctx, off)? };
    let new = u16::from_ne_bytes([2, old.to_ne_bytes()[1]]);
    ctx.l3_csum_replace(p.l3_off + IPV4_CHECK, old as u32, new as u32)?;
    ctx.store_u16(off, new)
}
