//! Incremental Internet checksum updates (RFC 1624), for the XDP path which has no skb
//! checksum helpers. Values are taken exactly as loaded from the packet (network byte order
//! read natively): one's complement sums do not depend on byte order as long as every word
//! is read the same way.

/// Folds a 32-bit one's complement accumulator to 16 bits.
#[inline(always)]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Accumulator difference for replacing a 32-bit field `old` with `new`.
#[inline(always)]
pub fn diff32(old: u32, new: u32) -> u32 {
    let o = !old;
    (o & 0xffff) + (o >> 16) + (new & 0xffff) + (new >> 16)
}

/// Accumulator difference for replacing a 16-bit field.
#[inline(always)]
pub fn diff16(old: u16, new: u16) -> u32 {
    (!old) as u32 + new as u32
}

/// Applies an accumulated difference to a stored checksum field.
#[inline(always)]
pub fn apply(csum: u16, diff: u32) -> u16 {
    !fold((!csum) as u32 + fold(diff) as u32)
}
