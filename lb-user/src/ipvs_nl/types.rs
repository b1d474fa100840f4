//! What the client reads from and writes to the kernel, beside the table model.

use crate::model::{Destination, Service, Table, TableError};

/// `GET_INFO`: the IPVS version and the connection hash table size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpvsInfo {
    /// 0x010201 on every current kernel.
    pub version: u32,
    pub conn_tab_size: u32,
}

impl IpvsInfo {
    /// "1.2.1", as `ipvsadm` prints it.
    pub fn version_string(&self) -> String {
        format!(
            "{}.{}.{}",
            (self.version >> 16) & 0xff,
            (self.version >> 8) & 0xff,
            self.version & 0xff
        )
    }
}

/// Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`). In `set_timeouts`, 0 leaves
/// a value unchanged, as in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP ESTABLISHED (kernel default 900).
    pub tcp: u32,
    /// TCP FIN_WAIT (default 120).
    pub tcp_fin: u32,
    /// UDP (default 300).
    pub udp: u32,
}

/// Counters and rates of a service or destination: the same type listings show. With
/// `STATS64` every value is exact; with the old `STATS` (used when a kernel has no STATS64)
/// counters and rates are 32-bit.
pub use crate::snapshot::Stats;

/// Encapsulation of a tunnel destination (IP_VS_CONN_F_TUNNEL_TYPE_*).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TunnelKind {
    /// IP-in-IP (the default, and the only kind before Linux 5.2).
    #[default]
    Ipip,
    /// Generic UDP Encapsulation, to `Tunnel::port`.
    Gue,
    /// GRE.
    Gre,
    /// A kind this code does not know.
    Other(u8),
}

impl TunnelKind {
    pub fn code(self) -> u8 {
        match self {
            TunnelKind::Ipip => 0,
            TunnelKind::Gue => 1,
            TunnelKind::Gre => 2,
            TunnelKind::Other(c) => c,
        }
    }

    pub fn from_code(c: u8) -> Self {
        match c {
            0 => TunnelKind::Ipip,
            1 => TunnelKind::Gue,
            2 => TunnelKind::Gre,
            c => TunnelKind::Other(c),
        }
    }

    /// The name `ipvsadm --tun-type` takes.
    pub fn name(self) -> &'static str {
        match self {
            TunnelKind::Ipip => "ipip",
            TunnelKind::Gue => "gue",
            TunnelKind::Gre => "gre",
            TunnelKind::Other(_) => "unknown",
        }
    }
}

/// Tunnel settings of a destination (meaningful with `Forward::Tunnel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tunnel {
    pub kind: TunnelKind,
    /// UDP port for GUE (must not be 0 with GUE).
    pub port: u16,
    /// IP_VS_TUNNEL_ENCAP_FLAG_*: `Tunnel::CSUM`, `Tunnel::REMCSUM`; 0 is "nocsum".
    pub flags: u16,
}

impl Tunnel {
    pub const CSUM: u16 = 1 << 0;
    pub const REMCSUM: u16 = 1 << 1;
}

/// Service attributes the table model does not carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceOptions {
    /// Persistence engine (`ipvsadm --pe`), e.g. "sip".
    pub pe_name: Option<String>,
}

/// Destination attributes the table model does not carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestOptions {
    /// Sent only for tunnel destinations, as ipvsadm does.
    pub tunnel: Tunnel,
}

/// What the kernel reports about a destination beside its model entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestState {
    pub options: DestOptions,
    pub active_conns: u32,
    pub inactive_conns: u32,
    /// Persistence templates pointing at this destination.
    pub persist_conns: u32,
    pub stats: Stats,
}

/// A virtual service as the kernel holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelService {
    /// Identity, configuration and destinations, in the kernel's list order (newest first).
    pub service: Service,
    pub options: ServiceOptions,
    /// Flags exactly as the kernel reports them (with IP_VS_SVC_F_HASHED, 0x2, which
    /// `service.config.flags` leaves out).
    pub raw_flags: u32,
    pub stats: Stats,
    /// One entry per `service.dests`, same order.
    pub dest_state: Vec<DestState>,
}

impl KernelService {
    /// Destinations with what the kernel says about each.
    pub fn dests(&self) -> impl Iterator<Item = (&Destination, &DestState)> {
        self.service.dests.iter().zip(self.dest_state.iter())
    }
}

/// Builds the model's table from a kernel dump, keeping the kernel's destination order.
/// Fails where the kernel holds something the model refuses (e.g. scheduler "none").
pub fn to_table(services: &[KernelService]) -> Result<Table, TableError> {
    let mut t = Table::new();
    for ks in services {
        let s = &ks.service;
        t.add_service(s.key, s.config.clone())?;
        // add_dest inserts at the head: add in reverse to keep the kernel's order.
        for d in s.dests.iter().rev() {
            t.add_dest(&s.key, d.clone())?;
        }
    }
    Ok(t)
}
