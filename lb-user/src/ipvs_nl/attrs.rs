//! Netlink attribute encoding (with neli's `Nlattr`) and a small, strict decoder for the
//! attributes the kernel sends back.

use neli::{
    genl::{AttrTypeBuilder, Nlattr, NlattrBuilder},
    types::{Buffer, GenlBuffer},
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::consts::{AF_INET, AF_INET6};
use super::error::IpvsError;

/// One attribute as sent: a type and its payload.
pub(crate) type Attr = Nlattr<u16, Buffer>;

fn build(ty: u16, payload: Vec<u8>) -> Result<Attr, IpvsError> {
    NlattrBuilder::default()
        .nla_type(
            AttrTypeBuilder::default()
                .nla_type(ty)
                .build()
                .map_err(|e| IpvsError::Netlink(format!("building attribute {ty}: {e}")))?,
        )
        .nla_payload(Buffer::from(payload))
        .build()
        .map_err(|e| IpvsError::Netlink(format!("building attribute {ty}: {e}")))
}

/// A list of attributes being encoded.
#[derive(Default)]
pub(crate) struct AttrList(Vec<Attr>);

impl AttrList {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(&mut self, ty: u16, payload: Vec<u8>) -> Result<&mut Self, IpvsError> {
        self.0.push(build(ty, payload)?);
        Ok(self)
    }

    pub fn u8(&mut self, ty: u16, v: u8) -> Result<&mut Self, IpvsError> {
        self.bytes(ty, vec![v])
    }

    pub fn u16(&mut self, ty: u16, v: u16) -> Result<&mut Self, IpvsError> {
        self.bytes(ty, v.to_ne_bytes().to_vec())
    }

    pub fn be16(&mut self, ty: u16, v: u16) -> Result<&mut Self, IpvsError> {
        self.bytes(ty, v.to_be_bytes().to_vec())
    }

    pub fn u32(&mut self, ty: u16, v: u32) -> Result<&mut Self, IpvsError> {
        self.bytes(ty, v.to_ne_bytes().to_vec())
    }

    /// A NUL-terminated string.
    pub fn string(&mut self, ty: u16, s: &str) -> Result<&mut Self, IpvsError> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.bytes(ty, b)
    }

    /// An address as `union nf_inet_addr` (16 bytes).
    pub fn inet_addr(&mut self, ty: u16, addr: &IpAddr) -> Result<&mut Self, IpvsError> {
        self.bytes(ty, encode_inet_addr(addr).to_vec())
    }

    /// A nested attribute holding `inner`.
    pub fn nested(&mut self, ty: u16, inner: AttrList) -> Result<&mut Self, IpvsError> {
        let mut nest = build(ty, Vec::new())?;
        for a in &inner.0 {
            nest = nest
                .nest(a)
                .map_err(|e| IpvsError::Netlink(format!("nesting attribute {ty}: {e}")))?;
        }
        self.0.push(nest);
        Ok(self)
    }

    pub fn into_genl(self) -> GenlBuffer<u16, Buffer> {
        self.0.into_iter().collect()
    }
}

/// `union nf_inet_addr`: 16 bytes, IPv4 in the first four (network order), the rest zero.
pub(crate) fn encode_inet_addr(addr: &IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match addr {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b.copy_from_slice(&a.octets()),
    }
    b
}

pub(crate) fn decode_inet_addr(af: u16, b: &[u8]) -> Result<IpAddr, IpvsError> {
    match af {
        AF_INET if b.len() >= 4 => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        AF_INET6 if b.len() >= 16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[..16]);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => Err(IpvsError::Decode(format!(
            "address of family {af} with {} bytes",
            b.len()
        ))),
    }
}

/// Attributes received from the kernel: (type with the flag bits cleared, payload).
#[derive(Debug, Default)]
pub(crate) struct Attrs<'a> {
    items: Vec<(u16, &'a [u8])>,
}

const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = !((1 << 15) | (1 << 14));

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl<'a> Attrs<'a> {
    /// Parses a run of netlink attributes. A truncated attribute is an error.
    pub fn parse(mut b: &'a [u8]) -> Result<Self, IpvsError> {
        let mut items = Vec::new();
        while b.len() >= NLA_HDRLEN {
            let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
            let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
            if len < NLA_HDRLEN || len > b.len() {
                return Err(IpvsError::Decode(format!(
                    "attribute {ty} has length {len}, {} bytes left",
                    b.len()
                )));
            }
            items.push((ty, &b[NLA_HDRLEN..len]));
            b = &b[align4(len).min(b.len())..];
        }
        Ok(Attrs { items })
    }

    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.items.iter().find(|(t, _)| *t == ty).map(|(_, p)| *p)
    }

    pub fn has(&self, ty: u16) -> bool {
        self.get(ty).is_some()
    }

    fn need(&self, ty: u16, what: &str) -> Result<&'a [u8], IpvsError> {
        self.get(ty)
            .ok_or_else(|| IpvsError::Decode(format!("{what} (attribute {ty}) missing")))
    }

    fn fixed<const N: usize>(&self, ty: u16, what: &str) -> Result<[u8; N], IpvsError> {
        let p = self.need(ty, what)?;
        p.get(..N).and_then(|s| s.try_into().ok()).ok_or_else(|| {
            IpvsError::Decode(format!(
                "{what} (attribute {ty}) has {} bytes, want {N}",
                p.len()
            ))
        })
    }

    pub fn u8(&self, ty: u16, what: &str) -> Result<u8, IpvsError> {
        Ok(self.fixed::<1>(ty, what)?[0])
    }

    pub fn u16(&self, ty: u16, what: &str) -> Result<u16, IpvsError> {
        Ok(u16::from_ne_bytes(self.fixed(ty, what)?))
    }

    pub fn be16(&self, ty: u16, what: &str) -> Result<u16, IpvsError> {
        Ok(u16::from_be_bytes(self.fixed(ty, what)?))
    }

    pub fn u32(&self, ty: u16, what: &str) -> Result<u32, IpvsError> {
        Ok(u32::from_ne_bytes(self.fixed(ty, what)?))
    }

    /// An unsigned number sent as u8, u16, u32 or u64 (the kernel's STATS uses u32 for some
    /// counters, STATS64 u64 for all).
    pub fn uint(&self, ty: u16, what: &str) -> Result<u64, IpvsError> {
        let p = self.need(ty, what)?;
        Ok(match p.len() {
            1 => p[0] as u64,
            2 => u16::from_ne_bytes([p[0], p[1]]) as u64,
            4 => u32::from_ne_bytes(p.try_into().unwrap()) as u64,
            8 => u64::from_ne_bytes(p.try_into().unwrap()),
            n => {
                return Err(IpvsError::Decode(format!(
                    "{what} (attribute {ty}) is a number of {n} bytes"
                )))
            }
        })
    }

    /// A string, up to its first NUL.
    pub fn string(&self, ty: u16, what: &str) -> Result<String, IpvsError> {
        let p = self.need(ty, what)?;
        let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
        String::from_utf8(p[..end].to_vec())
            .map_err(|_| IpvsError::Decode(format!("{what} (attribute {ty}) is not UTF-8")))
    }

    pub fn nested(&self, ty: u16, what: &str) -> Result<Attrs<'a>, IpvsError> {
        Attrs::parse(self.need(ty, what)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_padded_and_nested_attributes() {
        // u8 attr 13 (padded to 8), u16 attr 11, nested attr 1 (flag bit set) with a u32 attr 4.
        let mut b = vec![5, 0, 13, 0, 7, 0, 0, 0];
        b.extend_from_slice(&[6, 0, 11, 0, 10, 0, 0, 0]);
        b.extend_from_slice(&[12, 0, 1, 0x80, 8, 0, 4, 0]);
        b.extend_from_slice(&42u32.to_ne_bytes());
        let a = Attrs::parse(&b).unwrap();
        assert_eq!(a.u8(13, "x").unwrap(), 7);
        assert_eq!(a.u16(11, "x").unwrap(), 10);
        assert_eq!(a.nested(1, "x").unwrap().u32(4, "x").unwrap(), 42);
        assert!(a.get(2).is_none());
        assert!(Attrs::parse(&[8, 0, 1, 0, 0]).is_err());
    }

    #[test]
    fn inet_addr_round_trip() {
        for s in ["10.1.2.3", "fd00::1"] {
            let a: IpAddr = s.parse().unwrap();
            let af = if a.is_ipv4() { AF_INET } else { AF_INET6 };
            let b = encode_inet_addr(&a);
            assert_eq!(decode_inet_addr(af, &b).unwrap(), a);
        }
        assert_eq!(
            encode_inet_addr(&"10.1.2.3".parse().unwrap())[..6],
            [10, 1, 2, 3, 0, 0]
        );
    }
}
