//! One Prometheus scrape of xvsd at scale: loads N services x 10 destinations (`xvsadm -R`, the
//! control-plane benchmark's table) into a release xvsd with `--metrics-listen`, then times
//! `GET /metrics` several times (wall clock at the client, xvsd's CPU) and reports the size and
//! the number of samples, next to `xvsadm -L -n` of the same table.
//!
//! ```sh
//! cargo build --release -p lb-user --bins
//! sudo target/debug/xvs-bench-metrics [--services 50000] [--rounds 5] [--bin-dir target/release]
//! ```
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xvs_tests::netns::Netns;

const ADDR: &str = "10.99.0.1:9477";

/// The control-plane benchmark's sizes and table shape (src/bench_control.rs): service i is
/// TCP 10.96.0.0+i:80, rr, with 10 endpoints 10.128.0.0+10i+j:8080.
const MAX_SERVICES: u32 = 65_536;
const MAX_DESTS: u32 = 589_824;
const SCHED_SLOTS: u32 = 1 << 20;
const CONN_TABLE: u32 = 65_536;

fn rules(n: u32) -> String {
    let mut s = String::with_capacity(n as usize * 560);
    for i in 0..n {
        let v = std::net::Ipv4Addr::from(0x0a60_0000 + i);
        s.push_str(&format!("-A -t {v}:80 -s rr\n"));
        for j in 0..10 {
            let e = std::net::Ipv4Addr::from(0x0a80_0000 + i * 10 + j);
            s.push_str(&format!("-a -t {v}:80 -r {e}:8080 -m -w 1\n"));
        }
    }
    s
}

/// utime + stime of a process, seconds.
fn proc_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<&str> = stat[stat.rfind(')').map_or(0, |i| i + 1)..]
        .split_whitespace()
        .collect();
    let f = |i: usize| {
        rest.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (f(11) + f(12)) / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A field of /proc/PID/status in KiB (VmHWM).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

fn get(ns: &Netns, path: &str) -> (Duration, Vec<u8>) {
    let t0 = Instant::now();
    let mut s = ns.enter(|| TcpStream::connect(ADDR)).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let el = t0.elapsed();
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| out[i + 4..].to_vec())
        .unwrap_or_default();
    (el, body)
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let n: u32 = arg("--services").map_or(50_000, |s| s.parse().unwrap());
    let rounds: usize = arg("--rounds").map_or(5, |s| s.parse().unwrap());
    let bin_dir = PathBuf::from(arg("--bin-dir").unwrap_or_else(|| "target/release".into()));
    let (xvsd, xvsadm) = (bin_dir.join("xvsd"), bin_dir.join("xvsadm"));
    let ns = Netns::new("bm");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["link", "set", "d1", "up"]);
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "d0"]);
    let id = std::process::id();
    let pin = format!("/sys/fs/bpf/xvs-bm-{id}");
    let state = std::env::temp_dir().join(format!("xvs-bm-{id}"));
    let common = [
        "--pin-dir".to_string(),
        pin.clone(),
        "--state-dir".into(),
        state.display().to_string(),
        "--conn-table-size".into(),
        CONN_TABLE.to_string(),
        "--max-services".into(),
        MAX_SERVICES.to_string(),
        "--max-dests".into(),
        MAX_DESTS.to_string(),
        "--sched-slots".into(),
        SCHED_SLOTS.to_string(),
    ];
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .arg(&xvsd)
        .args(&common)
        .args([
            "--iface",
            "d0",
            "--socket-lb",
            "off",
            "--metrics-listen",
            ADDR,
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("xvsd");
    let sock = state.join("xvsd.sock");
    while !sock.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let xvsadm_cmd = |args: &[&str]| {
        let mut c = Command::new(&xvsadm);
        c.args(args).env("XVSADM_SOCKET", &sock);
        c
    };
    let t0 = Instant::now();
    let mut r = xvsadm_cmd(&["-R"]).stdin(Stdio::piped()).spawn().unwrap();
    r.stdin
        .take()
        .unwrap()
        .write_all(rules(n).as_bytes())
        .unwrap();
    assert!(r.wait().unwrap().success());
    eprintln!(
        "loaded {n} services x 10 in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // Past the first estimator ticks.
    std::thread::sleep(Duration::from_secs(5));
    let pid = child.id();
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    let mut size = 0;
    let mut samples = 0;
    for _ in 0..rounds {
        let c0 = proc_cpu(pid);
        let (el, body) = get(&ns, "/metrics");
        cpu.push(proc_cpu(pid) - c0);
        wall.push(el.as_secs_f64());
        size = body.len();
        let text = String::from_utf8(body).unwrap();
        samples = text.lines().filter(|l| !l.starts_with('#')).count();
        let backends = text
            .lines()
            .filter(|l| l.starts_with("node_ipvs_backend_weight{"))
            .count();
        assert_eq!(backends, n as usize * 10, "every backend scraped");
    }
    let hwm = proc_status_kib(pid, "VmHWM");
    let mut list = Vec::new();
    for _ in 0..rounds.min(3) {
        let t = Instant::now();
        let o = xvsadm_cmd(&["-L", "-n"]).output().unwrap();
        assert!(o.status.success());
        list.push(t.elapsed().as_secs_f64());
    }
    let (w0, w1, w2) = median(wall);
    let (c0, c1, c2) = median(cpu);
    let (l0, l1, l2) = median(list);
    println!("| services x 10 | samples | body | scrape wall, s (min / median / max) | xvsd CPU per scrape, s | `xvsadm -L -n` wall, s | xvsd peak RSS |");
    println!("|---:|---:|---:|---|---|---|---:|");
    println!(
        "| {n} | {samples} | {:.1} MiB | {w0:.2} / {w1:.2} / {w2:.2} | {c0:.2} / {c1:.2} / {c2:.2} | {l0:.2} / {l1:.2} / {l2:.2} | {:.0} MiB |",
        size as f64 / (1 << 20) as f64,
        hwm as f64 / 1024.0
    );
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = Command::new(&xvsd).arg("teardown").args(&common).output();
    let _ = std::fs::remove_dir_all(&state);
}
