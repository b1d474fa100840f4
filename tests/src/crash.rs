//! Killing xvsd (SIGKILL) in the middle of large table changes, with real traffic flowing
//! through the balancer: what the crash test and the soak (`cargo xtask soak`) share.
//!
//! Every trial restores a batch of services with `xvsadm -R` (deleting the previous batch's
//! and adding as many new ones), kills the daemon at a random moment, checks the packet path
//! while it is dead (the pinned SERVICES map holds the old batch or the new one, never a part),
//! restarts it and compares `xvsadm -S -n` with the last acknowledged table. A long TCP
//! connection and a UDP flow go through the balancer all along and must never fail.
use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lb_user::daemon::rules;
use lb_user::model::{Service, ServiceKey, Table};

use crate::daemon::{bin, Daemon, DaemonDirs, Teardown};
use crate::netns::Topology;
use crate::servers::{serve, Conn, Server};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

/// The table the traffic uses; the batches come and go beside it.
pub const BASE_RULES: &str = "\
-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r 10.11.1.2:8080 -m -w 1
-a -t 10.0.0.100:80 -r 10.11.2.2:8080 -m -w 1
-a -t 10.0.0.100:80 -r 10.11.3.2:8080 -m -w 1
-A -u 10.0.0.100:53 -s rr
-a -u 10.0.0.100:53 -r 10.11.1.2:8080 -m -w 1
-a -u 10.0.0.100:53 -r 10.11.2.2:8080 -m -w 1
-a -u 10.0.0.100:53 -r 10.11.3.2:8080 -m -w 1
";

/// A small deterministic generator (xorshift64*), seeded per run and printed, so a failing
/// sequence of kill points can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn from_env() -> (Rng, u64) {
        let seed = std::env::var("XVS_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        (Rng::new(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// A VIP of batch `b`'s service `i` (batches alternate between two /16s).
pub fn batch_vip(b: usize, i: usize) -> Ipv4Addr {
    let i = i as u32;
    Ipv4Addr::new(
        10,
        100 + (b % 2) as u8,
        (i / 250) as u8,
        (i % 250 + 1) as u8,
    )
}

/// The restore text of batch `b`: `n` rr services of two destinations each, after deleting
/// the `prev_n` services of batch `b - 1`.
pub fn batch_text(b: usize, n: usize, prev_n: usize) -> String {
    let mut s = String::with_capacity((n + prev_n) * 120);
    if b > 0 {
        for i in 0..prev_n {
            s.push_str(&format!("-D -t {}:80\n", batch_vip(b - 1, i)));
        }
    }
    for i in 0..n {
        let v = batch_vip(b, i);
        s.push_str(&format!("-A -t {v}:80 -s rr\n"));
        for k in [i % 3 + 1, (i + 1) % 3 + 1] {
            s.push_str(&format!("-a -t {v}:80 -r 10.11.{k}.2:8080 -m -w 1\n"));
        }
    }
    s
}

/// The table after `text` is restored onto `t`.
pub fn restored(t: &Table, text: &str) -> Table {
    let mut t = t.clone();
    for op in rules::parse_ops(text).expect("batch parses") {
        t.apply_op(&op.op).expect("batch applies");
    }
    t
}

/// Services the soak's churn changes one at a time (10.200.0.0/16), beside the batches.
pub fn is_churn(k: &ServiceKey) -> bool {
    matches!(k, ServiceKey::Inet { addr: std::net::IpAddr::V4(a), .. } if a.octets()[..2] == [10, 200])
}

/// A table without the churn's services (what the batch trials compare).
pub fn without_churn(t: &Table) -> Table {
    let mut out = t.clone();
    for s in t.services().iter().filter(|s| is_churn(&s.key)) {
        out.restore_service(&s.key, None);
    }
    out
}

/// Services sorted by key, destinations by address: tables compare by content (the order of
/// services carries no meaning, and `-S` lists destinations in the order that restores them).
pub fn sorted(t: &Table) -> Vec<Service> {
    let mut v = t.services().to_vec();
    v.sort_by_key(|s| s.key);
    for s in &mut v {
        s.dests.sort_by_key(|d| d.id());
    }
    v
}

/// The daemon's sizes for batches of up to `n` services (a batch replaces `n` by `n`, so both
/// are there while it is checked).
pub fn limits_for(n: usize) -> Vec<String> {
    let svcs = ((2 * n + 16) as u32).next_power_of_two();
    [
        ("--max-services", svcs),
        ("--max-dests", (4 * svcs).max(4096)),
        ("--sched-slots", (8 * svcs).max(1 << 16)),
        ("--conn-table-size", 1 << 16),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect()
}

/// Traffic that must survive every crash: one long TCP connection and one UDP flow (a fixed
/// client port), each answered by the same backend all along.
pub struct Flows {
    stop: Arc<AtomicBool>,
    pub tcp_ok: Arc<AtomicU64>,
    pub udp_ok: Arc<AtomicU64>,
    pub failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Flows {
    pub fn start(topo: &Topology) -> Flows {
        let stop = Arc::new(AtomicBool::new(false));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let tcp_ok = Arc::new(AtomicU64::new(0));
        let udp_ok = Arc::new(AtomicU64::new(0));
        let mut conn = Conn::open(&topo.client, None, SocketAddrV4::new(VIP, 80))
            .expect("long TCP connection opens");
        let first = conn.ask().expect("long TCP connection answers");
        let udp = topo
            .client
            .enter(|| UdpSocket::bind(("10.10.0.2", 40053)))
            .unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let vip53 = SocketAddrV4::new(VIP, 53);
        let mut buf = [0u8; 64];
        udp.send_to(b"hi\n", vip53).unwrap();
        let (n, _) = udp.recv_from(&mut buf).expect("UDP flow answers");
        let ufirst = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        let mut threads = Vec::new();
        {
            let (stop, ok, fails) = (stop.clone(), tcp_ok.clone(), failures.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match conn.ask() {
                        Ok(a) if a == first => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(a) => {
                            fails.lock().unwrap().push(format!(
                                "TCP: the long connection moved from {first} to {a:?}"
                            ));
                            return;
                        }
                        Err(e) => {
                            fails
                                .lock()
                                .unwrap()
                                .push(format!("TCP: the long connection broke: {e}"));
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }));
        }
        {
            let (stop, ok, fails) = (stop.clone(), udp_ok.clone(), failures.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::SeqCst) {
                    let r = udp
                        .send_to(b"hi\n", vip53)
                        .and_then(|_| udp.recv_from(&mut buf));
                    match r {
                        Ok((n, _)) => {
                            let a = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                            if a == ufirst {
                                ok.fetch_add(1, Ordering::SeqCst);
                            } else {
                                fails
                                    .lock()
                                    .unwrap()
                                    .push(format!("UDP: the flow moved from {ufirst} to {a:?}"));
                                return;
                            }
                        }
                        Err(e) => {
                            fails
                                .lock()
                                .unwrap()
                                .push(format!("UDP: no answer within 3 s: {e}"));
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }));
        }
        Flows {
            stop,
            tcp_ok,
            udp_ok,
            failures,
            threads,
        }
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    /// Waits until both flows answered again (after a restart), up to `within`.
    pub fn flowing(&self, within: Duration) -> bool {
        let (t0, u0) = (
            self.tcp_ok.load(Ordering::SeqCst),
            self.udp_ok.load(Ordering::SeqCst),
        );
        let start = Instant::now();
        while start.elapsed() < within {
            if self.tcp_ok.load(Ordering::SeqCst) > t0 && self.udp_ok.load(Ordering::SeqCst) > u0 {
                return true;
            }
            if !self.failures().is_empty() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.failures()
    }
}

impl Drop for Flows {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub const PHASE_UP: u8 = 0;
pub const PHASE_DEAD: u8 = 1;
pub const PHASE_STARTING: u8 = 2;

pub fn phase_name(p: u8) -> &'static str {
    match p {
        PHASE_UP => "xvsd up",
        PHASE_DEAD => "xvsd dead",
        _ => "xvsd starting",
    }
}

/// A balancer namespace with three backends, a daemon sized for batches of `n` services, the
/// base table and its traffic.
pub struct Rig {
    /// What the daemon is doing, for failure reports: PHASE_*.
    pub phase: Arc<std::sync::atomic::AtomicU8>,
    pub topo: Topology,
    _servers: Vec<Server>,
    pub dirs: DaemonDirs,
    pub daemon: Option<Daemon>,
    args: Vec<String>,
    pub log: PathBuf,
    _cleanup: Teardown,
}

impl Rig {
    pub fn new(tag: &str, n: usize) -> Rig {
        Rig::with_conn_table(tag, n, 1 << 16)
    }

    pub fn with_conn_table(tag: &str, n: usize, conns: u32) -> Rig {
        let topo = Topology::new(tag, 3);
        let servers: Vec<Server> = (0..3)
            .map(|i| serve(&topo.backends[i], 8080, &format!("rs{}", i + 1)))
            .collect();
        let mut dirs = DaemonDirs::new(tag);
        let mut sizes = limits_for(n);
        *sizes.last_mut().unwrap() = conns.to_string();
        dirs.sizes = Some(sizes);
        let cleanup = Teardown(dirs.clone());
        std::fs::create_dir_all(&dirs.state_dir).unwrap();
        let mut args: Vec<String> = topo
            .lb_ifaces()
            .into_iter()
            .flat_map(|i| ["--iface".to_string(), i])
            .collect();
        args.extend(["--mode".into(), "generic".into()]);
        let log = dirs.state_dir.join("xvsd.log");
        let mut rig = Rig {
            phase: Arc::default(),
            topo,
            _servers: servers,
            dirs,
            daemon: None,
            args,
            log,
            _cleanup: cleanup,
        };
        rig.start();
        let out = rig.xvsadm(&["-R"], Some(BASE_RULES));
        assert!(out.status.success(), "base table: {out:?}");
        rig
    }

    /// Starts xvsd; its log is appended to `self.log`.
    pub fn start(&mut self) {
        self.start_env(&[]);
    }

    /// The same with environment variables for the daemon (XVSD_TEST_ABORT).
    pub fn start_env(&mut self, env: &[(&str, &str)]) {
        self.phase.store(PHASE_STARTING, Ordering::SeqCst);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let a: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.daemon = Some(Daemon::start_env(
            &self.topo.lb,
            &self.dirs,
            &a,
            Stdio::from(log),
            env,
        ));
        self.phase.store(PHASE_UP, Ordering::SeqCst);
    }

    /// More daemon arguments for the next `start`.
    pub fn add_args(&mut self, a: &[&str]) {
        self.args.extend(a.iter().map(|s| s.to_string()));
    }

    /// Waits for a daemon that dies by itself (XVSD_TEST_ABORT), up to 10 s.
    pub fn wait_dead(&mut self) -> bool {
        let Some(d) = self.daemon.as_ref() else {
            return true;
        };
        let pid = d.pid() as i32;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            let mut st = 0;
            // SAFETY: waitpid on our own child.
            if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid {
                // Reaped here: the Daemon's Drop must not kill a reused pid.
                std::mem::forget(self.daemon.take());
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill9(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.signal(libc::SIGKILL);
            drop(d);
        }
        self.phase.store(PHASE_DEAD, Ordering::SeqCst);
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|d| d.pid())
    }

    pub fn xvsadm(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.spawn_xvsadm(args, stdin.is_some());
        if let Some(s) = stdin {
            let mut i = c.stdin.take().unwrap();
            i.write_all(s.as_bytes()).unwrap();
        }
        c.wait_with_output().unwrap()
    }

    pub fn spawn_xvsadm(&self, args: &[&str], with_stdin: bool) -> Child {
        Command::new(bin("xvsadm"))
            .args(args)
            .env("XVSADM_SOCKET", self.dirs.socket())
            .stdin(if with_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `xvsadm -S -n`, parsed.
    pub fn saved(&self) -> Table {
        let out = self.xvsadm(&["-S", "-n"], None);
        assert!(out.status.success(), "xvsadm -S -n: {out:?}");
        rules::parse(&String::from_utf8_lossy(&out.stdout)).expect("-S -n output parses")
    }

    /// Entries of the pinned SERVICES map: what the packet path serves right now.
    pub fn pinned_services(&self) -> usize {
        pinned_count(&self.dirs.pin_dir.join("SERVICES"))
    }

    /// The pinned SERVICES keys, without the churn's.
    pub fn pinned_batch_keys(&self) -> BTreeSet<(u8, Ipv4Addr, u16)> {
        pinned_keys(&self.dirs.pin_dir.join("SERVICES"))
            .into_iter()
            .filter(|(_, a, _)| a.octets()[..2] != [10, 200])
            .collect()
    }

    pub fn tail_log(&self) -> String {
        let l = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = l.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Entries of a pinned hash map (keys walked with BPF_MAP_GET_NEXT_KEY).
pub fn pinned_count(path: &Path) -> usize {
    pinned_keys(path).len()
}

/// The services (proto, address, port) of a pinned SERVICES map.
pub fn pinned_keys(path: &Path) -> BTreeSet<(u8, Ipv4Addr, u16)> {
    use aya::maps::{HashMap, Map, MapData};
    use lb_common::{L4Addr, SvcValue};
    let Ok(md) = MapData::from_pin(path) else {
        return BTreeSet::new();
    };
    let m: HashMap<MapData, L4Addr, SvcValue> =
        HashMap::try_from(Map::HashMap(md)).expect("SERVICES is a hash map");
    // Entries of removed services between a batch's switch and their deletion schedule
    // nothing: they are not served.
    m.iter()
        .filter_map(|kv| kv.ok())
        .filter(|(_, v)| v.svc_id != lb_user::fastpath::engine::SVC_ID_REMOVED)
        .map(|(k, _)| {
            (
                k.proto,
                Ipv4Addr::from(u32::from_be(k.addr)),
                u16::from_be(k.port),
            )
        })
        .collect()
}

/// The same for a table (every service of these tests is a fast-path one).
pub fn table_keys(t: &Table) -> BTreeSet<(u8, Ipv4Addr, u16)> {
    t.services()
        .iter()
        .filter_map(|s| match s.key {
            ServiceKey::Inet {
                proto,
                addr: std::net::IpAddr::V4(a),
                port,
            } => Some((proto.number(), a, port)),
            _ => None,
        })
        .collect()
}

/// The resident set of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// What one trial saw.
#[derive(Clone, Debug, Default)]
pub struct Trial {
    pub kill_after: Duration,
    /// xvsadm -R exited 0 before the kill: the batch must be there after the restart.
    pub acked: bool,
    /// The batch was there after the restart although xvsadm got no answer (killed between
    /// the journal's fsync and the reply).
    pub committed_unacked: bool,
    /// SERVICES counts seen while the daemon was dead.
    pub dead_counts: Vec<usize>,
    /// While dead, the packet path served the new batch (switched; acknowledged or not).
    pub dead_saw_new: bool,
    pub restart: Duration,
    pub errors: Vec<String>,
}

/// State carried from trial to trial.
pub struct Trials {
    pub n: usize,
    pub batch: usize,
    /// The last acknowledged table (as the restarted daemon must list it).
    pub table: Table,
    /// Services in the current batch.
    pub prev_n: usize,
    /// How long an unkilled batch takes (the kill points are drawn up to a bit beyond it).
    pub batch_time: Duration,
}

impl Trials {
    /// Loads the first two batches without a kill: the first fills the table, the second
    /// (deleting the first's services and adding as many) measures how long a trial's batch
    /// takes.
    pub fn new(rig: &Rig, n: usize) -> Trials {
        let mut table = without_churn(&rig.saved());
        let mut batch_time = Duration::ZERO;
        for b in 0..2 {
            let text = batch_text(b, n, n);
            let t0 = Instant::now();
            let out = rig.xvsadm(&["-R"], Some(&text));
            batch_time = t0.elapsed();
            assert!(out.status.success(), "batch {b}: {out:?}");
            table = restored(&table, &text);
            assert!(
                sorted(&without_churn(&rig.saved())) == sorted(&table),
                "batch {b} listed wrong"
            );
        }
        Trials {
            n,
            batch: 1,
            table,
            prev_n: n,
            batch_time,
        }
    }

    /// One trial: the next batch, SIGKILL at a random point, checks while dead, restart,
    /// checks after.
    pub fn run(&mut self, rig: &mut Rig, rng: &mut Rng) -> Trial {
        let mut tr = Trial::default();
        let b = self.batch + 1;
        let text = batch_text(b, self.n, self.prev_n);
        let new = restored(&self.table, &text);
        let (old_count, new_count) = (self.table.services().len(), new.services().len());
        let (old_keys, new_keys) = (table_keys(&self.table), table_keys(&new));
        let before = rig.pinned_batch_keys().len();
        if before != old_count {
            tr.errors.push(format!(
                "before the batch the packet path serves {before} services, the table has {old_count}"
            ));
        }
        // Half the kills anywhere in the batch (and a bit beyond), half in its last part,
        // where the switch, the journal's fsync and the reply happen.
        let t = self.batch_time.as_micros() as u64;
        tr.kill_after = Duration::from_micros(if rng.below(2) == 0 {
            rng.below(t * 12 / 10 + 1)
        } else {
            t * 7 / 10 + rng.below(t * 4 / 10 + 1)
        });
        let mut child = rig.spawn_xvsadm(&["-R"], true);
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
        std::thread::sleep(tr.kill_after);
        rig.kill9();
        let _ = writer.join();
        let out = child.wait_with_output().unwrap();
        tr.acked = out.status.success();
        // Dead: the packet path must serve the old table or the new one, whole.
        for _ in 0..3 {
            let keys = rig.pinned_batch_keys();
            let c = keys.len();
            tr.dead_counts.push(c);
            if keys == new_keys {
                tr.dead_saw_new = true;
            } else if keys != old_keys {
                let stale = keys.difference(&new_keys).count();
                let fresh = keys.difference(&old_keys).count();
                tr.errors.push(format!(
                    "while xvsd was dead the packet path served {c} services: neither the old \
                     table ({old_count}) nor the new one ({new_count}); {fresh} of the new \
                     batch, {stale} of the old"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let t0 = Instant::now();
        rig.start();
        tr.restart = t0.elapsed();
        let got = without_churn(&rig.saved());
        let (got_s, new_s) = (sorted(&got), sorted(&new));
        if got_s == new_s {
            tr.committed_unacked = !tr.acked;
            self.table = new;
            self.batch = b;
            self.prev_n = self.n;
        } else if tr.acked {
            tr.errors.push(format!(
                "LOST CHANGE: the batch was acknowledged but the restarted daemon lists {} services, not {}",
                got.services().len(),
                new_count
            ));
        } else if got_s != sorted(&self.table) {
            tr.errors.push(format!(
                "after the restart the table ({} services) is neither the last acknowledged ({}) nor the new one ({})",
                got.services().len(),
                old_count,
                new_count
            ));
        }
        let after = rig.pinned_batch_keys().len();
        if after != got.services().len() {
            tr.errors.push(format!(
                "after the restart the packet path serves {after} services, the table lists {}",
                got.services().len()
            ));
        }
        self.table = if got_s == new_s {
            self.table.clone()
        } else {
            got
        };
        tr
    }
}

/// Runs `trials` crash trials of `n`-service batches; panics with every error seen.
pub fn crash_trials(tag: &str, trials: usize, n: usize) {
    let (mut rng, seed) = Rng::from_env();
    eprintln!("crash trials: {trials} x {n} services, XVS_CRASH_SEED={seed}");
    let mut rig = Rig::new(tag, n);
    let flows = Flows::start(&rig.topo);
    let mut st = Trials::new(&rig, n);
    eprintln!("one batch takes {:?}", st.batch_time);
    let mut errors = Vec::new();
    for i in 0..trials {
        let tr = st.run(&mut rig, &mut rng);
        eprintln!(
            "trial {i}: kill after {:?}, acked {}, committed unacked {}, dead: {} services ({}), restart {:?}",
            tr.kill_after,
            tr.acked,
            tr.committed_unacked,
            tr.dead_counts[0],
            if tr.dead_saw_new { "new batch" } else { "old batch" },
            tr.restart
        );
        if !flows.flowing(Duration::from_secs(5)) {
            errors.push(format!(
                "trial {i}: traffic did not resume after the restart: {:?}",
                flows.failures()
            ));
        }
        errors.extend(tr.errors.iter().map(|e| format!("trial {i}: {e}")));
        if !errors.is_empty() {
            break;
        }
    }
    let fails = flows.stop();
    errors.extend(fails);
    assert!(
        errors.is_empty(),
        "seed {seed}:\n{}\n--- xvsd log ---\n{}",
        errors.join("\n"),
        rig.tail_log()
    );
}
