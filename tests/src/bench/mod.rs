//! Benchmarks of the fast path (`cargo xtask bench`, binary `xvs-bench`).
//!
//! * [`micro`]: the per-packet cost of the BPF programs (`xvs_xdp` and `xvs_tc`) through
//!   BPF_PROG_TEST_RUN, next to the floor of each hook (a trivial pass-through program of the
//!   same type) measured by the same method in the same rounds.
//! * [`e2e`]: real packets through the balancer's namespace on veth, in turn through the fast
//!   path (XDP native and generic, tc), plain forwarding (the upper bound), iptables rules shaped
//!   like kube-proxy's iptables mode and nftables rules shaped like its nftables mode; with the
//!   senders' offloads off and at their defaults; and the balancer namespace's own clients
//!   (xvs at the socket against the same rules' OUTPUT DNAT and a direct connection).
//!
//! Every measurement checks that its packets were really processed the intended way (path
//! counters, verdicts, rewritten headers, delivery to the right sockets) and fails the run
//! otherwise. [`report`] writes the JSON of every figure and BENCHMARKS.md, [`plot`] the SVG
//! plots.
pub mod e2e;
pub mod frame;
pub mod micro;
pub mod plot;
pub mod report;
pub mod rules;
pub mod stats;
pub mod sys;
pub mod traffic;

/// A failed measurement or setup step: the run stops with this message.
pub type BenchResult<T> = Result<T, String>;

/// `?` for anything displayable, with context.
pub trait Ctx<T> {
    fn ctx(self, what: &str) -> BenchResult<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> BenchResult<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Fails the run with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}
