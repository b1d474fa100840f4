//! Scheduling a new connection: one read of the service's precomputed table (userspace
//! computes the kernel's rr/wrr sequence and sh buckets; see lb-user/src/sched).
use lb_common::{DestValue, SvcValue, NO_DEST, SCHED_SH, SVC_F_SH_PORT};

use crate::maps::{DESTS, SCHED_SLOTS};

/// The destination (id, value) the service's scheduler picks for a client at
/// `saddr`:`sport` (network order), or None when no destination is available.
#[inline(always)]
pub fn pick(svc: &mut SvcValue, saddr: u32, sport: u16) -> Option<(u32, &'static DestValue)> {
    let len = svc.table_len;
    let idx = if svc.sched == SCHED_SH {
        let port = if svc.flags & SVC_F_SH_PORT != 0 {
            u16::from_be(sport)
        } else {
            0
        };
        lb_common::sh_hash(u32::from_be(saddr), port)
    } else {
        // Counted even when the table is empty: a refused wrr pick moves the kernel's state,
        // and userspace replays the count. SeqCst: LLVM 22 miscompiles a Relaxed fetch-add on
        // BPF (see toolchain notes).
        let n = fetch_add(&mut svc.cursor);
        if len == 0 {
            0
        } else {
            (n % len as u64) as u32
        }
    };
    if idx >= len {
        return None;
    }
    let slot = SCHED_SLOTS.get(svc.table_off.wrapping_add(idx))?;
    let dest_id = slot.dest_id;
    if dest_id == NO_DEST {
        return None;
    }
    DESTS.get(dest_id).map(|d| (dest_id, d))
}

/// Atomically adds one to `v` and returns the previous value. SeqCst: LLVM 22 miscompiles a
/// Relaxed fetch-add on BPF (see toolchain notes), and AtomicU64 has no fetch_add there.
#[cfg(target_arch = "bpf")]
#[inline(always)]
fn fetch_add(v: &mut u64) -> u64 {
    use core::intrinsics::{atomic_xadd, AtomicOrdering};
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(v, 1) }
}

/// The host build exists for clippy and rustfmt only; nothing runs it.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
fn fetch_add(v: &mut u64) -> u64 {
    *v += 1;
    *v - 1
}
