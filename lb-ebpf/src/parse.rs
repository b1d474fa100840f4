//! Header layouts and the parse of a packet into what the balancer needs: its family, where
//! each header starts, its flow tuple and flags. Offsets are carried rather than assumed, so
//! a VLAN tag, IP options, fragments and the headers embedded in ICMP errors fit the same NAT
//! and connection code. Everything is validated before anything is rewritten; what fails gets
//! a `Skip`.
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

/// The fixed part of an ICMP header (type, code, checksum, 4 bytes that depend on the type).
#[repr(C)]
pub struct IcmpHdr {
    pub typ: u8,
    pub code: u8,
    pub check: u16,
    pub rest: u32,
}

#[repr(C)]
pub struct UdpHdr {
    pub ports: Ports,
    pub len: u16,
    pub check: u16,
}

pub const ETH_HLEN: usize = size_of::<EthHdr>();
const VLAN_HLEN: usize = 4;
const IPV4_HLEN: usize = size_of::<Ipv4Hdr>();
const TCP_HLEN: usize = size_of::<TcpHdr>();
const UDP_HLEN: usize = size_of::<UdpHdr>();
const ICMP_HLEN: usize = size_of::<IcmpHdr>();
/// Offsets inside the L4 header.
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
pub const ICMP_CSUM: usize = 2;
/// Offsets inside the IPv4 header.
pub const IPV4_TTL: usize = 8;
pub const IPV4_CHECK: usize = 10;
pub const IPV4_SADDR: usize = 12;
pub const IPV4_DADDR: usize = 16;

pub const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
const ETH_P_8021Q_BE: u16 = 0x8100u16.to_be();
const ETH_P_8021AD_BE: u16 = 0x88a8u16.to_be();
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const PROTO_ICMP: u8 = 1;
/// The ICMP errors kernel IPVS translates (ip_vs_in_icmp / ip_vs_out_icmp).
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_SOURCE_QUENCH: u8 = 4;
const ICMP_TIME_EXCEEDED: u8 = 11;

/// IPv4 flags and fragment offset (network order masks).
const IP_MF_BE: u16 = 0x2000u16.to_be();
const IP_OFFSET_BE: u16 = 0x1fffu16.to_be();

pub const AF_INET: u8 = 2;

/// Pkt::frag: not a fragment, the first fragment (MF, offset 0: it has the L4 header), or a
/// later one (no L4 header: its ports come from FRAGS).
pub const FRAG_NONE: u8 = 0;
pub const FRAG_FIRST: u8 = 1;
pub const FRAG_LATER: u8 = 2;

/// A TCP or UDP packet the balancer may act on, or an ICMP error about one, with where its
/// headers are.
pub struct Pkt {
    /// AF_INET (IPv6 later).
    pub family: u8,
    pub l3_off: usize,
    /// The L4 header (ICMP errors: the ICMP header).
    pub l4_off: usize,
    pub saddr: u32,
    pub daddr: u32,
    /// TCP/UDP ports (ICMP errors: the embedded packet's; later fragments: from FRAGS).
    pub sport: u16,
    pub dport: u16,
    /// TCP or UDP (ICMP errors: the embedded packet's protocol).
    pub proto: u8,
    pub tcp_flags: u8,
    /// IP total length, host order (what IPVS counts as bytes).
    pub ip_len: u32,
    pub ttl: u8,
    /// FRAG_NONE, FRAG_FIRST or FRAG_LATER.
    pub frag: u8,
    /// IP identification (network order), which ties fragments together.
    pub ip_id: u16,
    /// An ICMP error whose embedded header is TCP or UDP: `in_*` describe that header.
    pub icmp: bool,
    pub in_off: usize,
    pub in_l4_off: usize,
    pub in_saddr: u32,
    pub in_daddr: u32,
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
    let mut eth_proto: u16 = load(ctx, 12)?;
    let mut l3_off = ETH_HLEN;
    // One 802.1Q (or 802.1ad) tag still in the frame is parsed past: at tc the kernel has
    // usually moved it to skb->vlan_tci already, at XDP it is there when the NIC leaves it.
    if eth_proto == ETH_P_8021Q_BE || eth_proto == ETH_P_8021AD_BE {
        eth_proto = load(ctx, ETH_HLEN + 2)?;
        l3_off = ETH_HLEN + VLAN_HLEN;
    }
    if eth_proto != ETH_P_IP_BE {
        return Err(Skip::NotIpv4);
    }
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
    let frag_off = ip.frag_off;
    let frag = if frag_off & IP_OFFSET_BE != 0 {
        FRAG_LATER
    } else if frag_off & IP_MF_BE != 0 {
        FRAG_FIRST
    } else {
        FRAG_NONE
    };
    let proto = ip.proto;
    let (saddr, daddr, ttl, ip_id) = (ip.saddr, ip.daddr, ip.ttl, ip.id);
    let l4_off = l3_off + ihl;
    let l4_len = tot_len - ihl;
    let mut p = Pkt {
        family: AF_INET,
        l3_off,
        l4_off,
        saddr,
        daddr,
        sport: 0,
        dport: 0,
        proto,
        tcp_flags: 0,
        ip_len: tot_len as u32,
        ttl,
        frag,
        ip_id,
        icmp: false,
        in_off: 0,
        in_l4_off: 0,
        in_saddr: 0,
        in_daddr: 0,
    };
    if frag == FRAG_LATER {
        // No L4 header here: the first fragment's ports are looked up by the caller.
        return match proto {
            lb_common::PROTO_TCP | lb_common::PROTO_UDP => Ok(p),
            PROTO_ICMP => Err(Skip::Fragment),
            _ => Err(Skip::OtherProto),
        };
    }
    // One bounds check per header: the verifier tracks one packet pointer, not several
    // computed from the same variable offset.
    match proto {
        lb_common::PROTO_TCP => {
            // A first fragment must hold the whole TCP header too (RFC 1858).
            if l4_len < TCP_HLEN {
                return Err(Skip::Malformed);
            }
            let th: *const TcpHdr = at(ctx, l4_off).ok_or(Skip::Truncated)?;
            let th = unsafe { &*th };
            let doff = ((th.doff_res >> 4) as usize) * 4;
            if doff < TCP_HLEN || doff > l4_len {
                return Err(Skip::Malformed);
            }
            p.sport = th.ports.sport;
            p.dport = th.ports.dport;
            p.tcp_flags = th.flags;
        }
        lb_common::PROTO_UDP => {
            if l4_len < UDP_HLEN {
                return Err(Skip::Malformed);
            }
            let uh: *const UdpHdr = at(ctx, l4_off).ok_or(Skip::Truncated)?;
            let uh = unsafe { &*uh };
            let ulen = u16::from_be(uh.len) as usize;
            if ulen < UDP_HLEN {
                return Err(Skip::Malformed);
            }
            // The UDP length covers the whole datagram: a first fragment carries only part.
            if frag == FRAG_NONE && ulen > l4_len {
                return Err(Skip::Malformed);
            }
            p.sport = uh.ports.sport;
            p.dport = uh.ports.dport;
        }
        PROTO_ICMP => {
            // ICMP errors come whole (the kernel's IPVS reassembles; here they are left to it).
            if frag != FRAG_NONE {
                return Err(Skip::Fragment);
            }
            parse_icmp_error(ctx, &mut p, l4_len)?;
        }
        _ => return Err(Skip::OtherProto),
    }
    Ok(p)
}

/// An ICMP error and the IP header plus ports it embeds, as ip_vs_in_icmp/ip_vs_out_icmp
/// read them: only destination unreachable, source quench and time exceeded, only about TCP
/// or UDP, and only when the embedded packet is not a later fragment (no ports in it).
#[inline(always)]
fn parse_icmp_error<C: PacketCtx>(ctx: &C, p: &mut Pkt, l4_len: usize) -> Result<(), Skip> {
    let ic: *const IcmpHdr = at(ctx, p.l4_off).ok_or(Skip::Truncated)?;
    let typ = unsafe { (*ic).typ };
    if typ != ICMP_DEST_UNREACH && typ != ICMP_SOURCE_QUENCH && typ != ICMP_TIME_EXCEEDED {
        return Err(Skip::OtherProto);
    }
    let in_off = p.l4_off + ICMP_HLEN;
    let cih: *const Ipv4Hdr = at(ctx, in_off).ok_or(Skip::Truncated)?;
    let cih = unsafe { &*cih };
    if cih.vihl >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    let in_ihl = ((cih.vihl & 0x0f) as usize) * 4;
    if in_ihl < IPV4_HLEN {
        return Err(Skip::Malformed);
    }
    let in_proto = cih.proto;
    if in_proto != lb_common::PROTO_TCP && in_proto != lb_common::PROTO_UDP {
        return Err(Skip::OtherProto);
    }
    if cih.frag_off & IP_OFFSET_BE != 0 {
        return Err(Skip::OtherProto);
    }
    let (in_saddr, in_daddr) = (cih.saddr, cih.daddr);
    // The embedded header and its ports must lie inside the ICMP message.
    if ICMP_HLEN + in_ihl + size_of::<Ports>() > l4_len {
        return Err(Skip::Malformed);
    }
    let in_l4_off = in_off + in_ihl;
    let ports: *const Ports = at(ctx, in_l4_off).ok_or(Skip::Truncated)?;
    let ports = unsafe { *ports };
    p.icmp = true;
    p.proto = in_proto;
    p.sport = ports.sport;
    p.dport = ports.dport;
    p.in_off = in_off;
    p.in_l4_off = in_l4_off;
    p.in_saddr = in_saddr;
    p.in_daddr = in_daddr;
    Ok(())
}
