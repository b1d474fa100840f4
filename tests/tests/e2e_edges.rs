//! End-to-end, with real traffic between namespaces: path MTU discovery through the balancer
//! (its ICMP errors translated), fragmented UDP datagrams, a TCP connection with IP options,
//! and TTL 1 probes that must not reveal a real server. Each case runs at tc (with redirects),
//! XDP generic (the kernel forwards after the rewrite) and XDP native (redirects, the peers
//! carrying a pass-through program).
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lb_common::path;
use lb_user::fastpath::AttachMode;
use lb_user::model::{ServiceConfig, ServiceKey};
use xvs_tests::fixture::Lb;
use xvs_tests::netns::{veth, Netns, Topology};
use xvs_tests::servers::{bulk_transfer, serve, serve_bulk, IO_TIMEOUT};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

fn modes() -> [(AttachMode, &'static str); 3] {
    [
        (AttachMode::Tc, "t"),
        (AttachMode::Generic, "g"),
        (AttachMode::Native, "n"),
    ]
}

/// The balancer in `lb_ns` attached to `ifaces` at `mode`; for XDP native the peers listed in
/// `peers` (namespace, device) get the pass-through program.
fn attach(lb_ns: &Netns, ifaces: &[&str], mode: AttachMode, peers: &[(&Netns, &str)]) -> Lb {
    let native = mode == AttachMode::Native;
    let mut lb = lb_ns.enter(|| Lb::new(mode != AttachMode::Generic));
    lb_ns.enter(|| {
        for i in ifaces {
            lb.fp.attach(i, mode, native).expect("attach");
        }
    });
    if native {
        for (ns, dev) in peers {
            ns.enter(|| lb.fp.attach_pass(dev, mode)).unwrap();
        }
    }
    lb
}

/// client -- rc (router) -- balancer -- rr (router) -- real server, with the routers' links
/// toward the client and toward the real server limited to MTU 1200 (a route MTU, so only
/// the routers' forwarding sees the limit and answers "fragmentation needed"; the endpoints
/// themselves have MTU 1500 and advertise MSS 1460).
///
/// ```text
///  client c0 10.9.0.2 ── rc0 10.9.0.1 [rc] rc1 10.10.0.2 ── l0 10.10.0.1 [lb] l1 10.11.1.1
///     ── rr0 10.11.1.2 [rr] rr1 10.12.1.1 ── b0 10.12.1.2 real server
/// ```
struct Routed {
    client: Netns,
    rc: Netns,
    lb: Netns,
    rr: Netns,
    rs: Netns,
}

fn routed(tag: &str) -> Routed {
    let t = Routed {
        client: Netns::new(&format!("{tag}c")),
        rc: Netns::new(&format!("{tag}rc")),
        lb: Netns::new(&format!("{tag}l")),
        rr: Netns::new(&format!("{tag}rr")),
        rs: Netns::new(&format!("{tag}s")),
    };
    veth(&t.client, "c0", &t.rc, "rc0");
    veth(&t.rc, "rc1", &t.lb, "l0");
    veth(&t.lb, "l1", &t.rr, "rr0");
    veth(&t.rr, "rr1", &t.rs, "b0");
    t.client.ip(&["addr", "add", "10.9.0.2/24", "dev", "c0"]);
    t.client.ip(&["route", "add", "default", "via", "10.9.0.1"]);
    t.rc.ip(&["addr", "add", "10.9.0.1/24", "dev", "rc0"]);
    t.rc.ip(&["addr", "add", "10.10.0.2/24", "dev", "rc1"]);
    t.rc.ip(&["route", "add", "default", "via", "10.10.0.1"]);
    t.rc.ip(&["route", "add", "10.9.0.2/32", "dev", "rc0", "mtu", "1200"]);
    t.lb.ip(&["addr", "add", "10.10.0.1/24", "dev", "l0"]);
    t.lb.ip(&["addr", "add", "10.11.1.1/24", "dev", "l1"]);
    t.lb.ip(&["route", "add", "10.9.0.0/24", "via", "10.10.0.2"]);
    t.lb.ip(&["route", "add", "10.12.1.0/24", "via", "10.11.1.2"]);
    t.rr.ip(&["addr", "add", "10.11.1.2/24", "dev", "rr0"]);
    t.rr.ip(&["addr", "add", "10.12.1.1/24", "dev", "rr1"]);
    t.rr.ip(&["route", "add", "default", "via", "10.11.1.1"]);
    t.rr.ip(&["route", "add", "10.12.1.2/32", "dev", "rr1", "mtu", "1200"]);
    t.rs.ip(&["addr", "add", "10.12.1.2/24", "dev", "b0"]);
    t.rs.ip(&["route", "add", "default", "via", "10.12.1.1"]);
    for ns in [&t.rc, &t.lb, &t.rr] {
        ns.sysctl("net.ipv4.ip_forward", "1");
    }
    // Full checksums on the wire, as NICs send them (see the toolchain notes).
    t.client.exec("ethtool", &["-K", "c0", "tx", "off"]);
    t.rs.exec("ethtool", &["-K", "b0", "tx", "off"]);
    t
}

/// Path MTU discovery through the balancer, both ways at once: the upload meets the MTU 1200
/// link on the real server's side (the router's "fragmentation needed" about client -> RIP
/// must reach the client about client -> VIP), the download the one on the client's side
/// (the router's error about VIP -> client must reach the real server about RIP -> client).
/// Without the translation both directions stall: the first full-size segment never arrives
/// and the senders never learn why.
#[test]
fn path_mtu_discovery_completes_through_the_balancer() {
    for (mode, tag) in modes() {
        let t = routed(&format!("pm{tag}"));
        let mut lb = attach(
            &t.lb,
            &["l0", "l1"],
            mode,
            &[(&t.rc, "rc1"), (&t.rr, "rr0")],
        );
        let key = ServiceKey::tcp(VIP, 5201);
        lb.service(key, ServiceConfig::with_scheduler("rr"));
        lb.add(&key, "10.12.1.2", 5202, 1);
        let _server = serve_bulk(&t.rs, 5202);
        const LEN: u64 = 256 * 1024;
        let got = bulk_transfer(
            &t.client,
            SocketAddrV4::new(VIP, 5201),
            LEN,
            LEN,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{mode:?}: transfer through MTU 1200 links failed: {e}; paths {:?}",
                lb.fp.path_stats().unwrap()
            )
        });
        assert_eq!(got, (LEN, LEN), "{mode:?}");
        assert!(
            lb.path(path::ICMP_TO_CLIENT) >= 1,
            "{mode:?}: the client learnt its path MTU from a translated error"
        );
        assert!(
            lb.path(path::ICMP_TO_REAL) >= 1,
            "{mode:?}: the real server learnt its path MTU from a translated error"
        );
        // Both ends now hold an MTU of 1200 for the other (as they know it).
        let cache = t.client.ip(&["route", "get", "10.0.0.100"]);
        assert!(cache.contains("mtu 1200"), "{mode:?}: client: {cache}");
        let cache = t.rs.ip(&["route", "get", "10.9.0.2"]);
        assert!(cache.contains("mtu 1200"), "{mode:?}: real server: {cache}");
    }
}

/// A UDP server that echoes every datagram whole.
struct Echo {
    stop: Arc<AtomicBool>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn udp_echo(ns: &Netns, port: u16) -> Echo {
    let s = ns.enter(|| UdpSocket::bind(("0.0.0.0", port))).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !st.load(Ordering::SeqCst) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
    Echo { stop }
}

/// 3,000-byte datagrams leave the client in three fragments; the real server gets each
/// datagram whole (it echoes it) and the echo, fragmented by the real server, reaches the
/// client whole from VIP:53.
#[test]
fn fragmented_udp_datagrams_are_balanced_both_ways() {
    for (mode, tag) in modes() {
        let topo = Topology::new(&format!("fu{tag}"), 1);
        let mut lb = attach(
            &topo.lb,
            &["l0", "l1"],
            mode,
            &[(&topo.client, "c0"), (&topo.backends[0], "b0")],
        );
        let key = ServiceKey::udp(VIP, 53);
        lb.service(key, ServiceConfig::with_scheduler("rr"));
        lb.add(&key, "10.11.1.2", 8053, 1);
        let _echo = udp_echo(&topo.backends[0], 8053);
        let s = topo
            .client
            .enter(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
            .unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        for round in 0..3u8 {
            let msg: Vec<u8> = (0..3000u32)
                .map(|i| (i as u8).wrapping_mul(7).wrapping_add(round))
                .collect();
            s.send_to(&msg, SocketAddrV4::new(VIP, 53)).unwrap();
            let mut buf = vec![0u8; 65536];
            let (n, from) = s
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{mode:?} round {round}: no echo: {e}"));
            assert_eq!(
                from,
                SocketAddr::from(SocketAddrV4::new(VIP, 53)),
                "{mode:?}"
            );
            assert_eq!(n, 3000, "{mode:?} round {round}");
            assert!(buf[..n] == msg[..], "{mode:?} round {round}: echo differs");
        }
        // Two later fragments per datagram, each way.
        assert!(
            lb.path(path::FWD_FRAGMENT) >= 12,
            "{mode:?}: {:?}",
            lb.fp.path_stats().unwrap()
        );
    }
}

/// A connected TCP socket from `ns` to `dst` with IP options or a TTL set before connect().
fn connect_with(ns: &Netns, dst: SocketAddrV4, opt: libc::c_int, val: &[u8]) -> TcpStream {
    ns.enter(|| unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        assert_eq!(
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IP,
                opt,
                val.as_ptr() as *const libc::c_void,
                val.len() as u32,
            ),
            0,
            "setsockopt: {}",
            std::io::Error::last_os_error()
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: dst.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*dst.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        let s = TcpStream::from(fd);
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    })
}

fn ask(s: &TcpStream) -> String {
    (&*s).write_all(b"hi\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim().to_string()
}

/// IP options (record route, as a client's setsockopt(IP_OPTIONS) puts them on every
/// segment) are parsed past: the connection is balanced and answers.
#[test]
fn tcp_connection_with_ip_options_is_balanced() {
    // Record route with three empty slots, then end of options.
    let rr = [7u8, 15, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for (mode, tag) in modes() {
        let topo = Topology::new(&format!("io{tag}"), 1);
        let mut lb = attach(
            &topo.lb,
            &["l0", "l1"],
            mode,
            &[(&topo.client, "c0"), (&topo.backends[0], "b0")],
        );
        let key = ServiceKey::tcp(VIP, 80);
        lb.service(key, ServiceConfig::with_scheduler("rr"));
        lb.add(&key, "10.11.1.2", 8080, 1);
        let _server = serve(&topo.backends[0], 8080, "rs1");
        let s = connect_with(
            &topo.client,
            SocketAddrV4::new(VIP, 80),
            libc::IP_OPTIONS,
            &rr,
        );
        assert_eq!(s.peer_addr().unwrap(), SocketAddrV4::new(VIP, 80).into());
        for _ in 0..3 {
            assert_eq!(ask(&s), "rs1", "{mode:?}");
        }
        assert_eq!(lb.path(path::FWD_NEW), 1, "{mode:?}");
        assert!(lb.path(path::REPLY) >= 3, "{mode:?}");
    }
}

/// Every ICMP message the namespace receives while `f` runs: (outer source, ICMP type, the
/// embedded destination when there is one).
fn icmp_seen(ns: &Netns, f: impl FnOnce()) -> Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)> {
    let raw = ns.enter(|| unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::IPPROTO_ICMP,
        );
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        OwnedFd::from_raw_fd(fd)
    });
    f();
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let n = unsafe {
            libc::recv(
                raw.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n <= 0 {
            break;
        }
        let p = &buf[..n as usize];
        let ihl = ((p[0] & 0x0f) as usize) * 4;
        let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let typ = p[ihl];
        let inner = (p.len() >= ihl + 8 + 20).then(|| {
            let q = &p[ihl + 8..];
            Ipv4Addr::new(q[16], q[17], q[18], q[19])
        });
        seen.push((src, typ, inner));
    }
    seen
}

/// Traceroute-style probes (TTL 1) to a VIP, over UDP and TCP: the balancer stands for the
/// VIP, so they are answered by the service, and no ICMP error reaches the client, least of
/// all one naming a real server.
#[test]
fn ttl_1_probes_never_reveal_a_real_server() {
    for (mode, tag) in modes() {
        let topo = Topology::new(&format!("tt{tag}"), 1);
        let mut lb = attach(
            &topo.lb,
            &["l0", "l1"],
            mode,
            &[(&topo.client, "c0"), (&topo.backends[0], "b0")],
        );
        for key in [ServiceKey::tcp(VIP, 80), ServiceKey::udp(VIP, 53)] {
            lb.service(key, ServiceConfig::with_scheduler("rr"));
            lb.add(&key, "10.11.1.2", 8080, 1);
        }
        let _server = serve(&topo.backends[0], 8080, "rs1");
        let seen = icmp_seen(&topo.client, || {
            let u = topo
                .client
                .enter(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
                .unwrap();
            u.set_ttl(1).unwrap();
            u.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            u.send_to(b"probe\n", SocketAddrV4::new(VIP, 53)).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = u
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{mode:?}: no answer to a TTL 1 datagram: {e}"));
            assert_eq!(&buf[..n], b"rs1\n", "{mode:?}");
            assert_eq!(
                from,
                SocketAddr::from(SocketAddrV4::new(VIP, 53)),
                "{mode:?}"
            );
            let s = connect_with(
                &topo.client,
                SocketAddrV4::new(VIP, 80),
                libc::IP_TTL,
                &1i32.to_ne_bytes(),
            );
            assert_eq!(ask(&s), "rs1", "{mode:?}");
        });
        let reveals: Vec<_> = seen
            .iter()
            .filter(|(src, _, inner)| {
                src.octets()[..2] == [10, 11] || inner.is_some_and(|a| a.octets()[..2] == [10, 11])
            })
            .collect();
        assert!(
            reveals.is_empty(),
            "{mode:?}: ICMP naming a real server: {reveals:?}"
        );
        assert!(
            seen.is_empty(),
            "{mode:?}: ICMP reached the client: {seen:?}"
        );
        assert!(lb.path(path::FWD_TTL_KEPT) >= 3, "{mode:?}");
    }
}
