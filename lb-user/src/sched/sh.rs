//! sh (ip_vs_sh.c): 256 buckets filled from the list by weight; a client's bucket is a hash of
//! its address (and source port with sh-port).
//!
//! With sh-fallback the kernel probes `hashkey(addr, port, (offset + ihash) % 256)` for offset
//! 0..256, and `hashkey(.., roffset) = (roffset + ihash) & 255`, so the probe visits buckets
//! `2 * ihash + offset` (mod 256): a sequence fixed by the primary bucket ihash alone. So each
//! table entry holds the final answer for its bucket, fallback included, and the BPF side does a
//! single lookup.

use std::net::IpAddr;

use super::{check_len, Pick, SchedDest, SchedError};

const TAB_SIZE: usize = lb_common::SH_TAB_SIZE as usize;

/// The kernel's sh bucket for a client (before fallback). `port`: the client's source port in
/// host order when sh-port is set, else 0. IPv6 addresses are folded to 32 bits by XOR of their
/// four words, as the kernel does.
pub fn sh_bucket(client: IpAddr, port: u16) -> usize {
    let folded = match client {
        IpAddr::V4(a) => u32::from(a),
        // The kernel XORs the big-endian words and then takes ntohl; byte order commutes
        // with XOR, so XOR of the host-order words is the same number.
        IpAddr::V6(a) => a
            .octets()
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .fold(0, |x, w| x ^ w),
    };
    lb_common::sh_hash(folded, port) as usize & (TAB_SIZE - 1)
}

/// ip_vs_sh_reassign: walk the list, each destination taking `weight` consecutive buckets (at
/// least one: the count is checked after the assignment), wrapping until all are filled.
fn fill(list: &[SchedDest]) -> Vec<Option<usize>> {
    if list.is_empty() {
        return vec![None; TAB_SIZE];
    }
    let mut buckets = Vec::with_capacity(TAB_SIZE);
    let (mut i, mut count) = (0, 0u64);
    for _ in 0..TAB_SIZE {
        buckets.push(Some(i));
        count += 1;
        if count >= list[i].weight as u64 {
            i = (i + 1) % list.len();
            count = 0;
        }
    }
    buckets
}

/// The 256 entries, each the kernel's final answer for a client hashing to that bucket.
pub(super) fn table(
    list: &[SchedDest],
    fallback: bool,
    max_len: usize,
) -> Result<Vec<Pick>, SchedError> {
    check_len(TAB_SIZE as u64, max_len)?;
    let buckets = fill(list);
    let usable: Vec<Option<usize>> = buckets
        .iter()
        .map(|b| b.filter(|&i| list[i].available()))
        .collect();
    // first_usable[s]: the first usable bucket at or after s, cyclically (what a probe
    // starting at s finds), so resolving all 256 fallbacks costs two passes, not 256 each.
    let mut first_usable = vec![None; TAB_SIZE];
    let mut next = None;
    for s in (0..2 * TAB_SIZE).rev() {
        let s = s % TAB_SIZE;
        if usable[s].is_some() {
            next = usable[s];
        }
        first_usable[s] = next;
    }
    let entry = |ihash: usize| -> Option<usize> {
        buckets[ihash]?;
        if usable[ihash].is_some() || !fallback {
            return usable[ihash];
        }
        // ip_vs_sh_get_fallback: an empty bucket ends the probe, which only happens with an
        // empty list (handled above); otherwise the first usable bucket on the probe wins.
        first_usable[(2 * ihash) % TAB_SIZE]
    };
    Ok((0..TAB_SIZE)
        .map(|b| Pick {
            dest: entry(b),
            aux: 0,
        })
        .collect())
}
