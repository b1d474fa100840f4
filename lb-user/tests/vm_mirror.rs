//! In the VM, against a real kernel IPVS: xvsd mirroring a table programmed the way kube-proxy
//! programs it, and xvsd owning a table with a fallback service in kernel IPVS. Runs only with
//! XVS_IN_VM set (`cargo xtask vm-test`); on the host it prints a note and passes.
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lb_user::ctl::request;
use lb_user::ctl::{Request, Response};
use lb_user::snapshot::{EngineKind, Snapshot};

/// The tests share the one kernel IPVS table: one at a time.
static KERNEL: Mutex<()> = Mutex::new(());
const IO: Duration = Duration::from_secs(3);

fn in_vm() -> bool {
    if std::env::var_os("XVS_IN_VM").is_none() {
        eprintln!("skipped: runs inside the VM (cargo xtask vm-test)");
        return false;
    }
    true
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run("/sbin/ip", args)
}

/// `ip netns exec lb ipvsadm ...`
fn ipvsadm(args: &[&str]) -> String {
    let mut a = vec!["netns", "exec", "lb", "ipvsadm"];
    a.extend_from_slice(args);
    ip(&a)
}

fn ns_file(ns: &str) -> std::fs::File {
    std::fs::File::open(format!("/run/netns/{ns}")).unwrap()
}

/// Runs `f` with this thread in namespace `ns`, then moves it back.
fn enter<T>(ns: &str, f: impl FnOnce() -> T) -> T {
    let home = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    assert_eq!(
        unsafe { libc::setns(ns_file(ns).as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );
    let r = f();
    unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) };
    r
}

/// client -- lb -- b1, b2, b3 (servers answering their name on 8080); VIPs on a dummy
/// device in lb, as kube-proxy puts them on kube-ipvs0.
struct Net;

impl Net {
    fn new(vips: &[&str]) -> Net {
        for n in ["client", "lb", "b1", "b2", "b3"] {
            let _ = Command::new("/sbin/ip").args(["netns", "del", n]).status();
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        let pair = |a: &str, an: &str, b: &str, bn: &str| {
            ip(&[
                "link", "add", an, "netns", a, "type", "veth", "peer", "name", bn, "netns", b,
            ]);
            ip(&["-n", a, "link", "set", an, "up"]);
            ip(&["-n", b, "link", "set", bn, "up"]);
        };
        pair("client", "c0", "lb", "l0");
        ip(&["-n", "client", "addr", "add", "10.10.0.2/24", "dev", "c0"]);
        ip(&[
            "-n",
            "client",
            "route",
            "add",
            "default",
            "via",
            "10.10.0.1",
        ]);
        ip(&["-n", "lb", "addr", "add", "10.10.0.1/24", "dev", "l0"]);
        for k in 1..=3 {
            let b = format!("b{k}");
            pair("lb", &format!("l{k}"), &b, "b0");
            ip(&[
                "-n",
                "lb",
                "addr",
                "add",
                &format!("10.11.{k}.1/24"),
                "dev",
                &format!("l{k}"),
            ]);
            ip(&[
                "-n",
                &b,
                "addr",
                "add",
                &format!("10.11.{k}.2/24"),
                "dev",
                "b0",
            ]);
            ip(&[
                "-n",
                &b,
                "route",
                "add",
                "default",
                "via",
                &format!("10.11.{k}.1"),
            ]);
            serve(&b, &format!("rs{k}"));
        }
        ip(&[
            "netns",
            "exec",
            "lb",
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        ip(&["-n", "lb", "link", "add", "kube-ipvs0", "type", "dummy"]);
        for v in vips {
            ip(&[
                "-n",
                "lb",
                "addr",
                "add",
                &format!("{v}/32"),
                "dev",
                "kube-ipvs0",
            ]);
        }
        // The IPVS module is loaded by now (the netlink family was resolved before).
        for s in [
            "conntrack=1",
            "expire_nodest_conn=1",
            "expire_quiescent_template=1",
        ] {
            ip(&[
                "netns",
                "exec",
                "lb",
                "sysctl",
                "-qw",
                &format!("net.ipv4.vs.{s}"),
            ]);
        }
        Net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in ["client", "lb", "b1", "b2", "b3"] {
            let _ = Command::new("/sbin/ip").args(["netns", "del", n]).status();
        }
    }
}

fn serve(ns: &str, name: &str) {
    let (t, u) = enter(ns, || {
        (
            TcpListener::bind(("0.0.0.0", 8080)).unwrap(),
            UdpSocket::bind(("0.0.0.0", 8080)).unwrap(),
        )
    });
    let n = name.to_string();
    std::thread::spawn(move || {
        for c in t.incoming().flatten() {
            let n = n.clone();
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let mut line = String::new();
                let mut r = BufReader::new(c);
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    if w.write_all(format!("{n}\n").as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    let n = name.to_string();
    std::thread::spawn(move || {
        let mut b = [0u8; 512];
        while let Ok((_, from)) = u.recv_from(&mut b) {
            let _ = u.send_to(format!("{n}\n").as_bytes(), from);
        }
    });
}

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(vip: [u8; 4], port: u16) -> Conn {
        let s = enter("client", || {
            TcpStream::connect_timeout(&SocketAddrV4::new(vip.into(), port).into(), IO)
        })
        .expect("connect");
        s.set_read_timeout(Some(IO)).unwrap();
        Conn {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    fn ask(&mut self) -> String {
        self.w.write_all(b"hi\n").unwrap();
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l.trim().to_string()
    }

    fn port(&self) -> u16 {
        self.w.local_addr().unwrap().port()
    }
}

fn ask(vip: [u8; 4], port: u16) -> (String, u16) {
    let mut c = Conn::open(vip, port);
    (c.ask(), c.port())
}

/// What the fast path did with packets (its pinned per-reason counters) and what kernel IPVS
/// holds: printed when a check fails.
fn diagnostics() -> String {
    let mut out = String::new();
    if let Ok(m) = aya::maps::MapData::from_pin("/sys/fs/bpf/xvs-vmtest/PATH_STATS") {
        if let Ok(a) = aya::maps::PerCpuArray::<_, u64>::try_from(aya::maps::Map::PerCpuArray(m)) {
            let v: Vec<u64> = (0..lb_common::path::N)
                .map(|i| a.get(&i, 0).map(|p| p.iter().sum()).unwrap_or(0))
                .collect();
            out.push_str(&format!("PATH_STATS {v:?}\n"));
        }
    }
    out.push_str(&std::fs::read_to_string("/proc/thread-self/net/ip_vs_conn").unwrap_or_default());
    out
}

fn udp_ask(s: &UdpSocket, vip: [u8; 4], port: u16) -> String {
    s.send_to(b"hi\n", SocketAddrV4::new(vip.into(), port))
        .unwrap();
    let mut b = [0u8; 512];
    let (n, from) = s
        .recv_from(&mut b)
        .unwrap_or_else(|e| panic!("udp answer: {e}\n{}", enter("lb", diagnostics)));
    assert_eq!(
        from,
        SocketAddrV4::new(vip.into(), port).into(),
        "reply from the VIP"
    );
    String::from_utf8_lossy(&b[..n]).trim().to_string()
}

struct Xvsd {
    child: Option<Child>,
    state: PathBuf,
    pin: PathBuf,
}

impl Xvsd {
    fn start(extra: &[&str]) -> Xvsd {
        let bin = PathBuf::from(std::env::var("XVS_VM_BIN_DIR").unwrap()).join("xvsd");
        let state = PathBuf::from("/run/xvs-vmtest");
        let pin = PathBuf::from("/sys/fs/bpf/xvs-vmtest");
        let _ = std::fs::remove_file(state.join("xvsd.sock"));
        let ns = ns_file("lb");
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--pin-dir",
            pin.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .args([
            "--conn-table-size",
            "16384",
            "--max-dests",
            "4096",
            "--sched-slots",
            "65536",
        ])
        .args(["--mode", "generic"])
        .args([
            "--iface", "l0", "--iface", "l1", "--iface", "l2", "--iface", "l3",
        ])
        .args(extra)
        .stdin(Stdio::null());
        let fd = ns.as_raw_fd();
        // Only the network namespace: the daemon shares this bpffs and /run.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn xvsd");
        let t0 = Instant::now();
        while !state.join("xvsd.sock").exists() {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("xvsd exited: {st}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "xvsd did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Xvsd {
            child: Some(child),
            state,
            pin,
        }
    }

    fn snapshot(&self) -> Snapshot {
        match request(
            &self.state.join("xvsd.sock"),
            &Request::Snapshot { conns: false },
        )
        .unwrap()
        {
            Response::Snapshot(s) => *s,
            other => panic!("{other:?}"),
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            assert!(c.wait().unwrap().success());
        }
    }
}

impl Drop for Xvsd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let bin = PathBuf::from(std::env::var("XVS_VM_BIN_DIR").unwrap()).join("xvsd");
        let mut cmd = Command::new(bin);
        cmd.args(["teardown", "--pin-dir", self.pin.to_str().unwrap()])
            .args(["--state-dir", self.state.to_str().unwrap()]);
        let fd = ns_file("lb");
        let raw = fd.as_raw_fd();
        unsafe {
            cmd.pre_exec(move || {
                libc::setns(raw, libc::CLONE_NEWNET);
                Ok(())
            });
        }
        let _ = cmd.output();
    }
}

/// Connections kernel IPVS holds from the client's port `p`.
fn kernel_holds(conns: &str, p: u16) -> bool {
    let hex = format!("{:04X}", p);
    let dec = format!(":{p} ");
    conns.lines().any(|l| l.contains(&dec) || l.contains(&hex))
}

#[test]
fn mirror_takes_over_kube_proxys_table_without_breaking_anything() {
    if !in_vm() {
        return;
    }
    let _k = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    let _ = lb_user::ipvs_nl::IpvsClient::new(); // loads ip_vs
    let _net = Net::new(&["10.0.0.10", "10.0.0.20", "10.0.0.53"]);
    ipvsadm(&["-C"]);
    // As kube-proxy programs it: rr, masquerade, one ClientIP-affinity (persistent) service.
    for cmd in [
        "-A -t 10.0.0.10:80 -s rr",
        "-a -t 10.0.0.10:80 -r 10.11.1.2:8080 -m -w 1",
        "-a -t 10.0.0.10:80 -r 10.11.2.2:8080 -m -w 1",
        "-a -t 10.0.0.10:80 -r 10.11.3.2:8080 -m -w 1",
        "-A -t 10.0.0.20:80 -s rr -p 10800",
        "-a -t 10.0.0.20:80 -r 10.11.1.2:8080 -m -w 1",
        "-a -t 10.0.0.20:80 -r 10.11.2.2:8080 -m -w 1",
        "-A -u 10.0.0.53:53 -s rr",
        "-a -u 10.0.0.53:53 -r 10.11.1.2:8080 -m -w 1",
        "-a -u 10.0.0.53:53 -r 10.11.2.2:8080 -m -w 1",
        "-a -u 10.0.0.53:53 -r 10.11.3.2:8080 -m -w 1",
    ] {
        ipvsadm(&cmd.split(' ').collect::<Vec<_>>());
    }
    let before = ipvsadm(&["-S", "-n"]);
    // Opened through kernel IPVS before xvsd starts.
    let mut long = Conn::open([10, 0, 0, 10], 80);
    let first = long.ask();
    let udp = enter("client", || UdpSocket::bind(("10.10.0.2", 40053))).unwrap();
    udp.set_read_timeout(Some(IO)).unwrap();
    let udp_first = udp_ask(&udp, [10, 0, 0, 53], 53);

    let mut d = Xvsd::start(&["--mirror-ipvs", "--sync-period", "1s"]);
    let snap = d.snapshot();
    let engines: Vec<(String, EngineKind)> = snap
        .services
        .iter()
        .map(|s| (s.key.to_string(), s.engine))
        .collect();
    assert!(
        engines.contains(&("TCP 10.0.0.10:80".into(), EngineKind::FastPath)),
        "{engines:?}"
    );
    assert!(
        engines.contains(&("UDP 10.0.0.53:53".into(), EngineKind::FastPath)),
        "{engines:?}"
    );
    assert!(
        engines.contains(&("TCP 10.0.0.20:80".into(), EngineKind::Kernel)),
        "{engines:?}"
    );

    // The takeover breaks nothing: the TCP connection kernel IPVS holds keeps its backend
    // (its packets pass to the kernel), and so does the UDP flow (imported).
    for _ in 0..3 {
        assert_eq!(
            long.ask(),
            first,
            "long-lived TCP connection across the takeover"
        );
        assert_eq!(
            udp_ask(&udp, [10, 0, 0, 53], 53),
            udp_first,
            "UDP flow across the takeover"
        );
    }
    // New connections to accelerated services are the fast path's: kernel IPVS never sees them.
    let fresh: Vec<(String, u16)> = (0..3).map(|_| ask([10, 0, 0, 10], 80)).collect();
    let mut names: Vec<&str> = fresh.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["rs1", "rs2", "rs3"], "rr over three destinations");
    let kconns = ipvsadm(&["-L", "-n", "-c"]);
    for (_, p) in &fresh {
        assert!(
            !kernel_holds(&kconns, *p),
            "port {p} reached kernel IPVS:\n{kconns}"
        );
    }
    assert!(kernel_holds(&kconns, long.port()), "{kconns}");
    let fast = d.snapshot();
    let svc = fast
        .services
        .iter()
        .find(|s| s.key.to_string() == "TCP 10.0.0.10:80")
        .unwrap();
    assert!(
        svc.stats.conns >= 3,
        "the fast path counted them: {:?}",
        svc.stats
    );
    // The persistent service keeps working through kernel IPVS.
    let (p1, port) = ask([10, 0, 0, 20], 80);
    let (p2, _) = ask([10, 0, 0, 20], 80);
    assert_eq!(p1, p2, "ClientIP affinity");
    assert!(kernel_holds(&ipvsadm(&["-L", "-n", "-c"]), port));

    // Endpoint changes made with ipvsadm reach the fast path within one sync period: delete one
    // of the other two destinations and quiesce the last (not the long-lived connection's own:
    // with expire_nodest_conn=1 the kernel would rightly expire it).
    let others: Vec<String> = ["rs1", "rs2", "rs3"]
        .iter()
        .filter(|n| **n != first)
        .map(|n| format!("10.11.{}.2:8080", &n[2..]))
        .collect();
    ipvsadm(&["-d", "-t", "10.0.0.10:80", "-r", &others[0]]);
    ipvsadm(&[
        "-e",
        "-t",
        "10.0.0.10:80",
        "-r",
        &others[1],
        "-m",
        "-w",
        "0",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..4 {
        assert_eq!(
            ask([10, 0, 0, 10], 80).0,
            first,
            "only {first} is left with a weight"
        );
    }
    assert_eq!(long.ask(), first, "still on its backend");

    d.stop();
    // Mirror mode never writes to kernel IPVS (the two edits above were ipvsadm's).
    let after = ipvsadm(&["-S", "-n"]);
    let expect = before
        .replace(
            &format!("-a -t 10.0.0.10:80 -r {} -m -w 1\n", others[0]),
            "",
        )
        .replace(
            &format!("-a -t 10.0.0.10:80 -r {} -m -w 1", others[1]),
            &format!("-a -t 10.0.0.10:80 -r {} -m -w 0", others[1]),
        );
    assert_eq!(after, expect);
    ipvsadm(&["-C"]);
}

#[test]
fn own_mode_falls_back_to_kernel_ipvs_for_what_the_fast_path_lacks() {
    if !in_vm() {
        return;
    }
    let _k = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    let _ = lb_user::ipvs_nl::IpvsClient::new();
    let _net = Net::new(&["10.0.0.31"]);
    ipvsadm(&["-C"]);
    let rules = "\
-A -t 10.0.0.30:80 -s rr
-a -t 10.0.0.30:80 -r 10.11.1.2:8080 -m -w 1
-a -t 10.0.0.30:80 -r 10.11.2.2:8080 -m -w 1
-A -t 10.0.0.31:80 -s lc
-a -t 10.0.0.31:80 -r 10.11.3.2:8080 -m -w 1
";
    std::fs::create_dir_all("/run/xvs-vmtest").unwrap();
    std::fs::write("/run/xvs-vmtest/rules", rules).unwrap();
    let mut d = Xvsd::start(&["--rules", "/run/xvs-vmtest/rules"]);
    // Only the service the fast path lacks (lc) went into kernel IPVS.
    assert_eq!(
        ipvsadm(&["-S", "-n"]),
        "-A -t 10.0.0.31:80 -s lc\n-a -t 10.0.0.31:80 -r 10.11.3.2:8080 -m -w 1\n"
    );
    let snap = d.snapshot();
    let engines: Vec<(String, EngineKind)> = snap
        .services
        .iter()
        .map(|s| (s.key.to_string(), s.engine))
        .collect();
    assert_eq!(
        engines,
        [
            ("TCP 10.0.0.30:80".to_string(), EngineKind::FastPath),
            ("TCP 10.0.0.31:80".to_string(), EngineKind::Kernel)
        ]
    );
    assert_eq!(ask([10, 0, 0, 31], 80).0, "rs3", "served by kernel IPVS");
    let seq: Vec<String> = (0..2).map(|_| ask([10, 0, 0, 30], 80).0).collect();
    assert_eq!(seq, ["rs2", "rs1"], "served by the fast path");
    // Switching the kernel service's scheduler to rr moves it into the fast path.
    let sock = PathBuf::from("/run/xvs-vmtest/xvsd.sock");
    let key = lb_user::model::ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 31), 80);
    let op =
        lb_user::model::Op::EditService(key, lb_user::model::ServiceConfig::with_scheduler("rr"));
    let r = request(
        &sock,
        &Request::Apply(vec![lb_user::ctl::NumberedOp { line: None, op }]),
    )
    .unwrap();
    assert_eq!(r, Response::Ok);
    assert_eq!(ipvsadm(&["-S", "-n"]), "", "moved out of kernel IPVS");
    ip(&[
        "-n",
        "lb",
        "addr",
        "del",
        "10.0.0.31/32",
        "dev",
        "kube-ipvs0",
    ]);
    assert_eq!(
        ask([10, 0, 0, 31], 80).0,
        "rs3",
        "now served by the fast path"
    );
    // And back: teardown removes what xvsd put into the kernel.
    let op =
        lb_user::model::Op::EditService(key, lb_user::model::ServiceConfig::with_scheduler("wlc"));
    let r = request(
        &sock,
        &Request::Apply(vec![lb_user::ctl::NumberedOp { line: None, op }]),
    )
    .unwrap();
    assert_eq!(r, Response::Ok);
    assert!(ipvsadm(&["-S", "-n"]).contains("-A -t 10.0.0.31:80 -s wlc"));
    d.stop();
    drop(d);
    assert_eq!(
        ipvsadm(&["-S", "-n"]),
        "",
        "teardown removed the fallback service"
    );
}

/// GET `path` from `addr` inside namespace `ns`: the body, once the server answers.
fn http_get(ns: &str, addr: &str, path: &str) -> String {
    use std::io::Read;
    let t0 = Instant::now();
    loop {
        let got = enter(ns, || TcpStream::connect(addr)).and_then(|mut s| {
            s.set_read_timeout(Some(IO))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        match got {
            Ok(out) => return out.split_once("\r\n\r\n").unwrap().1.to_string(),
            Err(e) if t0.elapsed() > Duration::from_secs(20) => panic!("{addr}{path}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The node_ipvs_* part of a scrape: the HELP and TYPE lines, and each sample's value by its
/// name and labels (values parsed: node_exporter writes 1e6 and above as 1e+06).
fn ipvs_series(text: &str) -> (Vec<String>, std::collections::BTreeMap<String, f64>) {
    let mut meta: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("# HELP node_ipvs_") || l.starts_with("# TYPE node_ipvs_"))
        .map(str::to_string)
        .collect();
    meta.sort();
    let samples = text
        .lines()
        .filter(|l| l.starts_with("node_ipvs_"))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse::<f64>().unwrap())
        })
        .collect();
    (meta, samples)
}

/// The table and the traffic both scrapes see: a TCP and a UDP service; five TCP connections
/// opened, used and closed, one left open (returned), three datagrams of one UDP flow.
const TABLE: &str = "-A -t 10.0.0.10:80 -s rr
-a -t 10.0.0.10:80 -r 10.11.1.2:8080 -m -w 1
-a -t 10.0.0.10:80 -r 10.11.2.2:8080 -m -w 2
-a -t 10.0.0.10:80 -r 10.11.3.2:8080 -m -w 3
-A -u 10.0.0.10:53 -s rr
-a -u 10.0.0.10:53 -r 10.11.1.2:8080 -m -w 1
-a -u 10.0.0.10:53 -r 10.11.2.2:8080 -m -w 0
";

fn traffic() -> Conn {
    for _ in 0..5 {
        let mut c = Conn::open([10, 0, 0, 10], 80);
        c.ask();
    }
    let mut long = Conn::open([10, 0, 0, 10], 80);
    long.ask();
    let udp = enter("client", || UdpSocket::bind(("10.10.0.2", 0))).unwrap();
    udp.set_read_timeout(Some(IO)).unwrap();
    for _ in 0..3 {
        udp_ask(&udp, [10, 0, 0, 10], 53);
    }
    // The closed connections' last segments (FIN, ACK) have passed.
    std::thread::sleep(Duration::from_millis(500));
    long
}

/// node_exporter's ipvs collector on kernel IPVS, and xvsd --metrics-listen on the fast path,
/// for the same table and the same traffic: the same node_ipvs_* series, HELP and TYPE texts,
/// labels and values.
#[test]
fn node_exporter_on_kernel_ipvs_and_xvsd_scrape_the_same_series() {
    if !in_vm() {
        return;
    }
    let _k = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    let _ = lb_user::ipvs_nl::IpvsClient::new(); // loads ip_vs
    let net = Net::new(&["10.0.0.10"]);
    ipvsadm(&["-C"]);
    ipvsadm(&["-Z"]);

    // Kernel IPVS, scraped by Debian's prometheus-node-exporter in the balancer's namespace
    // (it reads /proc/net/ip_vs and /proc/net/ip_vs_stats of the namespace it runs in).
    for line in TABLE.lines() {
        ipvsadm(&line.split(' ').collect::<Vec<_>>());
    }
    let long = traffic();
    let mut cmd = Command::new("/usr/bin/prometheus-node-exporter");
    cmd.args([
        "--collector.disable-defaults",
        "--collector.ipvs",
        "--web.listen-address=127.0.0.1:9100",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let fd = ns_file("lb");
    let raw = fd.as_raw_fd();
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut ne = cmd
        .spawn()
        .expect("prometheus-node-exporter in the VM image");
    // The kernel publishes its totals (/proc/net/ip_vs_stats) from its estimator, every 2 s:
    // scraped until the connections show (the per-backend series are current at once).
    let t0 = Instant::now();
    let kernel_text = loop {
        let text = http_get("lb", "127.0.0.1:9100", "/metrics");
        if text.contains("\nnode_ipvs_connections_total 7\n") || t0.elapsed().as_secs() > 10 {
            break text;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = ne.kill();
    let _ = ne.wait();
    let listed = ipvsadm(&["-L", "-n", "--stats", "--exact"]);
    drop(long);
    ipvsadm(&["-C"]);
    drop(net);

    // The fast path: the same table (a rules file) and the same traffic in fresh namespaces.
    let _net = Net::new(&["10.0.0.10"]);
    ipvsadm(&["-C"]);
    let rules = PathBuf::from("/run/xvs-vmtest-rules");
    std::fs::write(&rules, TABLE).unwrap();
    let mut d = Xvsd::start(&[
        "--rules",
        rules.to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:9477",
    ]);
    assert!(d
        .snapshot()
        .services
        .iter()
        .all(|s| s.engine == EngineKind::FastPath));
    let long = traffic();
    let xvs_text = http_get("lb", "127.0.0.1:9477", "/metrics");
    drop(long);
    d.stop();

    let (kmeta, kernel) = ipvs_series(&kernel_text);
    let (xmeta, xvs) = ipvs_series(&xvs_text);
    eprintln!("kernel IPVS ({listed}) through node_exporter:\n{kernel:#?}\nxvsd:\n{xvs:#?}");
    assert_eq!(kmeta.len(), 16, "{kernel_text}");
    assert_eq!(xmeta, kmeta);
    // Every series, label for label; then every value.
    assert_eq!(
        xvs.keys().collect::<Vec<_>>(),
        kernel.keys().collect::<Vec<_>>()
    );
    assert_eq!(xvs, kernel);
    assert_eq!(kernel.len(), 5 + 3 * 5);
    assert_eq!(kernel["node_ipvs_connections_total"], 7.0);
}
