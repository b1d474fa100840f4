//! Ethernet/IPv4/TCP|UDP frames written into a reusable buffer, with full checksums computed
//! from scratch (the generators build millions of them; `packet::Pkt` allocates per frame).
use crate::packet::{fold, ones_sum, TCP, UDP};

pub const ETH_LEN: usize = 14;
pub const IP_LEN: usize = 20;

/// What a frame carries. Addresses are host-order u32.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub proto: u8,
    pub saddr: u32,
    pub sport: u16,
    pub daddr: u32,
    pub dport: u16,
}

/// Frame fields beyond the flow.
#[derive(Clone, Copy, Debug)]
pub struct FrameOpts {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub tcp_flags: u8,
    pub payload_len: usize,
}

impl Default for FrameOpts {
    fn default() -> Self {
        FrameOpts {
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            tcp_flags: 0,
            payload_len: 10,
        }
    }
}

/// Writes the frame into `buf` (cleared first).
pub fn write(buf: &mut Vec<u8>, f: &Flow, o: &FrameOpts) {
    let l4_hdr = if f.proto == TCP { 20 } else { 8 };
    let l4_len = l4_hdr + o.payload_len;
    let total = ETH_LEN + IP_LEN + l4_len;
    buf.clear();
    buf.resize(total, 0);
    buf[0..6].copy_from_slice(&o.dst_mac);
    buf[6..12].copy_from_slice(&o.src_mac);
    buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    {
        let ip = &mut buf[ETH_LEN..ETH_LEN + IP_LEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((IP_LEN + l4_len) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = f.proto;
        ip[12..16].copy_from_slice(&f.saddr.to_be_bytes());
        ip[16..20].copy_from_slice(&f.daddr.to_be_bytes());
        let c = !fold(ones_sum(ip));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let l4 = &mut buf[ETH_LEN + IP_LEN..];
    l4[0..2].copy_from_slice(&f.sport.to_be_bytes());
    l4[2..4].copy_from_slice(&f.dport.to_be_bytes());
    for (i, b) in l4[l4_hdr..].iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    if f.proto == TCP {
        l4[4..8].copy_from_slice(&1000u32.to_be_bytes());
        l4[8..12].copy_from_slice(&2000u32.to_be_bytes());
        l4[12] = 5 << 4;
        l4[13] = o.tcp_flags;
        l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
    } else {
        l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    }
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&f.saddr.to_be_bytes());
    pseudo[4..8].copy_from_slice(&f.daddr.to_be_bytes());
    pseudo[9] = f.proto;
    pseudo[10..12].copy_from_slice(&(l4_len as u16).to_be_bytes());
    let mut c = !fold(ones_sum(&pseudo) + ones_sum(l4));
    if f.proto == UDP && c == 0 {
        c = 0xffff;
    }
    let off = if f.proto == TCP { 16 } else { 6 };
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

/// (saddr, sport, daddr, dport) of a frame, host order.
pub fn read_flow(frame: &[u8]) -> Option<(u32, u16, u32, u16)> {
    if frame.len() < ETH_LEN + IP_LEN + 4 {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    let l4 = &frame[ETH_LEN + IP_LEN..];
    Some((
        u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]),
        u16::from_be_bytes([l4[0], l4[1]]),
        u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{verify_checksums, Pkt, ACK};

    #[test]
    fn frames_match_the_independent_builder() {
        let mut buf = Vec::new();
        let f = Flow {
            proto: TCP,
            saddr: 0x0a09_0002,
            sport: 40000,
            daddr: 0x0a00_0064,
            dport: 80,
        };
        let o = FrameOpts {
            tcp_flags: ACK,
            payload_len: 9,
            ..Default::default()
        };
        write(&mut buf, &f, &o);
        verify_checksums(&buf).unwrap();
        let mut p = Pkt::tcp(("10.9.0.2", 40000), ("10.0.0.100", 80), ACK);
        p.payload = b"abcdefghi".to_vec();
        assert_eq!(buf, p.build());
        let u = Flow { proto: UDP, ..f };
        write(&mut buf, &u, &FrameOpts::default());
        verify_checksums(&buf).unwrap();
        assert_eq!(read_flow(&buf), Some((0x0a09_0002, 40000, 0x0a00_0064, 80)));
    }
}
