//! Rates as IPVS computes them (ip_vs_est.c): every 2 seconds, the difference of each counter
//! is folded into a moving average with weight 1/4, in fixed point. Readings therefore lag a
//! change by a few seconds, exactly as `ipvsadm --rate` does.
use serde::{Deserialize, Serialize};

use crate::fastpath::Counters;
use crate::snapshot::Stats;

/// The estimator's interval.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Estimator {
    last: Counters,
    cps: i64,
    inpps: i64,
    outpps: i64,
    inbps: i64,
    outbps: i64,
}

fn fold(avg: &mut i64, rate: i64) {
    *avg += (rate - *avg) >> 2;
}

impl Estimator {
    /// Starts from the current counters (no burst of a rate at start).
    pub fn new(now: Counters) -> Self {
        Estimator {
            last: now,
            ..Default::default()
        }
    }

    /// One 2-second tick. Counters that went backwards were zeroed under the estimator: it
    /// starts over from them rather than fold a negative rate.
    pub fn tick(&mut self, now: Counters) {
        let l = &self.last;
        if now.conns < l.conns
            || now.inpkts < l.inpkts
            || now.outpkts < l.outpkts
            || now.inbytes < l.inbytes
            || now.outbytes < l.outbytes
        {
            *self = Estimator::new(now);
            return;
        }
        let d = |n: u64, l: u64| (n - l) as i64;
        // Per second, scaled: packets and connections by 2^10 (<< 9 over 2 s), bytes by 2^5.
        fold(&mut self.cps, d(now.conns, self.last.conns) << 9);
        fold(&mut self.inpps, d(now.inpkts, self.last.inpkts) << 9);
        fold(&mut self.outpps, d(now.outpkts, self.last.outpkts) << 9);
        fold(&mut self.inbps, d(now.inbytes, self.last.inbytes) << 4);
        fold(&mut self.outbps, d(now.outbytes, self.last.outbytes) << 4);
        self.last = now;
    }

    /// Counters with the current rates, as ipvsadm reads them.
    pub fn stats(&self, c: Counters) -> Stats {
        let pk = |v: i64| ((v.max(0) + 0x1ff) >> 10) as u64;
        let by = |v: i64| ((v.max(0) + 0xf) >> 5) as u64;
        Stats {
            conns: c.conns,
            inpkts: c.inpkts,
            outpkts: c.outpkts,
            inbytes: c.inbytes,
            outbytes: c.outbytes,
            cps: pk(self.cps),
            inpps: pk(self.inpps),
            outpps: pk(self.outpps),
            inbps: by(self.inbps),
            outbps: by(self.outbps),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rate_converges_like_the_kernel_estimator() {
        let mut e = Estimator::new(Counters::default());
        let mut c = Counters::default();
        // The average closes a quarter of the gap per tick: 100 ticks leave nothing visible.
        for _ in 0..100 {
            // 100 conns/s, 1000 pkts/s, 1 MB/s in.
            c.conns += 200;
            c.inpkts += 2000;
            c.inbytes += 2_000_000;
            e.tick(c);
        }
        let s = e.stats(c);
        assert_eq!((s.cps, s.inpps, s.inbps), (100, 1000, 1_000_000));
        // One tick after traffic stops the average has moved a quarter of the way down.
        e.tick(c);
        assert_eq!(e.stats(c).cps, 75);
        // Zeroed counters start the estimator over: no negative rate is folded in.
        e.tick(Counters::default());
        assert_eq!(e.stats(Counters::default()).cps, 0);
        let mut c = Counters::default();
        for _ in 0..100 {
            c.conns += 20;
            e.tick(c);
        }
        assert_eq!(e.stats(c).cps, 10);
    }
}
