//! A real Prometheus (Debian's `prometheus`, installed by `cargo xtask setup`) scrapes
//! `xvsd --metrics-listen` inside the balancer's namespace while real traffic flows: the
//! node_exporter-named series agree exactly with `xvsadm -L -n --stats` and move with the
//! traffic, the shipped alert rules load and fire, and every series the rules and the Grafana
//! dashboard name exists. Prometheus runs in the balancer's namespace (nsenter --net), listens
//! on that namespace's loopback only and scrapes the daemon's address there.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lb_user::ctl::Response;
use lb_user::model::{Destination, Op, ServiceConfig, ServiceKey};
use serde_json::Value;
use xvs_tests::daemon::{bin, Daemon, DaemonDirs, Teardown};
use xvs_tests::netns::{Netns, Topology};
use xvs_tests::servers::{serve, tcp_ask};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const METRICS: &str = "10.10.0.1:9477";
const PROM: &str = "127.0.0.1:19090";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// Prometheus in `ns`, stopped (and its data removed) when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
}

impl Prometheus {
    fn start(ns: &Netns, rules: &Path) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("xvs-prom-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: xvs\n    static_configs:\n      - targets: ['{METRICS}']\n",
            rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .arg("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROM}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package `prometheus`: cargo xtask setup installs it)");
        let p = Prometheus { child, dir };
        let t0 = Instant::now();
        while !http_get(ns, PROM, "/-/ready").is_ok_and(|(st, _)| st.contains("200")) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "Prometheus did not become ready:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET `path` from `addr` inside `ns`: (status line, body).
fn http_get(ns: &Netns, addr: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut s = ns.enter(|| TcpStream::connect(addr))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

/// An instant query: each series' labels (without __name__) and value.
fn query(ns: &Netns, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let (status, body) = http_get(ns, PROM, &format!("/api/v1/query?query={}", urlencode(q)))
        .expect("Prometheus answers");
    assert!(status.contains("200"), "{q}: {status} {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (labels, r["value"][1].as_str().unwrap().parse().unwrap())
        })
        .collect()
}

/// The value of a query that yields one series.
fn scalar(ns: &Netns, q: &str) -> Option<f64> {
    let r = query(ns, q);
    assert!(r.len() <= 1, "{q}: {r:?}");
    r.first().map(|(_, v)| *v)
}

/// Waits until `q` yields one series with value `want`.
fn wait_for(ns: &Netns, q: &str, want: f64, prom: &Prometheus) {
    let t0 = Instant::now();
    loop {
        let got = scalar(ns, q);
        if got == Some(want) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{q}: {got:?}, want {want}; Prometheus log:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn xvsadm(dirs: &DaemonDirs, args: &[&str]) -> String {
    let out = Command::new(bin("xvsadm"))
        .args(args)
        .env("XVSADM_SOCKET", dirs.socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `xvsadm -L -n --stats --exact`: the services' totals (Conns InPkts OutPkts InBytes OutBytes).
fn listed_totals(text: &str) -> [u64; 5] {
    let mut tot = [0u64; 5];
    for l in text
        .lines()
        .filter(|l| l.starts_with("TCP ") || l.starts_with("UDP "))
    {
        let f: Vec<u64> = l
            .split_whitespace()
            .skip(2)
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(f.len(), 5, "{l}");
        for i in 0..5 {
            tot[i] += f[i];
        }
    }
    tot
}

/// `xvsadm -L -n`: per destination "addr:port" -> (weight, active, inactive).
fn listed_backends(text: &str) -> BTreeMap<String, (f64, f64, f64)> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("-> "))
        .filter(|l| !l.starts_with("RemoteAddress"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f[i].parse::<f64>().unwrap();
            (f[0].to_string(), (n(2), n(3), n(4)))
        })
        .collect()
}

/// Prometheus' per-backend series of `metric`, keyed "addr:port", checking the service labels.
fn scraped_backends(ns: &Netns, metric: &str) -> BTreeMap<String, f64> {
    query(ns, metric)
        .into_iter()
        .map(|(l, v)| {
            // node_exporter's labels; Prometheus drops the empty local_mark.
            let keys: Vec<&str> = l.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "instance",
                    "job",
                    "local_address",
                    "local_port",
                    "proto",
                    "remote_address",
                    "remote_port"
                ],
                "{metric}"
            );
            assert_eq!(
                (&*l["local_address"], &*l["local_port"], &*l["proto"]),
                ("10.0.0.100", "80", "TCP")
            );
            assert_eq!(l["instance"], METRICS);
            (format!("{}:{}", l["remote_address"], l["remote_port"]), v)
        })
        .collect()
}

/// node_ipvs_* against `xvsadm -L -n --stats` and `xvsadm -L -n`, value for value.
fn check_against_listing(ns: &Netns, dirs: &DaemonDirs) {
    let stats = listed_totals(&xvsadm(dirs, &["-L", "-n", "--stats", "--exact"]));
    for (i, m) in [
        "node_ipvs_connections_total",
        "node_ipvs_incoming_packets_total",
        "node_ipvs_outgoing_packets_total",
        "node_ipvs_incoming_bytes_total",
        "node_ipvs_outgoing_bytes_total",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(scalar(ns, m), Some(stats[i] as f64), "{m}");
    }
    let listed = listed_backends(&xvsadm(dirs, &["-L", "-n"]));
    assert_eq!(listed.len(), 2, "{listed:?}");
    let weight = scraped_backends(ns, "node_ipvs_backend_weight");
    let active = scraped_backends(ns, "node_ipvs_backend_connections_active");
    let inactive = scraped_backends(ns, "node_ipvs_backend_connections_inactive");
    for (dest, (w, a, i)) in &listed {
        assert_eq!(
            (weight.get(dest), active.get(dest), inactive.get(dest)),
            (Some(w), Some(a), Some(i)),
            "{dest}"
        );
    }
    assert_eq!(weight.len(), listed.len());
}

/// Metric names (node_ipvs_*, xvs_*) an expression text mentions.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["node_ipvs_", "xvs_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.insert(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn prometheus_scrapes_the_node_exporter_series_and_they_follow_the_traffic() {
    let rules = repo().join("dist/prometheus/xvs-alerts.yml");
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian package `prometheus`)");
    assert!(
        check.status.success()
            && String::from_utf8_lossy(&check.stdout).contains("SUCCESS: 7 rules found"),
        "{check:?}"
    );

    let topo = Topology::new("pm", 2);
    let _servers: Vec<_> = (0..2)
        .map(|i| serve(&topo.backends[i], 8080, &format!("rs{}", i + 1)))
        .collect();
    let dirs = DaemonDirs::new("prom");
    let _cleanup = Teardown(dirs.clone());
    let d = Daemon::start(
        &topo.lb,
        &dirs,
        &[
            "--iface",
            "l0",
            "--iface",
            "l1",
            "--iface",
            "l2",
            "--socket-lb",
            "off",
            "--metrics-listen",
            METRICS,
        ],
    );
    let k = ServiceKey::tcp(VIP, 80);
    let mut ops = vec![Op::AddService(k, ServiceConfig::with_scheduler("rr"))];
    for i in 1..=2 {
        let a: std::net::IpAddr = format!("10.11.{i}.2").parse().unwrap();
        ops.push(Op::AddDest(k, Destination::masq(a, 8080, 1)));
    }
    assert_eq!(d.apply(ops), Response::Ok);
    // The daemon's own endpoint: text format 0.0.4, and nothing but /metrics.
    let (status, body) = http_get(&topo.lb, METRICS, "/metrics").unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("# TYPE node_ipvs_connections_total counter\n"));
    let (status, _) = http_get(&topo.lb, METRICS, "/").unwrap();
    assert!(status.contains("404"), "{status}");

    let prom = Prometheus::start(&topo.lb, &rules);
    let vip = SocketAddrV4::new(VIP, 80);
    let answers: Vec<String> = (0..3).map(|_| tcp_ask(&topo.client, None, vip)).collect();
    assert_eq!(answers.join(" "), "rs2 rs1 rs2");
    wait_for(&topo.lb, "node_ipvs_connections_total", 3.0, &prom);
    assert_eq!(scalar(&topo.lb, r#"up{job="xvs"}"#), Some(1.0));
    // Counter values change only with traffic: the last scrape has what xvsadm shows now.
    check_against_listing(&topo.lb, &dirs);
    assert_eq!(
        scalar(&topo.lb, r#"xvs_fastpath_packets_total{reason="fwd_new"}"#),
        Some(3.0)
    );
    assert_eq!(
        scalar(&topo.lb, r#"xvs_services{engine="fastpath"}"#),
        Some(1.0)
    );
    assert_eq!(
        scalar(&topo.lb, r#"xvs_control_changes_total{result="applied"}"#),
        Some(1.0)
    );
    let ifaces: BTreeSet<String> = query(&topo.lb, "xvs_interface_attached")
        .into_iter()
        .map(|(l, _)| format!("{}:{}:{}", l["interface"], l["hook"], l["mode"]))
        .collect();
    assert_eq!(
        ifaces.into_iter().collect::<Vec<_>>(),
        ["l0:tc:tc", "l1:tc:tc", "l2:tc:tc"]
    );

    // More traffic: the series move by exactly that much.
    let before_in = scalar(&topo.lb, "node_ipvs_incoming_packets_total").unwrap();
    for _ in 0..4 {
        tcp_ask(&topo.client, None, vip);
    }
    wait_for(&topo.lb, "node_ipvs_connections_total", 7.0, &prom);
    check_against_listing(&topo.lb, &dirs);
    assert_eq!(
        scalar(&topo.lb, r#"xvs_fastpath_packets_total{reason="fwd_new"}"#),
        Some(7.0)
    );
    assert!(scalar(&topo.lb, "node_ipvs_incoming_packets_total").unwrap() > before_in);

    // Every series the alert rules and the dashboard name is one Prometheus has now (the
    // mirror-mode one only in mirror mode).
    let (_, names) = http_get(&topo.lb, PROM, "/api/v1/label/__name__/values").unwrap();
    let have: BTreeSet<String> = serde_json::from_str::<Value>(&names).unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let dashboard =
        std::fs::read_to_string(repo().join("dist/grafana/xvs-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut exprs = String::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let used = names_in(&exprs);
    for n in [
        "node_ipvs_connections_total",
        "node_ipvs_incoming_bytes_total",
        "node_ipvs_backend_connections_active",
        "node_ipvs_backend_weight",
    ] {
        assert!(used.contains(n), "the dashboard shows {n}");
    }
    let rule_names = names_in(&std::fs::read_to_string(&rules).unwrap());
    for n in used.iter().chain(&rule_names) {
        assert!(
            have.contains(n) || n == "xvs_mirror_sync_lag_seconds",
            "{n} is not a series xvsd exports: {have:?}"
        );
    }

    // Both destinations quiesced: the no-available-destination alert goes pending.
    let quiesce: Vec<Op> = (1..=2)
        .map(|i| {
            let a: std::net::IpAddr = format!("10.11.{i}.2").parse().unwrap();
            Op::EditDest(k, Destination::masq(a, 8080, 0))
        })
        .collect();
    assert_eq!(d.apply(quiesce), Response::Ok);
    wait_for(
        &topo.lb,
        r#"count(ALERTS{alertname="XvsNoAvailableDestination",local_address="10.0.0.100",local_port="80",proto="TCP"})"#,
        1.0,
        &prom,
    );
    check_against_listing(&topo.lb, &dirs);
    drop(prom);
    d.stop();
}
