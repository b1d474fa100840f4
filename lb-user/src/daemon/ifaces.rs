//! Attaching the fast path to one interface and detaching it again: the one place that decides
//! how an interface is hooked (XDP native or generic, with the TX_PORTS choice, or tc), used
//! for `--iface` at start and by the interface watcher (`ifwatch`) as interfaces come and go.
use std::path::Path;

use crate::daemon::checks;
use crate::fastpath::links::{link_pin, Attached};
use crate::fastpath::{ifindex, AttachMode, FastPath, FastPathError};

/// How the operator asked an interface to be attached (xvsd's `--mode` or `NAME:HOOK`,
/// `--redirect-virtual`).
#[derive(Clone, Copy, Debug)]
pub struct AttachOpts {
    /// None: auto, the faster hook for the device (`AttachMode::default_for`).
    pub hook: Option<AttachMode>,
    /// Redirects may transmit into virtual devices (veth) too: their peers run XDP.
    pub redirect_virtual: bool,
}

/// What `attach_iface` did, for the log.
#[derive(Clone, Debug)]
pub struct AttachReport {
    pub attached: Attached,
    /// Redirects may transmit on it (it is in TX_PORTS).
    pub redirect: bool,
    /// A pin was found for a link that no longer works (its interface was deleted and one of
    /// the same name created while no daemon ran): it was replaced.
    pub replaced_stale: bool,
}

/// Attaches the fast path to `iface` with a pinned link, adopting the link a previous daemon
/// pinned for it.
pub fn attach_iface(
    fp: &mut FastPath,
    opts: &AttachOpts,
    iface: &str,
) -> Result<AttachReport, FastPathError> {
    let mode = opts
        .hook
        .unwrap_or_else(|| AttachMode::default_for(checks::is_virtual(iface)));
    let redirect =
        opts.redirect_virtual || !checks::is_virtual(iface) || mode == AttachMode::Generic;
    // XDP on a virtual device gets tc behind it, for local senders' partial checksums.
    let tc_behind = mode != AttachMode::Tc && checks::is_virtual(iface);
    let mut replaced_stale = false;
    let attached = match fp.attach_persistent(iface, mode, redirect, tc_behind) {
        Ok(a) => a,
        Err(e) => {
            // A pin whose link cannot take the program belongs to a device that is gone (its
            // link is defunct): drop it and attach afresh, once.
            let pinned = fp
                .config()
                .pin_dir
                .as_deref()
                .is_some_and(|d| link_pin(d, iface, mode).exists());
            if !pinned || ifindex(iface).is_err() {
                return Err(e);
            }
            fp.detach_persistent(iface, None)?;
            replaced_stale = true;
            fp.attach_persistent(iface, mode, redirect, tc_behind)?
        }
    };
    let redirect = redirect || attached.mode == AttachMode::Generic;
    Ok(AttachReport {
        attached,
        redirect,
        replaced_stale,
    })
}

/// Detaches the fast path from `iface` (index `ifindex` when known): its pinned link goes, and
/// its TX_PORTS entry. Returns whether it was attached (had a pin).
pub fn detach_iface(
    fp: &mut FastPath,
    iface: &str,
    ifindex: Option<u32>,
) -> Result<bool, FastPathError> {
    fp.detach_persistent(iface, ifindex)
}

/// An attached interface was renamed: its pin follows the name (the link itself is bound to
/// the device, not to the name).
pub fn rename_iface(fp: &mut FastPath, from: &str, to: &str) -> Result<(), FastPathError> {
    fp.renamed(from, to);
    let Some(dir) = fp.config().pin_dir.as_deref() else {
        return Ok(());
    };
    for hook in [AttachMode::Native, AttachMode::Tc] {
        let (old, new) = (link_pin(dir, from, hook), link_pin(dir, to, hook));
        if !old.exists() {
            continue;
        }
        if new.exists() {
            // A leftover of an earlier device of that name: this device's link replaces it.
            std::fs::remove_file(&new)
                .map_err(|e| FastPathError::Map(format!("removing {}: {e}", new.display())))?;
        }
        std::fs::rename(&old, &new).map_err(|e| {
            FastPathError::Map(format!(
                "renaming {} to {}: {e}",
                old.display(),
                new.display()
            ))
        })?;
    }
    Ok(())
}

/// The interfaces that have a pinned link (XDP or tc) under `pin_dir` (a previous daemon's).
pub fn pinned_ifaces(pin_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| {
                    n.strip_prefix("link_xdp_")
                        .or_else(|| n.strip_prefix("link_tc_"))
                })
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The interfaces of this network namespace, (index, name), from the kernel.
pub fn present_ifaces() -> Vec<(u32, String)> {
    let mut v = Vec::new();
    // SAFETY: if_nameindex returns an array ended by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return v;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            v.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_ifaces_are_those_with_link_pins() {
        let dir = std::env::temp_dir().join(format!("xvs-pinned-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "link_xdp_veth1",
            "link_xdp_eth0",
            "SERVICES",
            "link_tc_veth2",
            "link_tc_eth0",
        ] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        assert_eq!(pinned_ifaces(&dir), vec!["eth0", "veth1", "veth2"]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(pinned_ifaces(&dir).is_empty());
    }

    #[test]
    fn present_ifaces_include_loopback() {
        assert!(present_ifaces().iter().any(|(_, n)| n == "lo"));
    }
}
