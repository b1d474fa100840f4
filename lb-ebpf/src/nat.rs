//! The NAT rewrite, written once for both hooks: the context's checksum helpers do the
//! arithmetic (by hand in XDP, through the kernel in tc).
use lb_common::PROTO_UDP;

use crate::ctx::PacketCtx;
use crate::parse::{Pkt, IPV4_CHECK, IPV4_DADDR, IPV4_SADDR};

/// Which end of the packet is rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Client -> VIP: the destination becomes the real server.
    Dst,
    /// Real server -> client: the source becomes the VIP.
    Src,
}

/// Replaces one end's address and port, fixing the IP and L4 checksums.
#[inline(always)]
pub fn rewrite<C: PacketCtx>(ctx: &mut C, p: &Pkt, side: Side, addr: u32, port: u16) -> Option<()> {
    let (old_addr, old_port, addr_off, port_off) = match side {
        Side::Dst => (p.daddr, p.dport, p.l3_off + IPV4_DADDR, p.l4_off + 2),
        Side::Src => (p.saddr, p.sport, p.l3_off + IPV4_SADDR, p.l4_off),
    };
    let udp = p.proto == PROTO_UDP;
    let csum = p.l4_csum_off();
    ctx.l4_csum_replace(csum, old_addr, addr, 4, true, udp)?;
    if old_port != port {
        ctx.l4_csum_replace(csum, old_port as u32, port as u32, 2, false, udp)?;
    }
    ctx.l3_csum_replace(p.l3_off + IPV4_CHECK, old_addr, addr)?;
    ctx.store_u32(addr_off, addr)?;
    ctx.store_u16(port_off, port)
}
