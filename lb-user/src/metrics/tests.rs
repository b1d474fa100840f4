use std::time::Duration;

use super::*;
use crate::daemon::ControlStats;
use crate::model::{Destination, Family, ServiceConfig};
use crate::snapshot::{DestView, ServiceView, Stats};

fn dest(addr: [u8; 4], port: u16, weight: u32, active: u32, inactive: u32) -> DestView {
    DestView {
        dest: Destination::masq(std::net::Ipv4Addr::from(addr), port, weight),
        active,
        inactive,
        persist: 0,
        stats: Stats::default(),
        tunnel: None,
    }
}

fn stats(conns: u64, inpkts: u64, outpkts: u64, inbytes: u64, outbytes: u64) -> Stats {
    Stats {
        conns,
        inpkts,
        outpkts,
        inbytes,
        outbytes,
        ..Default::default()
    }
}

fn sample() -> (Snapshot, NodeStatus) {
    let snap = Snapshot {
        conn_tab_size: 1 << 20,
        services: vec![
            ServiceView {
                key: ServiceKey::tcp(std::net::Ipv4Addr::new(10, 96, 0, 10), 80),
                config: ServiceConfig::default(),
                engine: EngineKind::FastPath,
                stats: stats(7, 40, 30, 4000, 9000),
                dests: vec![
                    dest([10, 244, 1, 5], 8080, 1, 2, 1),
                    dest([10, 244, 1, 6], 8080, 0, 0, 3),
                ],
                pe_name: None,
            },
            ServiceView {
                key: ServiceKey::Fwmark {
                    family: Family::Inet,
                    mark: 26,
                },
                config: ServiceConfig::default(),
                engine: EngineKind::Kernel,
                stats: stats(1, 2, 3, 4, 5),
                dests: vec![dest([10, 244, 2, 1], 0, 3, 0, 0)],
                pe_name: None,
            },
        ],
        conns: vec![],
        timeouts: (900, 120, 300),
    };
    let control = ControlStats::default();
    control.applied.inc();
    control.applied.inc();
    control.refused.inc();
    control.latency.observe(0.0001);
    let mut path = vec![0u64; lb_common::path::N as usize];
    path[lb_common::path::FWD_NEW as usize] = 7;
    path[lb_common::path::PASS_NO_DEST as usize] = 2;
    let status = NodeStatus {
        mode: Mode::Own,
        path,
        conn_entries: 6,
        conn_capacity: 1 << 20,
        sched_slots_used: 3,
        sched_slots: 1 << 22,
        ifaces: vec![
            ("eth0".into(), AttachMode::Native),
            ("veth1".into(), AttachMode::Tc),
        ],
        control,
        sync_lag: Some(Duration::from_secs(3)),
        sync_failures: 0,
    };
    (snap, status)
}

/// The node_exporter series, exactly as its ipvs collector writes them (HELP, TYPE, names,
/// label names and their order, values): the totals are the services' sums.
#[test]
fn node_exporter_series_are_written_as_node_exporter_writes_them() {
    let (snap, status) = sample();
    let text = render(snap, status);
    let expected = r#"# HELP node_ipvs_connections_total The total number of connections made.
# TYPE node_ipvs_connections_total counter
node_ipvs_connections_total 8
# HELP node_ipvs_incoming_packets_total The total number of incoming packets.
# TYPE node_ipvs_incoming_packets_total counter
node_ipvs_incoming_packets_total 42
# HELP node_ipvs_outgoing_packets_total The total number of outgoing packets.
# TYPE node_ipvs_outgoing_packets_total counter
node_ipvs_outgoing_packets_total 33
# HELP node_ipvs_incoming_bytes_total The total amount of incoming data.
# TYPE node_ipvs_incoming_bytes_total counter
node_ipvs_incoming_bytes_total 4004
# HELP node_ipvs_outgoing_bytes_total The total amount of outgoing data.
# TYPE node_ipvs_outgoing_bytes_total counter
node_ipvs_outgoing_bytes_total 9005
# HELP node_ipvs_backend_connections_active The current active connections by local and remote address.
# TYPE node_ipvs_backend_connections_active gauge
node_ipvs_backend_connections_active{local_address="10.96.0.10",local_mark="",local_port="80",proto="TCP",remote_address="10.244.1.5",remote_port="8080"} 2
node_ipvs_backend_connections_active{local_address="10.96.0.10",local_mark="",local_port="80",proto="TCP",remote_address="10.244.1.6",remote_port="8080"} 0
node_ipvs_backend_connections_active{local_address="",local_mark="0000001A",local_port="0",proto="FWM",remote_address="10.244.2.1",remote_port="0"} 0
# HELP node_ipvs_backend_connections_inactive The current inactive connections by local and remote address.
# TYPE node_ipvs_backend_connections_inactive gauge
node_ipvs_backend_connections_inactive{local_address="10.96.0.10",local_mark="",local_port="80",proto="TCP",remote_address="10.244.1.5",remote_port="8080"} 1
node_ipvs_backend_connections_inactive{local_address="10.96.0.10",local_mark="",local_port="80",proto="TCP",remote_address="10.244.1.6",remote_port="8080"} 3
node_ipvs_backend_connections_inactive{local_address="",local_mark="0000001A",local_port="0",proto="FWM",remote_address="10.244.2.1",remote_port="0"} 0
# HELP node_ipvs_backend_weight The current backend weight by local and remote address.
# TYPE node_ipvs_backend_weight gauge
node_ipvs_backend_weight{local_address="10.96.0.10",local_mark="",local_port="80",proto="TCP",remote_address="10.244.1.5",remote_port="8080"} 1
node_ipvs_backend_weight{local_address="10.96.0.10",local_mark="",local_port="80",proto="TCP",remote_address="10.244.1.6",remote_port="8080"} 0
node_ipvs_backend_weight{local_address="",local_mark="0000001A",local_port="0",proto="FWM",remote_address="10.244.2.1",remote_port="0"} 3
"#;
    assert!(
        text.starts_with(expected),
        "got:\n{}",
        &text[..text.len().min(4000)]
    );
}

/// The xvs series: every verdict by name, the tables, interfaces, engines, control plane.
#[test]
fn xvs_series_cover_every_verdict_and_the_node() {
    let (snap, status) = sample();
    let text = render(snap, status);
    let lines: Vec<&str> = text.lines().collect();
    for want in [
        r#"xvs_fastpath_packets_total{reason="fwd_new"} 7"#,
        r#"xvs_fastpath_packets_total{reason="pass_no_dest"} 2"#,
        r#"xvs_fastpath_packets_total{reason="sock_table_full"} 0"#,
        "# TYPE xvs_fastpath_packets_total counter",
        "xvs_conn_table_entries 6",
        "xvs_conn_table_capacity 1048576",
        "xvs_sched_slots_used 3",
        "xvs_sched_slots_capacity 4194304",
        r#"xvs_interface_attached{hook="xdp",interface="eth0",mode="native"} 1"#,
        r#"xvs_interface_attached{hook="tc",interface="veth1",mode="tc"} 1"#,
        r#"xvs_services{engine="fastpath"} 1"#,
        r#"xvs_services{engine="kernel"} 1"#,
        r#"xvs_service_engine{engine="fastpath",local_address="10.96.0.10",local_mark="",local_port="80",proto="TCP"} 1"#,
        r#"xvs_service_engine{engine="kernel",local_address="",local_mark="0000001A",local_port="0",proto="FWM"} 1"#,
        r#"xvs_service_available_destinations{local_address="10.96.0.10",local_mark="",local_port="80",proto="TCP"} 1"#,
        r#"xvs_control_changes_total{result="applied"} 2"#,
        r#"xvs_control_changes_total{result="refused"} 1"#,
        "# TYPE xvs_control_apply_duration_seconds histogram",
        r#"xvs_control_apply_duration_seconds_bucket{le="0.0002"} 1"#,
        "xvs_control_apply_duration_seconds_count 1",
        r#"xvs_build_info{version="0.1.0"} 1"#,
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("xvs_fastpath_packets_total{"))
            .count(),
        lb_common::path::NAMES.len()
    );
    // Own mode: no mirror series.
    assert!(!text.contains("xvs_mirror"));
}

#[test]
fn mirror_mode_shows_the_sync_lag() {
    let (snap, mut status) = sample();
    status.mode = Mode::Mirror;
    status.sync_failures = 4;
    let text = render(snap, status);
    assert!(
        text.contains("\nxvs_mirror_sync_lag_seconds 3.0\n"),
        "{text}"
    );
    assert!(
        text.contains("\nxvs_mirror_sync_failures_total 4\n"),
        "{text}"
    );
}
