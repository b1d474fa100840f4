//! Allocators for the fast path's shared arrays: regions of SCHED_SLOTS (one per service
//! table) and destination ids (indexes of DESTS / DEST_STATS).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// First-fit allocator of contiguous regions in an array of `size` slots, coalescing on free.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegionAlloc {
    /// start -> length of each free run.
    free: BTreeMap<u32, u32>,
}

impl RegionAlloc {
    pub fn new(size: u32) -> Self {
        let mut free = BTreeMap::new();
        if size > 0 {
            free.insert(0, size);
        }
        RegionAlloc { free }
    }

    pub fn alloc(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return Some(0);
        }
        let (&start, &run) = self.free.iter().find(|(_, &run)| run >= len)?;
        self.free.remove(&start);
        if run > len {
            self.free.insert(start + len, run - len);
        }
        Some(start)
    }

    pub fn free(&mut self, start: u32, len: u32) {
        if len == 0 {
            return;
        }
        let (mut start, mut len) = (start, len);
        if let Some((&prev, &plen)) = self.free.range(..start).next_back() {
            if prev + plen == start {
                self.free.remove(&prev);
                start = prev;
                len += plen;
            }
        }
        if let Some(&nlen) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += nlen;
        }
        self.free.insert(start, len);
    }

    /// Marks a region as used (when adopting maps a previous daemon wrote).
    pub fn reserve(&mut self, start: u32, len: u32) -> bool {
        if len == 0 {
            return true;
        }
        let Some((&fs, &flen)) = self.free.range(..=start).next_back() else {
            return false;
        };
        if fs + flen < start + len {
            return false;
        }
        self.free.remove(&fs);
        if start > fs {
            self.free.insert(fs, start - fs);
        }
        if fs + flen > start + len {
            self.free.insert(start + len, fs + flen - start - len);
        }
        true
    }

    pub fn free_slots(&self) -> u64 {
        self.free.values().map(|&l| l as u64).sum()
    }
}

/// Freed ids left to rest before reuse. Once this many rest, the one freed first is handed out
/// again rather than a new one: the highest id (and everything sized by it: the counter
/// reading of every estimator tick, the daemon's estimators, the generations) then stays
/// within this many of the most ids ever in use at once, however many were created and
/// deleted. Handing out new ids until the limit instead made the daemon's memory and its
/// every-2-s reading grow with each destination ever created, up to --max-dests (~80 MB).
pub const REST_IDS: usize = 4096;

/// Destination ids. Freed ids are reused last-in-line (FIFO) once REST_IDS of them rest, so an
/// id rests through thousands of others' deletions before it names another destination; its
/// generation is bumped on reuse anyway.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdAlloc {
    next: u32,
    max: u32,
    free: VecDeque<u32>,
}

impl IdAlloc {
    pub fn new(max: u32) -> Self {
        IdAlloc {
            next: 0,
            max,
            free: VecDeque::new(),
        }
    }

    pub fn alloc(&mut self) -> Option<u32> {
        if self.free.len() >= REST_IDS || self.next >= self.max {
            if let Some(id) = self.free.pop_front() {
                return Some(id);
            }
        }
        if self.next < self.max {
            self.next += 1;
            return Some(self.next - 1);
        }
        None
    }

    pub fn free(&mut self, id: u32) {
        self.free.push_back(id);
    }

    /// One past the highest id ever handed out: every live id is below it.
    pub fn high_water(&self) -> u32 {
        self.next
    }

    /// How many ids are handed out and not freed.
    pub fn in_use(&self) -> u32 {
        self.next - self.free.len() as u32
    }

    /// Marks an id as used (adoption).
    pub fn reserve(&mut self, id: u32) {
        while self.next <= id && self.next < self.max {
            self.free.push_back(self.next);
            self.next += 1;
        }
        self.free.retain(|&f| f != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_use_count_allocations_minus_frees() {
        let mut a = IdAlloc::new(4);
        let ids: Vec<u32> = (0..4).map(|_| a.alloc().unwrap()).collect();
        assert_eq!((a.in_use(), a.high_water()), (4, 4));
        a.free(ids[1]);
        a.free(ids[2]);
        assert_eq!(a.in_use(), 2);
        assert_eq!(a.alloc(), Some(ids[1]));
        assert_eq!((a.in_use(), a.high_water()), (3, 4));
        let mut b = IdAlloc::new(10);
        b.reserve(5);
        assert_eq!((b.in_use(), b.high_water()), (1, 6));
    }

    #[test]
    fn regions_coalesce_and_refill() {
        let mut a = RegionAlloc::new(100);
        let x = a.alloc(30).unwrap();
        let y = a.alloc(30).unwrap();
        let z = a.alloc(40).unwrap();
        assert_eq!((x, y, z), (0, 30, 60));
        assert_eq!(a.alloc(1), None);
        a.free(y, 30);
        a.free(x, 30);
        assert_eq!(a.alloc(60), Some(0));
        a.free(0, 60);
        a.free(60, 40);
        assert_eq!(a.free_slots(), 100);
        assert_eq!(a.alloc(100), Some(0));
    }

    #[test]
    fn reserve_splits_a_free_run() {
        let mut a = RegionAlloc::new(100);
        assert!(a.reserve(10, 5));
        assert!(!a.reserve(12, 5));
        assert_eq!(a.alloc(10), Some(0));
        assert_eq!(a.alloc(10), Some(15));
    }

    /// Creating and deleting destinations for ever keeps the ids (and so everything sized by
    /// the highest) within REST_IDS of the most in use at once.
    #[test]
    fn churn_keeps_the_highest_id_bounded() {
        let mut ids = IdAlloc::new(1 << 19);
        let live: Vec<u32> = (0..100).map(|_| ids.alloc().unwrap()).collect();
        for _ in 0..100_000 {
            let a = ids.alloc().unwrap();
            let b = ids.alloc().unwrap();
            ids.free(a);
            ids.free(b);
        }
        assert_eq!(ids.in_use(), live.len() as u32);
        assert!(
            ids.high_water() as usize <= live.len() + REST_IDS + 2,
            "{}",
            ids.high_water()
        );
        // Freed ids rest: the next one handed out is the one freed longest ago.
        let first_freed = 100;
        let mut fresh = IdAlloc::new(1 << 19);
        for _ in 0..REST_IDS + 100 {
            fresh.alloc();
        }
        for id in 100..100 + REST_IDS as u32 {
            fresh.free(id);
        }
        assert_eq!(fresh.alloc(), Some(first_freed));
    }

    #[test]
    fn ids_are_reused_last() {
        let mut ids = IdAlloc::new(3);
        assert_eq!(
            (ids.alloc(), ids.alloc(), ids.alloc()),
            (Some(0), Some(1), Some(2))
        );
        assert_eq!(ids.alloc(), None);
        ids.free(1);
        ids.free(0);
        assert_eq!(ids.alloc(), Some(1));
        assert_eq!(ids.alloc(), Some(0));
    }
}
