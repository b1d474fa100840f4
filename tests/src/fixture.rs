//! A fast path loaded for a test, with a table driven through the model like the daemon does.
use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb_user::fastpath::{FastPath, FastPathConfig};
use lb_user::model::{Change, Destination, ServiceConfig, ServiceKey, Table};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

pub struct Lb {
    pub fp: FastPath,
    pub table: Table,
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

    /// Runs the XDP program once on `frame`: (verdict, output bytes).
    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &Xdp = self
            .fp
            .ebpf()
            .program("xvs_xdp")
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .expect("test_run");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    pub fn path(&self, i: u32) -> u64 {
        self.fp.path_stats().unwrap()[i as usize]
    }
}
