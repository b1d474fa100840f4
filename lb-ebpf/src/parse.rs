//! Header layouts and the parse of a packet into what the balancer needs: its family, where
//! each header starts, its flow tuple and flags. Offsets are carried rather than assumed, so
//! IP options (and later VLAN tags, IPv6, ICMP inner headers) fit the same NAT and connection
//! code. Everything is validated before anything is rewritten; what fails gets a `Skip`.
use core::mem::size_of;

use crate::ctx::{at, PacketCtx};

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

/// The first bytes shared by TCP and UDP headers.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ports {
    pub sport: u16,
    pub dport: u16,
}

#[repr(C)]
pub struct TcpHdr {
    pub ports: Ports,
    pub seq: u32,
    pub ack: u32,
    pub doff_res: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg: u16,
}

#[repr(C)]
pub struct UdpHdr {
    pub ports: Ports,
    pub len: u16,
    pub check: u16,
}

pub const ETH_HLEN: usize = size_of::<EthHdr>();
const IPV4_HLEN: usize = size_of::<Ipv4Hdr>();
const TCP_HLEN: usize = size_of::<TcpHdr>();
const UDP_HLEN: usize = size_of::<UdpHdr>();
/// Offsets inside the L4 header.
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
/// Offsets inside the IPv4 header.
pub const IPV4_CHECK: usize = 10;
pub const IPV4_SADDR: usize = 12;
pub const IPV4_DADDR: usize = 16;

pub const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const AF_INET: u8 = 2;

/// A TCP or UDP packet the balancer may act on, with where its headers are.
pub struct Pkt {
    /// AF_INET (IPv6 later).
    pub family: u8,
    pub l3_off: usize,
    pub l4_off: usize,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    /// IP total length, host order (what IPVS counts as bytes).
    pub ip_len: u32,
}

impl Pkt {
    #[inline(always)]
    pub fn l4_csum_off(&self) -> usize {
        self.l4_off
            + if self.proto == lb_common::PROTO_TCP {
                TCP_CSUM
            } else {
                UDP_CSUM
            }
    }
}

/// Why a packet is not for the balancer; each has its own PATH_STATS counter.
pub enum Skip {
    NotIpv4,
    Truncated,
    Malformed,
    Fragment,
    OtherProto,
}

#[inline(always)]
fn load<C: PacketCtx, T: Copy>(ctx: &C, off: usize) -> Result<T, Skip> {
    let p: *const T = at(ctx, off).ok_or(Skip::Truncated)?;
    Ok(unsafe { p.read_unaligned() })
}

#[inline(always)]
pub fn parse<C: PacketCtx>(ctx: &C) -> Result<Pkt, Skip> {
    let eth_proto: u16 = load(ctx, 12)?;
    if eth_proto != ETH_P_IP_BE {
        return Err(Skip::NotIpv4);
    }
    let l3_off = ETH_HLEN;
    let ip: *const Ipv4Hdr = at(ctx, l3_off).ok_or(Skip::Truncated)?;
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    // Options are parsed past (the kernel accepts them); a header below 5 words is malformed.
    let ihl = ((ip.vihl & 0x0f) as usize) * 4;
    if ihl < IPV4_HLEN {
        return Err(Skip::Malformed);
    }
    let tot_len = u16::from_be(ip.tot_len) as usize;
    // The datagram must hold its header and fit the frame (trailing link padding is allowed;
    // a frame shorter than the datagram is truncated, as the kernel's ip_rcv counts it).
    if tot_len < ihl {
        return Err(Skip::Malformed);
    }
    if l3_off + tot_len > ctx.len() {
        return Err(Skip::Truncated);
    }
    // MF set or a fragment offset: fragments are the kernel's (it reassembles).
    if ip.frag_off & 0x3fffu16.to_be() != 0 {
        return Err(Skip::Fragment);
    }
    let proto = ip.proto;
    let (saddr, daddr) = (ip.saddr, ip.daddr);
    let l4_off = l3_off + ihl;
    let l4_len = tot_len - ihl;
    // One bounds check per header: the verifier tracks one packet pointer, not several
    // computed from the same variable offset.
    let (ports, tcp_flags) = match proto {
        lb_common::PROTO_TCP => {
            let th: *const TcpHdr = at(ctx, l4_off).ok_or(Skip::Truncated)?;
            let th = unsafe { &*th };
            let doff = ((th.doff_res >> 4) as usize) * 4;
            if l4_len < TCP_HLEN || doff < TCP_HLEN || doff > l4_len {
                return Err(Skip::Malformed);
            }
            (th.ports, th.flags)
        }
        lb_common::PROTO_UDP => {
            let uh: *const UdpHdr = at(ctx, l4_off).ok_or(Skip::Truncated)?;
            let uh = unsafe { &*uh };
            let ulen = u16::from_be(uh.len) as usize;
            if l4_len < UDP_HLEN || ulen < UDP_HLEN || ulen > l4_len {
                return Err(Skip::Malformed);
            }
            (uh.ports, 0)
        }
        _ => return Err(Skip::OtherProto),
    };
    Ok(Pkt {
        family: AF_INET,
        l3_off,
        l4_off,
        saddr,
        daddr,
        sport: ports.sport,
        dport: ports.dport,
        proto,
        tcp_flags,
        ip_len: tot_len as u32,
    })
}
