//! The IPVS-style table: virtual services and their destinations, in the kernel's list order.
//!
//! This is the one model every source produces (rules files, `xvsadm`, a kernel IPVS dump),
//! every engine consumes (the BPF maps writer, the kernel IPVS netlink writer) and every
//! presenter prints. Validation lives here, once: an operation that fails changes nothing.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub fn from_number(n: u16) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The name ipvsadm prints in listings ("TCP", "UDP", "SCTP").
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// Address family, for fwmark services (which carry no address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    Inet,
    Inet6,
}

/// What identifies a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ServiceKey {
    /// (protocol, VIP, port).
    Inet {
        proto: Protocol,
        addr: IpAddr,
        port: u16,
    },
    /// A firewall-mark service (the kernel forces protocol TCP on it).
    Fwmark { family: Family, mark: u32 },
}

impl ServiceKey {
    pub fn tcp(addr: impl Into<IpAddr>, port: u16) -> Self {
        ServiceKey::Inet {
            proto: Protocol::Tcp,
            addr: addr.into(),
            port,
        }
    }

    pub fn udp(addr: impl Into<IpAddr>, port: u16) -> Self {
        ServiceKey::Inet {
            proto: Protocol::Udp,
            addr: addr.into(),
            port,
        }
    }

    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Inet { addr, .. } => family_of(addr),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Inet { proto, addr, port } => {
                write!(f, "{} {}", proto.name(), fmt_addr_port(addr, *port))
            }
            ServiceKey::Fwmark { mark, .. } => write!(f, "FWM {mark}"),
        }
    }
}

/// `addr:port`, with IPv6 addresses in brackets, as ipvsadm writes them.
pub fn fmt_addr_port(addr: &IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

pub fn family_of(addr: &IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::Inet,
        IpAddr::V6(_) => Family::Inet6,
    }
}

/// The schedulers the kernel has (6.x). Only some are served by the fast path; the rest are
/// valid in the model and go to kernel IPVS where it exists.
pub const KERNEL_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// Service flags (IP_VS_SVC_F_*), the ones an operator sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceFlags {
    /// IP_VS_SVC_F_PERSISTENT (set by `-p`).
    pub persistent: bool,
    /// IP_VS_SVC_F_ONEPACKET (`-o`).
    pub onepacket: bool,
    /// IP_VS_SVC_F_SCHED1: sh-fallback / mh-fallback.
    pub sched1: bool,
    /// IP_VS_SVC_F_SCHED2: sh-port / mh-port.
    pub sched2: bool,
    /// IP_VS_SVC_F_SCHED3.
    pub sched3: bool,
}

impl ServiceFlags {
    pub const PERSISTENT: u32 = 0x1;
    pub const HASHED: u32 = 0x2;
    pub const ONEPACKET: u32 = 0x4;
    pub const SCHED1: u32 = 0x8;
    pub const SCHED2: u32 = 0x10;
    pub const SCHED3: u32 = 0x20;

    /// The kernel's flag bits.
    pub fn bits(&self) -> u32 {
        let mut b = 0;
        if self.persistent {
            b |= Self::PERSISTENT;
        }
        if self.onepacket {
            b |= Self::ONEPACKET;
        }
        if self.sched1 {
            b |= Self::SCHED1;
        }
        if self.sched2 {
            b |= Self::SCHED2;
        }
        if self.sched3 {
            b |= Self::SCHED3;
        }
        b
    }

    pub fn from_bits(b: u32) -> Self {
        ServiceFlags {
            persistent: b & Self::PERSISTENT != 0,
            onepacket: b & Self::ONEPACKET != 0,
            sched1: b & Self::SCHED1 != 0,
            sched2: b & Self::SCHED2 != 0,
            sched3: b & Self::SCHED3 != 0,
        }
    }
}

/// Everything about a service except its identity and destinations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// Scheduler name, one of KERNEL_SCHEDULERS.
    pub scheduler: String,
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (meaningful with flags.persistent).
    pub timeout: u32,
    /// Persistence netmask: an IPv4 mask as a host-order u32, or an IPv6 prefix length.
    pub netmask: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            scheduler: "wlc".to_string(),
            flags: ServiceFlags::default(),
            timeout: 0,
            netmask: 0xffff_ffff,
        }
    }
}

impl ServiceConfig {
    pub fn with_scheduler(name: &str) -> Self {
        ServiceConfig {
            scheduler: name.to_string(),
            ..Default::default()
        }
    }
}

/// How packets reach a destination (IP_VS_CONN_F_FWD_MASK values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Forward {
    /// NAT: the only method that maps ports.
    Masq,
    Local,
    Tunnel,
    Route,
    Bypass,
}

impl Forward {
    pub fn code(self) -> u32 {
        match self {
            Forward::Masq => 0,
            Forward::Local => 1,
            Forward::Tunnel => 2,
            Forward::Route => 3,
            Forward::Bypass => 4,
        }
    }

    pub fn from_code(c: u32) -> Option<Forward> {
        Some(match c & 7 {
            0 => Forward::Masq,
            1 => Forward::Local,
            2 => Forward::Tunnel,
            3 => Forward::Route,
            4 => Forward::Bypass,
            _ => return None,
        })
    }

    /// The word ipvsadm prints in the Forward column.
    pub fn name(self) -> &'static str {
        match self {
            Forward::Masq => "Masq",
            Forward::Local => "Local",
            Forward::Tunnel => "Tunnel",
            Forward::Route => "Route",
            Forward::Bypass => "Bypass",
        }
    }
}

/// A real server of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: u16,
    pub forward: Forward,
    /// Weight; 0 quiesces (no new connections, existing ones keep flowing).
    pub weight: u32,
    /// Upper connection threshold (0: none).
    pub u_thresh: u32,
    /// Lower connection threshold (0: 3/4 of the upper one).
    pub l_thresh: u32,
}

impl Destination {
    pub fn masq(addr: impl Into<IpAddr>, port: u16, weight: u32) -> Self {
        Destination {
            addr: addr.into(),
            port,
            forward: Forward::Masq,
            weight,
            u_thresh: 0,
            l_thresh: 0,
        }
    }

    /// Identity of a destination within its service.
    pub fn id(&self) -> (IpAddr, u16) {
        (self.addr, self.port)
    }
}

/// A virtual service and its destinations, in the kernel's list order (newest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub key: ServiceKey,
    pub config: ServiceConfig,
    pub dests: Vec<Destination>,
}

impl Service {
    pub fn dest(&self, addr: IpAddr, port: u16) -> Option<&Destination> {
        self.dests.iter().find(|d| d.addr == addr && d.port == port)
    }
}

/// Why a table operation was refused. Messages follow ipvsadm's wording where it has one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("Service already exists: {0}")]
    ServiceExists(ServiceKey),
    #[error("No such service: {0}")]
    NoSuchService(ServiceKey),
    #[error("Destination already exists: {0}")]
    DestExists(String),
    #[error("No such destination: {0}")]
    NoSuchDest(String),
    #[error("Scheduler not found: {0} (known: {known})", known = KERNEL_SCHEDULERS.join(" "))]
    UnknownScheduler(String),
    #[error("Zero port specified for non-persistent service {0}")]
    ZeroPort(ServiceKey),
    #[error("Weight {0} out of range (0..=2147483647)")]
    WeightRange(i64),
    #[error("Address family of destination {dest} does not match service {svc}")]
    FamilyMismatch { svc: ServiceKey, dest: String },
    #[error("Port mapping needs masquerading (-m): destination {0} has another port")]
    PortMappingNeedsMasq(String),
    #[error("Invalid service: {0}")]
    Invalid(String),
}

/// A single change to the table, in the order it is applied. Engines that carry scheduler
/// state (wrr) replay these one by one, as the kernel runs its hook once per change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    AddService(ServiceKey, ServiceConfig),
    EditService(ServiceKey, ServiceConfig),
    DelService(ServiceKey),
    /// The destination went to the head of the list.
    AddDest(ServiceKey, Destination),
    /// The destination kept its list position.
    EditDest(ServiceKey, Destination),
    DelDest(ServiceKey, (IpAddr, u16)),
}

/// What an operator asks for (one ipvsadm command, or one line of a restore file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    AddService(ServiceKey, ServiceConfig),
    EditService(ServiceKey, ServiceConfig),
    DelService(ServiceKey),
    AddDest(ServiceKey, Destination),
    EditDest(ServiceKey, Destination),
    DelDest(ServiceKey, IpAddr, u16),
    /// ipvsadm -C.
    Clear,
}

/// The whole table. Listings sort as ipvsadm does; the order kept here carries no meaning
/// (a deletion moves the last service into the gap, so every operation stays O(1) at
/// 50,000 services).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Service>", into = "Vec<Service>")]
pub struct Table {
    services: Vec<Service>,
    /// Position of each service in `services`.
    index: std::collections::HashMap<ServiceKey, usize>,
}

impl From<Vec<Service>> for Table {
    fn from(services: Vec<Service>) -> Table {
        let index = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key, i))
            .collect();
        Table { services, index }
    }
}

impl From<Table> for Vec<Service> {
    fn from(t: Table) -> Vec<Service> {
        t.services
    }
}

fn dest_name(addr: &IpAddr, port: u16) -> String {
    fmt_addr_port(addr, port)
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.index.get(key).map(|&i| &self.services[i])
    }

    fn service_mut(&mut self, key: &ServiceKey) -> Result<&mut Service, TableError> {
        match self.index.get(key) {
            Some(&i) => Ok(&mut self.services[i]),
            None => Err(TableError::NoSuchService(*key)),
        }
    }

    fn validate_service(key: &ServiceKey, config: &ServiceConfig) -> Result<(), TableError> {
        if !KERNEL_SCHEDULERS.contains(&config.scheduler.as_str()) {
            return Err(TableError::UnknownScheduler(config.scheduler.clone()));
        }
        if let ServiceKey::Inet { addr, port, .. } = key {
            // The kernel accepts port 0 only for persistent services (all ports).
            if *port == 0 && !config.flags.persistent {
                return Err(TableError::ZeroPort(*key));
            }
            if addr.is_unspecified() {
                return Err(TableError::Invalid(format!(
                    "{key}: the virtual address must not be unspecified"
                )));
            }
        }
        if let ServiceKey::Fwmark { mark: 0, .. } = key {
            return Err(TableError::Invalid("fwmark 0 is not a valid mark".into()));
        }
        if key.family() == Family::Inet6 && config.flags.persistent && config.netmask > 128 {
            return Err(TableError::Invalid(format!(
                "IPv6 persistence netmask must be a prefix length 1..128, not {}",
                config.netmask
            )));
        }
        Ok(())
    }

    fn validate_dest(svc: &Service, dest: &Destination) -> Result<(), TableError> {
        let name = dest_name(&dest.addr, dest.port);
        if svc.key.family() != family_of(&dest.addr) {
            return Err(TableError::FamilyMismatch {
                svc: svc.key,
                dest: name,
            });
        }
        if dest.weight > i32::MAX as u32 {
            return Err(TableError::WeightRange(dest.weight as i64));
        }
        if dest.addr.is_unspecified() {
            return Err(TableError::Invalid(format!(
                "destination {name}: address must not be unspecified"
            )));
        }
        if let ServiceKey::Inet { port, .. } = svc.key {
            if dest.forward != Forward::Masq && dest.port != port && port != 0 {
                return Err(TableError::PortMappingNeedsMasq(name));
            }
        }
        if dest.u_thresh != 0 && dest.l_thresh > dest.u_thresh {
            return Err(TableError::Invalid(format!(
                "destination {name}: lower threshold {} above upper threshold {}",
                dest.l_thresh, dest.u_thresh
            )));
        }
        Ok(())
    }

    pub fn add_service(
        &mut self,
        key: ServiceKey,
        config: ServiceConfig,
    ) -> Result<Change, TableError> {
        Self::validate_service(&key, &config)?;
        if self.service(&key).is_some() {
            return Err(TableError::ServiceExists(key));
        }
        self.index.insert(key, self.services.len());
        self.services.push(Service {
            key,
            config: config.clone(),
            dests: Vec::new(),
        });
        Ok(Change::AddService(key, config))
    }

    pub fn edit_service(
        &mut self,
        key: ServiceKey,
        config: ServiceConfig,
    ) -> Result<Change, TableError> {
        Self::validate_service(&key, &config)?;
        self.service_mut(&key)?.config = config.clone();
        Ok(Change::EditService(key, config))
    }

    pub fn del_service(&mut self, key: &ServiceKey) -> Result<Change, TableError> {
        let i = self
            .index
            .remove(key)
            .ok_or(TableError::NoSuchService(*key))?;
        self.services.swap_remove(i);
        if let Some(moved) = self.services.get(i) {
            self.index.insert(moved.key, i);
        }
        Ok(Change::DelService(*key))
    }

    /// Adds a destination at the head of the service's list, as the kernel does.
    pub fn add_dest(&mut self, key: &ServiceKey, dest: Destination) -> Result<Change, TableError> {
        let svc = self.service_mut(key)?;
        Self::validate_dest(svc, &dest)?;
        if svc.dest(dest.addr, dest.port).is_some() {
            return Err(TableError::DestExists(dest_name(&dest.addr, dest.port)));
        }
        svc.dests.insert(0, dest.clone());
        Ok(Change::AddDest(*key, dest))
    }

    /// Changes a destination in place (its list position stays).
    pub fn edit_dest(&mut self, key: &ServiceKey, dest: Destination) -> Result<Change, TableError> {
        let svc = self.service_mut(key)?;
        Self::validate_dest(svc, &dest)?;
        let id = dest.id();
        let slot = svc
            .dests
            .iter_mut()
            .find(|d| d.id() == id)
            .ok_or_else(|| TableError::NoSuchDest(dest_name(&id.0, id.1)))?;
        *slot = dest.clone();
        Ok(Change::EditDest(*key, dest))
    }

    pub fn del_dest(
        &mut self,
        key: &ServiceKey,
        addr: IpAddr,
        port: u16,
    ) -> Result<Change, TableError> {
        let svc = self.service_mut(key)?;
        let i = svc
            .dests
            .iter()
            .position(|d| d.addr == addr && d.port == port)
            .ok_or_else(|| TableError::NoSuchDest(dest_name(&addr, port)))?;
        svc.dests.remove(i);
        Ok(Change::DelDest(*key, (addr, port)))
    }

    /// Applies one operation; on error the table is unchanged.
    pub fn apply_op(&mut self, op: &Op) -> Result<Vec<Change>, TableError> {
        Ok(match op {
            Op::AddService(k, c) => vec![self.add_service(*k, c.clone())?],
            Op::EditService(k, c) => vec![self.edit_service(*k, c.clone())?],
            Op::DelService(k) => vec![self.del_service(k)?],
            Op::AddDest(k, d) => vec![self.add_dest(k, d.clone())?],
            Op::EditDest(k, d) => vec![self.edit_dest(k, d.clone())?],
            Op::DelDest(k, a, p) => vec![self.del_dest(k, *a, *p)?],
            Op::Clear => self.clear(),
        })
    }

    /// The operations that build this table from empty, in an order that reproduces the
    /// kernel's list order (destinations oldest first, since each add goes to the head).
    pub fn to_ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        for s in &self.services {
            ops.push(Op::AddService(s.key, s.config.clone()));
            for d in s.dests.iter().rev() {
                ops.push(Op::AddDest(s.key, d.clone()));
            }
        }
        ops
    }

    /// The operations that turn this table into `target`, touching only what differs: a
    /// reload applies these, so unchanged services keep their connections and scheduler state.
    /// Destinations new to a service are added oldest first (each add goes to the head).
    pub fn diff_ops(&self, target: &Table) -> Vec<Op> {
        let mut ops = Vec::new();
        for s in &self.services {
            if target.service(&s.key).is_none() {
                ops.push(Op::DelService(s.key));
            }
        }
        for t in &target.services {
            let Some(s) = self.service(&t.key) else {
                ops.push(Op::AddService(t.key, t.config.clone()));
                for d in t.dests.iter().rev() {
                    ops.push(Op::AddDest(t.key, d.clone()));
                }
                continue;
            };
            if s.config != t.config {
                ops.push(Op::EditService(t.key, t.config.clone()));
            }
            for d in &s.dests {
                if t.dest(d.addr, d.port).is_none() {
                    ops.push(Op::DelDest(t.key, d.addr, d.port));
                }
            }
            for d in t.dests.iter().rev() {
                match s.dest(d.addr, d.port) {
                    None => ops.push(Op::AddDest(t.key, d.clone())),
                    Some(old) if old != d => ops.push(Op::EditDest(t.key, d.clone())),
                    Some(_) => {}
                }
            }
        }
        ops
    }

    /// Puts a service back as it was (`None`: absent): undoes operations on it.
    pub fn restore_service(&mut self, key: &ServiceKey, prev: Option<Service>) {
        if let Some(i) = self.index.remove(key) {
            self.services.swap_remove(i);
            if let Some(moved) = self.services.get(i) {
                self.index.insert(moved.key, i);
            }
        }
        if let Some(s) = prev {
            self.index.insert(s.key, self.services.len());
            self.services.push(s);
        }
    }

    /// Removes every service (ipvsadm -C).
    pub fn clear(&mut self) -> Vec<Change> {
        self.index.clear();
        self.services
            .drain(..)
            .map(|s| Change::DelService(s.key))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn destinations_are_listed_newest_first() {
        let mut t = Table::new();
        let k = ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80);
        t.add_service(k, ServiceConfig::with_scheduler("rr"))
            .unwrap();
        for a in ["10.1.0.1", "10.1.0.2", "10.1.0.3"] {
            t.add_dest(&k, Destination::masq(ip(a), 8080, 1)).unwrap();
        }
        let order: Vec<String> = t
            .service(&k)
            .unwrap()
            .dests
            .iter()
            .map(|d| d.addr.to_string())
            .collect();
        assert_eq!(order, ["10.1.0.3", "10.1.0.2", "10.1.0.1"]);
    }

    #[test]
    fn invalid_operations_are_refused_and_change_nothing() {
        let mut t = Table::new();
        let k = ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80);
        assert_eq!(
            t.add_service(k, ServiceConfig::with_scheduler("nope")),
            Err(TableError::UnknownScheduler("nope".into()))
        );
        assert!(t.services().is_empty());
        t.add_service(k, ServiceConfig::with_scheduler("rr"))
            .unwrap();
        assert_eq!(
            t.add_service(k, ServiceConfig::with_scheduler("rr")),
            Err(TableError::ServiceExists(k))
        );
        let zero = ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 2), 0);
        assert_eq!(
            t.add_service(zero, ServiceConfig::with_scheduler("rr")),
            Err(TableError::ZeroPort(zero))
        );
        t.add_dest(&k, Destination::masq(ip("10.1.0.1"), 8080, 1))
            .unwrap();
        let before = t.clone();
        assert_eq!(
            t.add_dest(&k, Destination::masq(ip("10.1.0.1"), 8080, 5)),
            Err(TableError::DestExists("10.1.0.1:8080".into()))
        );
        assert_eq!(
            t.add_dest(&k, Destination::masq(ip("10.1.0.2"), 8080, 1u32 << 31)),
            Err(TableError::WeightRange(1i64 << 31))
        );
        assert!(matches!(
            t.add_dest(&k, Destination::masq(ip("fd00::1"), 8080, 1)),
            Err(TableError::FamilyMismatch { .. })
        ));
        let mut route = Destination::masq(ip("10.1.0.3"), 8080, 1);
        route.forward = Forward::Route;
        assert_eq!(
            t.add_dest(&k, route),
            Err(TableError::PortMappingNeedsMasq("10.1.0.3:8080".into()))
        );
        assert_eq!(
            t.del_dest(&k, ip("10.9.9.9"), 1),
            Err(TableError::NoSuchDest("10.9.9.9:1".into()))
        );
        assert_eq!(t, before);
    }

    #[test]
    fn diff_ops_turns_one_table_into_another_touching_only_differences() {
        let k1 = ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80);
        let k2 = ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 2), 80);
        let k3 = ServiceKey::udp(Ipv4Addr::new(10, 0, 0, 3), 53);
        let mut a = Table::new();
        a.add_service(k1, ServiceConfig::with_scheduler("rr"))
            .unwrap();
        a.add_dest(&k1, Destination::masq(ip("10.1.0.1"), 80, 1))
            .unwrap();
        a.add_dest(&k1, Destination::masq(ip("10.1.0.2"), 80, 1))
            .unwrap();
        a.add_service(k2, ServiceConfig::with_scheduler("rr"))
            .unwrap();
        let mut b = Table::new();
        b.add_service(k1, ServiceConfig::with_scheduler("rr"))
            .unwrap();
        b.add_dest(&k1, Destination::masq(ip("10.1.0.1"), 80, 5))
            .unwrap();
        b.add_dest(&k1, Destination::masq(ip("10.1.0.3"), 80, 1))
            .unwrap();
        b.add_service(k3, ServiceConfig::with_scheduler("sh"))
            .unwrap();
        b.add_dest(&k3, Destination::masq(ip("10.1.0.9"), 53, 1))
            .unwrap();
        let ops = a.diff_ops(&b);
        assert_eq!(
            ops,
            vec![
                Op::DelService(k2),
                Op::DelDest(k1, ip("10.1.0.2"), 80),
                Op::EditDest(k1, Destination::masq(ip("10.1.0.1"), 80, 5)),
                Op::AddDest(k1, Destination::masq(ip("10.1.0.3"), 80, 1)),
                Op::AddService(k3, ServiceConfig::with_scheduler("sh")),
                Op::AddDest(k3, Destination::masq(ip("10.1.0.9"), 53, 1)),
            ]
        );
        for op in &ops {
            a.apply_op(op).unwrap();
        }
        assert_eq!(a.services().len(), 2);
        assert_eq!(a.service(&k1), b.service(&k1));
        assert_eq!(a.service(&k3), b.service(&k3));
        assert!(a.diff_ops(&b).is_empty());
    }

    #[test]
    fn the_index_follows_deletions_and_restores() {
        let mut t = Table::new();
        let keys: Vec<ServiceKey> = (1..=5)
            .map(|i| ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, i), 80))
            .collect();
        for k in &keys {
            t.add_service(*k, ServiceConfig::with_scheduler("rr"))
                .unwrap();
        }
        let first = t.service(&keys[0]).cloned();
        t.del_service(&keys[0]).unwrap();
        t.del_service(&keys[2]).unwrap();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(t.service(k).is_some(), i != 0 && i != 2, "{k}");
            if let Some(s) = t.service(k) {
                assert_eq!(&s.key, k);
            }
        }
        t.restore_service(&keys[0], first);
        t.restore_service(&keys[4], None);
        assert_eq!(t.services().len(), 3);
        assert!(t.service(&keys[0]).is_some() && t.service(&keys[4]).is_none());
        let json = serde_json::to_string(&t).unwrap();
        let back: Table = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert!(
            back.service(&keys[3]).is_some(),
            "index rebuilt after deserialising"
        );
    }

    #[test]
    fn edit_keeps_list_position() {
        let mut t = Table::new();
        let k = ServiceKey::udp(Ipv4Addr::new(10, 0, 0, 1), 53);
        t.add_service(k, ServiceConfig::with_scheduler("wrr"))
            .unwrap();
        t.add_dest(&k, Destination::masq(ip("10.1.0.1"), 53, 1))
            .unwrap();
        t.add_dest(&k, Destination::masq(ip("10.1.0.2"), 53, 1))
            .unwrap();
        t.edit_dest(&k, Destination::masq(ip("10.1.0.1"), 53, 0))
            .unwrap();
        let s = t.service(&k).unwrap();
        assert_eq!(s.dests[1].addr, ip("10.1.0.1"));
        assert_eq!(s.dests[1].weight, 0);
    }
}
