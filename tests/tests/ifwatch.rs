//! `xvsd --iface-match`: pod interfaces that appear after the daemon started are attached at
//! once and balanced (pods as clients, replies redirected back into the pod's veth), detached
//! cleanly when they go (also when they go while being attached), and adopted on restart.
//! Everything runs in namespaces these tests create, with the real xvsd.
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lb_user::ctl::Response;
use lb_user::model::{Destination, Op, ServiceConfig, ServiceKey};
use xvs_tests::daemon::{bin, Daemon, DaemonDirs, Teardown};
use xvs_tests::netns::{run, Netns, Topology};
use xvs_tests::servers::{serve, tcp_ask, udp_ask, Conn};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

fn rr_ops() -> Vec<Op> {
    let mut ops = Vec::new();
    for k in [ServiceKey::tcp(VIP, 80), ServiceKey::udp(VIP, 53)] {
        ops.push(Op::AddService(k, ServiceConfig::with_scheduler("rr")));
        for i in 1..=3 {
            let a: std::net::IpAddr = format!("10.11.{i}.2").parse().unwrap();
            ops.push(Op::AddDest(k, Destination::masq(a, 8080, 1)));
        }
    }
    ops
}

/// The hook everything is attached at in a test: XDP generic, or tc (what auto, the default
/// --mode, picks on veths).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Generic,
    Auto,
}

impl Hook {
    fn args(self) -> &'static [&'static str] {
        match self {
            Hook::Generic => &["--mode", "generic"],
            Hook::Auto => &[],
        }
    }

    /// The pin of an interface's link.
    fn pin(self, iface: &str) -> String {
        match self {
            Hook::Generic => format!("link_xdp_{iface}"),
            Hook::Auto => format!("link_tc_{iface}"),
        }
    }
}

/// xvsd on the topology's balancer: its own interfaces by name, pods' by pattern.
fn start(topo: &Topology, dirs: &DaemonDirs, log: &Path, hook: Hook) -> Daemon {
    let mut args: Vec<String> = topo
        .lb_ifaces()
        .into_iter()
        .flat_map(|i| ["--iface".to_string(), i])
        .collect();
    args.extend(["--iface-match", "pod*"].map(String::from));
    args.extend(hook.args().iter().map(|a| a.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_logged(&topo.lb, dirs, &a, log, "info")
}

/// A pod: its own namespace behind a veth whose balancer end is `dev` (10.12.`n`.1/24, the pod
/// 10.12.`n`.2/24 routed via it). The veth is created straight into both namespaces, so the
/// balancer sees one RTM_NEWLINK for `dev`, the moment this returns Instant/SystemTime for.
struct Pod {
    ns: Netns,
}

fn link_pod(topo: &Topology, tag: &str, dev: &str, n: u8) -> (Pod, SystemTime, Instant) {
    let ns = Netns::new(tag);
    let (wall, t0) = (SystemTime::now(), Instant::now());
    run(
        "ip",
        &[
            "link",
            "add",
            dev,
            "netns",
            &topo.lb.name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns.name,
        ],
    );
    topo.lb
        .ip(&["addr", "add", &format!("10.12.{n}.1/24"), "dev", dev]);
    topo.lb.ip(&["link", "set", dev, "up"]);
    ns.ip(&["addr", "add", &format!("10.12.{n}.2/24"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["route", "add", "default", "via", &format!("10.12.{n}.1")]);
    // Full checksums on the wire, as a real NIC sends them.
    ns.exec("ethtool", &["-K", "eth0", "tx", "off"]);
    (Pod { ns }, wall, t0)
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until `f` holds (up to 5 s).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Seconds since midnight UTC of a log line's timestamp (`2026-12-08T00:18:03.894347Z ...`).
fn line_time(line: &str) -> f64 {
    let t = &line[line.find('T').unwrap() + 1..line.find('Z').unwrap()];
    let p: Vec<f64> = t.split(':').map(|x| x.parse().unwrap()).collect();
    p[0] * 3600.0 + p[1] * 60.0 + p[2]
}

/// How long after `wall` the daemon logged the line containing `needle`, in ms.
fn logged_after(log: &Path, needle: &str, wall: SystemTime) -> f64 {
    let text = log_text(log);
    let line = text
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{text}"));
    let since = wall.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() % 86_400.0;
    ((line_time(line) - since).rem_euclid(86_400.0)) * 1000.0
}

/// IP datagrams the balancer's kernel forwarded (Ip: ForwDatagrams): the fast path's
/// redirects bypass it, the stack's forwarding counts here.
fn forwarded(lb: &Netns) -> u64 {
    let snmp = lb.exec("cat", &["/proc/net/snmp"]);
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "ForwDatagrams")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// The interfaces redirects may transmit on (the pinned TX_PORTS map's keys).
fn tx_ports(dirs: &DaemonDirs) -> Vec<u32> {
    let data = aya::maps::MapData::from_pin(dirs.pin_dir.join("TX_PORTS")).unwrap();
    let m = aya::maps::DevMapHash::try_from(aya::maps::Map::DevMapHash(data)).unwrap();
    let mut k: Vec<u32> = m.keys().map(|k| k.unwrap()).collect();
    k.sort();
    k
}

fn index_of(ns: &Netns, dev: &str) -> u32 {
    let out = ns.ip(&["-o", "link", "show", dev]);
    out.split(':').next().unwrap().trim().parse().unwrap()
}

fn xvsadm(dirs: &DaemonDirs, args: &[&str]) -> Output {
    Command::new(bin("xvsadm"))
        .args(args)
        .env("XVSADM_SOCKET", dirs.socket())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Conns per destination of the TCP service, from `xvsadm -L -n --stats`.
fn tcp_conns(dirs: &DaemonDirs) -> Vec<(String, u64)> {
    let out = xvsadm(dirs, &["-L", "-n", "--stats", "-t", "10.0.0.100:80"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-> "))
        .filter(|l| l.starts_with("10."))
        .map(|l| {
            let mut w = l.split_whitespace();
            (
                w.next().unwrap().to_string(),
                w.next().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn conns(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(a, n)| (a.to_string(), *n)).collect()
}

fn no_errors(log: &Path) {
    let text = log_text(log);
    assert!(
        !text.contains(" ERROR ") && !text.contains(" WARN "),
        "errors or warnings in the log:\n{text}"
    );
}

#[test]
fn a_pod_linked_after_start_is_balanced_at_once_and_detached_when_it_goes_xdp() {
    pod_lifecycle(Hook::Generic, "iwx");
}

#[test]
fn a_pod_linked_after_start_is_balanced_at_once_and_detached_when_it_goes_tc() {
    pod_lifecycle(Hook::Auto, "iwt");
}

fn pod_lifecycle(hook: Hook, tag: &str) {
    let xdp = hook == Hook::Generic;
    let topo = Topology::new(tag, 3);
    let _servers: Vec<_> = (0..3)
        .map(|i| serve(&topo.backends[i], 8080, &format!("rs{}", i + 1)))
        .collect();
    let dirs = DaemonDirs::new(tag);
    let _cleanup = Teardown(dirs.clone());
    std::fs::create_dir_all(&dirs.state_dir).unwrap();
    let log = dirs.state_dir.join("xvsd.log");
    let d = start(&topo, &dirs, &log, hook);
    assert_eq!(d.apply(rr_ops()), Response::Ok);
    let vip = SocketAddrV4::new(VIP, 80);
    // One round from the node's static client: the balancer then knows every backend's MAC
    // (a first packet towards an unresolved neighbour goes through the stack).
    let round: Vec<String> = (0..3).map(|_| tcp_ask(&topo.client, None, vip)).collect();
    assert_eq!(round.join(" "), "rs3 rs2 rs1");

    // The pod's veth appears; its first connection goes out right after the addresses are set.
    let fwd = forwarded(&topo.lb);
    let (pod, wall, t0) = link_pod(&topo, &format!("{tag}p"), "pod1", 1);
    assert_eq!(
        tcp_ask(&pod.ns, None, vip),
        "rs3",
        "the pod's first connection"
    );
    let answered = t0.elapsed();
    assert!(eventually(|| log_text(&log).contains("iface=pod1")));
    let attach_ms = logged_after(&log, "attached (matched --iface-match) iface=pod1", wall);
    eprintln!(
        "{tag}: pod1 attached {attach_ms:.1} ms after the link was created; first answer through the \
         VIP after {:.1} ms",
        answered.as_secs_f64() * 1000.0
    );
    assert!(attach_ms < 100.0, "attached after {attach_ms} ms");
    // Its very first SYN was balanced: one passed to the kernel instead finds no route to the
    // VIP (the connection fails) or, lost, is retransmitted only after a second.
    assert!(answered < Duration::from_millis(1000), "{answered:?}");
    assert!(dirs.pin_dir.join(hook.pin("pod1")).exists());
    let pod1 = index_of(&topo.lb, "pod1");
    // XDP redirects may transmit on it (tc ones need no list).
    assert_eq!(
        tx_ports(&dirs).contains(&pod1),
        xdp,
        "{:?}",
        tx_ports(&dirs)
    );

    // More from the pod, TCP and UDP, in rr order; replies come from the VIP.
    assert_eq!(tcp_ask(&pod.ns, None, vip), "rs2");
    let (name, from) = udp_ask(&pod.ns, None, SocketAddrV4::new(VIP, 53));
    assert_eq!(
        (name.as_str(), from),
        ("rs3", SocketAddrV4::new(VIP, 53).into())
    );
    assert_eq!(tcp_ask(&topo.client, None, vip), "rs1");
    // Both ways went by redirect (into the pod's veth too): nothing the kernel forwarded.
    assert_eq!(forwarded(&topo.lb), fwd, "the stack forwarded packets");
    assert_eq!(
        tcp_conns(&dirs),
        conns(&[
            ("10.11.1.2:8080", 2),
            ("10.11.2.2:8080", 2),
            ("10.11.3.2:8080", 2)
        ])
    );

    // The pod goes: detached, its pin gone, the others served as before.
    topo.lb.ip(&["link", "del", "pod1"]);
    assert!(
        eventually(|| log_text(&log).contains("detached iface=pod1")),
        "{}",
        log_text(&log)
    );
    assert!(!dirs.pin_dir.join(hook.pin("pod1")).exists());
    assert!(eventually(|| !tx_ports(&dirs).contains(&pod1)));
    assert_eq!(
        tx_ports(&dirs).len(),
        if xdp { 4 } else { 0 },
        "the balancer's own stay"
    );
    assert_eq!(tcp_ask(&topo.client, None, vip), "rs3");
    drop(pod);

    // Interfaces that are deleted as soon as they appear (some while being attached) leave
    // nothing behind, and no error.
    let mut batch = String::new();
    for i in 0..20 {
        batch.push_str(&format!(
            "link add podq{i} type veth peer name qq{i}\nlink del podq{i}\n"
        ));
    }
    let mut c = Command::new("ip")
        .args(["-n", &topo.lb.name, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(batch.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
    // The daemon has seen the last deletion once a link made after it is attached.
    let (pod2, _, _) = link_pod(&topo, &format!("{tag}q"), "pod2", 2);
    assert!(eventually(|| log_text(&log).contains("iface=pod2")));
    let mut pins: Vec<String> = std::fs::read_dir(&dirs.pin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("link_") && n.contains("_pod"))
        .collect();
    pins.sort();
    // XDP on a veth has the tc program behind it (for local senders' partial checksums).
    let want = match hook {
        Hook::Generic => vec!["link_tc_pod2".to_string(), hook.pin("pod2")],
        Hook::Auto => vec![hook.pin("pod2")],
    };
    assert_eq!(pins, want);
    assert_eq!(tcp_ask(&pod2.ns, None, vip), "rs2");

    // Renamed: still attached under its new name while it matches, detached when it no longer does.
    topo.lb.ip(&["link", "set", "pod2", "down"]);
    topo.lb.ip(&["link", "set", "pod2", "name", "pod2b"]);
    assert!(eventually(|| dirs.pin_dir.join(hook.pin("pod2b")).exists()));
    assert!(!dirs.pin_dir.join(hook.pin("pod2")).exists());
    let pod2_index = index_of(&topo.lb, "pod2b");
    assert_eq!(tx_ports(&dirs).contains(&pod2_index), xdp);
    topo.lb.ip(&["link", "set", "pod2b", "name", "other2"]);
    assert!(eventually(|| !dirs
        .pin_dir
        .join(hook.pin("pod2b"))
        .exists()));
    assert!(eventually(|| !tx_ports(&dirs).contains(&pod2_index)));
    let link = topo.lb.ip(&["-d", "link", "show", "other2"]);
    assert!(!link.contains("xdp"), "still has XDP: {link}");
    // Nothing balances its traffic any more: the balancer's kernel has no route to the VIP.
    topo.lb.ip(&["link", "set", "other2", "up"]);
    assert!(Conn::open(&pod2.ns, None, vip).is_err());
    no_errors(&log);
    d.stop();
    drop(pod2);
}

#[test]
fn a_restart_adopts_pods_that_stayed_and_forgets_those_that_went() {
    let topo = Topology::new("ir", 3);
    let _servers: Vec<_> = (0..3)
        .map(|i| serve(&topo.backends[i], 8080, &format!("rs{}", i + 1)))
        .collect();
    let dirs = DaemonDirs::new("ifrestart");
    let _cleanup = Teardown(dirs.clone());
    std::fs::create_dir_all(&dirs.state_dir).unwrap();
    let log = dirs.state_dir.join("xvsd.log");
    let d = start(&topo, &dirs, &log, Hook::Generic);
    assert_eq!(d.apply(rr_ops()), Response::Ok);
    let vip = SocketAddrV4::new(VIP, 80);
    let (stay, _, _) = link_pod(&topo, "irs", "pods", 1);
    let (gone, _, _) = link_pod(&topo, "irg", "podg", 2);
    let (again, _, _) = link_pod(&topo, "irr", "podr", 4);
    assert!(eventually(|| {
        let l = log_text(&log);
        l.contains("iface=pods") && l.contains("iface=podg") && l.contains("iface=podr")
    }));
    assert_eq!(tcp_ask(&stay.ns, None, vip), "rs3");
    assert_eq!(tcp_ask(&gone.ns, None, vip), "rs2");
    d.stop();

    // While no daemon runs: one pod goes, a new one comes, and one is replaced by a new
    // interface of the same name (its pinned link is defunct); the pinned fast path still
    // serves the pod that stayed.
    topo.lb.ip(&["link", "del", "podg"]);
    drop(gone);
    topo.lb.ip(&["link", "del", "podr"]);
    drop(again);
    let (again, _, _) = link_pod(&topo, "irr", "podr", 4);
    assert!(dirs.pin_dir.join("link_xdp_podg").exists());
    assert_eq!(tcp_ask(&stay.ns, None, vip), "rs1");
    let (late, _, _) = link_pod(&topo, "irl", "podl", 3);

    let log2 = dirs.state_dir.join("xvsd2.log");
    let d = start(&topo, &dirs, &log2, Hook::Generic);
    let l = log_text(&log2);
    assert!(
        l.contains("removed the pinned link of an interface that is gone iface=\"podg\""),
        "{l}"
    );
    assert!(
        l.lines().any(
            |x| x.contains("attached (matched --iface-match) iface=pods ")
                && x.contains("adopted=true")
        ),
        "{l}"
    );
    assert!(
        l.lines().any(
            |x| x.contains("attached (matched --iface-match) iface=podr ")
                && x.contains("adopted=false replaced_stale=true")
        ),
        "{l}"
    );
    assert!(!dirs.pin_dir.join("link_xdp_podg").exists());
    assert!(dirs.pin_dir.join("link_xdp_podl").exists());
    // The rr sequence goes on where it was, for the pod that stayed and the new ones alike.
    assert_eq!(tcp_ask(&stay.ns, None, vip), "rs3");
    assert_eq!(tcp_ask(&late.ns, None, vip), "rs2");
    assert_eq!(tcp_ask(&again.ns, None, vip), "rs1");
    no_errors(&log);
    no_errors(&log2);
    d.stop();
}
