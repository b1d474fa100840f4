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
            assert!(e.contains("scheduler lc is not supported by the fast path"), "{e}");
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
