//! The real xvsd binary: restart without dropping anything, reloads, and errors people can act on.
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;

use lb_user::ctl::{Request, Response};
use lb_user::fastpath::AttachMode;
use lb_user::model::{Destination, Op, ServiceConfig, ServiceKey};
use xvs_tests::daemon::{bin, Daemon, DaemonDirs, Teardown};
use xvs_tests::fixture::Lb;
use xvs_tests::netns::{Netns, Topology};
use xvs_tests::servers::{serve, tcp_ask, Conn};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

fn rr_ops() -> Vec<Op> {
    let k = ServiceKey::tcp(VIP, 80);
    let mut ops = vec![Op::AddService(k, ServiceConfig::with_scheduler("rr"))];
    for i in 1..=3 {
        let a: std::net::IpAddr = format!("10.11.{i}.2").parse().unwrap();
        ops.push(Op::AddDest(k, Destination::masq(a, 8080, 1)));
    }
    ops
}

fn iface_args(topo: &Topology) -> Vec<String> {
    topo.lb_ifaces()
        .into_iter()
        .flat_map(|i| ["--iface".to_string(), i])
        .collect()
}

#[test]
fn restart_keeps_established_connections_and_the_scheduler_sequence() {
    let topo = Topology::new("rs", 3);
    let _servers: Vec<_> = (0..3)
        .map(|i| serve(&topo.backends[i], 8080, &format!("rs{}", i + 1)))
        .collect();
    // Redirects into the veths deliver only with XDP on the peers: a helper instance puts the
    // pass-through program there (the daemon's own links are on the balancer side).
    let mut peers = Lb::new(false);
    topo.client
        .enter(|| peers.fp.attach_pass("c0", AttachMode::Native))
        .unwrap();
    for b in &topo.backends {
        b.enter(|| peers.fp.attach_pass("b0", AttachMode::Native))
            .unwrap();
    }
    let dirs = DaemonDirs::new("restart");
    let _cleanup = Teardown(dirs.clone());
    let args = iface_args(&topo);
    let mut extra: Vec<&str> = args.iter().map(String::as_str).collect();
    extra.push("--redirect-virtual");

    let d = Daemon::start(&topo.lb, &dirs, &extra);
    assert_eq!(d.apply(rr_ops()), Response::Ok);
    let vip = SocketAddrV4::new(VIP, 80);
    let mut long = Conn::open(&topo.client, None, vip).unwrap();
    assert_eq!(long.ask().unwrap(), "rs3");
    assert_eq!(tcp_ask(&topo.client, None, vip), "rs2");

    d.stop();
    // No daemon: the pinned fast path still balances.
    assert_eq!(long.ask().unwrap(), "rs3");
    assert!(dirs.pin_dir.join("SERVICES").exists());

    let d = Daemon::start(&topo.lb, &dirs, &extra);
    assert_eq!(
        long.ask().unwrap(),
        "rs3",
        "established connection kept across the restart"
    );
    let next: Vec<String> = (0..4).map(|_| tcp_ask(&topo.client, None, vip)).collect();
    assert_eq!(
        next.join(" "),
        "rs1 rs3 rs2 rs1",
        "the rr sequence continues where it was"
    );
    match d.request(&Request::Snapshot { conns: true }) {
        Response::Snapshot(s) => {
            assert_eq!(s.services.len(), 1);
            assert_eq!(s.services[0].stats.conns, 6);
            let active: u32 = s.services[0].dests.iter().map(|d| d.active).sum();
            assert!(active >= 1, "the long-lived connection is active: {s:?}");
        }
        other => panic!("{other:?}"),
    }
    d.stop();
    let out = dirs.teardown();
    assert!(out.status.success(), "{out:?}");
    assert!(!dirs.pin_dir.exists(), "teardown removes every pin");
    // Torn down: nothing balances the VIP any more.
    assert!(Conn::open(&topo.client, None, vip).is_err() || long.ask().is_err());
}

#[test]
fn a_bad_batch_is_refused_whole_and_changes_nothing() {
    let ns = Netns::new("bb");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["link", "set", "d1", "up"]);
    let dirs = DaemonDirs::new("badbatch");
    let _cleanup = Teardown(dirs.clone());
    let d = Daemon::start(&ns, &dirs, &["--iface", "d0", "--mode", "generic"]);
    assert_eq!(d.apply(rr_ops()), Response::Ok);
    let before = d.request(&Request::Snapshot { conns: false });
    let k = ServiceKey::tcp(VIP, 80);
    let bad = vec![
        Op::AddDest(
            k,
            Destination::masq("10.11.9.2".parse::<std::net::IpAddr>().unwrap(), 8080, 1),
        ),
        Op::AddService(
            ServiceKey::tcp(VIP, 81),
            ServiceConfig::with_scheduler("nosuch"),
        ),
    ];
    match d.apply(bad) {
        Response::Error(e) => assert!(e.contains("Scheduler not found: nosuch"), "{e}"),
        other => panic!("{other:?}"),
    }
    let lc = vec![Op::AddService(
        ServiceKey::tcp(VIP, 82),
        ServiceConfig::with_scheduler("lc"),
    )];
    match d.apply(lc) {
        Response::Error(e) => {
            assert!(
                e.contains("scheduler lc is not supported by the fast path"),
                "{e}"
            );
            // This host's kernel has no IPVS to fall back to: the refusal says so.
            assert!(
                e.contains("kernel IPVS cannot take it as a fallback: this kernel has no IPVS"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.request(&Request::Snapshot { conns: false }), before);
    d.stop();
}

fn xvsd(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("xvsd")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn errors_say_what_to_do() {
    let dirs = DaemonDirs::new("errs");
    let _cleanup = Teardown(dirs.clone());
    let mut a: Vec<String> = dirs.args();
    a.extend(["--iface".into(), "nosuchif0".into()]);
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let (ok, err) = xvsd(&args);
    assert!(!ok);
    assert!(err.contains("interface nosuchif0 does not exist"), "{err}");

    let (ok, err) = xvsd(&dirs.args().iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok);
    assert!(err.contains("name at least one interface"), "{err}");

    // Not root: drop every capability.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin("xvsd"))
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("xvsd needs root, or the capabilities"),
        "{err}"
    );
}

#[test]
fn a_second_daemon_is_refused() {
    let ns = Netns::new("two");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    let dirs = DaemonDirs::new("two");
    let _cleanup = Teardown(dirs.clone());
    let d = Daemon::start(&ns, &dirs, &["--iface", "d0", "--mode", "generic"]);
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .arg(bin("xvsd"))
        .args(dirs.args())
        .args(["--iface", "d0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("another xvsd is already running"), "{err}");
    d.stop();
}

/// Waits until `f` holds (up to 5 s).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(5) {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[test]
fn bpf_logging_is_off_by_default_and_reports_connections_when_on() {
    let topo = Topology::new("lg", 3);
    let _servers: Vec<_> = (0..3)
        .map(|i| serve(&topo.backends[i], 8080, &format!("rs{}", i + 1)))
        .collect();
    let vip = SocketAddrV4::new(VIP, 80);
    let args = iface_args(&topo);
    let mut extra: Vec<&str> = args.iter().map(String::as_str).collect();
    extra.extend(["--mode", "generic"]);
    for on in [false, true] {
        let dirs = DaemonDirs::new(if on { "logon" } else { "logoff" });
        let _cleanup = Teardown(dirs.clone());
        let log = std::env::temp_dir().join(format!("xvs-log-{on}-{}.log", std::process::id()));
        let mut e = extra.clone();
        if on {
            e.push("--bpf-log");
        }
        let d = Daemon::start_logged(&topo.lb, &dirs, &e, &log, "debug");
        assert_eq!(d.apply(rr_ops()), Response::Ok);
        assert_eq!(tcp_ask(&topo.client, None, vip), "rs3");
        // All destinations quiesced: the next SYN is refused (passed to the kernel).
        let k = ServiceKey::tcp(VIP, 80);
        let quiesce: Vec<Op> = (1..=3)
            .map(|i| {
                let a: std::net::IpAddr = format!("10.11.{i}.2").parse().unwrap();
                Op::EditDest(k, Destination::masq(a, 8080, 0))
            })
            .collect();
        assert_eq!(d.apply(quiesce), Response::Ok);
        assert!(Conn::open(&topo.client, None, vip).is_err());
        let new_conn = "scheduled to 10.11.3.2:8080";
        let refused = "no destination available for 10.0.0.100:80 (proto 6)";
        if on {
            let seen = eventually(|| {
                let l = std::fs::read_to_string(&log).unwrap_or_default();
                l.contains(new_conn) && l.contains(refused)
            });
            assert!(seen, "{}", std::fs::read_to_string(&log).unwrap());
        } else {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let l = std::fs::read_to_string(&log).unwrap();
            assert!(!l.contains(new_conn) && !l.contains(refused), "{l}");
        }
        d.stop();
        let _ = std::fs::remove_file(&log);
    }
}

#[test]
fn sighup_reloads_the_rules_file_applying_only_the_difference() {
    let topo = Topology::new("hp", 3);
    let _servers: Vec<_> = (0..3)
        .map(|i| serve(&topo.backends[i], 8080, &format!("rs{}", i + 1)))
        .collect();
    let dirs = DaemonDirs::new("sighup");
    let _cleanup = Teardown(dirs.clone());
    std::fs::create_dir_all(&dirs.state_dir).unwrap();
    let rules = dirs.state_dir.join("rules");
    let v1 = "\
-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r 10.11.1.2:8080 -m -w 1
-a -t 10.0.0.100:80 -r 10.11.2.2:8080 -m -w 1
-a -t 10.0.0.100:80 -r 10.11.3.2:8080 -m -w 1
";
    std::fs::write(&rules, v1).unwrap();
    let args = iface_args(&topo);
    let mut extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let rules_s = rules.display().to_string();
    extra.extend(["--mode", "generic", "--rules", &rules_s]);
    let log = dirs.state_dir.join("xvsd.log");
    let d = Daemon::start_logged(&topo.lb, &dirs, &extra, &log, "info");
    let vip = SocketAddrV4::new(VIP, 80);
    let mut long = Conn::open(&topo.client, None, vip).unwrap();
    assert_eq!(long.ask().unwrap(), "rs3");
    assert_eq!(tcp_ask(&topo.client, None, vip), "rs2");

    // rs1 leaves, a UDP service arrives; rs3 (the long-lived connection's) and rs2 are
    // unchanged, so only two changes are applied and the rr sequence goes on from rs2.
    let v2 = "\
-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r 10.11.2.2:8080 -m -w 1
-a -t 10.0.0.100:80 -r 10.11.3.2:8080 -m -w 1
-A -u 10.0.0.100:53 -s rr
-a -u 10.0.0.100:53 -r 10.11.1.2:8080 -m -w 1
";
    std::fs::write(&rules, v2).unwrap();
    d.signal(libc::SIGHUP);
    assert!(eventually(|| std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("rules reloaded changes=3")));
    assert_eq!(
        long.ask().unwrap(),
        "rs3",
        "unchanged destinations keep their connections"
    );
    let seq: Vec<String> = (0..2).map(|_| tcp_ask(&topo.client, None, vip)).collect();
    assert_eq!(seq.join(" "), "rs3 rs2");
    let snap = match d.request(&Request::Snapshot { conns: false }) {
        Response::Snapshot(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(snap.services.len(), 2);

    // A bad file on reload is refused whole, naming the line; the table stays as it was.
    std::fs::write(
        &rules,
        format!("{v2}-a -u 10.0.0.100:53 -r 10.11.2.2:8080 -m -w -1\n"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    assert!(
        eventually(|| {
            let l = std::fs::read_to_string(&log).unwrap_or_default();
            l.contains("reload refused, table unchanged") && l.contains("line 6")
        }),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    // The table, not its counters: a late segment of a closed connection may still count.
    let table = |s: &lb_user::snapshot::Snapshot| {
        s.services
            .iter()
            .map(|v| {
                let dests: Vec<_> = v.dests.iter().map(|d| d.dest.clone()).collect();
                (v.key, v.config.clone(), dests)
            })
            .collect::<Vec<_>>()
    };
    match d.request(&Request::Snapshot { conns: false }) {
        Response::Snapshot(after) => assert_eq!(table(&after), table(&snap)),
        other => panic!("{other:?}"),
    }
    d.stop();
}

#[test]
fn a_missing_bpffs_is_mounted() {
    // A private mount namespace where /sys/fs/bpf is not a bpffs (as on these machines at
    // boot): xvsd mounts one and pins there. Everything pinned in it goes with the namespace.
    let ns = Netns::new("fs");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    let dirs = DaemonDirs::new("bpffs");
    let _cleanup = Teardown(dirs.clone());
    let mut args = vec![
        format!("--net=/run/netns/{}", ns.name),
        bin("xvsd").display().to_string(),
    ];
    args.extend(dirs.args());
    args.extend([
        "--iface".into(),
        "d0".into(),
        "--mode".into(),
        "generic".into(),
    ]);
    let script = format!(
        "umount /sys/fs/bpf 2>/dev/null; ! grep -q ' /sys/fs/bpf bpf ' /proc/self/mounts || exit 3; exec nsenter {}",
        args.join(" ")
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = eventually(|| dirs.socket().exists());
    let mounts =
        std::fs::read_to_string(format!("/proc/{}/mounts", child.id())).unwrap_or_default();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert!(up, "xvsd came up without a bpffs ({st})");
    assert!(
        mounts.contains(" /sys/fs/bpf bpf "),
        "xvsd mounted a bpffs: {mounts}"
    );
    assert!(st.success(), "{st}");
}
