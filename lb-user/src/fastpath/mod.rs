//! The fast path from userspace: load the BPF object, size and pin its maps, attach the XDP
//! programs, mirror the table into the maps (engine.rs), read counters and connections back.

pub mod alloc;
mod batch;
pub mod conns;
pub mod engine;
pub mod links;
pub mod sockets;

use std::path::{Path, PathBuf};

use aya::maps::{Array, DevMapHash, MapData};
use aya::programs::tc::{TcAttachOptions, TcAttachType};
use aya::programs::{LinkOrder, SchedClassifier, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use lb_common::{
    map_names as names, prog_names, Config, CFG_F_FIB_REDIRECT, N_TIMEOUTS, UDP_STATE,
};

pub use engine::{
    unsupported_reason, Counters, DestCounters, DestReading, DestStatsRead, Engine, EngineService,
    Limits, Reconciled, ServiceCounters, ServiceReading,
};

use crate::model::Change;

#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    #[error("loading the BPF programs failed: {0}")]
    Load(String),
    #[error("cannot attach to interface {iface}: {msg}")]
    Attach { iface: String, msg: String },
    #[error("BPF map error: {0}")]
    Map(String),
    #[error("not supported by the fast path: {0}")]
    Unsupported(String),
    #[error("fast path table full: {0}")]
    Full(String),
    #[error("{0}")]
    Table(String),
}

/// Sizes and behaviour of one fast-path instance.
#[derive(Clone, Debug)]
pub struct FastPathConfig {
    pub max_services: u32,
    pub max_dests: u32,
    /// Slots shared by all scheduler tables (sh takes 257 per service, rr/wrr period + 1).
    pub sched_slots: u32,
    /// Connection table entries (CONNS and REPLIES each).
    pub conn_table_size: u32,
    /// Connections of the node's own processes balanced at the socket (SOCK_CONNS, SOCK_REV).
    pub sock_table_size: u32,
    pub max_period: usize,
    /// Forward rewritten packets by FIB lookup + redirect (else always to the kernel stack).
    pub fib_redirect: bool,
    /// Where to pin the maps (None: not pinned, they die with the process).
    pub pin_dir: Option<PathBuf>,
    /// BPF-side logging through aya-log (new connections, refusals). Off by default: the log
    /// level is then 0 at load and the statements cost nothing.
    pub bpf_log: bool,
}

impl Default for FastPathConfig {
    fn default() -> Self {
        FastPathConfig {
            max_services: 65_536,
            max_dests: 1 << 19,
            sched_slots: 1 << 22,
            conn_table_size: 1 << 20,
            sock_table_size: 1 << 16,
            max_period: 1 << 16,
            fib_redirect: true,
            pin_dir: None,
            bpf_log: false,
        }
    }
}

/// How (at which hook) the balancer is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// XDP in the driver (veth, most NICs).
    Native,
    /// XDP in the generic (skb) path: any device, slower.
    Generic,
    /// tc (tcx ingress): works on GSO skbs without a copy and keeps the kernel's checksum
    /// offload state (CHECKSUM_PARTIAL from local senders) correct; the default on veth and
    /// other virtual devices.
    Tc,
}

impl AttachMode {
    /// The name operators use (`--mode`, listings, logs).
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Tc => "tc",
        }
    }

    /// The faster hook for a device: XDP native on NICs (which deliver full checksums and
    /// run XDP in their driver), tc on virtual devices (veth and the like), where XDP runs
    /// on a linearised copy of every GSO packet and cannot see CHECKSUM_PARTIAL.
    pub fn default_for(virtual_device: bool) -> AttachMode {
        if virtual_device {
            AttachMode::Tc
        } else {
            AttachMode::Native
        }
    }

    fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Generic => XdpMode::Skb,
            _ => XdpMode::Driver,
        }
    }
}

pub struct FastPath {
    ebpf: Ebpf,
    engine: Engine,
    config: FastPathConfig,
    /// The reader of the BPF log ring (only with bpf_log).
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The interfaces attached with pinned links by this instance, and their hooks.
    attached: std::collections::BTreeMap<String, AttachMode>,
}

/// The maps the loader sizes and pins: every map of the object.
const MAP_NAMES: [&str; names::ALL.len()] = names::ALL;

impl FastPath {
    /// Loads the programs and creates (or, when pinned, re-opens) the maps.
    pub fn load(config: FastPathConfig) -> Result<FastPath, FastPathError> {
        Self::load_with(config, None)
    }

    /// Loads the programs, re-opens pinned maps and takes over the engine state a previous
    /// daemon saved for them (its ids, table regions and scheduler states), so everything
    /// continues exactly: established connections and the scheduler sequence alike.
    pub fn adopt(config: FastPathConfig, saved_engine: &[u8]) -> Result<FastPath, FastPathError> {
        let engine = Engine::restore(saved_engine)?;
        Self::load_with(config, Some(engine))
    }

    /// Takes over pinned maps a previous daemon left without saving its engine state (it was
    /// killed or crashed), from the service states its durable store last acknowledged: see
    /// `Engine::rebuild`. The maps keep their contents (connections, counters, timeouts) and
    /// are reconciled to those states.
    pub fn adopt_rebuild(
        config: FastPathConfig,
        limits: Limits,
        services: Vec<(crate::model::ServiceKey, EngineService)>,
    ) -> Result<(FastPath, Reconciled), FastPathError> {
        let mut fp = Self::load_with(config, Some(Engine::new(limits)))?;
        let rep = fp.engine.rebuild(&mut fp.ebpf, services)?;
        Ok((fp, rep))
    }

    /// The engine's services written since the last call (see `Engine::take_changed`).
    pub fn take_changed(&mut self) -> Vec<(crate::model::ServiceKey, Option<EngineService>)> {
        self.engine.take_changed()
    }

    /// Every service's engine state, forgetting the changed ones (a durable snapshot).
    pub fn services_state(&mut self) -> Vec<(crate::model::ServiceKey, EngineService)> {
        self.engine.clear_changed();
        self.engine.services_state()
    }

    /// Serialised engine state for a successor (see `adopt`).
    pub fn save_engine(&mut self) -> Result<Vec<u8>, FastPathError> {
        self.engine.save()
    }

    fn load_with(
        mut config: FastPathConfig,
        saved: Option<Engine>,
    ) -> Result<FastPath, FastPathError> {
        if let Some(e) = &saved {
            // Pinned maps keep the sizes they were created with.
            let l = e.limits();
            config.max_services = l.max_services;
            config.max_dests = l.max_dests;
            config.sched_slots = l.sched_slots;
            config.max_period = l.max_period;
        }
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(names::SERVICES, config.max_services)
            .map_max_entries(names::BACKENDS, config.max_dests)
            .map_max_entries(names::DESTS, config.max_dests)
            .map_max_entries(names::DEST_STATS, config.max_dests)
            .map_max_entries(names::SCHED_SLOTS, config.sched_slots)
            .map_max_entries(names::CONNS, config.conn_table_size)
            .map_max_entries(names::REPLIES, config.conn_table_size)
            .map_max_entries(names::SOCK_CONNS, config.sock_table_size)
            .map_max_entries(names::SOCK_REV, config.sock_table_size);
        let pins: Vec<(&str, PathBuf)> = match &config.pin_dir {
            Some(dir) => {
                ensure_bpffs(dir)?;
                std::fs::create_dir_all(dir).map_err(|e| {
                    FastPathError::Load(format!(
                        "cannot create pin directory {}: {e}",
                        dir.display()
                    ))
                })?;
                MAP_NAMES.iter().map(|n| (*n, dir.join(n))).collect()
            }
            None => Vec::new(),
        };
        for (n, p) in &pins {
            loader.map_pin_path(n, p.as_path());
        }
        let log_level: u8 = if config.bpf_log { 0xff } else { 0 };
        loader.override_global(aya_log::LEVEL, &log_level, true);
        let mut ebpf = loader
            .load(crate::bpf_object::object())
            .map_err(|e| FastPathError::Load(explain_load_error(&e)))?;
        load_programs(&mut ebpf)?;
        let logger = if config.bpf_log {
            Some(
                aya_log::EbpfLogger::init(&mut ebpf)
                    .map_err(|e| FastPathError::Load(format!("BPF log: {e}")))?,
            )
        } else {
            None
        };
        let adopted = saved.is_some();
        let engine = saved.unwrap_or_else(|| {
            Engine::new(Limits {
                max_services: config.max_services,
                max_dests: config.max_dests,
                sched_slots: config.sched_slots,
                max_period: config.max_period,
            })
        });
        let mut fp = FastPath {
            ebpf,
            engine,
            config,
            logger,
            attached: Default::default(),
        };
        if !adopted && fp.config.pin_dir.is_some() {
            fp.engine.reset_maps(&mut fp.ebpf)?;
        }
        // An adopted instance keeps the timeouts set before (ipvsadm --set survives restarts).
        let mut cfg = if adopted {
            fp.read_config()?
        } else {
            Config::default()
        };
        if fp.config.fib_redirect {
            cfg.flags |= CFG_F_FIB_REDIRECT;
        } else {
            cfg.flags &= !CFG_F_FIB_REDIRECT;
        }
        fp.write_config(cfg)?;
        Ok(fp)
    }

    /// The BPF log ring's reader, to poll for readability and `flush` into `log`/`tracing`.
    pub fn bpf_logger(&mut self) -> Option<&mut aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.as_mut()
    }

    pub fn config(&self) -> &FastPathConfig {
        &self.config
    }

    /// The interfaces attached with pinned links (`attach_persistent`) and their hooks.
    pub fn attachments(&self) -> &std::collections::BTreeMap<String, AttachMode> {
        &self.attached
    }

    /// An attached interface was renamed (its pins follow it: `daemon::ifaces::rename_iface`).
    pub fn renamed(&mut self, from: &str, to: &str) {
        if let Some(m) = self.attached.remove(from) {
            self.attached.insert(to.to_string(), m);
        }
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Mirrors a batch of table changes into the maps; on error nothing was written.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), FastPathError> {
        self.engine.apply(&mut self.ebpf, changes)
    }

    pub fn counters(
        &self,
        key: &crate::model::ServiceKey,
    ) -> Result<Option<ServiceCounters>, FastPathError> {
        self.engine.counters(&self.ebpf, key)
    }

    /// Every destination's counters, read in batches (see `Engine::dest_counters`).
    pub fn dest_counters(&self) -> Result<DestCounters, FastPathError> {
        self.engine.dest_counters(&self.ebpf)
    }

    /// See `Engine::dest_stats_read`: the reading's setup, to run it outside a lock.
    pub fn dest_stats_read(&self) -> Result<DestStatsRead, FastPathError> {
        self.engine.dest_stats_read(&self.ebpf)
    }

    pub fn zero(&mut self, key: Option<&crate::model::ServiceKey>) -> Result<(), FastPathError> {
        self.engine.zero(&mut self.ebpf, key)
    }

    pub(crate) fn read_config(&self) -> Result<Config, FastPathError> {
        let m: Array<&MapData, Config> = engine::typed_ref(&self.ebpf, names::CONFIG)?;
        m.get(&0, 0)
            .map_err(|e| FastPathError::Map(format!("CONFIG: {e}")))
    }

    pub(crate) fn write_config(&mut self, cfg: Config) -> Result<(), FastPathError> {
        let mut m: Array<&mut MapData, Config> = engine::typed(&mut self.ebpf, names::CONFIG)?;
        m.set(0, cfg, 0)
            .map_err(|e| FastPathError::Map(format!("CONFIG: {e}")))
    }

    /// `ipvsadm --set tcp tcpfin udp` (seconds; 0 leaves a value unchanged, as ipvsadm does).
    pub fn set_timeouts(&mut self, tcp: u32, tcpfin: u32, udp: u32) -> Result<(), FastPathError> {
        let mut cfg = self.read_config()?;
        let ns = |s: u32| s as u64 * 1_000_000_000;
        if tcp != 0 {
            cfg.timeouts_ns[lb_common::tcp_state::ESTABLISHED as usize] = ns(tcp);
        }
        if tcpfin != 0 {
            cfg.timeouts_ns[lb_common::tcp_state::FIN_WAIT as usize] = ns(tcpfin);
        }
        if udp != 0 {
            cfg.timeouts_ns[UDP_STATE as usize] = ns(udp);
        }
        self.write_config(cfg)
    }

    /// (tcp, tcpfin, udp) timeouts in seconds.
    pub fn timeouts(&self) -> Result<(u32, u32, u32), FastPathError> {
        let t = self.read_config()?.timeouts_ns;
        let s = |i: u8| (t[i as usize] / 1_000_000_000) as u32;
        Ok((
            s(lb_common::tcp_state::ESTABLISHED),
            s(lb_common::tcp_state::FIN_WAIT),
            s(UDP_STATE),
        ))
    }

    /// Per-state idle timeouts in nanoseconds, as the BPF side applies them.
    pub fn timeouts_ns(&self) -> Result<[u64; N_TIMEOUTS], FastPathError> {
        Ok(self.read_config()?.timeouts_ns)
    }

    /// Attaches the balancer to an interface for this instance's life (tests, benchmarks;
    /// the daemon uses `attach_persistent`). An XDP redirect may then transmit on it (it is
    /// added to TX_PORTS) when `redirect_ok`: see README on veth and XDP redirects.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
        redirect_ok: bool,
    ) -> Result<(), FastPathError> {
        let ifindex = ifindex(iface)?;
        let attach_err = |e: aya::programs::ProgramError| FastPathError::Attach {
            iface: iface.to_string(),
            msg: format!("{e:#}"),
        };
        if mode == AttachMode::Tc {
            self.tc_program()?
                .attach_with_options(
                    iface,
                    TcAttachType::Ingress,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(attach_err)?;
            return Ok(());
        }
        self.xdp_program(prog_names::XDP)?
            .attach(iface, mode.xdp_mode())
            .map_err(attach_err)?;
        if redirect_ok {
            self.allow_xdp_redirect(ifindex)?;
        }
        Ok(())
    }

    /// Puts the tc program behind the XDP one on `iface` (for this instance's life): XDP then
    /// leaves it the packets whose checksum may be a CHECKSUM_PARTIAL seed. For XDP on
    /// virtual devices with local senders (the daemon does it in `attach_persistent`).
    pub fn attach_tc_behind(&mut self, iface: &str) -> Result<(), FastPathError> {
        let ifindex = ifindex(iface)?;
        self.attach(iface, AttachMode::Tc, false)?;
        self.set_tc_behind(ifindex, true)
    }

    pub(crate) fn xdp_program(&mut self, name: &str) -> Result<&mut Xdp, FastPathError> {
        program_in(&mut self.ebpf, name)
    }

    pub(crate) fn tc_program(&mut self) -> Result<&mut SchedClassifier, FastPathError> {
        program_in(&mut self.ebpf, prog_names::TC)
    }

    /// Lets XDP redirects transmit on `ifindex` (TX_PORTS).
    pub(crate) fn allow_xdp_redirect(&mut self, ifindex: u32) -> Result<(), FastPathError> {
        let mut tx: DevMapHash<&mut MapData> = engine::typed(&mut self.ebpf, names::TX_PORTS)?;
        tx.insert(ifindex, ifindex, None, 0)
            .map_err(|e| FastPathError::Map(format!("TX_PORTS: {e}")))
    }

    /// Attaches the pass-through program (for the peer of a veth that XDP redirects deliver
    /// to). Nothing to do for tc, whose redirects deliver into any device.
    pub fn attach_pass(&mut self, iface: &str, mode: AttachMode) -> Result<(), FastPathError> {
        if mode == AttachMode::Tc {
            return Ok(());
        }
        self.xdp_program(prog_names::XDP_PASS)?
            .attach(iface, mode.xdp_mode())
            .map(|_| ())
            .map_err(|e| FastPathError::Attach {
                iface: iface.to_string(),
                msg: format!("{e:#}"),
            })
    }

    /// Takes the next hops XDP found without a neighbour entry (NEIGH_WANTED): (ifindex,
    /// address) pairs for the daemon to resolve.
    pub fn take_wanted_neighbours(
        &mut self,
    ) -> Result<Vec<(u32, std::net::Ipv4Addr)>, FastPathError> {
        let mut m: aya::maps::HashMap<&mut MapData, lb_common::NeighKey, u64> =
            engine::typed(&mut self.ebpf, names::NEIGH_WANTED)?;
        let keys: Vec<lb_common::NeighKey> = m.keys().filter_map(|k| k.ok()).collect();
        for k in &keys {
            let _ = m.remove(k);
        }
        Ok(keys
            .into_iter()
            .map(|k| (k.ifindex, std::net::Ipv4Addr::from(u32::from_be(k.addr))))
            .collect())
    }

    /// The packet-path counters (lb_common::path::*), summed over CPUs.
    pub fn path_stats(&self) -> Result<Vec<u64>, FastPathError> {
        let m: aya::maps::PerCpuArray<&MapData, u64> =
            engine::typed_ref(&self.ebpf, names::PATH_STATS)?;
        (0..lb_common::path::N)
            .map(|i| {
                m.get(&i, 0)
                    .map(|v| v.iter().sum())
                    .map_err(|e| FastPathError::Map(format!("PATH_STATS: {e}")))
            })
            .collect()
    }

    /// Removes the pinned maps of this instance (the programs detach when it is dropped).
    pub fn unpin(&self) -> Result<(), FastPathError> {
        if let Some(dir) = &self.config.pin_dir {
            remove_pins(dir)?;
        }
        Ok(())
    }
}

/// Loads every program of the object into the kernel, each as its type.
fn load_programs(ebpf: &mut Ebpf) -> Result<(), FastPathError> {
    macro_rules! load_as {
        ($ty:ty: $($name:expr),+) => {$(
            program_in::<$ty>(ebpf, $name)?
                .load()
                .map_err(|e| FastPathError::Load(format!("{}: {e:#}", $name)))?;
        )+};
    }
    load_as!(Xdp: prog_names::XDP, prog_names::XDP_PASS);
    load_as!(SchedClassifier: prog_names::TC, prog_names::TC_PASS);
    load_as!(aya::programs::CgroupSockAddr: prog_names::CONNECT4, prog_names::SENDMSG4,
        prog_names::RECVMSG4, prog_names::GETPEERNAME4);
    load_as!(aya::programs::SockOps: prog_names::SOCKOPS);
    Ok(())
}

/// The program `name` of the object, as its type `T`.
pub(crate) fn program_in<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, FastPathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| FastPathError::Load(format!("program {name} missing")))?
        .try_into()
        .map_err(|e| FastPathError::Load(format!("{name}: {e}")))
}

pub fn remove_pins(dir: &Path) -> Result<(), FastPathError> {
    for n in MAP_NAMES {
        let p = dir.join(n);
        if p.exists() {
            std::fs::remove_file(&p)
                .map_err(|e| FastPathError::Map(format!("unpin {}: {e}", p.display())))?;
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// Pins only work on a bpffs: mount one at /sys/fs/bpf when the pin directory is under it and
/// nothing is mounted there (some machines boot without it).
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), FastPathError> {
    let root = Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(root) {
        return Ok(());
    }
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new("/sys/fs/bpf").unwrap();
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let fstype = std::ffi::CString::new("bpf").unwrap();
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(FastPathError::Load(format!(
            "no bpffs at /sys/fs/bpf and mounting one failed ({}); run `mount -t bpf bpf /sys/fs/bpf`",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

pub fn ifindex(iface: &str) -> Result<u32, FastPathError> {
    let c = std::ffi::CString::new(iface).map_err(|_| FastPathError::Attach {
        iface: iface.to_string(),
        msg: "invalid interface name".into(),
    })?;
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(FastPathError::Attach {
            iface: iface.to_string(),
            msg: "no such interface".into(),
        });
    }
    Ok(i)
}

fn explain_load_error(e: &aya::EbpfError) -> String {
    let msg = format!("{e:#}");
    if msg.contains("Operation not permitted") || msg.contains("EPERM") {
        format!("{msg} (needs root, or CAP_BPF and CAP_NET_ADMIN)")
    } else {
        msg
    }
}
