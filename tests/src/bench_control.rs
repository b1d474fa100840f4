//! The control-plane benchmark (`xvs-bench-control`): how long it takes to program a table of
//! N services x 10 destinations from empty and to change one destination in it, for xvs
//! (`xvsadm` against the real `xvsd`), next to `iptables-restore` (iptables-legacy) and
//! `nft -f` loading the equivalent rule sets shaped like kube-proxy's iptables and nftables
//! modes; and what the table costs in memory (BPF maps from the kernel, the daemon's RSS,
//! kernel memory of all three).
//!
//! Every measurement checks that its work was done: listings and saves are counted (and, after
//! the change series, compared line for line with the table before), a command that fails
//! stops the run.
//!
//! Declared from `src/bin/xvs-bench-control.rs` with `#[path]`; uses the library's
//! namespaces (`netns`), binary lookup (`daemon::find_bin`) and summaries (`bench::stats`).
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use xvs_tests::bench::rules::hash16;
use xvs_tests::netns::Netns;

pub type Res<T> = Result<T, String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Set by SIGINT/SIGTERM: the run stops between steps and cleans up (namespaces, daemons, pins).
pub static STOP: AtomicBool = AtomicBool::new(false);

pub fn check_stop() -> Res<()> {
    if STOP.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn install_signal_handlers() {
    unsafe {
        let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
    }
}

// ------------------------------------------------------------------------------------------
// The table, three ways.
// ------------------------------------------------------------------------------------------

pub const VPORT: u16 = 80;
pub const EPORT: u16 = 8080;
pub const ENDPOINTS: u32 = 10;

/// Service i: VIP 10.96.0.0 + i (port 80, TCP, rr).
pub fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a60_0000 + i)
}

/// Endpoint j of service i: 10.128.0.0 + 10 i + j (port 8080). Every endpoint is its own pod
/// address, as in a cluster (no sharing between services).
pub fn ep(i: u32, j: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a80_0000 + i * ENDPOINTS + j)
}

/// `xvsadm -R` input (ipvsadm-save format).
pub fn xvs_rules(n: u32) -> String {
    let mut s = String::with_capacity(n as usize * 560);
    for i in 0..n {
        let v = vip(i);
        s.push_str(&format!("-A -t {v}:{VPORT} -s rr\n"));
        for j in 0..ENDPOINTS {
            s.push_str(&format!(
                "-a -t {v}:{VPORT} -r {}:{EPORT} -m -w 1\n",
                ep(i, j)
            ));
        }
    }
    s
}

/// Lines of `xvsadm -S -n` for the table.
pub fn xvs_lines(n: u32) -> usize {
    n as usize * (1 + ENDPOINTS as usize)
}

/// Arguments of one destination change: delete endpoint j of service i, or add it back.
pub fn xvs_change_args(i: u32, j: u32, add: bool) -> Vec<String> {
    let svc = format!("{}:{VPORT}", vip(i));
    let rs = format!("{}:{EPORT}", ep(i, j));
    let a: Vec<&str> = if add {
        vec!["-a", "-t", &svc, "-r", &rs, "-m", "-w", "1"]
    } else {
        vec!["-d", "-t", &svc, "-r", &rs]
    };
    a.into_iter().map(String::from).collect()
}

fn svc_id(i: u32) -> u64 {
    (i as u64) << 8
}

fn ep_id(i: u32, j: u32) -> u64 {
    ((i as u64) << 8) | (1 + j as u64)
}

pub fn ipt_svc(i: u32) -> String {
    format!("KUBE-SVC-{}", hash16(svc_id(i)))
}

pub fn ipt_sep(i: u32, j: u32) -> String {
    format!("KUBE-SEP-{}", hash16(ep_id(i, j)))
}

/// The KUBE-SVC chain's rules over the endpoints `js` (in order): kube-proxy's
/// `-m statistic --mode random --probability 1/(n-k)` ladder.
fn ipt_svc_rules(s: &mut String, i: u32, js: &[u32]) {
    let svc = ipt_svc(i);
    let n = js.len();
    for (k, &j) in js.iter().enumerate() {
        let e = ep(i, j);
        if k + 1 < n {
            s.push_str(&format!(
                "-A {svc} -m comment --comment \"ns/svc-{i}:http -> {e}:{EPORT}\" -m statistic --mode random --probability {:.11} -j {}\n",
                1.0 / (n - k) as f64,
                ipt_sep(i, j)
            ));
        } else {
            s.push_str(&format!(
                "-A {svc} -m comment --comment \"ns/svc-{i}:http -> {e}:{EPORT}\" -j {}\n",
                ipt_sep(i, j)
            ));
        }
    }
}

fn ipt_sep_rules(s: &mut String, i: u32, j: u32) {
    let sep = ipt_sep(i, j);
    let e = ep(i, j);
    s.push_str(&format!(
        "-A {sep} -s {e}/32 -m comment --comment \"ns/svc-{i}:http\" -j KUBE-MARK-MASQ\n"
    ));
    s.push_str(&format!(
        "-A {sep} -p tcp -m comment --comment \"ns/svc-{i}:http\" -m tcp -j DNAT --to-destination {e}:{EPORT}\n"
    ));
}

/// An iptables-restore script of the nat table shaped like kube-proxy's iptables mode: one
/// `-d VIP/32 -p tcp --dport 80 -j KUBE-SVC-x` rule per service in KUBE-SERVICES, the
/// probability ladder in KUBE-SVC-x, the masquerade mark and DNAT in each KUBE-SEP-x-j (and
/// kube-proxy's fixed chains around them).
pub fn ipt_script(n: u32) -> String {
    let mut s = String::with_capacity(n as usize * 4700);
    s.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-NODEPORTS - [0:0]\n");
    for i in 0..n {
        s.push_str(&format!(":{} - [0:0]\n", ipt_svc(i)));
        for j in 0..ENDPOINTS {
            s.push_str(&format!(":{} - [0:0]\n", ipt_sep(i, j)));
        }
    }
    s.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    s.push_str("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    s.push_str("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n");
    s.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n");
    s.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
    s.push_str("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n");
    s.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    for i in 0..n {
        s.push_str(&format!(
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"ns/svc-{i}:http cluster IP\" -m tcp --dport {VPORT} -j {}\n",
            vip(i),
            ipt_svc(i)
        ));
    }
    s.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
    let all: Vec<u32> = (0..ENDPOINTS).collect();
    for i in 0..n {
        ipt_svc_rules(&mut s, i, &all);
        for j in 0..ENDPOINTS {
            ipt_sep_rules(&mut s, i, j);
        }
    }
    s.push_str("COMMIT\n");
    s
}

/// (rules, chains) that `iptables-save -t nat` lists for the table.
pub fn ipt_counts(n: u32) -> (usize, usize) {
    let n = n as usize;
    let e = ENDPOINTS as usize;
    (8 + n + n * e + 2 * n * e, 8 + n * (1 + e))
}

/// The `iptables-restore --noflush` input of one endpoint change, as kube-proxy writes a
/// partial sync, limited to the chains that change: the service's KUBE-SVC chain rewritten
/// (a chain line flushes it) and the endpoint's KUBE-SEP chain created with its two rules, or
/// flushed and deleted (`-X`). kube-proxy also rewrites KUBE-SERVICES whole on every sync;
/// leaving that out gives iptables the cheapest change it can make.
pub fn ipt_change(i: u32, j: u32, add: bool) -> String {
    let mut s = String::from("*nat\n");
    s.push_str(&format!(":{} - [0:0]\n", ipt_svc(i)));
    s.push_str(&format!(":{} - [0:0]\n", ipt_sep(i, j)));
    let js: Vec<u32> = (0..ENDPOINTS).filter(|&k| add || k != j).collect();
    ipt_svc_rules(&mut s, i, &js);
    if add {
        ipt_sep_rules(&mut s, i, j);
    } else {
        s.push_str(&format!("-X {}\n", ipt_sep(i, j)));
    }
    s.push_str("COMMIT\n");
    s
}

pub const NFT_TABLE: &str = "kube-proxy";

fn nft_svc(i: u32) -> String {
    format!("service-{}-ns/svc-{i}/tcp/http", &hash16(svc_id(i))[..8])
}

fn nft_ep(i: u32, j: u32) -> String {
    format!(
        "endpoint-{}-ns/svc-{i}/tcp/http__{}/{EPORT}",
        &hash16(ep_id(i, j))[..8],
        ep(i, j)
    )
}

fn nft_svc_rule(i: u32, js: &[u32]) -> String {
    let vm: Vec<String> = js
        .iter()
        .enumerate()
        .map(|(k, &j)| format!("{k} : goto {}", nft_ep(i, j)))
        .collect();
    format!(
        "numgen random mod {} vmap {{ {} }}",
        js.len(),
        vm.join(", ")
    )
}

/// The base of kube-proxy's nftables-mode table: the service-ips verdict map keyed
/// `ip daddr . meta l4proto . th dport`, the dispatch and masquerade chains, the hooks.
pub fn nft_base() -> String {
    "table ip kube-proxy {\n\
     \tmap service-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t}\n\
     \tchain mark-for-masquerade {\n\t\tmeta mark set meta mark or 0x4000\n\t}\n\
     \tchain masquerading {\n\t\tmeta mark & 0x4000 == 0 return\n\t\tmeta mark set meta mark ^ 0x4000\n\t\tmasquerade fully-random\n\t}\n\
     \tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t}\n\
     \tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}\n\
     \tchain nat-output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}\n\
     \tchain nat-postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tjump masquerading\n\t}\n\
     }\n"
        .to_string()
}

/// Chains of the base table.
pub const NFT_BASE_CHAINS: usize = 6;

/// Services `from..to` as one nft transaction: per endpoint a chain (masquerade mark, DNAT),
/// per service a chain with `numgen random mod 10 vmap { 0 : goto endpoint-.., .. }`, and
/// the services' elements of service-ips.
pub fn nft_services(from: u32, to: u32) -> String {
    let mut s = String::with_capacity((to - from) as usize * 2600);
    s.push_str("table ip kube-proxy {\n");
    let all: Vec<u32> = (0..ENDPOINTS).collect();
    let mut elems = Vec::new();
    for i in from..to {
        for j in 0..ENDPOINTS {
            let e = ep(i, j);
            s.push_str(&format!(
                "\tchain {} {{\n\t\tip saddr {e} jump mark-for-masquerade\n\t\tmeta l4proto tcp dnat to {e}:{EPORT}\n\t}}\n",
                nft_ep(i, j)
            ));
        }
        s.push_str(&format!(
            "\tchain {} {{\n\t\t{}\n\t}}\n",
            nft_svc(i),
            nft_svc_rule(i, &all)
        ));
        elems.push(format!("{} . tcp . {VPORT} : goto {}", vip(i), nft_svc(i)));
    }
    s.push_str("}\n");
    if !elems.is_empty() {
        s.push_str(&format!(
            "add element ip kube-proxy service-ips {{ {} }}\n",
            elems.join(", ")
        ));
    }
    s
}

/// One endpoint change as kube-proxy's nftables mode writes it: a new endpoint chain, or the
/// stale one flushed and deleted; the service chain flushed and its vmap rule rewritten.
pub fn nft_change(i: u32, j: u32, add: bool) -> String {
    let js: Vec<u32> = (0..ENDPOINTS).filter(|&k| add || k != j).collect();
    let t = "ip kube-proxy";
    let ec = nft_ep(i, j);
    let sc = nft_svc(i);
    let e = ep(i, j);
    let mut s = String::new();
    if add {
        s.push_str(&format!("add chain {t} {ec}\n"));
        s.push_str(&format!(
            "add rule {t} {ec} ip saddr {e} jump mark-for-masquerade\n"
        ));
        s.push_str(&format!(
            "add rule {t} {ec} meta l4proto tcp dnat to {e}:{EPORT}\n"
        ));
    }
    s.push_str(&format!("flush chain {t} {sc}\n"));
    s.push_str(&format!("add rule {t} {sc} {}\n", nft_svc_rule(i, &js)));
    if !add {
        s.push_str(&format!("flush chain {t} {ec}\n"));
        s.push_str(&format!("delete chain {t} {ec}\n"));
    }
    s
}

/// Which endpoint the k-th change pair touches: services spread over the table (a
/// multiplicative walk), endpoints in turn. `lane` separates series that run side by side.
pub fn change_target(k: usize, n: u32, lanes: u32, lane: u32) -> (u32, u32) {
    let per = (n / lanes).max(1);
    let i = ((k as u64 * 2_654_435_761) % per as u64) as u32 * lanes + lane;
    (i.min(n - 1), (k as u32) % ENDPOINTS)
}

// ------------------------------------------------------------------------------------------
// Running commands with their wall and CPU time.
// ------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct Timed {
    /// Spawn to exit (stdin written, output read), seconds.
    pub wall: f64,
    /// User + system CPU of the process, seconds (wait4's rusage).
    pub cpu: f64,
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub timed_out: bool,
}

impl Timed {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Err with the command's error output unless it succeeded.
    pub fn check(self, what: &str) -> Res<Timed> {
        if self.timed_out {
            return Err(format!("{what}: timed out after {:.1} s", self.wall));
        }
        if self.status != 0 {
            let head: String = self.stderr.chars().take(2000).collect();
            return Err(format!("{what}: exit status {}: {head}", self.status));
        }
        Ok(self)
    }
}

/// Runs `cmd` with `input` on stdin (None: /dev/null), capturing its output, killing it after
/// `timeout`. Timing starts just before the spawn and ends when it has been reaped.
pub fn run_timed(mut cmd: Command, input: Option<&[u8]>, timeout: Duration) -> Res<Timed> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let done = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (out, err, status, ru, wall) = std::thread::scope(|sc| {
        let watchdog = {
            let done = done.clone();
            let killed = killed.clone();
            sc.spawn(move || {
                let deadline = t0 + timeout;
                while !done.load(Ordering::SeqCst) {
                    if Instant::now() >= deadline || STOP.load(Ordering::SeqCst) {
                        killed.store(true, Ordering::SeqCst);
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        return;
                    }
                    // Woken by unpark as soon as the child is reaped.
                    std::thread::park_timeout(Duration::from_millis(20));
                }
            })
        };
        let writer = input.map(|data| {
            let mut w = stdin.take().expect("piped");
            sc.spawn(move || {
                let _ = w.write_all(data);
                drop(w);
            })
        });
        let err_reader = sc.spawn(move || {
            let mut e = Vec::new();
            let _ = stderr.read_to_end(&mut e);
            e
        });
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let mut status: libc::c_int = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        // The command's time ends when it is reaped, not when the helper threads are joined.
        let wall = t0.elapsed().as_secs_f64();
        done.store(true, Ordering::SeqCst);
        watchdog.thread().unpark();
        if let Some(w) = writer {
            let _ = w.join();
        }
        let err = err_reader.join().unwrap_or_default();
        let _ = watchdog.join();
        (out, err, status, ru, wall)
    });
    // Reaped above: keep the std handle from waiting on a pid that is no longer ours.
    std::mem::forget(child);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok(Timed {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        status: code,
        stdout: out,
        stderr: String::from_utf8_lossy(&err).into_owned(),
        timed_out: killed.load(Ordering::SeqCst),
    })
}

/// A namespace's file, for commands that enter it before exec (setns in the child: no extra
/// process, unlike `ip netns exec`, so their spawn costs what an xvsadm spawn costs).
pub struct NsFile {
    file: File,
}

impl NsFile {
    pub fn open(ns: &Netns) -> Res<NsFile> {
        Ok(NsFile {
            file: File::open(format!("/run/netns/{}", ns.name))
                .map_err(|e| format!("netns: {e}"))?,
        })
    }

    /// A command entering this namespace before exec.
    pub fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let fd = self.file.as_raw_fd();
        let mut c = Command::new(program);
        c.args(args);
        unsafe {
            c.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }
}

// ------------------------------------------------------------------------------------------
// The machine: memory and CPU readings.
// ------------------------------------------------------------------------------------------

fn clk_tck() -> f64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, seconds (clock-tick resolution).
pub fn proc_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let f = |i: usize| {
        rest.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (f(11) + f(12)) / clk_tck()
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Kernel memory charged to memory cgroups in kmalloc slabs, bytes: the sum over the
/// kmalloc-cg-* caches of /proc/slabinfo (active objects x object size). nf_tables allocates
/// its tables, chains, rules, sets and elements there (GFP_KERNEL_ACCOUNT); iptables' rule blob
/// and BPF maps are vmalloc'd and per-CPU and are measured exactly instead (IPT_SO_GET_INFO,
/// bpftool). Machine-wide: other work moves it too (far less than vmalloc and per-CPU memory,
/// which other benchmarks' BPF maps move by hundreds of MiB).
pub fn kernel_mem() -> i64 {
    let s = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    s.lines()
        .filter(|l| l.starts_with("kmalloc-cg-"))
        .map(|l| {
            let f: Vec<i64> = l
                .split_whitespace()
                .skip(1)
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect();
            // active_objs num_objs objsize
            if f.len() == 3 {
                f[0] * f[2]
            } else {
                0
            }
        })
        .sum()
}

/// Waits for RCU-deferred frees and the like to land before a memory reading.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

// ------------------------------------------------------------------------------------------
// Percentiles of a latency series.
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub n: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(seconds: &[f64]) -> Latency {
        if seconds.is_empty() {
            return Latency::default();
        }
        let mut v: Vec<f64> = seconds.iter().map(|s| s * 1e3).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        // Nearest rank.
        let p = |q: f64| {
            let r = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[r - 1]
        };
        Latency {
            n: v.len(),
            min_ms: v[0],
            p50_ms: p(0.50),
            p90_ms: p(0.90),
            p99_ms: p(0.99),
            max_ms: v[v.len() - 1],
            mean_ms: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

// ------------------------------------------------------------------------------------------
// xvsd, sized for 50,000 x 10, in its own namespace.
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sizes {
    pub max_services: u32,
    pub max_dests: u32,
    pub sched_slots: u32,
    pub conn_table_size: u32,
}

pub const SIZES: Sizes = Sizes {
    max_services: 65_536,
    // 500,000 destinations and room for ids that rest after deletions.
    max_dests: 589_824,
    // rr with 10 destinations: one period (10) + 1 per service = 550,000 at 50,000, plus the
    // fresh regions changes write before the old ones are freed.
    sched_slots: 1 << 20,
    conn_table_size: 65_536,
};

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Xvsd {
    /// The daemon's namespace (removed on drop).
    #[allow(dead_code)]
    pub ns: Netns,
    child: Option<std::process::Child>,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
}

impl Xvsd {
    fn common_args(pin_dir: &Path, state_dir: &Path) -> Vec<String> {
        vec![
            "--pin-dir".into(),
            pin_dir.display().to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--conn-table-size".into(),
            SIZES.conn_table_size.to_string(),
            "--max-services".into(),
            SIZES.max_services.to_string(),
            "--max-dests".into(),
            SIZES.max_dests.to_string(),
            "--sched-slots".into(),
            SIZES.sched_slots.to_string(),
        ]
    }

    /// A fresh namespace with a veth pair, and xvsd on it in generic mode; returns when its
    /// control socket answers.
    pub fn start(xvsd: &Path) -> Res<Xvsd> {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{n}", std::process::id());
        let ns = Netns::new("bc");
        ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
        ns.ip(&["link", "set", "d0", "up"]);
        ns.ip(&["link", "set", "d1", "up"]);
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/xvs-bc-{id}"));
        let state_dir = std::env::temp_dir().join(format!("xvs-bc-{id}"));
        let log = std::env::temp_dir().join(format!("xvs-bc-{id}.log"));
        std::fs::create_dir_all(&state_dir).map_err(|e| format!("state dir: {e}"))?;
        let logf = File::create(&log).map_err(|e| format!("log: {e}"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .arg(xvsd)
            .args(Self::common_args(&pin_dir, &state_dir))
            .args(["--iface", "d0", "--mode", "generic"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf))
            .spawn()
            .map_err(|e| format!("spawn xvsd: {e}"))?;
        let mut d = Xvsd {
            ns,
            child: Some(child),
            pin_dir,
            state_dir,
            log,
        };
        let t0 = Instant::now();
        let sock = d.socket();
        loop {
            check_stop()?;
            if sock.exists() && std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                break;
            }
            if let Some(st) = d.child.as_mut().unwrap().try_wait().ok().flatten() {
                return Err(format!(
                    "xvsd exited at start ({st}): {}",
                    std::fs::read_to_string(&d.log).unwrap_or_default()
                ));
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "xvsd did not come up in 120 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("xvsd.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn cpu(&self) -> f64 {
        proc_cpu(self.pid())
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    pub fn hwm_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// `xvsadm ARGS` against this daemon.
    pub fn xvsadm(&self, xvsadm: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(xvsadm);
        c.args(args).env("XVSADM_SOCKET", self.socket());
        c
    }

    /// Kills the daemon and removes everything it pinned or saved.
    fn cleanup(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(xvsd) = xvs_tests::daemon::find_bin("xvsd") {
            let _ = Command::new(xvsd)
                .arg("teardown")
                .args(Self::common_args(&self.pin_dir, &self.state_dir))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
        let _ = std::fs::remove_file(&self.log);
    }

    pub fn stop(mut self) {
        self.cleanup();
    }
}

impl Drop for Xvsd {
    fn drop(&mut self) {
        self.cleanup();
    }
}

// ------------------------------------------------------------------------------------------
// BPF map memory, from the kernel.
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapMem {
    pub name: String,
    pub kind: String,
    pub max_entries: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
    /// The kernel's accounting of the map's memory (`bpftool map show`: bytes_memlock, the
    /// fdinfo `memlock` field, from the map type's map_mem_usage).
    pub memlock_bytes: u64,
    pub per_entry_bytes: f64,
}

/// `bpftool -j map show pinned DIR/NAME` for each map xvsd pins.
pub fn map_memory(pin_dir: &Path) -> Res<Vec<MapMem>> {
    let names = [
        "SERVICES",
        "SCHED_SLOTS",
        "DESTS",
        "DEST_STATS",
        "BACKENDS",
        "CONNS",
        "REPLIES",
        "CONFIG",
        "TX_PORTS",
        "PATH_STATS",
    ];
    let mut v = Vec::new();
    for n in names {
        let p = pin_dir.join(n);
        let out = Command::new("bpftool")
            .args(["-j", "map", "show", "pinned"])
            .arg(&p)
            .output()
            .map_err(|e| format!("bpftool: {e}"))?;
        ensure!(
            out.status.success(),
            "bpftool map show pinned {}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("bpftool output: {e}"))?;
        let g = |k: &str| j.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        let max = g("max_entries");
        let mem = g("bytes_memlock");
        ensure!(
            mem > 0 && max > 0,
            "bpftool: no memlock/max_entries for {n}: {j}"
        );
        v.push(MapMem {
            name: n.into(),
            kind: j.get("type").and_then(|x| x.as_str()).unwrap_or("?").into(),
            max_entries: max,
            key_bytes: g("bytes_key"),
            value_bytes: g("bytes_value"),
            memlock_bytes: mem,
            per_entry_bytes: mem as f64 / max as f64,
        });
    }
    Ok(v)
}

/// Bytes per service, destination, scheduler slot and connection, from the maps.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PerEntry {
    /// SERVICES.
    pub service: f64,
    /// DESTS + DEST_STATS (per CPU) + BACKENDS (every destination here has its own address).
    pub destination: f64,
    /// SCHED_SLOTS; an rr/wrr service of d destinations takes one period (d for rr) + 1.
    pub sched_slot: f64,
    /// CONNS + REPLIES.
    pub connection: f64,
    /// A service of 10 rr destinations: service + 10 destinations + 11 slots.
    pub service_of_10: f64,
    /// CONFIG, TX_PORTS, PATH_STATS.
    pub fixed: f64,
    pub total_as_sized: f64,
}

pub fn per_entry(maps: &[MapMem]) -> PerEntry {
    let m = |n: &str| maps.iter().find(|x| x.name == n);
    let pe = |n: &str| m(n).map(|x| x.per_entry_bytes).unwrap_or(0.0);
    let total = |n: &str| m(n).map(|x| x.memlock_bytes as f64).unwrap_or(0.0);
    let service = pe("SERVICES");
    let destination = pe("DESTS") + pe("DEST_STATS") + pe("BACKENDS");
    let sched_slot = pe("SCHED_SLOTS");
    PerEntry {
        service,
        destination,
        sched_slot,
        connection: pe("CONNS") + pe("REPLIES"),
        service_of_10: service + 10.0 * destination + 11.0 * sched_slot,
        fixed: total("CONFIG") + total("TX_PORTS") + total("PATH_STATS"),
        total_as_sized: maps.iter().map(|x| x.memlock_bytes as f64).sum(),
    }
}

// ------------------------------------------------------------------------------------------
// Tools.
// ------------------------------------------------------------------------------------------

pub fn tool_version(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|| format!("{cmd}: not found"))
}

/// Installs the Debian packages for missing baseline tools (iptables, nftables, bpftool).
pub fn ensure_tools() -> Res<()> {
    let need: Vec<(&str, &str)> = [
        ("iptables-legacy-restore", "iptables"),
        ("nft", "nftables"),
        ("bpftool", "bpftool"),
    ]
    .into_iter()
    .filter(|(bin, _)| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
    .collect();
    if need.is_empty() {
        return Ok(());
    }
    let pkgs: Vec<&str> = need.iter().map(|(_, p)| *p).collect();
    eprintln!("installing {} (apt-get)", pkgs.join(" "));
    let ok = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ensure!(ok, "apt-get install {} failed", pkgs.join(" "));
    Ok(())
}

/// Counts lines starting with each prefix.
pub fn count_prefixes(text: &str, prefixes: &[&str]) -> Vec<usize> {
    let mut c = vec![0; prefixes.len()];
    for l in text.lines() {
        for (k, p) in prefixes.iter().enumerate() {
            if l.starts_with(p) {
                c[k] += 1;
            }
        }
    }
    c
}

/// The lines of a listing as a multiset (order-free comparison).
pub fn line_multiset(text: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        *m.entry(l.trim_end().to_string()).or_insert(0) += 1;
    }
    m
}

/// The first difference between two multisets, for an error message.
pub fn first_difference(a: &BTreeMap<String, usize>, b: &BTreeMap<String, usize>) -> String {
    for (k, v) in a {
        if b.get(k) != Some(v) {
            return format!(
                "{k:?}: {v} before, {} after",
                b.get(k).copied().unwrap_or(0)
            );
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            return format!("{k:?}: 0 before, {v} after");
        }
    }
    "none".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(vip(0).to_string(), "10.96.0.0");
        assert_eq!(vip(49_999).to_string(), "10.96.195.79");
        assert_eq!(ep(49_999, 9).to_string(), "10.135.161.31");
        assert_eq!(xvs_rules(3).lines().count(), xvs_lines(3));
        let s = ipt_script(3);
        let c = count_prefixes(&s, &["-A", ":"]);
        assert_eq!((c[0], c[1]), ipt_counts(3));
        let names: std::collections::HashSet<String> = (0..1000)
            .flat_map(|i| (0..10).map(move |j| ipt_sep(i, j)))
            .collect();
        assert_eq!(names.len(), 10_000);
        assert!(nft_change(1, 2, false).contains("mod 9 vmap"));
    }
}

// ------------------------------------------------------------------------------------------
// Measurements.
// ------------------------------------------------------------------------------------------

/// One load of the table from empty, by one engine.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadRound {
    /// The load: `xvsadm -R`, `iptables-restore`, the `nft -f` transactions (summed); spawn
    /// to exit, seconds. In process: parse + apply.
    pub wall_s: f64,
    /// CPU of the loading process(es) (+ xvsd's for xvs), seconds.
    pub cpu_s: f64,
    /// xvs: xvsd's share of `cpu_s`.
    pub daemon_cpu_s: f64,
    /// The listing that counted the result (`xvsadm -S -n`, `iptables-save -t nat`,
    /// `nft list chains` + `nft list map`; in process `Node::snapshot`, first round only),
    /// seconds.
    pub verify_s: f64,
    /// Emptying the table again (`xvsadm -C`, `iptables-restore` of an empty nat table,
    /// `nft delete table`), seconds.
    pub clear_s: f64,
    /// Kernel memory in the memcg-accounted kmalloc slabs (see `kernel_mem`) after the load
    /// minus before (xvs: before the daemon started), bytes. Machine-wide: noisy.
    pub kmem_delta_bytes: i64,
    /// xvs: the daemon's VmRSS after the load, after the listing, and its VmHWM, KiB.
    pub rss_kib: u64,
    pub rss_after_list_kib: u64,
    pub hwm_kib: u64,
    /// In process: parsing the rules file, and Node::apply, seconds.
    pub parse_s: f64,
    pub apply_s: f64,
    /// In process: the live heap the loaded Node holds (table, engine state), and after its
    /// estimator ticks (rate estimators created), KiB: the daemon's own memory without the
    /// allocator's retained free space that VmRSS also counts.
    #[serde(default)]
    pub heap_loaded_kib: u64,
    #[serde(default)]
    pub heap_ticked_kib: u64,
    /// nft: transactions (`nft -f` runs) the load took.
    pub invocations: usize,
    /// iptables: the nat table's entries and rule-blob bytes as the kernel reports them.
    pub kernel_entries: u32,
    pub kernel_table_bytes: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadSeries {
    pub engine: String,
    pub services: u32,
    pub rounds: Vec<LoadRound>,
}

/// One series of single-destination changes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangeSeries {
    pub engine: String,
    /// e2e (one process per change, spawn included), socket (one control-socket request,
    /// in this process), inproc (Node::apply, no socket, no ticker), spawn (the floor:
    /// `xvsadm --version`), noop (an empty request through the socket: the daemon's round
    /// trip, including any wait for its lock).
    pub mode: String,
    pub services: u32,
    pub latency: Latency,
    /// CPU of the changing process, mean per change, ms (0 where not measured).
    pub cpu_mean_ms: f64,
    /// xvsd's CPU over the series divided by the changes made through it, ms.
    pub daemon_cpu_per_change_ms: f64,
    pub samples_s: Vec<f64>,
    /// The time budget ended the series before `requested` changes.
    pub requested: usize,
    pub budget_hit: bool,
}

impl ChangeSeries {
    fn new(engine: &str, mode: &str, n: u32, samples: Vec<f64>, requested: usize) -> Self {
        ChangeSeries {
            engine: engine.into(),
            mode: mode.into(),
            services: n,
            latency: Latency::of(&samples),
            cpu_mean_ms: 0.0,
            daemon_cpu_per_change_ms: 0.0,
            budget_hit: samples.len() < requested,
            requested,
            samples_s: samples,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ChangeOpts {
    pub count: usize,
    pub budget: Duration,
}

/// Timeout of one command: generous, the figures say how long things took.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(1800);

pub struct Bins {
    pub xvsd: PathBuf,
    pub xvsadm: PathBuf,
}

/// What an xvs round produced besides its load figures.
#[derive(Default)]
pub struct XvsExtra {
    pub maps_empty: Option<Vec<MapMem>>,
    pub maps_loaded: Option<Vec<MapMem>>,
    pub changes: Vec<ChangeSeries>,
    /// xvsd's CPU share (of one core) over a quiet window after the load.
    pub idle_cpu_share: Option<f64>,
}

fn sock_apply(sock: &Path, args: &[String]) -> Res<()> {
    use lb_user::ctl::{NumberedOp, Request, Response};
    let ops = match lb_user::ipvsadm::parse_args(args) {
        Ok(lb_user::ipvsadm::Command::Apply(ops)) => ops,
        other => return Err(format!("{args:?} parsed as {other:?}")),
    };
    let req = Request::Apply(
        ops.into_iter()
            .map(|op| NumberedOp { line: None, op })
            .collect(),
    );
    match lb_user::ctl::request(sock, &req)? {
        Response::Ok => Ok(()),
        other => Err(format!("xvsd answered {other:?} to {args:?}")),
    }
}

fn sock_noop(sock: &Path) -> Res<()> {
    use lb_user::ctl::{Request, Response};
    match lb_user::ctl::request(sock, &Request::Apply(Vec::new()))? {
        Response::Ok => Ok(()),
        other => Err(format!("xvsd answered {other:?} to an empty request")),
    }
}

/// `xvsadm -S -n`, counted against the table of `n` services.
fn xvs_save(b: &Bins, d: &Xvsd, n: u32) -> Res<Timed> {
    let t =
        run_timed(d.xvsadm(&b.xvsadm, &["-S", "-n"]), None, CMD_TIMEOUT)?.check("xvsadm -S -n")?;
    let lines = t.stdout.iter().filter(|&&c| c == b'\n').count();
    ensure!(
        lines == xvs_lines(n),
        "xvsadm -S -n listed {lines} lines, expected {}",
        xvs_lines(n)
    );
    Ok(t)
}

/// xvs: a fresh xvsd, `xvsadm -R` of the table, the listing that counts it, optionally the
/// change series, `xvsadm -C`, and the daemon removed.
pub fn xvs_round(
    b: &Bins,
    n: u32,
    rules: &str,
    want_maps: bool,
    idle_window: Option<Duration>,
    changes: Option<&ChangeOpts>,
) -> Res<(LoadRound, XvsExtra)> {
    check_stop()?;
    let mut ex = XvsExtra::default();
    let kmem0 = kernel_mem();
    let d = Xvsd::start(&b.xvsd)?;
    if want_maps {
        ex.maps_empty = Some(map_memory(&d.pin_dir)?);
    }
    let mut r = LoadRound::default();
    let cpu0 = d.cpu();
    let t = run_timed(
        d.xvsadm(&b.xvsadm, &["-R"]),
        Some(rules.as_bytes()),
        CMD_TIMEOUT,
    )?
    .check("xvsadm -R")?;
    let dcpu = d.cpu() - cpu0;
    r.wall_s = t.wall;
    r.daemon_cpu_s = dcpu;
    r.cpu_s = t.cpu + dcpu;
    settle();
    r.kmem_delta_bytes = kernel_mem() - kmem0;
    r.rss_kib = d.rss_kib();
    if let Some(w) = idle_window {
        let c0 = d.cpu();
        let t0 = Instant::now();
        std::thread::sleep(w);
        ex.idle_cpu_share = Some((d.cpu() - c0) / t0.elapsed().as_secs_f64());
    }
    let saved = xvs_save(b, &d, n)?;
    r.verify_s = saved.wall;
    // xvsd hands the listing's memory back after answering: measure once it has.
    settle();
    r.rss_after_list_kib = d.rss_kib();
    r.hwm_kib = d.hwm_kib();
    if want_maps {
        ex.maps_loaded = Some(map_memory(&d.pin_dir)?);
    }
    if let Some(o) = changes {
        let before = line_multiset(&saved.out());
        drop(saved);
        ex.changes = xvs_changes(b, &d, n, o)?;
        let after = xvs_save(b, &d, n)?;
        let after = line_multiset(&after.out());
        ensure!(
            before == after,
            "xvs: the table after the change series differs from the table before: {}",
            first_difference(&before, &after)
        );
    }
    let t = run_timed(d.xvsadm(&b.xvsadm, &["-C"]), None, CMD_TIMEOUT)?.check("xvsadm -C")?;
    r.clear_s = t.wall;
    xvs_save(b, &d, 0)?;
    d.stop();
    Ok((r, ex))
}

/// Destination changes against the daemon, interleaved so every mode sees the same machine:
/// per step one `xvsadm` change (delete endpoint j of a service, the next step adds it back),
/// one change through the socket on another service, the spawn floor and the empty request.
fn xvs_changes(b: &Bins, d: &Xvsd, n: u32, o: &ChangeOpts) -> Res<Vec<ChangeSeries>> {
    let sock = d.socket();
    let (mut e2e, mut e2e_cpu, mut socket, mut spawn, mut noop) =
        (Vec::new(), 0.0, Vec::new(), Vec::new(), Vec::new());
    let t0 = Instant::now();
    let cpu0 = d.cpu();
    let mut k = 0;
    while k < o.count {
        if t0.elapsed() > o.budget || STOP.load(Ordering::SeqCst) {
            if k % 2 == 1 {
                // Put back the endpoints the last step deleted (not timed), so the table
                // compares equal to the one before.
                for lane in 0..2 {
                    let (i, j) = change_target(k / 2, n, 2, lane);
                    sock_apply(&sock, &xvs_change_args(i, j, true))?;
                }
            }
            break;
        }
        let add = k % 2 == 1;
        let (i, j) = change_target(k / 2, n, 2, 0);
        let args = xvs_change_args(i, j, add);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let t = run_timed(d.xvsadm(&b.xvsadm, &refs), None, CMD_TIMEOUT)?
            .check(&format!("xvsadm {}", args.join(" ")))?;
        e2e.push(t.wall);
        e2e_cpu += t.cpu;
        let (i, j) = change_target(k / 2, n, 2, 1);
        let args = xvs_change_args(i, j, add);
        let t1 = Instant::now();
        sock_apply(&sock, &args)?;
        socket.push(t1.elapsed().as_secs_f64());
        let mut c = Command::new(&b.xvsadm);
        c.arg("--version");
        let t = run_timed(c, None, CMD_TIMEOUT)?.check("xvsadm --version")?;
        ensure!(t.out().contains("ipvsadm"), "xvsadm --version: {}", t.out());
        spawn.push(t.wall);
        let t1 = Instant::now();
        sock_noop(&sock)?;
        noop.push(t1.elapsed().as_secs_f64());
        k += 1;
    }
    let dcpu = d.cpu() - cpu0;
    let mut v = vec![
        ChangeSeries::new("xvs", "e2e", n, e2e, o.count),
        ChangeSeries::new("xvs", "socket", n, socket, o.count),
        ChangeSeries::new("xvs", "spawn", n, spawn, o.count),
        ChangeSeries::new("xvs", "noop", n, noop, o.count),
    ];
    if k > 0 {
        v[0].cpu_mean_ms = e2e_cpu / k as f64 * 1e3;
        // Two changes per step reach the daemon (plus an empty request and the ticker).
        v[0].daemon_cpu_per_change_ms = dcpu / (2 * k) as f64 * 1e3;
        v[1].daemon_cpu_per_change_ms = v[0].daemon_cpu_per_change_ms;
    }
    Ok(v)
}

/// The same work in this process, without the daemon around it: parse the rules file, apply
/// it to a `Node` over freshly created (unpinned, unattached) maps of the daemon's sizes;
/// then, when asked, the estimator tick the daemon runs every 2 s, and the change series
/// through `Node::apply`.
pub fn inproc_round(
    n: u32,
    rules: &str,
    ticks: usize,
    changes: Option<&ChangeOpts>,
) -> Res<(LoadRound, Vec<(f64, f64)>, Option<ChangeSeries>)> {
    use lb_user::daemon::{Mode, Node};
    use lb_user::fastpath::{FastPath, FastPathConfig};
    check_stop()?;
    let fp = FastPath::load(FastPathConfig {
        max_services: SIZES.max_services,
        max_dests: SIZES.max_dests,
        sched_slots: SIZES.sched_slots,
        conn_table_size: SIZES.conn_table_size,
        pin_dir: None,
        ..Default::default()
    })
    .map_err(|e| format!("FastPath::load: {e}"))?;
    let mut node = Node::new(
        fp,
        lb_user::model::Table::new(),
        Err("benchmark: no kernel IPVS".into()),
        Mode::Own,
    );
    let mut r = LoadRound::default();
    let heap0 = crate::live_heap();
    let c0 = thread_cpu();
    let t0 = Instant::now();
    let ops = lb_user::ipvsadm::parse_restore(rules).map_err(|e| e.to_string())?;
    r.parse_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    node.apply(&ops)?;
    r.apply_s = t1.elapsed().as_secs_f64();
    r.wall_s = t0.elapsed().as_secs_f64();
    r.cpu_s = thread_cpu() - c0;
    drop(ops);
    r.heap_loaded_kib = (crate::live_heap().saturating_sub(heap0) / 1024) as u64;
    let check = |node: &Node| -> Res<()> {
        let s = node.table().services();
        ensure!(
            s.len() == n as usize,
            "in process: {} services, expected {n}",
            s.len()
        );
        let d: usize = s.iter().map(|s| s.dests.len()).sum();
        ensure!(
            d == (n * ENDPOINTS) as usize && s.iter().all(|s| s.dests.len() == ENDPOINTS as usize),
            "in process: {d} destinations, expected {}",
            n * ENDPOINTS
        );
        Ok(())
    };
    check(&node)?;
    if ticks > 0 {
        let t = Instant::now();
        let snap = node.snapshot(false)?;
        r.verify_s = t.elapsed().as_secs_f64();
        ensure!(
            snap.services.len() == n as usize,
            "in process: the snapshot has {} services",
            snap.services.len()
        );
    }
    let mut tick_s = Vec::new();
    for _ in 0..ticks {
        check_stop()?;
        let t = Instant::now();
        let c = thread_cpu();
        node.tick();
        tick_s.push((t.elapsed().as_secs_f64(), thread_cpu() - c));
    }
    if ticks > 0 {
        r.heap_ticked_kib = (crate::live_heap().saturating_sub(heap0) / 1024) as u64;
    }
    let mut series = None;
    if let Some(o) = changes {
        let mut v = Vec::new();
        let c0 = thread_cpu();
        let t0 = Instant::now();
        let mut k = 0;
        while k < o.count {
            if k % 2 == 0 && (t0.elapsed() > o.budget || STOP.load(Ordering::SeqCst)) {
                break;
            }
            let (i, j) = change_target(k / 2, n, 1, 0);
            let args = xvs_change_args(i, j, k % 2 == 1);
            let ops = match lb_user::ipvsadm::parse_args(&args) {
                Ok(lb_user::ipvsadm::Command::Apply(ops)) => ops,
                other => return Err(format!("{args:?} parsed as {other:?}")),
            };
            let ops: Vec<_> = ops
                .into_iter()
                .map(|op| lb_user::ctl::NumberedOp { line: None, op })
                .collect();
            let t = Instant::now();
            node.apply(&ops)?;
            v.push(t.elapsed().as_secs_f64());
            k += 1;
        }
        let cpu = thread_cpu() - c0;
        check(&node)?;
        let mut s = ChangeSeries::new("xvs", "inproc", n, v, o.count);
        if k > 0 {
            s.cpu_mean_ms = cpu / k as f64 * 1e3;
        }
        series = Some(s);
    }
    Ok((r, tick_s, series))
}

/// The calling thread's CPU time (user + system), seconds.
pub fn thread_cpu() -> f64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// A namespace for a baseline, and the xtables lock file its iptables runs use (a private one:
/// other iptables users on the machine must not make these runs wait).
pub struct BaseNs {
    /// Removed on drop.
    #[allow(dead_code)]
    pub ns: Netns,
    pub nsf: NsFile,
    pub lock: PathBuf,
}

impl BaseNs {
    pub fn new(tag: &str) -> Res<BaseNs> {
        let ns = Netns::new(tag);
        let nsf = NsFile::open(&ns)?;
        let lock = std::env::temp_dir().join(format!("xvs-bc-{}-xtables.lock", ns.name));
        Ok(BaseNs { ns, nsf, lock })
    }

    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = self.nsf.cmd(program, args);
        c.env("XTABLES_LOCKFILE", &self.lock);
        c
    }
}

impl Drop for BaseNs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// The nat table as the kernel holds it (IPT_SO_GET_INFO): (entries, bytes of the rule blob,
/// kvmalloc'd once per table; x_tables refuses a blob of 512 MiB or more, XT_MAX_TABLE_SIZE).
pub fn ipt_kernel_table(ns: &Netns) -> Res<(u32, u32)> {
    #[repr(C)]
    struct IptGetinfo {
        name: [u8; 32],
        valid_hooks: u32,
        hook_entry: [u32; 5],
        underflow: [u32; 5],
        num_entries: u32,
        size: u32,
    }
    const IPT_SO_GET_INFO: libc::c_int = 64;
    ns.enter(|| {
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let mut info: IptGetinfo = unsafe { std::mem::zeroed() };
        info.name[..3].copy_from_slice(b"nat");
        let mut len = std::mem::size_of::<IptGetinfo>() as libc::socklen_t;
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_IP,
                IPT_SO_GET_INFO,
                &mut info as *mut IptGetinfo as *mut libc::c_void,
                &mut len,
            )
        };
        let err = std::io::Error::last_os_error();
        unsafe { libc::close(fd) };
        ensure!(r == 0, "IPT_SO_GET_INFO nat: {err}");
        Ok((info.num_entries, info.size))
    })
}

fn ipt_save(ns: &BaseNs) -> Res<Timed> {
    run_timed(
        ns.cmd("iptables-legacy-save", &["-t", "nat"]),
        None,
        CMD_TIMEOUT,
    )?
    .check("iptables-legacy-save -t nat")
}

fn ipt_check(t: &Timed, n: Option<u32>) -> Res<()> {
    let text = t.out();
    let c = count_prefixes(&text, &["-A", ":"]);
    let want = match n {
        Some(n) => ipt_counts(n),
        None => (0, 4),
    };
    ensure!(
        (c[0], c[1]) == want,
        "iptables-legacy-save -t nat: {} rules and {} chains, expected {} and {}",
        c[0],
        c[1],
        want.0,
        want.1
    );
    Ok(())
}

fn ipt_multiset(t: &Timed) -> BTreeMap<String, usize> {
    let text = t.out();
    let mut m = line_multiset(&text);
    m.retain(|k, _| !k.starts_with('#'));
    m
}

/// iptables-legacy: `iptables-restore` of the table into the (empty) namespace, counted by
/// `iptables-save`, optionally the change series, then an empty nat table restored.
pub fn ipt_round(
    ns: &BaseNs,
    n: u32,
    script: &str,
    changes: Option<&ChangeOpts>,
) -> Res<(LoadRound, Option<ChangeSeries>)> {
    check_stop()?;
    let mut r = LoadRound::default();
    let k0 = kernel_mem();
    let t = run_timed(
        ns.cmd("iptables-legacy-restore", &[]),
        Some(script.as_bytes()),
        CMD_TIMEOUT,
    )?
    .check("iptables-legacy-restore")?;
    r.wall_s = t.wall;
    r.cpu_s = t.cpu;
    r.invocations = 1;
    settle();
    r.kmem_delta_bytes = kernel_mem() - k0;
    let saved = ipt_save(ns)?;
    r.verify_s = saved.wall;
    ipt_check(&saved, Some(n))?;
    let (entries, size) = ipt_kernel_table(&ns.ns)?;
    r.kernel_entries = entries;
    r.kernel_table_bytes = size;
    let mut series = None;
    if let Some(o) = changes {
        let before = ipt_multiset(&saved);
        drop(saved);
        let (mut v, mut cpu) = (Vec::new(), 0.0);
        let t0 = Instant::now();
        let mut k = 0;
        while k < o.count {
            if k % 2 == 0 && (t0.elapsed() > o.budget || STOP.load(Ordering::SeqCst)) {
                break;
            }
            let (i, j) = change_target(k / 2, n, 1, 0);
            let input = ipt_change(i, j, k % 2 == 1);
            let t = run_timed(
                ns.cmd("iptables-legacy-restore", &["--noflush"]),
                Some(input.as_bytes()),
                CMD_TIMEOUT,
            )?
            .check("iptables-legacy-restore --noflush")?;
            v.push(t.wall);
            cpu += t.cpu;
            k += 1;
        }
        let after = ipt_save(ns)?;
        ipt_check(&after, Some(n))?;
        let after = ipt_multiset(&after);
        ensure!(
            before == after,
            "iptables: the table after the change series differs: {}",
            first_difference(&before, &after)
        );
        let mut s = ChangeSeries::new("iptables-legacy", "e2e", n, v, o.count);
        if k > 0 {
            s.cpu_mean_ms = cpu / k as f64 * 1e3;
        }
        series = Some(s);
    }
    let t = run_timed(
        ns.cmd("iptables-legacy-restore", &[]),
        Some(b"*nat\nCOMMIT\n"),
        CMD_TIMEOUT,
    )?
    .check("iptables-legacy-restore (empty nat table)")?;
    r.clear_s = t.wall;
    ipt_check(&ipt_save(ns)?, None)?;
    Ok((r, series))
}

fn nft(ns: &BaseNs, args: &[&str], input: Option<&str>) -> Res<Timed> {
    run_timed(ns.cmd("nft", args), input.map(str::as_bytes), CMD_TIMEOUT)?
        .check(&format!("nft {}", args.join(" ")))
}

fn nft_counts(ns: &BaseNs, n: u32) -> Res<f64> {
    let chains = nft(ns, &["list", "chains", "ip"], None)?;
    let c = chains
        .out()
        .lines()
        .filter(|l| l.trim_start().starts_with("chain "))
        .count();
    let map = nft(ns, &["list", "map", "ip", NFT_TABLE, "service-ips"], None)?;
    let e = map.out().matches(": goto service-").count();
    let want = NFT_BASE_CHAINS + (n * (1 + ENDPOINTS)) as usize;
    ensure!(
        c == want && e == n as usize,
        "nft: {c} chains and {e} service-ips elements, expected {want} and {n}"
    );
    Ok(chains.wall + map.wall)
}

/// nftables: the table loaded with `nft -f` (the base, then one transaction per batch of
/// services), counted with `nft list chains` and `nft list map`, optionally the change
/// series, then `nft delete table`.
pub fn nft_round(
    ns: &BaseNs,
    n: u32,
    scripts: &[String],
    changes: Option<&ChangeOpts>,
) -> Res<(LoadRound, Option<ChangeSeries>)> {
    check_stop()?;
    let mut r = LoadRound::default();
    let k0 = kernel_mem();
    for s in scripts {
        check_stop()?;
        let t = nft(ns, &["-f", "-"], Some(s))?;
        r.wall_s += t.wall;
        r.cpu_s += t.cpu;
        r.invocations += 1;
    }
    settle();
    r.kmem_delta_bytes = kernel_mem() - k0;
    r.verify_s = nft_counts(ns, n)?;
    let mut series = None;
    if let Some(o) = changes {
        let before = line_multiset(&nft(ns, &["list", "ruleset"], None)?.out());
        let (mut v, mut cpu) = (Vec::new(), 0.0);
        let t0 = Instant::now();
        let mut k = 0;
        while k < o.count {
            if k % 2 == 0 && (t0.elapsed() > o.budget || STOP.load(Ordering::SeqCst)) {
                break;
            }
            let (i, j) = change_target(k / 2, n, 1, 0);
            let input = nft_change(i, j, k % 2 == 1);
            let t = nft(ns, &["-f", "-"], Some(&input))?;
            v.push(t.wall);
            cpu += t.cpu;
            k += 1;
        }
        nft_counts(ns, n)?;
        let after = line_multiset(&nft(ns, &["list", "ruleset"], None)?.out());
        ensure!(
            before == after,
            "nft: the ruleset after the change series differs: {}",
            first_difference(&before, &after)
        );
        let mut s = ChangeSeries::new("nft", "e2e", n, v, o.count);
        if k > 0 {
            s.cpu_mean_ms = cpu / k as f64 * 1e3;
        }
        series = Some(s);
    }
    let t = nft(ns, &["delete", "table", "ip", NFT_TABLE], None)?;
    r.clear_s = t.wall;
    let left = nft(ns, &["list", "tables"], None)?.out();
    ensure!(
        !left.contains(NFT_TABLE),
        "nft: table still there after delete: {left}"
    );
    Ok((r, series))
}

/// The nft scripts of a table of `n` services: the base, then batches of `batch` services.
pub fn nft_scripts(n: u32, batch: u32) -> Vec<String> {
    let mut v = vec![nft_base()];
    let mut s = 0;
    while s < n {
        let e = (s + batch).min(n);
        v.push(nft_services(s, e));
        s = e;
    }
    v
}
