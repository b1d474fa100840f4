//! What a listing shows: the table with counters, connection counts and connections, from
//! whichever engine serves each service. The daemon produces it; `xvsadm` formats it exactly as
//! ipvsadm would (see `ipvsadm`). Serialisable: it crosses the control socket as JSON.
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Destination, Protocol, ServiceConfig, ServiceKey};

/// IPVS's counters and rates (rates from a 2-second estimator in the kernel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// Which engine serves a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngineKind {
    /// The XDP fast path.
    FastPath,
    /// Kernel IPVS, through netlink.
    Kernel,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestView {
    pub dest: Destination,
    pub active: u32,
    pub inactive: u32,
    pub persist: u32,
    pub stats: Stats,
    /// Encapsulation of a tunnel destination (`Forward::Tunnel`); `None` means the default
    /// (ipip, no port, no checksum flags), which is all the table model can express.
    #[serde(default)]
    pub tunnel: Option<TunnelView>,
}

/// Tunnel settings of a destination as the kernel reports them (`ipvsadm --tun-type`,
/// `--tun-port`, `--tun-nocsum|--tun-csum|--tun-remcsum`; shown by `--tun-info` and `-S`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelView {
    /// IP_VS_CONN_F_TUNNEL_TYPE_*: 0 ipip, 1 gue, 2 gre.
    pub kind: u8,
    /// UDP destination port of a GUE tunnel (0 otherwise).
    pub port: u16,
    /// IP_VS_TUNNEL_ENCAP_FLAG_*: 0 no checksum, 1 checksum, 2 remote checksum.
    pub flags: u16,
}

impl From<crate::ipvs_nl::Tunnel> for TunnelView {
    fn from(t: crate::ipvs_nl::Tunnel) -> Self {
        TunnelView {
            kind: t.kind.code(),
            port: t.port,
            flags: t.flags,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub key: ServiceKey,
    pub config: ServiceConfig,
    pub engine: EngineKind,
    pub stats: Stats,
    /// In the kernel's list order (newest first); listings sort them as ipvsadm does.
    pub dests: Vec<DestView>,
    /// Persistence engine (`ipvsadm --pe`, e.g. "sip") of a kernel-served service; the table
    /// model has none, so only a service read back from kernel IPVS can carry one.
    #[serde(default)]
    pub pe_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnView {
    pub proto: Protocol,
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub dest: SocketAddr,
    /// The kernel's state name ("ESTABLISHED", "SYN_RECV", ..., "UDP").
    pub state: String,
    /// Time left before the entry expires, in seconds.
    pub expires_in_s: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Connection table size shown in the banner.
    pub conn_tab_size: u32,
    /// In the order the services were added; listings sort as ipvsadm does.
    pub services: Vec<ServiceView>,
    /// Filled only when connections were asked for.
    pub conns: Vec<ConnView>,
    /// (tcp, tcpfin, udp) timeouts in seconds.
    pub timeouts: (u32, u32, u32),
}
