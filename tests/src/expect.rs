//! Expected scheduler choices, written out independently of lb-user's schedulers.
use std::net::Ipv4Addr;

/// The kernel's sh table, written out independently here: destinations in list order each
/// take `weight` consecutive buckets of 256, cycling.
pub fn sh_expected(list_newest_first: &[(usize, u32)], client: Ipv4Addr) -> String {
    let mut buckets = Vec::with_capacity(256);
    'fill: loop {
        for &(k, w) in list_newest_first {
            for _ in 0..w.max(1) {
                if buckets.len() == 256 {
                    break 'fill;
                }
                buckets.push(k);
            }
        }
    }
    let h = (u32::from(client).wrapping_mul(0x61C8_8647) >> 24) as usize;
    format!("rs{}", buckets[h])
}
