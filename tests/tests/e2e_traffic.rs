//! End-to-end: real TCP and UDP traffic from a client namespace through the balancer's
//! namespace (XDP attached to its veths) to three backend namespaces whose servers answer with
//! their own name on port 8080, while the VIP port is 80 (TCP) / 53 (UDP). Every case runs in
//! XDP native mode (with FIB redirects, the peers carrying a pass-through XDP program) and in
//! generic mode (packets handed back to the kernel stack after the rewrite), and at tc (with
//! redirects, no peer program needed).
use std::net::{Ipv4Addr, SocketAddrV4};

use lb_user::fastpath::AttachMode;
use lb_user::model::{ServiceConfig, ServiceKey};
use xvs_tests::expect::sh_expected;
use xvs_tests::fixture::Lb;
use xvs_tests::netns::Topology;
use xvs_tests::servers::{serve, tcp_ask, udp_ask, Conn, Server};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

struct Bench {
    topo: Topology,
    lb: Lb,
    _servers: Vec<Server>,
}

fn rs(k: usize) -> String {
    format!("10.11.{k}.2")
}

/// Topology + balancer attached in `mode`; servers rs1..rs3.
fn setup(tag: &str, mode: AttachMode) -> Bench {
    let topo = Topology::new(tag, 3);
    let native = mode == AttachMode::Native;
    let mut lb = topo.lb.enter(|| Lb::new(mode != AttachMode::Generic));
    topo.lb.enter(|| {
        for i in topo.lb_ifaces() {
            lb.fp.attach(&i, mode, native).expect("attach");
        }
    });
    if native {
        // A redirect into a veth only delivers when the peer runs an XDP program.
        topo.client.enter(|| lb.fp.attach_pass("c0", mode)).unwrap();
        for b in &topo.backends {
            b.enter(|| lb.fp.attach_pass("b0", mode)).unwrap();
        }
    }
    let servers = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| serve(ns, 8080, &format!("rs{}", i + 1)))
        .collect();
    Bench {
        topo,
        lb,
        _servers: servers,
    }
}

fn modes() -> [(AttachMode, &'static str); 3] {
    [
        (AttachMode::Native, "n"),
        (AttachMode::Generic, "g"),
        (AttachMode::Tc, "t"),
    ]
}

fn tcp_key() -> ServiceKey {
    ServiceKey::tcp(VIP, 80)
}

fn with_service(b: &mut Bench, key: ServiceKey, sched: &str, weights: &[u32]) {
    b.lb.service(key, ServiceConfig::with_scheduler(sched));
    for (i, w) in weights.iter().enumerate() {
        b.lb.add(&key, &rs(i + 1), 8080, *w);
    }
}

fn tcp_sequence(b: &Bench, n: usize) -> String {
    (0..n)
        .map(|_| tcp_ask(&b.topo.client, None, SocketAddrV4::new(VIP, 80)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn rr_sequence_over_real_tcp() {
    for (mode, tag) in modes() {
        let mut b = setup(&format!("rr{tag}"), mode);
        with_service(&mut b, tcp_key(), "rr", &[1, 1, 1]);
        assert_eq!(tcp_sequence(&b, 6), "rs3 rs2 rs1 rs3 rs2 rs1", "{mode:?}");
        let (total, _) = b.lb.fp.counters(&tcp_key()).unwrap().unwrap();
        assert_eq!(total.conns, 6, "{mode:?}");
        assert!(
            total.outpkts >= 6 && total.inpkts >= 6,
            "{mode:?}: {total:?}"
        );
        if mode != AttachMode::Generic {
            assert!(
                b.lb.path(lb_common::path::TX_REDIRECT) > 0,
                "{mode:?} redirects"
            );
        }
    }
}

#[test]
fn wrr_3_2_1_sequence_over_real_tcp() {
    for (mode, tag) in modes() {
        let mut b = setup(&format!("wr{tag}"), mode);
        with_service(&mut b, tcp_key(), "wrr", &[3, 2, 1]);
        assert_eq!(
            tcp_sequence(&b, 12),
            "rs3 rs2 rs1 rs1 rs2 rs1 rs3 rs2 rs1 rs1 rs2 rs1",
            "{mode:?}"
        );
    }
}

#[test]
fn sh_sends_every_client_address_where_the_kernel_would() {
    for (mode, tag) in modes() {
        let mut b = setup(&format!("sh{tag}"), mode);
        with_service(&mut b, tcp_key(), "sh", &[1, 2, 1]);
        b.topo.add_client_addrs(10, 49);
        let list = [(3usize, 1u32), (2, 2), (1, 1)];
        for i in 10..50u8 {
            let src = Ipv4Addr::new(10, 10, 0, i);
            let want = sh_expected(&list, src);
            for _ in 0..2 {
                let got = tcp_ask(&b.topo.client, Some(src), SocketAddrV4::new(VIP, 80));
                assert_eq!(got, want, "{mode:?} client {src}");
            }
        }
    }
}

#[test]
fn udp_rr_replies_come_from_the_vip() {
    for (mode, tag) in modes() {
        let mut b = setup(&format!("ud{tag}"), mode);
        let key = ServiceKey::udp(VIP, 53);
        with_service(&mut b, key, "rr", &[1, 1, 1]);
        let mut got = Vec::new();
        for _ in 0..6 {
            let (name, from) = udp_ask(&b.topo.client, None, SocketAddrV4::new(VIP, 53));
            assert_eq!(from, SocketAddrV4::new(VIP, 53).into(), "{mode:?}");
            got.push(name);
        }
        assert_eq!(got.join(" "), "rs3 rs2 rs1 rs3 rs2 rs1", "{mode:?}");
    }
}

#[test]
fn long_lived_connection_survives_weight_zero_and_deletions() {
    for (mode, tag) in modes() {
        let mut b = setup(&format!("ll{tag}"), mode);
        with_service(&mut b, tcp_key(), "rr", &[1, 1, 1]);
        let mut c = Conn::open(&b.topo.client, None, SocketAddrV4::new(VIP, 80)).unwrap();
        // The reply came from VIP:80, or the client's TCP would not have connected.
        assert_eq!(c.peer(), SocketAddrV4::new(VIP, 80).into());
        assert_eq!(c.ask().unwrap(), "rs3");
        b.lb.weight(&tcp_key(), &rs(3), 8080, 0);
        b.lb.del(&tcp_key(), &rs(1), 8080);
        for _ in 0..5 {
            assert_eq!(
                c.ask().unwrap(),
                "rs3",
                "{mode:?}: the connection stays on rs3"
            );
        }
        // New connections avoid the quiesced and the deleted destinations.
        assert_eq!(tcp_sequence(&b, 3), "rs2 rs2 rs2", "{mode:?}");
        assert_eq!(c.ask().unwrap(), "rs3", "{mode:?}");
        let counts = b.lb.fp.conn_counts().unwrap();
        assert!(
            counts.values().any(|&(active, _)| active >= 1),
            "{mode:?}: {counts:?}"
        );
    }
}
