//! XDP and tc attachments that outlive the daemon: each interface's link is pinned, so stopping the
//! daemon leaves the fast path running, and the next daemon swaps its program into the same
//! link in place (an upgrade without a moment of no program).
use std::path::{Path, PathBuf};

use aya::maps::{DevMapHash, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions, TcAttachType};
use aya::programs::{LinkOrder, XdpMode};
use lb_common::{map_names as names, prog_names};

use super::{engine, ifindex, AttachMode, FastPath, FastPathError};

/// How an interface ended up attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub iface: String,
    pub mode: AttachMode,
    /// An existing pinned link was taken over (restart) rather than created.
    pub adopted: bool,
    /// Native mode was refused by the driver and generic mode used instead.
    pub fell_back: bool,
}

/// The tc filter xvs attaches through netlink (clsact) where the kernel has no tcx (before
/// 6.6): a fixed priority and handle, so a restarted daemon finds and replaces its own.
const TC_NL_PRIORITY: u16 = 1;
const TC_NL_HANDLE: u32 = 0x5856;

/// tcx (BPF links for tc, Linux 6.6+) is used where the kernel has it; `XVS_TC_ATTACH=netlink`
/// forces the classic attachment (for tests of that path on a newer kernel).
pub fn tcx_available() -> bool {
    if std::env::var("XVS_TC_ATTACH").is_ok_and(|v| v == "netlink") {
        return false;
    }
    aya::util::KernelVersion::current()
        .map(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
        .unwrap_or(true)
}

/// Removes xvs's netlink-attached tc filter from `iface`, if there is one.
pub fn detach_tc_netlink(iface: &str) {
    let _ = aya::programs::tc::qdisc_detach_program(iface, TcAttachType::Ingress, prog_names::TC);
}

/// The pin of an interface's link at a hook: `link_xdp_IF` or `link_tc_IF`.
pub fn link_pin(pin_dir: &Path, iface: &str, mode: AttachMode) -> PathBuf {
    let hook = if mode == AttachMode::Tc { "tc" } else { "xdp" };
    pin_dir.join(format!("link_{hook}_{iface}"))
}

impl FastPath {
    /// Attaches to `iface` at the hook `mode` names with a pinned link under the pin
    /// directory, or takes over the link a previous daemon pinned there. `mode` Native falls
    /// back to Generic when the driver refuses. With `tc_behind` (for XDP on a virtual device)
    /// the tc program is attached too, behind XDP: XDP leaves it the packets whose checksum
    /// may be a CHECKSUM_PARTIAL seed (see README). A link the previous daemon pinned at a
    /// hook no longer wanted (the operator changed the interface's hook) is removed once the
    /// new one is in place.
    pub fn attach_persistent(
        &mut self,
        iface: &str,
        mode: AttachMode,
        redirect_ok: bool,
        tc_behind: bool,
    ) -> Result<Attached, FastPathError> {
        let pin_dir =
            self.config().pin_dir.clone().ok_or_else(|| {
                FastPathError::Load("persistent attach needs a pin directory".into())
            })?;
        let ifidx = ifindex(iface)?;
        let outcome = self.attach_pinned(&pin_dir, iface, mode)?;
        let mut behind = mode != AttachMode::Tc && tc_behind;
        if behind {
            // Best effort: without it XDP still serves full checksums (NIC-like senders).
            if let Err(e) = self.attach_pinned(&pin_dir, iface, AttachMode::Tc) {
                if ifindex(iface).is_err() {
                    // The interface went meanwhile: the caller handles that (quietly).
                    return Err(e);
                }
                tracing::warn!(
                    iface,
                    "cannot put tc behind XDP ({e}): packets of local senders with partial \
                     checksums are rewritten by XDP alone (turn their tx checksum offload off, \
                     or use --mode tc)"
                );
                behind = false;
            }
        } else {
            let other = link_pin(
                &pin_dir,
                iface,
                if mode == AttachMode::Tc {
                    AttachMode::Native
                } else {
                    AttachMode::Tc
                },
            );
            if other.exists() {
                if let Ok(l) = PinnedLink::from_pin(&other) {
                    let _ = l.unpin();
                }
                let _ = std::fs::remove_file(&other);
            }
            if mode != AttachMode::Tc && !tcx_available() {
                detach_tc_netlink(iface);
            }
        }
        self.set_tc_behind(ifidx, behind)?;
        // Generic-mode redirects are skb transmits and deliver into any device, veth included;
        // native ones into a veth only when its peer runs XDP, which the caller vouches for.
        // Redirects matter beyond speed: a reply rewritten to come from a VIP that is a local
        // address (kube-proxy's kube-ipvs0) and handed to the stack is dropped as a martian.
        // (tc redirects need no devmap: they deliver into any device.)
        if outcome.mode != AttachMode::Tc && (redirect_ok || outcome.mode == AttachMode::Generic) {
            self.allow_xdp_redirect(ifidx)?;
        }
        self.attached.insert(iface.to_string(), outcome.mode);
        Ok(outcome)
    }

    /// Attaches tc through netlink (a clsact qdisc and a direct-action filter) where the kernel
    /// has no tcx. Such a filter is no BPF link and cannot be pinned; it stays when the daemon
    /// exits (it is not detached on drop), and the next daemon replaces the program in the
    /// filter at xvs's fixed priority and handle. Returns whether one was there (adopted).
    fn attach_tc_netlink(&mut self, iface: &str) -> Result<bool, FastPathError> {
        use aya::programs::tc::{qdisc_add_clsact, NlOptions, TcHandle};
        let err = |msg: String| FastPathError::Attach {
            iface: iface.to_string(),
            msg,
        };
        // EEXIST: the qdisc is there already.
        let _ = qdisc_add_clsact(iface);
        let prog = self.tc_program()?;
        let handle = TcHandle::from(TC_NL_HANDLE);
        let existing = SchedClassifierLink::attached(
            iface,
            TcAttachType::Ingress,
            TC_NL_PRIORITY,
            handle,
            None,
        )
        .map_err(|e| err(format!("{e}")))?;
        let (id, adopted) = match prog.attach_to_link(existing) {
            Ok(id) => (id, true),
            Err(_) => {
                let id = prog
                    .attach_with_options(
                        iface,
                        TcAttachType::Ingress,
                        TcAttachOptions::Netlink(NlOptions {
                            priority: TC_NL_PRIORITY,
                            handle,
                            ..Default::default()
                        }),
                    )
                    .map_err(|e| err(format!("tc (netlink): {e:#}")))?;
                (id, false)
            }
        };
        // Dropping the link would remove the filter: it must outlive this daemon, as pinned
        // links do.
        let link = prog.take_link(id).map_err(|e| err(format!("{e:#}")))?;
        std::mem::forget(link);
        Ok(adopted)
    }

    /// Marks (or unmarks) `ifindex` as having the tc program behind XDP (TC_BEHIND).
    pub(crate) fn set_tc_behind(&mut self, ifindex: u32, on: bool) -> Result<(), FastPathError> {
        let mut m: aya::maps::HashMap<&mut aya::maps::MapData, u32, u32> =
            super::engine::typed(self.ebpf_mut(), lb_common::map_names::TC_BEHIND)?;
        if on {
            m.insert(ifindex, 1, 0)
                .map_err(|e| FastPathError::Map(format!("TC_BEHIND: {e}")))
        } else {
            let _ = m.remove(&ifindex);
            Ok(())
        }
    }

    /// One hook's pinned link on `iface`: adopted when pinned, else attached and pinned.
    fn attach_pinned(
        &mut self,
        pin_dir: &Path,
        iface: &str,
        mode: AttachMode,
    ) -> Result<Attached, FastPathError> {
        let pin = link_pin(pin_dir, iface, mode);
        let attach_err = |msg: String| FastPathError::Attach {
            iface: iface.to_string(),
            msg,
        };
        let mut outcome = Attached {
            iface: iface.to_string(),
            mode,
            adopted: false,
            fell_back: false,
        };
        if pin.exists() {
            let fd: FdLink = PinnedLink::from_pin(&pin)
                .map_err(|e| attach_err(format!("pinned link {}: {e}", pin.display())))?
                .into();
            // The pin keeps the link alive, as for a new attachment: the program keeps no
            // reference of its own, so removing the pin (detach_persistent) detaches.
            if mode == AttachMode::Tc {
                let link = SchedClassifierLink::try_from(fd).map_err(|e| {
                    attach_err(format!("pinned link {} is not tc: {e}", pin.display()))
                })?;
                let prog = self.tc_program()?;
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| attach_err(format!("replacing the program in place: {e:#}")))?;
                drop(prog.take_link(id));
            } else {
                let link = aya::programs::xdp::XdpLink::try_from(fd).map_err(|e| {
                    attach_err(format!("pinned link {} is not XDP: {e}", pin.display()))
                })?;
                let prog = self.xdp_program(prog_names::XDP)?;
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| attach_err(format!("replacing the program in place: {e:#}")))?;
                drop(prog.take_link(id));
            }
            outcome.adopted = true;
        } else {
            if mode == AttachMode::Tc && !tcx_available() {
                outcome.adopted = self.attach_tc_netlink(iface)?;
                return Ok(outcome);
            }
            let fd: FdLink = if mode == AttachMode::Tc {
                let prog = self.tc_program()?;
                let id = prog
                    .attach_with_options(
                        iface,
                        TcAttachType::Ingress,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(|e| attach_err(format!("tcx: {e:#}")))?;
                prog.take_link(id)
                    .map_err(|e| attach_err(format!("{e:#}")))?
                    .try_into()
                    .map_err(|e| attach_err(format!("kernel gave no BPF link to pin: {e}")))?
            } else {
                let prog = self.xdp_program(prog_names::XDP)?;
                let id = match prog.attach(iface, mode.xdp_mode()) {
                    Ok(id) => id,
                    Err(e) if mode == AttachMode::Native => {
                        outcome.fell_back = true;
                        outcome.mode = AttachMode::Generic;
                        prog.attach(iface, XdpMode::Skb).map_err(|e2| {
                            attach_err(format!("native mode: {e:#}; generic mode: {e2:#}"))
                        })?
                    }
                    Err(e) => return Err(attach_err(format!("{e:#}"))),
                };
                prog.take_link(id)
                    .map_err(|e| attach_err(format!("{e:#}")))?
                    .try_into()
                    .map_err(|e| attach_err(format!("kernel gave no BPF link to pin: {e}")))?
            };
            fd.pin(&pin)
                .map_err(|e| attach_err(format!("pinning the link at {}: {e}", pin.display())))?;
        }
        Ok(outcome)
    }
}

impl FastPath {
    /// Undoes `attach_persistent` for `iface`, at whichever hook it is: removes its links'
    /// pins (which detaches the program if the interface still exists; the link of a deleted
    /// one is already defunct) and its `TX_PORTS` entry (`ifindex`: the interface's index, if
    /// known; the entry of a deleted interface is gone already). Returns whether there was a
    /// pin.
    pub fn detach_persistent(
        &mut self,
        iface: &str,
        ifindex: Option<u32>,
    ) -> Result<bool, FastPathError> {
        let pin_dir =
            self.config().pin_dir.clone().ok_or_else(|| {
                FastPathError::Load("persistent detach needs a pin directory".into())
            })?;
        let mut had = false;
        if !tcx_available() {
            detach_tc_netlink(iface);
        }
        for mode in [AttachMode::Native, AttachMode::Tc] {
            let pin = link_pin(&pin_dir, iface, mode);
            if !pin.exists() {
                continue;
            }
            had = true;
            // Unpinning and dropping the last reference detaches the program.
            if let Ok(l) = PinnedLink::from_pin(&pin) {
                drop(l.unpin());
            }
            if pin.exists() {
                std::fs::remove_file(&pin)
                    .map_err(|e| FastPathError::Map(format!("removing {}: {e}", pin.display())))?;
            }
        }
        self.attached.remove(iface);
        if let Some(i) = ifindex {
            let mut tx: DevMapHash<&mut MapData> = engine::typed(self.ebpf_mut(), names::TX_PORTS)?;
            // Absent (never listed, or removed by the kernel with the device) is fine.
            let _ = tx.remove(i);
            self.set_tc_behind(i, false)?;
        }
        Ok(had)
    }
}

/// Detaches every pinned link and removes every pinned map under `pin_dir`: the fast path is
/// gone afterwards. Returns the names of what was removed.
pub fn teardown(pin_dir: &Path) -> Result<Vec<String>, FastPathError> {
    let mut removed = Vec::new();
    // Filters attached through netlink (no tcx) have no pin: look on every interface.
    if !tcx_available() {
        for iface in interface_names() {
            if aya::programs::tc::qdisc_detach_program(
                &iface,
                TcAttachType::Ingress,
                prog_names::TC,
            )
            .is_ok()
            {
                removed.push(format!("tc filter on {iface}"));
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Ok(removed);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.starts_with("link_") {
            if let Ok(l) = PinnedLink::from_pin(&path) {
                // Unpinning and dropping the last reference detaches the program.
                let _ = l.unpin();
            }
        }
        if path.exists() {
            std::fs::remove_file(&path)
                .map_err(|err| FastPathError::Map(format!("removing {}: {err}", path.display())))?;
        }
        removed.push(name);
    }
    let _ = std::fs::remove_dir(pin_dir);
    Ok(removed)
}

/// The names of this network namespace's interfaces.
fn interface_names() -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array ended by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 {
            out.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}
