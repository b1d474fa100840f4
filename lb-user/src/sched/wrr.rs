//! wrr (ip_vs_wrr.c): the kernel's mark (cl, cw, mw, di) and the pick sequence it produces.
//!
//! A pick scans the list after `cl` for an available destination with weight >= cw; at the end
//! of the list cw drops by di (back to mw below 1) and the scan restarts at the head. Seen as a
//! walk over "virtual slots" (level cw, list position), that is a cycle: levels mw, mw - di, ...
//! down to the lowest positive one, each scanning the whole list. A destination of weight w is
//! hit once at every level <= w, so one period holds sum(hits(w)) picks (sum(w) / di when the
//! mark is in step with the weights, as on_change keeps it), and the sequence from any state is
//! periodic from its very first pick.

use super::{check_len, position, DestKey, Pick, SchedDest, SchedError};

/// struct ip_vs_wrr_mark. Kept in i64: the kernel's int arithmetic never overflows there.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Mark {
    /// The last picked destination; None is the list head.
    cl: Option<DestKey>,
    /// Current weight: a pick needs weight >= cw.
    cw: i64,
    /// Maximum weight, less (di - 1) so that the last pass runs with cw = 1.
    mw: i64,
    /// Decreasing interval: gcd of the positive weights.
    di: i64,
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Mark {
    /// ip_vs_wrr_init_svc on an empty service: no weights, so di = 1 and mw = cw = 0.
    pub(super) fn new() -> Self {
        Mark {
            cl: None,
            cw: 0,
            mw: 0,
            di: 1,
        }
    }

    #[cfg(test)]
    pub(super) fn parts(&self) -> (Option<DestKey>, i64, i64, i64) {
        (self.cl, self.cw, self.mw, self.di)
    }

    /// ip_vs_wrr_dest_changed: runs on every add, edit and delete.
    pub(super) fn dest_changed(&mut self, list: &[SchedDest]) {
        self.cl = None;
        let g = list
            .iter()
            .map(|d| d.weight as i64)
            .filter(|&w| w > 0)
            .fold(0, gcd);
        self.di = if g > 0 { g } else { 1 };
        let max = list.iter().map(|d| d.weight as i64).max().unwrap_or(0);
        self.mw = max - (self.di - 1);
        if self.cw > self.mw || self.cw == 0 {
            self.cw = self.mw;
        } else if self.di > 1 {
            // Back onto the new level grid (levels are 1 mod di).
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }

    /// The state after a successful pick: cl is the picked destination, cw is unchanged by the
    /// hit itself, so the level the table recorded is the state.
    pub(super) fn picked(&mut self, key: DestKey, cw: u32) {
        self.cl = Some(key);
        self.cw = cw as i64;
    }

    /// The state after a refused pick (no destination available). The kernel's scan, followed
    /// to its end, leaves: mw == 0: nothing changed; from the head: (head, mw); from a
    /// destination with cw <= di: it restarts at mw and stops one full pass later at the same
    /// destination with the lowest level; from a destination with cw > di: (head, mw).
    /// Applying it again changes nothing, so the number of refusals does not matter.
    pub(super) fn refused(&mut self, list: &[SchedDest]) {
        if self.mw <= 0 {
            return;
        }
        let at_dest = self.cl.and_then(|k| position(list, k)).is_some();
        if at_dest && self.cw <= self.di {
            self.cw = self.lowest();
        } else {
            self.cl = None;
            self.cw = self.mw;
        }
    }

    /// Number of levels in the cycle mw, mw - di, ..., down to the last positive one.
    fn levels(&self) -> i64 {
        (self.mw - 1) / self.di + 1
    }

    fn lowest(&self) -> i64 {
        (self.mw - 1) % self.di + 1
    }

    /// How many levels of the cycle a destination of weight `w` passes.
    fn hits(&self, w: i64) -> i64 {
        if w >= self.mw {
            self.levels()
        } else if w < self.lowest() {
            0
        } else {
            (w - self.lowest()) / self.di + 1
        }
    }

    /// The first level the kernel's scan reaches from `c` (dropping by di, wrapping to mw
    /// below 1) at which a weight of `t` qualifies. Skips levels where nothing can be picked, in
    /// one step, so a huge overloaded weight costs nothing.
    fn drop_to(&self, c: i64, t: i64) -> i64 {
        if c <= t {
            return c;
        }
        let n = c - (c - t + self.di - 1) / self.di * self.di;
        if n > 0 {
            return n;
        }
        if self.mw <= t {
            return self.mw;
        }
        self.mw - (self.mw - t + self.di - 1) / self.di * self.di
    }

    /// One period of picks from the current state.
    pub(super) fn table(
        &self,
        list: &[SchedDest],
        max_len: usize,
    ) -> Result<Vec<Pick>, SchedError> {
        if self.mw <= 0 {
            return Ok(Vec::new());
        }
        let mut avail: Vec<i64> = list
            .iter()
            .filter(|d| d.available())
            .map(|d| d.weight as i64)
            .collect();
        avail.sort_unstable();
        let period: u64 = avail.iter().map(|&w| self.hits(w) as u64).sum();
        if period == 0 {
            return Ok(Vec::new());
        }
        check_len(period, max_len)?;
        let period = period as usize;
        let top = *avail.last().expect("period > 0");

        let mut out = Vec::with_capacity(period);
        let mut cw = self.cw;
        // The scan resumes after cl (from the first destination when cl is the head).
        let mut from = self.cl.and_then(|k| position(list, k)).map_or(0, |j| j + 1);
        // Destinations qualifying at level cw, in list order. The set only changes when the
        // number of available weights >= cw does, so it is rebuilt only then.
        let mut elig: Vec<usize> = Vec::new();
        let mut elig_n = usize::MAX;
        loop {
            let n = avail.len() - avail.partition_point(|&w| w < cw);
            if n == 0 {
                cw = self.drop_to(cw, top);
                from = 0;
                continue;
            }
            if n != elig_n {
                elig = (0..list.len())
                    .filter(|&i| list[i].available() && list[i].weight as i64 >= cw)
                    .collect();
                elig_n = n;
            }
            let first = elig.partition_point(|&i| i < from);
            for &i in &elig[first..] {
                out.push(Pick {
                    dest: Some(i),
                    aux: cw as u32,
                });
                if out.len() == period {
                    return Ok(out);
                }
            }
            from = 0;
            cw -= self.di;
            if cw <= 0 {
                cw = self.mw;
            }
        }
    }
}
