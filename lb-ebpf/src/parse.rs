//! Header layouts and the parse of an Ethernet/IPv4/TCP|UDP packet into what the balancer
//! needs. Anything else gets a defined verdict from the caller (see `Parse`).
use core::mem::size_of;

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

/// The first 8 bytes shared by TCP and UDP headers.
#[repr(C)]
pub struct Ports {
    pub sport: u16,
    pub dport: u16,
}

pub const ETH_HLEN: usize = size_of::<EthHdr>();
pub const IP_OFF: usize = ETH_HLEN;
pub const L4_OFF: usize = ETH_HLEN + size_of::<Ipv4Hdr>();
/// Offsets of the L4 checksum fields.
pub const TCP_CSUM_OFF: usize = L4_OFF + 16;
pub const UDP_CSUM_OFF: usize = L4_OFF + 6;
pub const TCP_FLAGS_OFF: usize = L4_OFF + 13;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;

pub const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A TCP or UDP over IPv4 packet the balancer may act on.
pub struct Pkt {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    /// IP total length, host order (what IPVS counts as bytes).
    pub ip_len: u32,
}

/// Why a packet is not for the balancer's parse; each has its own PATH_STATS counter.
pub enum Skip {
    NotIpv4,
    Truncated,
    IpOptions,
    Fragment,
    OtherProto,
}

#[inline(always)]
pub fn ptr_at<T>(data: usize, data_end: usize, off: usize) -> Option<*mut T> {
    if data + off + size_of::<T>() > data_end {
        return None;
    }
    Some((data + off) as *mut T)
}

#[inline(always)]
pub fn parse(data: usize, data_end: usize) -> Result<Pkt, Skip> {
    let eth: *const EthHdr = ptr_at(data, data_end, 0).ok_or(Skip::Truncated)?;
    if unsafe { (*eth).proto } != ETH_P_IP_BE {
        return Err(Skip::NotIpv4);
    }
    let ip: *const Ipv4Hdr = ptr_at(data, data_end, IP_OFF).ok_or(Skip::Truncated)?;
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != 4 {
        return Err(Skip::NotIpv4);
    }
    // Options shift the L4 header; the kernel handles those rare packets. A header length
    // below 5 words is malformed and also left to the kernel, which drops it.
    if ip.vihl & 0x0f != 5 {
        return Err(Skip::IpOptions);
    }
    // MF set or a fragment offset: only the kernel can reassemble.
    if ip.frag_off & 0x3fffu16.to_be() != 0 {
        return Err(Skip::Fragment);
    }
    let proto = ip.proto;
    let hlen = match proto {
        lb_common::PROTO_TCP => TCP_HLEN,
        lb_common::PROTO_UDP => UDP_HLEN,
        _ => return Err(Skip::OtherProto),
    };
    if data + L4_OFF + hlen > data_end {
        return Err(Skip::Truncated);
    }
    let ports: *const Ports = ptr_at(data, data_end, L4_OFF).ok_or(Skip::Truncated)?;
    let tcp_flags = if proto == lb_common::PROTO_TCP {
        let f: *const u8 = ptr_at(data, data_end, TCP_FLAGS_OFF).ok_or(Skip::Truncated)?;
        unsafe { *f }
    } else {
        0
    };
    Ok(Pkt {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: unsafe { (*ports).sport },
        dport: unsafe { (*ports).dport },
        proto,
        tcp_flags,
        ip_len: u16::from_be(ip.tot_len) as u32,
    })
}
