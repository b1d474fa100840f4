//! Prometheus metrics (`xvsd --metrics-listen ADDR:PORT`): the listing's snapshot in the
//! Prometheus text format (0.0.4), encoded by the `prometheus-client` crate and served over
//! HTTP by `tiny_http`.
//!
//! * `node_ipvs_*`: node_exporter's ipvs collector's series, with its names, HELP texts, types
//!   and labels (collector/ipvs_linux.go, which reads /proc/net/ip_vs and /proc/net/ip_vs_stats
//!   through prometheus/procfs), so dashboards and alerts written for kernel IPVS work
//!   unchanged. The totals are the sum over the services of the table (both engines); the
//!   kernel's `ip_vs_stats` also keeps the counts of services deleted since.
//! * `xvs_*`: the fast path's own: packets per verdict, connection and scheduler tables,
//!   attached interfaces, engine per service, control-plane changes, mirror sync lag, build.
//!
//! Everything comes from one `Node::status` call: the same snapshot `xvsadm -L` formats.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::daemon::{Mode, Node, NodeStatus};
use crate::fastpath::AttachMode;
use crate::model::{Protocol, ServiceKey};
use crate::snapshot::{EngineKind, Snapshot};

/// The `Content-Type` of what `render` returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The labels node_exporter gives a service, in the order it writes them (client_golang sorts
/// label names): local_address, local_mark, local_port, proto. procfs reads an fwmark service
/// as address "" port 0, the mark as the kernel prints it (%08X), proto "FWM".
fn service_labels(k: &ServiceKey) -> [(&'static str, String); 4] {
    let (addr, mark, port, proto) = match k {
        ServiceKey::Inet { proto, addr, port } => (
            addr.to_string(),
            String::new(),
            *port,
            match proto {
                Protocol::Tcp => "TCP",
                Protocol::Udp => "UDP",
                Protocol::Sctp => "SCTP",
            },
        ),
        ServiceKey::Fwmark { mark, .. } => (String::new(), format!("{mark:08X}"), 0, "FWM"),
    };
    [
        ("local_address", addr),
        ("local_mark", mark),
        ("local_port", port.to_string()),
        ("proto", proto.to_string()),
    ]
}

/// A destination's labels after its service's (`service_labels`, computed once per service).
fn backend_labels<'a>(
    svc: &'a [(&'static str, String); 4],
    addr: &'a str,
    port: &'a str,
) -> [(&'static str, &'a str); 6] {
    [
        (svc[0].0, svc[0].1.as_str()),
        (svc[1].0, svc[1].1.as_str()),
        (svc[2].0, svc[2].1.as_str()),
        (svc[3].0, svc[3].1.as_str()),
        ("remote_address", addr),
        ("remote_port", port),
    ]
}

fn hook_name(m: AttachMode) -> (&'static str, &'static str) {
    match m {
        AttachMode::Native => ("xdp", "native"),
        AttachMode::Generic => ("xdp", "generic"),
        AttachMode::Tc => ("tc", "tc"),
    }
}

/// One scrape's data, encoded by `prometheus-client` as a collector.
#[derive(Debug)]
struct Scrape {
    snap: Snapshot,
    status: NodeStatus,
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let (snap, st) = (&self.snap, &self.status);
        // node_exporter's ipvs collector (names without the _total the encoder appends).
        let mut tot = crate::snapshot::Stats::default();
        for s in &snap.services {
            tot.conns += s.stats.conns;
            tot.inpkts += s.stats.inpkts;
            tot.outpkts += s.stats.outpkts;
            tot.inbytes += s.stats.inbytes;
            tot.outbytes += s.stats.outbytes;
        }
        for (name, help, v) in [
            (
                "node_ipvs_connections",
                "The total number of connections made.",
                tot.conns,
            ),
            (
                "node_ipvs_incoming_packets",
                "The total number of incoming packets.",
                tot.inpkts,
            ),
            (
                "node_ipvs_outgoing_packets",
                "The total number of outgoing packets.",
                tot.outpkts,
            ),
            (
                "node_ipvs_incoming_bytes",
                "The total amount of incoming data.",
                tot.inbytes,
            ),
            (
                "node_ipvs_outgoing_bytes",
                "The total amount of outgoing data.",
                tot.outbytes,
            ),
        ] {
            counter(&mut e, name, help, v)?;
        }
        type Pick = fn(&crate::snapshot::DestView) -> u64;
        let per_backend: [(&str, &str, Pick); 3] = [
            (
                "node_ipvs_backend_connections_active",
                "The current active connections by local and remote address.",
                |d| d.active as u64,
            ),
            (
                "node_ipvs_backend_connections_inactive",
                "The current inactive connections by local and remote address.",
                |d| d.inactive as u64,
            ),
            (
                "node_ipvs_backend_weight",
                "The current backend weight by local and remote address.",
                |d| d.dest.weight as u64,
            ),
        ];
        for (name, help, pick) in per_backend {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &snap.services {
                let svc = service_labels(&s.key);
                for d in &s.dests {
                    let (addr, port) = (d.dest.addr.to_string(), d.dest.port.to_string());
                    let labels = backend_labels(&svc, &addr, &port);
                    ConstGauge::new(pick(d) as i64).encode(m.encode_family(&labels)?)?;
                }
            }
        }

        // The fast path's own.
        let mut m = e.encode_descriptor(
            "xvs_fastpath_packets",
            "Packets the fast path handled, by verdict (lb_common::path).",
            None,
            MetricType::Counter,
        )?;
        for (i, reason) in lb_common::path::NAMES {
            let v = st.path.get(i as usize).copied().unwrap_or(0);
            ConstCounter::new(v).encode(m.encode_family(&[("reason", reason)])?)?;
        }
        gauge(
            &mut e,
            "xvs_conn_table_entries",
            "Live connections in the fast path's connection table.",
            st.conn_entries as i64,
        )?;
        gauge(
            &mut e,
            "xvs_conn_table_capacity",
            "Size of the fast path's connection table (--conn-table-size).",
            st.conn_capacity as i64,
        )?;
        gauge(
            &mut e,
            "xvs_sched_slots_used",
            "Scheduler-table slots in use (live tables and regions resting before reuse).",
            st.sched_slots_used as i64,
        )?;
        gauge(
            &mut e,
            "xvs_sched_slots_capacity",
            "Scheduler-table slots in all (--sched-slots).",
            st.sched_slots as i64,
        )?;
        let mut m = e.encode_descriptor(
            "xvs_interface_attached",
            "Interfaces the fast path is attached to, with the hook (xdp or tc) and its mode.",
            None,
            MetricType::Gauge,
        )?;
        for (iface, mode) in &st.ifaces {
            let (hook, mode) = hook_name(*mode);
            let labels = [
                ("hook", hook),
                ("interface", iface.as_str()),
                ("mode", mode),
            ];
            ConstGauge::new(1).encode(m.encode_family(&labels)?)?;
        }
        let engine_name = |k: EngineKind| match k {
            EngineKind::FastPath => "fastpath",
            EngineKind::Kernel => "kernel",
        };
        let mut m = e.encode_descriptor(
            "xvs_services",
            "Virtual services, by the engine that serves them.",
            None,
            MetricType::Gauge,
        )?;
        for k in [EngineKind::FastPath, EngineKind::Kernel] {
            let n = snap.services.iter().filter(|s| s.engine == k).count();
            ConstGauge::new(n as i64).encode(m.encode_family(&[("engine", engine_name(k))])?)?;
        }
        let mut m = e.encode_descriptor(
            "xvs_service_engine",
            "The engine serving each virtual service (fastpath: XDP/tc; kernel: kernel IPVS).",
            None,
            MetricType::Gauge,
        )?;
        for s in &snap.services {
            let [a, mk, p, pr] = service_labels(&s.key);
            let labels = [("engine", engine_name(s.engine).to_string()), a, mk, p, pr];
            ConstGauge::new(1).encode(m.encode_family(&labels)?)?;
        }
        let mut m = e.encode_descriptor(
            "xvs_service_available_destinations",
            "Destinations of each virtual service that can take new connections (weight above 0).",
            None,
            MetricType::Gauge,
        )?;
        for s in &snap.services {
            let n = s.dests.iter().filter(|d| d.dest.weight > 0).count();
            ConstGauge::new(n as i64).encode(m.encode_family(&service_labels(&s.key))?)?;
        }
        let mut m = e.encode_descriptor(
            "xvs_control_changes",
            "Control-plane changes (xvsadm commands, restores, reloads), applied or refused whole.",
            None,
            MetricType::Counter,
        )?;
        for (result, c) in [
            ("applied", &st.control.applied),
            ("refused", &st.control.refused),
        ] {
            ConstCounter::new(c.get()).encode(m.encode_family(&[("result", result)])?)?;
        }
        st.control.latency.encode(e.encode_descriptor(
            "xvs_control_apply_duration_seconds",
            "Time to validate and apply one control-plane change to both engines.",
            None,
            MetricType::Histogram,
        )?)?;
        if st.mode == Mode::Mirror {
            if let Some(lag) = st.sync_lag {
                ConstGauge::new(lag.as_secs_f64()).encode(e.encode_descriptor(
                    "xvs_mirror_sync_lag_seconds",
                    "Mirror mode: time since kernel IPVS was last read into the fast path.",
                    None,
                    MetricType::Gauge,
                )?)?;
            }
            counter(
                &mut e,
                "xvs_mirror_sync_failures",
                "Mirror mode: reads of kernel IPVS that failed (retried every sync period).",
                st.sync_failures,
            )?;
        }
        let mut m = e.encode_descriptor(
            "xvs_build_info",
            "The xvs version running, as a label; the value is 1.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1).encode(m.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)
    }
}

/// The exposition text of one scrape.
pub fn render(snap: Snapshot, status: NodeStatus) -> String {
    // About 150 bytes per backend sample, three per destination: one allocation, no copies
    // of a growing text (250 MiB at 50,000 services x 10).
    let dests: usize = snap.services.iter().map(|s| s.dests.len()).sum();
    let mut out = String::with_capacity(dests * 480 + snap.services.len() * 400 + 8192);
    let mut reg = Registry::default();
    reg.register_collector(Box::new(Scrape { snap, status }));
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &reg);
    out
}

/// One scrape of a running node (the node lock is held only while its state is read).
pub fn scrape(node: &Mutex<Node>) -> Result<String, String> {
    let (snap, status) = node.lock().unwrap_or_else(|p| p.into_inner()).status()?;
    Ok(render(snap, status))
}

/// Serves `GET /metrics` on `addr` from a thread of its own (one scrape at a time, off the
/// async runtime: a scrape's map reads block). Binding errors are returned at once.
pub fn serve(addr: SocketAddr, node: Arc<Mutex<Node>>) -> Result<(), String> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or("");
                let resp = match (req.method(), path) {
                    (tiny_http::Method::Get, "/metrics") => match scrape(&node) {
                        Ok(text) => tiny_http::Response::from_string(text).with_header(
                            tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE).unwrap(),
                        ),
                        Err(e) => {
                            tracing::warn!("metrics scrape: {e}");
                            tiny_http::Response::from_string(e).with_status_code(500)
                        }
                    },
                    _ => tiny_http::Response::from_string("xvsd: metrics are at /metrics\n")
                        .with_status_code(404),
                };
                let _ = req.respond(resp);
            }
        })
        .map_err(|e| format!("metrics thread: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests;
