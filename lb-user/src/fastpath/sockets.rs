//! Socket-level balancing of the node's own clients: the cgroup hooks (connect4, sendmsg4,
//! recvmsg4, getpeername4) and sockops of lb-ebpf/src/sock.rs, attached to the root of the
//! cgroup v2 hierarchy so every process of the node passes them. They act only on sockets of
//! this daemon's network namespace (CONFIG.netns_cookie), so daemons of other namespaces (and
//! tests running side by side) do not interfere.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, SockOps};
use lb_common::prog_names;

use super::{FastPath, FastPathError};

pub fn link_pin(pin_dir: &Path, prog: &str) -> PathBuf {
    pin_dir.join(format!("link_sock_{prog}"))
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on a unified system,
/// `/sys/fs/cgroup/unified` on a hybrid one); None when it is not mounted.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS ... - FSTYPE SOURCE SUPER
        let (left, right) = l.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mut f = left.split_whitespace();
        let (root, mountpoint) = (f.nth(3)?, f.next()?);
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(mountpoint))
    })
}

/// The cgroup v2 root: the mounted one, or one mounted at `fallback` (the root of every
/// cgroup2 mount is the same hierarchy).
pub fn cgroup2_root(fallback: &Path) -> Result<PathBuf, FastPathError> {
    if let Some(p) = cgroup2_mount() {
        return Ok(p);
    }
    std::fs::create_dir_all(fallback).map_err(|e| FastPathError::Attach {
        iface: "cgroup2".into(),
        msg: format!("cannot create {}: {e}", fallback.display()),
    })?;
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let (src, fs) = (c("cgroup2"), c("cgroup2"));
    let target = c(&fallback.to_string_lossy());
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(FastPathError::Attach {
            iface: "cgroup2".into(),
            msg: format!(
                "no cgroup v2 hierarchy is mounted and mounting one at {} failed ({}); the node's \
                 own clients need it (mount -t cgroup2 none /sys/fs/cgroup/unified), or run \
                 with --socket-lb off",
                fallback.display(),
                std::io::Error::last_os_error()
            ),
        });
    }
    Ok(fallback.to_path_buf())
}

/// This process's network namespace cookie (SO_NETNS_COOKIE), as bpf_get_netns_cookie
/// reports it for sockets of the same namespace.
pub fn own_netns_cookie() -> Result<u64, FastPathError> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let s = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("0.0.0.0:0"))
        .map_err(|e| FastPathError::Load(format!("netns cookie: {e}")))?;
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            &mut v as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(FastPathError::Load(format!(
            "SO_NETNS_COOKIE: {} (needs Linux 5.14 or later)",
            std::io::Error::last_os_error()
        )));
    }
    Ok(v)
}

impl FastPath {
    /// Balances the sockets of this network namespace's processes: attaches the socket
    /// programs to the cgroup v2 root `cgroup`. With a pin directory the links are pinned (and
    /// a previous daemon's replaced: the new links first, then the old ones removed, so no
    /// connect() goes unbalanced meanwhile; both use the same pinned maps).
    ///
    /// (The attach mode is "single" because BPF links take no flags: the kernel attaches every
    /// cgroup link in multi-program mode anyway, beside other programs and daemons.)
    pub fn attach_sockets(&mut self, cgroup: &Path) -> Result<(), FastPathError> {
        let err = |msg: String| FastPathError::Attach {
            iface: format!("cgroup {}", cgroup.display()),
            msg,
        };
        let cookie = own_netns_cookie()?;
        let mut cfg = self.read_config()?;
        cfg.netns_cookie = cookie;
        self.write_config(cfg)?;
        let dir = File::open(cgroup).map_err(|e| err(format!("{e}")))?;
        let pin_dir = self.config().pin_dir.clone();
        let mut links: Vec<(&str, FdLink)> = Vec::new();
        // Each program attached to the cgroup; its link kept for pinning when there are pins.
        macro_rules! attach_as {
            ($ty:ty: $($name:expr),+) => {$(
                let p = super::program_in::<$ty>(self.ebpf_mut(), $name)?;
                let id = p
                    .attach(&dir, CgroupAttachMode::Single)
                    .map_err(|e| err(format!("{}: {e:#} ({:?})", $name, std::error::Error::source(&e))))?;
                if pin_dir.is_some() {
                    let fd: FdLink = p
                        .take_link(id)
                        .map_err(|e| err(format!("{e:#}")))?
                        .try_into()
                        .map_err(|e| err(format!("{}: no BPF link to pin: {e}", $name)))?;
                    links.push(($name, fd));
                }
            )+};
        }
        attach_as!(CgroupSockAddr: prog_names::CONNECT4, prog_names::SENDMSG4,
            prog_names::RECVMSG4, prog_names::GETPEERNAME4);
        attach_as!(SockOps: prog_names::SOCKOPS);
        if let Some(dir) = pin_dir {
            for (name, fd) in links {
                let pin = link_pin(&dir, name);
                if pin.exists() {
                    if let Ok(old) = PinnedLink::from_pin(&pin) {
                        let _ = old.unpin();
                    }
                    let _ = std::fs::remove_file(&pin);
                }
                fd.pin(&pin)
                    .map_err(|e| err(format!("pinning {}: {e}", pin.display())))?;
            }
        }
        Ok(())
    }
}
