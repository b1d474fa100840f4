//! What xvsd checks before it touches anything, each failure with a message that says what to
//! do: privileges, interfaces, and another daemon holding the node.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Capabilities xvsd needs: loading BPF (CAP_BPF, or CAP_SYS_ADMIN before 5.8), attaching XDP
/// and pinning (CAP_NET_ADMIN, CAP_SYS_ADMIN for mounting a bpffs).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Err with the missing capabilities named.
pub fn privileges() -> Result<(), String> {
    let Some(caps) = effective_caps() else {
        return Ok(());
    };
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "xvsd needs root, or the capabilities {} (run it as root, or with \
             `setcap cap_bpf,cap_net_admin,cap_sys_admin+ep`)",
            missing.join(" and ")
        ))
    }
}

/// Checked in this process's network namespace (not through /sys, which shows the namespace
/// that mounted it).
pub fn interfaces(names: &[String]) -> Result<(), String> {
    for n in names {
        let c =
            std::ffi::CString::new(n.as_str()).map_err(|_| format!("bad interface name {n:?}"))?;
        if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
            return Err(format!(
                "interface {n} does not exist in this network namespace (see `ip link`)"
            ));
        }
    }
    Ok(())
}

/// A virtual device (veth, bridge, ...) rather than a NIC: XDP redirects into a veth only
/// deliver when its peer runs XDP, which xvsd cannot know, so it forwards through the kernel
/// stack there unless told otherwise.
pub fn is_virtual(iface: &str) -> bool {
    // ETHTOOL_GDRVINFO: a device with no bus behind it is virtual.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const ETHTOOL_GDRVINFO: u32 = 3;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(iface.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = &mut info as *mut DrvInfo as *mut libc::c_char;
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return true;
    }
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL, &mut ifr) };
    unsafe { libc::close(fd) };
    // Virtual drivers report no bus, or "N/A" (bridge, bonding).
    rc != 0 || info.bus_info[0] == 0 || info.bus_info.starts_with(b"N/A")
}

/// Holds the node: a second xvsd fails to take it, with the holder's pid in the message.
pub struct NodeLock {
    _file: File,
}

pub fn lock(state_dir: &Path) -> Result<NodeLock, String> {
    // 0755 whatever the umask (the control socket in it has its own mode; a directory
    // others could write to would let them replace it).
    if !state_dir.exists() {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(state_dir)
            .and_then(|()| {
                std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o755))
            })
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
    }
    let path = state_dir.join("xvsd.lock");
    // Root's only: anyone who can open the lock can flock it and keep xvsd from starting.
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(format!(
            "another xvsd is already running (pid {}, lock {}); stop it first",
            pid.trim(),
            path.display()
        ));
    }
    let _ = file.set_len(0);
    let _ = std::fs::write(&path, format!("{}\n", std::process::id()));
    Ok(NodeLock { _file: file })
}
