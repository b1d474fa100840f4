//! The real xvsd serving every traffic class of a node, at each hook (XDP native, XDP generic,
//! tc): the node's own processes connecting to a VIP (balanced at the socket), and restarts
//! that keep a long TCP stream.
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;

use lb_user::ctl::Response;
use lb_user::fastpath::AttachMode;
use lb_user::model::{Destination, Op, ServiceConfig, ServiceKey};
use xvs_tests::daemon::{bin, Daemon, DaemonDirs, Teardown};
use xvs_tests::fixture::Lb;
use xvs_tests::netns::Topology;
use xvs_tests::servers::{serve, tcp_ask, Conn, IO_TIMEOUT};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

fn service_ops(key: ServiceKey, sched: &str, port: u16, weights: &[u32]) -> Vec<Op> {
    let mut ops = vec![Op::AddService(key, ServiceConfig::with_scheduler(sched))];
    for (i, w) in weights.iter().enumerate() {
        let a: std::net::IpAddr = format!("10.11.{}.2", i + 1).parse().unwrap();
        ops.push(Op::AddDest(key, Destination::masq(a, port, *w)));
    }
    ops
}

fn hooks() -> [(AttachMode, &'static str); 3] {
    [
        (AttachMode::Native, "native"),
        (AttachMode::Generic, "generic"),
        (AttachMode::Tc, "tc"),
    ]
}

/// For XDP native the peers carry the pass-through program (a redirect into a veth delivers
/// only then); the returned instance holds it.
fn peers(topo: &Topology, hook: &str) -> Lb {
    let mut peers = Lb::new(false);
    if hook == "native" {
        topo.client
            .enter(|| peers.fp.attach_pass("c0", AttachMode::Native))
            .unwrap();
        for b in &topo.backends {
            b.enter(|| peers.fp.attach_pass("b0", AttachMode::Native))
                .unwrap();
        }
    }
    peers
}

/// The daemon on the topology's balancer interfaces at `hook`.
fn start(topo: &Topology, dirs: &DaemonDirs, hook: &str) -> Daemon {
    let mut args: Vec<String> = topo
        .lb_ifaces()
        .into_iter()
        .flat_map(|i| ["--iface".to_string(), format!("{i}:{hook}")])
        .collect();
    if hook == "native" {
        args.push("--redirect-virtual".into());
    }
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&topo.lb, dirs, &extra)
}

fn xvsadm(dirs: &DaemonDirs, args: &[&str]) -> String {
    let out = Command::new(bin("xvsadm"))
        .args(args)
        .env("XVSADM_SOCKET", dirs.socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "xvsadm {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process in the balancer's own namespace connecting to VIPs: TCP and UDP are balanced in
/// the kernel's rr sequence, getpeername() and recvfrom() name the VIP, and the connections
/// appear in the listings with their counts.
#[test]
fn the_nodes_own_clients_are_balanced_and_listed() {
    for (_, hook) in hooks() {
        let topo = Topology::new(&format!("own{}", &hook[..1]), 3);
        let _servers: Vec<_> = (0..3)
            .map(|i| serve(&topo.backends[i], 8080, &format!("rs{}", i + 1)))
            .collect();
        let dirs = DaemonDirs::new(&format!("own-{hook}"));
        let _cleanup = Teardown(dirs.clone());
        let _peers = peers(&topo, hook);
        let d = start(&topo, &dirs, hook);
        let tcp = ServiceKey::tcp(VIP, 80);
        let udp = ServiceKey::udp(VIP, 53);
        let mut ops = service_ops(tcp, "rr", 8080, &[1, 1, 1]);
        ops.extend(service_ops(udp, "wrr", 8080, &[1, 2, 1]));
        assert_eq!(d.apply(ops), Response::Ok);

        let vip = SocketAddrV4::new(VIP, 80);
        let seq: Vec<String> = (0..6).map(|_| tcp_ask(&topo.lb, None, vip)).collect();
        assert_eq!(
            seq.join(" "),
            "rs3 rs2 rs1 rs3 rs2 rs1",
            "{hook}: rr from the node"
        );
        // A connection held open: its peer is the VIP, as with kernel IPVS.
        let mut held = Conn::open(&topo.lb, None, vip).unwrap();
        assert_eq!(held.peer(), SocketAddr::from(vip), "{hook}: getpeername()");
        assert_eq!(held.ask().unwrap(), "rs3", "{hook}");

        // UDP: one flow per socket keeps its destination; new sockets follow the wrr sequence
        // of weights 1,2,1 (the kernel's, as the packet tests check it).
        let mut udp_seq = Vec::new();
        for _ in 0..4 {
            let s = topo.lb.enter(|| UdpSocket::bind("0.0.0.0:0")).unwrap();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut names = Vec::new();
            for _ in 0..2 {
                s.send_to(b"hi\n", SocketAddrV4::new(VIP, 53)).unwrap();
                let mut buf = [0u8; 64];
                let (n, from) = s.recv_from(&mut buf).unwrap();
                assert_eq!(
                    from,
                    SocketAddrV4::new(VIP, 53).into(),
                    "{hook}: recvfrom()"
                );
                names.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
            }
            assert_eq!(
                names[0], names[1],
                "{hook}: a UDP flow keeps its destination"
            );
            udp_seq.push(names[0].clone());
        }
        assert_eq!(
            udp_seq.join(" "),
            "rs3 rs2 rs1 rs2",
            "{hook}: wrr from the node"
        );

        let list = xvsadm(&dirs, &["-L", "-n"]);
        let line = |rs: &str| {
            list.lines()
                .skip_while(|l| !l.starts_with("TCP  10.0.0.100:80"))
                .find(|l| l.contains(&format!("{rs}:8080")))
                .unwrap_or_else(|| panic!("{hook}: {rs} in {list}"))
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        // rs3 holds the open connection (ActiveConn 1) besides the closed ones (InActConn).
        let rs3 = line("10.11.3.2");
        assert_eq!(rs3[4], "1", "{hook}: ActiveConn of rs3 in {list}");
        let stats = xvsadm(&dirs, &["-L", "-n", "--stats"]);
        let conns: u64 = stats
            .lines()
            .find(|l| l.starts_with("TCP  10.0.0.100:80"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        assert_eq!(conns, 7, "{hook}: Conns of the TCP service in {stats}");
        let c = xvsadm(&dirs, &["-L", "-n", "-c"]);
        let est: Vec<&str> = c
            .lines()
            .filter(|l| l.contains("ESTABLISHED") && l.contains("10.0.0.100:80"))
            .collect();
        assert_eq!(est.len(), 1, "{hook}: the open connection in -c: {c}");
        assert!(est[0].contains("10.11.3.2:8080"), "{hook}: {c}");
        assert!(
            est[0].contains("10.11.3.1:"),
            "{hook}: the client's own address: {c}"
        );
        let udp_lines = c.lines().filter(|l| l.starts_with("UDP")).count();
        assert_eq!(udp_lines, 4, "{hook}: one entry per UDP flow: {c}");
        drop(held);
        d.stop();
    }
}

/// A restart (SIGTERM, new daemon adopting the pins) keeps a TCP stream flowing at each hook,
/// and the rr sequence continues.
#[test]
fn a_restart_keeps_a_long_stream_on_each_hook() {
    for (_, hook) in hooks() {
        let topo = Topology::new(&format!("rst{}", &hook[..1]), 3);
        let _servers: Vec<_> = (0..3)
            .map(|i| serve(&topo.backends[i], 8080, &format!("rs{}", i + 1)))
            .collect();
        let dirs = DaemonDirs::new(&format!("rst-{hook}"));
        let _cleanup = Teardown(dirs.clone());
        let _peers = peers(&topo, hook);
        let d = start(&topo, &dirs, hook);
        let key = ServiceKey::tcp(VIP, 80);
        assert_eq!(
            d.apply(service_ops(key, "rr", 8080, &[1, 1, 1])),
            Response::Ok
        );
        let vip = SocketAddrV4::new(VIP, 80);
        let mut long = Conn::open(&topo.client, None, vip).unwrap();
        assert_eq!(long.ask().unwrap(), "rs3");
        d.stop();
        assert_eq!(
            long.ask().unwrap(),
            "rs3",
            "{hook}: no daemon, the fast path serves"
        );
        let d = start(&topo, &dirs, hook);
        for _ in 0..3 {
            assert_eq!(
                long.ask().unwrap(),
                "rs3",
                "{hook}: kept across the restart"
            );
        }
        assert_eq!(
            tcp_ask(&topo.client, None, vip),
            "rs2",
            "{hook}: rr continues"
        );
        let links: Vec<String> = std::fs::read_dir(&dirs.pin_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("link_") && !n.starts_with("link_sock"))
            .collect();
        // XDP on a veth has tc behind it (for local senders' partial checksums).
        let count = |p: &str| links.iter().filter(|l| l.starts_with(p)).count();
        let want = if hook == "tc" { (0, 4) } else { (4, 4) };
        assert_eq!(
            (count("link_xdp_"), count("link_tc_")),
            want,
            "{hook}: {links:?}"
        );
        d.stop();
    }
}

/// A VIP that is a local address of the node (as kube-proxy puts VIPs on kube-ipvs0) answering
/// an on-link client address the node never resolved (a secondary address: its ARP requests
/// carry the primary one): the reply must not depend on a neighbour entry nothing resolves.
/// tc lets the kernel resolve it (bpf_redirect_neigh); XDP asks the daemon, which makes it a
/// managed neighbour, and the client's SYN retransmission then gets through.
#[test]
fn a_local_vip_answers_an_unresolved_on_link_client() {
    for hook in ["native", "tc"] {
        let topo = Topology::new(&format!("lv{}", &hook[..1]), 1);
        let _server = serve(&topo.backends[0], 8080, "rs1");
        topo.lb.ip(&["addr", "add", "10.0.0.100/32", "dev", "lo"]);
        topo.client
            .ip(&["addr", "add", "10.10.0.50/24", "dev", "c0"]);
        let dirs = DaemonDirs::new(&format!("lv-{hook}"));
        let _cleanup = Teardown(dirs.clone());
        let _peers = peers(&topo, hook);
        let d = start(&topo, &dirs, hook);
        let key = ServiceKey::tcp(VIP, 80);
        assert_eq!(d.apply(service_ops(key, "rr", 8080, &[1])), Response::Ok);
        let vip = SocketAddrV4::new(VIP, 80);
        // The client resolves its gateway from its primary address first; later packets from
        // the secondary one need no ARP, so the balancer never learns that address.
        assert_eq!(tcp_ask(&topo.client, None, vip), "rs1");
        let neigh = topo.lb.ip(&["neigh", "show", "10.10.0.50"]);
        assert!(
            !neigh.contains("lladdr"),
            "{hook}: resolved before the test: {neigh}"
        );
        let src = Some(Ipv4Addr::new(10, 10, 0, 50));
        let mut c = Conn::open(&topo.client, src, vip)
            .unwrap_or_else(|e| panic!("{hook}: the reply never reached the client: {e}"));
        assert_eq!(c.ask().unwrap(), "rs1", "{hook}");
        let neigh = topo.lb.ip(&["neigh", "show", "10.10.0.50"]);
        assert!(neigh.contains("lladdr"), "{hook}: {neigh}");
        if hook == "native" {
            assert!(
                neigh.contains("managed"),
                "{hook}: the daemon resolved it: {neigh}"
            );
        }
        d.stop();
    }
}

/// A SYN flood at 10x the connection table's size: new connections are refused and counted
/// while the table is full, the established connection keeps flowing both ways, and once the
/// flood stops the half-open entries are dropped (the kernel's drop_entry defence) so new
/// connections are served again without waiting for their 60 s timeout.
#[test]
fn a_syn_flood_never_breaks_an_established_connection() {
    let topo = Topology::new("flood", 3);
    let _servers: Vec<_> = (0..3)
        .map(|i| serve(&topo.backends[i], 8080, &format!("rs{}", i + 1)))
        .collect();
    let mut dirs = DaemonDirs::new("flood");
    dirs.conn_table_size = 1024;
    let _cleanup = Teardown(dirs.clone());
    let args: Vec<String> = topo
        .lb_ifaces()
        .into_iter()
        .flat_map(|i| ["--iface".to_string(), format!("{i}:tc")])
        .collect();
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start(&topo.lb, &dirs, &extra);
    let key = ServiceKey::tcp(VIP, 80);
    assert_eq!(
        d.apply(service_ops(key, "rr", 8080, &[1, 1, 1])),
        Response::Ok
    );
    let vip = SocketAddrV4::new(VIP, 80);
    let mut long = Conn::open(&topo.client, None, vip).unwrap();
    assert_eq!(long.ask().unwrap(), "rs3");

    let sent = xvs_tests::servers::syn_flood(&topo.client, vip, 10 * 1024);
    assert_eq!(sent, 10 * 1024);
    let refused = xvs_tests::daemon::path_stat(&dirs, lb_common::path::DROP_TABLE_FULL);
    assert!(refused >= 9 * 1024, "refused {refused} of {sent}");
    for _ in 0..5 {
        assert_eq!(
            long.ask().unwrap(),
            "rs3",
            "the established connection flows"
        );
    }
    // Recovery: the daemon drops half-open entries idle over a second while the table is
    // near full; a new connection is served again within a few seconds.
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(mut c) = Conn::open(&topo.client, None, vip) {
            if c.ask().is_ok() {
                break;
            }
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "no new connection served after the flood"
        );
    }
    assert_eq!(long.ask().unwrap(), "rs3");
    d.stop();
}
