//! A fast path loaded for a test, with a table driven through the model like the daemon does.
use std::net::IpAddr;

use std::cell::Cell;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use lb_common::prog_names;
use lb_user::fastpath::{FastPath, FastPathConfig};
use lb_user::model::{Change, Destination, ServiceConfig, ServiceKey, Table};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
const TC_ACT_REDIRECT: i32 = 7;

/// Which of the two balancer programs a test runs packets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
}

thread_local! {
    /// The hook `Lb::new` picks on this test's thread (set by `on_both_hooks!`).
    static HOOK: Cell<Hook> = const { Cell::new(Hook::Xdp) };
}

/// Runs `f` with every `Lb` made on this thread running packets through `hook`.
pub fn with_hook<R>(hook: Hook, f: impl FnOnce() -> R) -> R {
    HOOK.with(|h| h.set(hook));
    f()
}

/// Turns each listed `fn name()` test body into two tests, `name::xdp` and `name::tc`, that run
/// the same case through the XDP and the tc program and expect the same bytes and verdicts.
#[macro_export]
macro_rules! on_both_hooks {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn xdp() {
                    $crate::fixture::with_hook($crate::fixture::Hook::Xdp, super::$name)
                }
                #[test]
                fn tc() {
                    $crate::fixture::with_hook($crate::fixture::Hook::Tc, super::$name)
                }
            }
        )+
    };
}

pub struct Lb {
    pub fp: FastPath,
    pub table: Table,
    pub hook: Hook,
}

/// Small maps: tests run in parallel, each with its own instance.
pub fn small_config(fib_redirect: bool) -> FastPathConfig {
    FastPathConfig {
        max_services: 1024,
        max_dests: 4096,
        sched_slots: 1 << 16,
        conn_table_size: 1 << 14,
        fib_redirect,
        ..Default::default()
    }
}

impl Lb {
    pub fn new(fib_redirect: bool) -> Lb {
        Lb::with_config(small_config(fib_redirect))
    }

    pub fn with_config(config: FastPathConfig) -> Lb {
        Lb {
            fp: FastPath::load(config).expect("load fast path"),
            table: Table::new(),
            hook: HOOK.with(|h| h.get()),
        }
    }

    fn commit(&mut self, ch: Change) {
        self.fp.apply(&[ch]).expect("apply");
    }

    pub fn service(&mut self, key: ServiceKey, config: ServiceConfig) {
        let ch = self.table.add_service(key, config).unwrap();
        self.commit(ch);
    }

    pub fn add(&mut self, key: &ServiceKey, addr: &str, port: u16, weight: u32) {
        let ip: IpAddr = addr.parse().unwrap();
        let ch = self
            .table
            .add_dest(key, Destination::masq(ip, port, weight))
            .unwrap();
        self.commit(ch);
    }

    pub fn weight(&mut self, key: &ServiceKey, addr: &str, port: u16, weight: u32) {
        let ip: IpAddr = addr.parse().unwrap();
        let ch = self
            .table
            .edit_dest(key, Destination::masq(ip, port, weight))
            .unwrap();
        self.commit(ch);
    }

    pub fn del(&mut self, key: &ServiceKey, addr: &str, port: u16) {
        let ch = self
            .table
            .del_dest(key, addr.parse().unwrap(), port)
            .unwrap();
        self.commit(ch);
    }

    /// Runs the balancer once on `frame` at this test's hook: (verdict, output bytes). tc's
    /// verdicts are given in XDP's numbers (TC_ACT_OK is XDP_PASS, TC_ACT_SHOT XDP_DROP,
    /// TC_ACT_REDIRECT XDP_REDIRECT), so one expectation serves both hooks.
    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let ebpf = self.fp.ebpf();
        let len = frame.len();
        let (verdict, size) = match self.hook {
            Hook::Xdp => {
                let prog: &Xdp = ebpf.program(prog_names::XDP).unwrap().try_into().unwrap();
                let r = prog.test_run(opts).expect("test_run");
                (r.return_value, r.data_size_out)
            }
            Hook::Tc => {
                let prog: &SchedClassifier =
                    ebpf.program(prog_names::TC).unwrap().try_into().unwrap();
                let r = prog
                    .test_run(opts)
                    .unwrap_or_else(|e| panic!("tc test_run of a {len}-byte frame: {e:?}"));
                let v = match r.return_value as i32 {
                    TC_ACT_OK => XDP_PASS,
                    TC_ACT_SHOT => XDP_DROP,
                    TC_ACT_REDIRECT => XDP_REDIRECT,
                    other => panic!("unexpected tc verdict {other}"),
                };
                (v, r.data_size_out)
            }
        };
        out.truncate(size as usize);
        (verdict, out)
    }

    pub fn path(&self, i: u32) -> u64 {
        self.fp.path_stats().unwrap()[i as usize]
    }
}
