//! Packet-exact tests (BPF_PROG_TEST_RUN, both hooks) of what real networks carry besides
//! plain TCP and UDP: ICMP errors about balanced connections (translated as kernel IPVS's
//! ip_vs_nat_icmp does, in both directions), IP fragments, TTL 1, impossible TCP flags and
//! VLAN tags. Every expected frame is built independently, checksums from scratch.
use lb_common::path;
use lb_user::model::{ServiceConfig, ServiceKey};
use std::net::Ipv4Addr;
use xvs_tests::fixture::{Lb, XDP_PASS};
use xvs_tests::on_both_hooks;
use xvs_tests::packet::{
    fragments, icmp_error, verify_checksums, verify_icmp, vlan_tagged, Pkt, ACK, FIN, RST, SYN,
};

on_both_hooks!(
    icmp_errors_from_the_real_server_side_reach_the_client_from_the_vip,
    icmp_errors_from_the_client_side_reach_the_real_server,
    icmp_errors_about_nothing_balanced_pass_untouched,
    udp_fragments_follow_their_first_fragment_both_ways,
    fragments_before_their_first_pass_to_the_kernel,
    tcp_first_fragment_carries_the_checksum_update,
    ttl_1_to_a_vip_is_balanced_and_leaves_with_ttl_1,
    ttl_1_reply_is_left_to_the_kernel,
    syn_fin_is_scheduled_as_the_kernel_does,
    vlan_tagged_frames_are_balanced,
);

const VIP: &str = "10.0.0.100";
const RIP: &str = "10.1.0.1";
const CLIENT: &str = "10.9.0.2";
/// Routers on either side of the balancer.
const RS_ROUTER: &str = "10.1.0.254";
const CLIENT_ROUTER: &str = "10.9.0.254";

fn lb_with(tcp: bool) -> Lb {
    let key = if tcp {
        ServiceKey::tcp(VIP.parse::<Ipv4Addr>().unwrap(), 80)
    } else {
        ServiceKey::udp(VIP.parse::<Ipv4Addr>().unwrap(), 53)
    };
    let mut lb = Lb::new(false);
    lb.service(key, ServiceConfig::with_scheduler("rr"));
    lb.add(&key, RIP, 8080, 1);
    lb
}

/// The IP packet inside a frame, cut to `len` bytes (None: whole).
fn ip_part(frame: &[u8], len: Option<usize>) -> Vec<u8> {
    let ip = &frame[14..];
    ip[..len.unwrap_or(ip.len()).min(ip.len())].to_vec()
}

/// `translated` with the embedded L4 checksum bytes of `embedded` (IPVS leaves that checksum
/// as it was), where the cut includes them.
fn keep_l4_csum(mut translated: Vec<u8>, embedded: &[u8], proto: u8) -> Vec<u8> {
    let off = 20 + if proto == 6 { 16 } else { 6 };
    if embedded.len() >= off + 2 {
        translated[off..off + 2].copy_from_slice(&embedded[off..off + 2]);
    }
    translated
}

struct Case {
    name: &'static str,
    tcp: bool,
    typ: u8,
    code: u8,
    rest: u32,
    /// Outer source of the error.
    from: &'static str,
    /// How much of the offending packet the error embeds (routers: header + 8 bytes; Linux:
    /// as much as fits).
    cut: Option<usize>,
}

fn cases(real_side: bool) -> Vec<Case> {
    let router = if real_side { RS_ROUTER } else { CLIENT_ROUTER };
    let host = if real_side { RIP } else { CLIENT };
    vec![
        Case {
            name: "fragmentation needed (MTU 1200) from a router",
            tcp: true,
            typ: 3,
            code: 4,
            rest: 1200,
            from: router,
            cut: None,
        },
        Case {
            name: "time exceeded from a router, 8 bytes of TCP",
            tcp: true,
            typ: 11,
            code: 0,
            rest: 0,
            from: router,
            cut: Some(28),
        },
        Case {
            name: "port unreachable from the host, 8 bytes of UDP",
            tcp: false,
            typ: 3,
            code: 3,
            rest: 0,
            from: host,
            cut: Some(28),
        },
        Case {
            name: "source quench from the host",
            tcp: true,
            typ: 4,
            code: 0,
            rest: 0,
            from: host,
            cut: None,
        },
    ]
}

/// The client's packet as the client sent it, and as the balancer sent it on.
fn client_packet(tcp: bool, cport: u16) -> (Pkt, Pkt) {
    let p = if tcp {
        Pkt::tcp((CLIENT, cport), (VIP, 80), SYN)
    } else {
        Pkt::udp((CLIENT, cport), (VIP, 53))
    };
    let q = p.clone().with_dst(RIP, 8080);
    (p, q)
}

/// Direction 1 (ip_vs_out_icmp): an error about a packet the balancer sent to the real server
/// (client -> RIP:8080), from the real server or a router behind the balancer, reaches the
/// client from the VIP, about client -> VIP:vport.
fn icmp_errors_from_the_real_server_side_reach_the_client_from_the_vip() {
    for (i, c) in cases(true).into_iter().enumerate() {
        let mut lb = lb_with(c.tcp);
        let cport = 40000 + i as u16;
        let (orig, sent) = client_packet(c.tcp, cport);
        let (_, out) = lb.run(&orig.build());
        assert_eq!(out, sent.build(), "{}", c.name);
        let embedded = ip_part(&sent.build(), c.cut);
        let err = icmp_error(c.from, CLIENT, 63, c.typ, c.code, c.rest, &embedded);
        verify_icmp(&err).unwrap();
        let (v, out) = lb.run(&err);
        assert_eq!(v, XDP_PASS, "{}", c.name);
        let proto = if c.tcp { 6 } else { 17 };
        let inner = keep_l4_csum(ip_part(&orig.build(), c.cut), &embedded, proto);
        let want = icmp_error(VIP, CLIENT, 63, c.typ, c.code, c.rest, &inner);
        assert_eq!(out, want, "{}", c.name);
        verify_icmp(&out).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        // The embedded IP header's checksum is right for its new addresses.
        let ihl = 14 + 20 + 8;
        assert_eq!(
            xvs_tests::packet::fold(xvs_tests::packet::ones_sum(&out[ihl..ihl + 20])),
            0xffff,
            "{}",
            c.name
        );
        assert_eq!(lb.path(path::ICMP_TO_CLIENT), 1, "{}", c.name);
        let key = if c.tcp {
            ServiceKey::tcp(VIP.parse::<Ipv4Addr>().unwrap(), 80)
        } else {
            ServiceKey::udp(VIP.parse::<Ipv4Addr>().unwrap(), 53)
        };
        let (total, _) = lb.fp.counters(&key).unwrap().unwrap();
        assert_eq!(
            total.outpkts, 1,
            "{}: counted out, as ip_vs_out_stats",
            c.name
        );
        assert_eq!(total.outbytes, (err.len() - 14) as u64, "{}", c.name);
    }
}

/// Direction 2 (ip_vs_in_icmp): an error about a reply the balancer sent to the client
/// (VIP:vport -> client), from the client or a router on its side, reaches the real server,
/// about RIP:8080 -> client.
fn icmp_errors_from_the_client_side_reach_the_real_server() {
    for (i, c) in cases(false).into_iter().enumerate() {
        let mut lb = lb_with(c.tcp);
        let cport = 41000 + i as u16;
        let (orig, _) = client_packet(c.tcp, cport);
        lb.run(&orig.build());
        let reply = if c.tcp {
            Pkt::tcp((RIP, 8080), (CLIENT, cport), SYN | ACK)
        } else {
            Pkt::udp((RIP, 8080), (CLIENT, cport))
        };
        let vport = if c.tcp { 80 } else { 53 };
        let (_, out) = lb.run(&reply.build());
        let sent = reply.clone().with_src(VIP, vport);
        assert_eq!(out, sent.build(), "{}", c.name);
        let embedded = ip_part(&sent.build(), c.cut);
        let err = icmp_error(c.from, VIP, 63, c.typ, c.code, c.rest, &embedded);
        let (v, out) = lb.run(&err);
        assert_eq!(v, XDP_PASS, "{}", c.name);
        let proto = if c.tcp { 6 } else { 17 };
        let inner = keep_l4_csum(ip_part(&reply.build(), c.cut), &embedded, proto);
        let want = icmp_error(c.from, RIP, 63, c.typ, c.code, c.rest, &inner);
        assert_eq!(out, want, "{}", c.name);
        verify_icmp(&out).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(lb.path(path::ICMP_TO_REAL), 1, "{}", c.name);
    }
}

fn icmp_errors_about_nothing_balanced_pass_untouched() {
    let mut lb = lb_with(true);
    let (orig, sent) = client_packet(true, 42000);
    lb.run(&orig.build());
    let embedded = ip_part(&sent.build(), None);
    // About another client port (no connection), sent somewhere else than the embedded
    // packet's source, an echo request, a TTL-1 error toward the client.
    let (_, other) = client_packet(true, 42001);
    let mut echo = icmp_error(RS_ROUTER, CLIENT, 63, 8, 0, 0x1234_0001, b"ping");
    echo.truncate(echo.len());
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "no connection",
            icmp_error(
                RS_ROUTER,
                CLIENT,
                63,
                3,
                4,
                1200,
                &ip_part(&other.build(), None),
            ),
            path::PASS_NOT_VIP,
        ),
        (
            "not to the embedded source",
            icmp_error(RS_ROUTER, "10.9.0.3", 63, 3, 4, 1200, &embedded),
            path::PASS_NOT_VIP,
        ),
        ("echo request", echo, path::PASS_OTHER_PROTO),
        (
            "redirect (type 5)",
            icmp_error(RS_ROUTER, CLIENT, 63, 5, 1, 0, &embedded),
            path::PASS_OTHER_PROTO,
        ),
        (
            "embedded header cut inside the ports",
            icmp_error(RS_ROUTER, CLIENT, 63, 3, 4, 1200, &embedded[..22]),
            path::PASS_MALFORMED,
        ),
        (
            "TTL 1 toward the client",
            icmp_error(RS_ROUTER, CLIENT, 1, 3, 4, 1200, &embedded),
            path::PASS_TTL_EXPIRED,
        ),
    ];
    for (name, frame, counter) in cases {
        let before = lb.path(counter);
        assert_eq!(lb.run(&frame), (XDP_PASS, frame.clone()), "{name}");
        assert_eq!(lb.path(counter), before + 1, "{name}");
    }
    assert_eq!(lb.path(path::ICMP_TO_CLIENT), 0);
}

/// A 72-byte UDP datagram in three fragments (24, 24, 24 bytes of IP payload).
fn udp_datagram(src: (&str, u16), dst: (&str, u16)) -> Pkt {
    let mut p = Pkt::udp(src, dst);
    p.payload = (0..64u8).collect();
    p
}

fn udp_fragments_follow_their_first_fragment_both_ways() {
    let mut lb = lb_with(false);
    let q = udp_datagram((CLIENT, 5000), (VIP, 53));
    let want = fragments(&q.clone().with_dst(RIP, 8080).build(), &[24, 48]);
    let frags = fragments(&q.build(), &[24, 48]);
    for (i, f) in frags.iter().enumerate() {
        let (v, out) = lb.run(f);
        assert_eq!(v, XDP_PASS);
        assert_eq!(out, want[i], "fragment {i} to the VIP");
    }
    // The reassembled rewritten datagram has a valid UDP checksum.
    assert_eq!(lb.path(path::FWD_NEW), 1);
    assert_eq!(lb.path(path::FWD_ESTABLISHED), 2);
    assert_eq!(lb.path(path::FWD_FRAGMENT), 2);
    let r = udp_datagram((RIP, 8080), (CLIENT, 5000));
    let want = fragments(&r.clone().with_src(VIP, 53).build(), &[24, 48]);
    for (i, f) in fragments(&r.build(), &[24, 48]).iter().enumerate() {
        let (_, out) = lb.run(f);
        assert_eq!(out, want[i], "fragment {i} of the reply");
    }
    assert_eq!(lb.path(path::REPLY), 3);
    assert_eq!(lb.path(path::FWD_FRAGMENT), 4);
    // The whole datagram checksum, as the receiver computes it after reassembly.
    verify_checksums(&r.with_src(VIP, 53).build()).unwrap();
}

/// Fragments that arrive before their datagram's first fragment have no ports: they go to
/// the kernel untouched (PASS_FRAGMENT). Those after the first follow it, in any order.
fn fragments_before_their_first_pass_to_the_kernel() {
    let mut lb = lb_with(false);
    let q = udp_datagram((CLIENT, 5001), (VIP, 53));
    let frags = fragments(&q.build(), &[24, 48]);
    let want = fragments(&q.clone().with_dst(RIP, 8080).build(), &[24, 48]);
    // Last before first: untouched.
    assert_eq!(lb.run(&frags[2]), (XDP_PASS, frags[2].clone()));
    assert_eq!(lb.path(path::PASS_FRAGMENT), 1);
    assert_eq!(lb.path(path::FWD_NEW), 0);
    // First, then last again (a retransmission) and the middle one: all balanced.
    assert_eq!(lb.run(&frags[0]).1, want[0]);
    assert_eq!(lb.run(&frags[2]).1, want[2]);
    assert_eq!(lb.run(&frags[1]).1, want[1]);
    assert_eq!(lb.path(path::FWD_FRAGMENT), 2);
    // Another datagram (another IP id) of the same flow is not confused with it.
    let mut other = frags[1].clone();
    other[18..20].copy_from_slice(&0x9999u16.to_be_bytes());
    other[24..26].copy_from_slice(&[0, 0]);
    let c = !xvs_tests::packet::fold(xvs_tests::packet::ones_sum(&other[14..34]));
    other[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(lb.run(&other), (XDP_PASS, other.clone()));
    assert_eq!(lb.path(path::PASS_FRAGMENT), 2);
}

fn tcp_first_fragment_carries_the_checksum_update() {
    let mut lb = lb_with(true);
    let mut syn = Pkt::tcp((CLIENT, 43000), (VIP, 80), SYN);
    syn.payload = (0..40u8).collect();
    let frags = fragments(&syn.build(), &[24]);
    let want = fragments(&syn.clone().with_dst(RIP, 8080).build(), &[24]);
    assert_eq!(lb.run(&frags[0]).1, want[0]);
    assert_eq!(lb.run(&frags[1]).1, want[1]);
    let conns = lb.fp.connections().unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(
        lb_user::fastpath::conns::state_name(conns[0].state),
        "SYN_RECV",
        "the later fragment replays the first one's flags, not an empty set (CLOSE)"
    );
    // A TCP first fragment too short for the TCP header is malformed (RFC 1858).
    let tiny = fragments(&syn.build(), &[16]);
    let (_, out) = lb.run(&tiny[0]);
    assert_eq!(out, tiny[0]);
    assert_eq!(lb.path(path::PASS_MALFORMED), 1);
}

/// IPVS forwards from LOCAL_IN without touching the TTL: the balancer is the VIP, not a hop.
/// A TTL 1 packet to a VIP is balanced and leaves with TTL 1 (here, passed to the kernel with
/// TTL 2, which its forwarding decrements), so no time-exceeded names the real server.
fn ttl_1_to_a_vip_is_balanced_and_leaves_with_ttl_1() {
    let mut lb = lb_with(true);
    for (i, ttl) in [1u8, 0].into_iter().enumerate() {
        let mut syn = Pkt::tcp((CLIENT, 44000 + i as u16), (VIP, 80), SYN);
        syn.ttl = ttl;
        let mut want = syn.clone().with_dst(RIP, 8080);
        want.ttl = 2;
        let (v, out) = lb.run(&syn.build());
        assert_eq!(v, XDP_PASS);
        assert_eq!(out, want.build(), "TTL {ttl}");
        verify_checksums(&out).unwrap();
    }
    assert_eq!(lb.path(path::FWD_TTL_KEPT), 2);
    assert_eq!(lb.path(path::FWD_NEW), 2);
    // TTL 2 is left alone (the forwarding decrements it as a router's would).
    let syn = Pkt::tcp((CLIENT, 44010), (VIP, 80), SYN);
    assert_eq!(lb.run(&syn.build()).1, syn.with_dst(RIP, 8080).build());
    assert_eq!(lb.path(path::FWD_TTL_KEPT), 2);
}

/// A reply with TTL 1 would expire at the balancer: the kernel gets it as the real server sent
/// it, so its time-exceeded goes back to the real server, as from an IPVS node.
fn ttl_1_reply_is_left_to_the_kernel() {
    let mut lb = lb_with(true);
    lb.run(&Pkt::tcp((CLIENT, 45000), (VIP, 80), SYN).build());
    let mut r = Pkt::tcp((RIP, 8080), (CLIENT, 45000), SYN | ACK);
    r.ttl = 1;
    let f = r.build();
    assert_eq!(lb.run(&f), (XDP_PASS, f.clone()));
    assert_eq!(lb.path(path::PASS_TTL_EXPIRED), 1);
    assert_eq!(lb.path(path::REPLY), 0);
}

/// tcp_conn_schedule schedules on `syn && !rst`, and tcp_state_idx checks rst, then syn, then
/// fin: SYN+FIN is a SYN (a new connection in SYN_RECV); SYN+RST schedules nothing.
fn syn_fin_is_scheduled_as_the_kernel_does() {
    let mut lb = lb_with(true);
    let sf = Pkt::tcp((CLIENT, 46000), (VIP, 80), SYN | FIN);
    let (v, out) = lb.run(&sf.build());
    assert_eq!(v, XDP_PASS);
    assert_eq!(out, sf.with_dst(RIP, 8080).build());
    let conns = lb.fp.connections().unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(
        lb_user::fastpath::conns::state_name(conns[0].state),
        "SYN_RECV"
    );
    let sr = Pkt::tcp((CLIENT, 46001), (VIP, 80), SYN | RST).build();
    assert_eq!(lb.run(&sr), (XDP_PASS, sr.clone()));
    let all = Pkt::tcp((CLIENT, 46002), (VIP, 80), 0x3f).build();
    assert_eq!(lb.run(&all), (XDP_PASS, all.clone()));
    assert_eq!(lb.path(path::PASS_TCP_NOT_SYN), 2);
    assert_eq!(lb.path(path::FWD_NEW), 1);
}

fn vlan_tagged_frames_are_balanced() {
    let mut lb = lb_with(true);
    let syn = Pkt::tcp((CLIENT, 47000), (VIP, 80), SYN);
    let (v, out) = lb.run(&vlan_tagged(&syn.build(), 42));
    assert_eq!(v, XDP_PASS);
    assert_eq!(out, vlan_tagged(&syn.with_dst(RIP, 8080).build(), 42));
    let r = Pkt::tcp((RIP, 8080), (CLIENT, 47000), SYN | ACK);
    let (_, out) = lb.run(&vlan_tagged(&r.build(), 42));
    assert_eq!(out, vlan_tagged(&r.with_src(VIP, 80).build(), 42));
    assert_eq!(lb.path(path::FWD_NEW), 1);
    assert_eq!(lb.path(path::REPLY), 1);
    assert_eq!(lb.path(path::TX_PASS), 2, "tagged frames go to the kernel");
}
