//! End-to-end with the senders' default offloads, as pods have them: their packets carry
//! CHECKSUM_PARTIAL (the L4 checksum field holds only the pseudo-header seed) and TSO/GSO
//! super-packets. The service maps ports (VIP:5201 -> backend:5202), so a rewrite that treats
//! the seed as a full checksum corrupts every segment. The balancer's egress devices have tx
//! checksum offload off, so the kernel finishes each checksum from the rewritten seed, and the
//! receivers verify every segment: a bad one is dropped and counted in Tcp InCsumErrors.
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use lb_user::fastpath::AttachMode;
use lb_user::model::{ServiceConfig, ServiceKey};
use xvs_tests::fixture::Lb;
use xvs_tests::netns::Topology;
use xvs_tests::servers::{bulk_transfer, serve_bulk, tcp_csum_errors};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const MIB: u64 = 1 << 20;

/// Uploads and downloads 4 MiB through VIP:5201 -> 10.11.1.2:5202 at `mode`, the senders'
/// offloads on or off; every byte arrives and no receiver saw a bad checksum. `tc_behind`:
/// XDP with the tc program behind it (what xvsd does on virtual devices).
fn bulk_with_port_mapping(tag: &str, mode: AttachMode, offloads: bool, tc_behind: bool) {
    let topo = Topology::with_offloads(tag, 1, offloads);
    for dev in topo.lb_ifaces() {
        topo.lb.exec("ethtool", &["-K", &dev, "tx", "off"]);
    }
    let native = mode == AttachMode::Native;
    let mut lb = topo.lb.enter(|| Lb::new(mode != AttachMode::Generic));
    topo.lb.enter(|| {
        for i in topo.lb_ifaces() {
            lb.fp.attach(&i, mode, native).expect("attach");
            if tc_behind {
                lb.fp.attach_tc_behind(&i).expect("tc behind");
            }
        }
    });
    if native {
        topo.client.enter(|| lb.fp.attach_pass("c0", mode)).unwrap();
        topo.backends[0]
            .enter(|| lb.fp.attach_pass("b0", mode))
            .unwrap();
    }
    let key = ServiceKey::tcp(VIP, 5201);
    lb.service(key, ServiceConfig::with_scheduler("rr"));
    lb.add(&key, "10.11.1.2", 5202, 1);
    let _server = serve_bulk(&topo.backends[0], 5202);
    let (counted, down) = bulk_transfer(
        &topo.client,
        SocketAddrV4::new(VIP, 5201),
        4 * MIB,
        4 * MIB,
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("{mode:?} offloads {offloads}: transfer failed: {e}"));
    assert_eq!(
        (counted, down),
        (4 * MIB, 4 * MIB),
        "{mode:?} offloads {offloads}"
    );
    assert_eq!(
        tcp_csum_errors(&topo.backends[0]),
        0,
        "{mode:?} offloads {offloads}: segments with bad checksums reached the backend"
    );
    assert_eq!(
        tcp_csum_errors(&topo.client),
        0,
        "{mode:?} offloads {offloads}: segments with bad checksums reached the client"
    );
    assert!(lb.path(lb_common::path::FWD_NEW) >= 1);
    if tc_behind && offloads {
        assert!(
            lb.path(lb_common::path::PASS_CSUM_PARTIAL) > 0,
            "{mode:?}: XDP left the partial checksums to tc"
        );
    }
}

#[test]
fn tc_keeps_partial_checksums_right_with_port_mapping() {
    bulk_with_port_mapping("ckt", AttachMode::Tc, true, false);
}

#[test]
fn tc_with_offloads_off() {
    bulk_with_port_mapping("cko", AttachMode::Tc, false, false);
}

/// XDP with full checksums on the wire, as NICs deliver them.
#[test]
fn xdp_native_with_full_checksums() {
    bulk_with_port_mapping("ckn", AttachMode::Native, false, false);
}

#[test]
fn xdp_generic_with_full_checksums() {
    bulk_with_port_mapping("ckg", AttachMode::Generic, false, false);
}

/// XDP cannot see ip_summed: on a virtual device the daemon puts tc behind it, and XDP leaves
/// tc every packet whose checksum field is the pseudo-header seed.
#[test]
fn xdp_native_with_tc_behind_keeps_partial_checksums_right() {
    bulk_with_port_mapping("ckN", AttachMode::Native, true, true);
}

#[test]
fn xdp_generic_with_tc_behind_keeps_partial_checksums_right() {
    bulk_with_port_mapping("ckG", AttachMode::Generic, true, true);
}
