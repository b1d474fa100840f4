//! Runs test binaries inside a qemu VM that boots a Debian kernel with IPVS (this machine's
//! own kernel has none). See shared/reference/vm-ipvs.md.
//!
//! What it does, all cached under `<repo>/.xtask-cache/vm/` (or `$XVS_VM_CACHE`):
//! - installs the host tools it needs with apt-get if missing (qemu-system-x86,
//!   busybox-static, ipvsadm, kmod, iproute2, prometheus-node-exporter; `--no-install-recommends`);
//! - fetches the current `linux-image-*-cloud-amd64` with `apt-get download` (not installed),
//!   unpacks it with `dpkg -x` and runs depmod;
//! - builds a base initramfs (busybox and its applet links, the IPVS modules and their
//!   dependencies, ipvsadm, iproute2's `ip` and node_exporter with their libraries, `/init`), keyed by a hash
//!   of its inputs;
//! - per run, appends a second cpio archive with the test binaries, extra files and a
//!   generated `/xvs/run.sh`, boots qemu (TCG), streams the console, and collects the result.
//!
//! Inside the VM each test binary runs as root with `XVS_IN_VM=1` and `XVS_VM_OUT=<dir>`;
//! files it leaves in `$XVS_VM_OUT` come back in [`VmReport::artifacts`] (they travel over a
//! second serial port, so kernel messages cannot mix into them).

use anyhow::{anyhow, bail, Context, Result};
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::hash::Hasher;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bump when the layout of the base initramfs changes in a way its inputs do not show.
const BASE_FORMAT: u32 = 1;

const INIT_SH: &str = include_str!("../vm/init.sh");

/// Modules every base initramfs carries (with their dependencies). Loaded on demand by the
/// kernel (busybox modprobe), or at boot when listed in [`VmOptions::load_modules`].
pub const BASE_MODULES: &[&str] = &[
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_wlc",
    "ip_vs_sh",
    "ip_vs_mh",
    "ip_vs_dh",
    "ip_vs_sed",
    "ip_vs_nq",
    "ip_vs_lblc",
    "ip_vs_lblcr",
    "ip_vs_fo",
    "ip_vs_ovf",
    "ip_vs_pe_sip",
    "crc32c_generic",
    "veth",
    "dummy",
    "sch_ingress",
    "cls_bpf",
    "ipip",
    "ip6_tunnel",
];

/// Host packages and the files that show they are there.
const HOST_TOOLS: &[(&str, &[&str])] = &[
    ("qemu-system-x86", &["qemu-system-x86_64"]),
    ("busybox-static", &["busybox"]),
    ("ipvsadm", &["ipvsadm"]),
    ("kmod", &["depmod", "modprobe"]),
    ("iproute2", &["ip"]),
    // node_exporter, whose ipvs collector the metrics test compares xvsd's scrape with.
    ("prometheus-node-exporter", &["prometheus-node-exporter"]),
];

/// How to run the VM.
#[derive(Clone, Debug)]
pub struct VmOptions {
    /// Wall-clock limit for boot + tests; the VM is killed after it.
    pub timeout: Duration,
    pub memory_mb: u32,
    pub cpus: u32,
    /// Extra files: (host path, absolute path in the VM).
    pub extra_files: Vec<(PathBuf, String)>,
    /// Environment of the test binaries, beside XVS_IN_VM=1 and XVS_VM_OUT.
    pub env: Vec<(String, String)>,
    /// Arguments given to every test binary (e.g. `--test-threads=1`).
    pub test_args: Vec<String>,
    /// Modules added to the base initramfs beside [`BASE_MODULES`].
    pub extra_modules: Vec<String>,
    /// Modules loaded with modprobe before the tests run.
    pub load_modules: Vec<String>,
    /// Stream the serial console to stdout while the VM runs.
    pub echo: bool,
    /// Keep the per-run directory (initrd, artifacts) for inspection.
    pub keep_run_dir: bool,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            timeout: Duration::from_secs(300),
            memory_mb: 1024,
            cpus: 1,
            extra_files: Vec::new(),
            env: Vec::new(),
            test_args: Vec::new(),
            extra_modules: Vec::new(),
            load_modules: Vec::new(),
            echo: true,
            keep_run_dir: false,
        }
    }
}

/// How a VM run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmOutcome {
    /// Every test binary exited 0.
    Passed,
    /// The result line came and named these failing binaries.
    TestsFailed(Vec<String>),
    /// The kernel panicked.
    KernelPanic,
    /// Killed after [`VmOptions::timeout`].
    Timeout,
    /// qemu exited without the result line (crash, early poweroff, init died).
    NoResult,
}

/// What a VM run produced.
#[derive(Clone, Debug)]
pub struct VmReport {
    pub outcome: VmOutcome,
    /// (test binary name, exit code) in run order.
    pub tests: Vec<(String, i32)>,
    /// Files the tests left in `$XVS_VM_OUT`, by path relative to it.
    pub artifacts: BTreeMap<String, Vec<u8>>,
    /// The whole serial console output.
    pub console: String,
    /// The guest kernel's release (uname -r).
    pub kernel: String,
    /// Seconds spent fetching/building the kernel and base initramfs (0-ish when cached).
    pub prepare_secs: f64,
    /// Seconds from starting qemu to its exit.
    pub vm_secs: f64,
}

impl VmReport {
    pub fn passed(&self) -> bool {
        self.outcome == VmOutcome::Passed
    }
}

/// The repository root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XVS_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".xtask-cache").join("vm"))
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

// ---------------------------------------------------------------------------------------
// Host tools

fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn tool(name: &str) -> Result<PathBuf> {
    find_tool(name).ok_or_else(|| anyhow!("{name} not found"))
}

/// Runs a command, failing with its stderr if it fails.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn apt_updated() -> &'static std::sync::Mutex<bool> {
    static DONE: std::sync::OnceLock<std::sync::Mutex<bool>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| std::sync::Mutex::new(false))
}

fn apt_update() -> Result<()> {
    let mut done = apt_updated().lock().unwrap();
    if !*done {
        eprintln!("vm: apt-get update");
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        *done = true;
    }
    Ok(())
}

fn is_static_elf(path: &Path) -> Result<bool> {
    Ok(elf_interp(&fs::read(path)?).is_none())
}

/// The PT_INTERP of a 64-bit little-endian ELF file, if it has one (dynamically linked).
fn elf_interp(b: &[u8]) -> Option<String> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if ph + 56 > b.len() {
            return None;
        }
        if u32::from_le_bytes(b[ph..ph + 4].try_into().unwrap()) == 3 {
            let (off, size) = (u64_at(ph + 8), u64_at(ph + 32));
            let s = b.get(off..off + size)?;
            return Some(
                String::from_utf8_lossy(s)
                    .trim_end_matches('\0')
                    .to_string(),
            );
        }
    }
    None
}

/// Installs what is missing of [`HOST_TOOLS`], saying what.
pub fn ensure_host_tools() -> Result<()> {
    let mut missing: Vec<&str> = HOST_TOOLS
        .iter()
        .filter(|(_, files)| files.iter().any(|f| find_tool(f).is_none()))
        .map(|(pkg, _)| *pkg)
        .collect();
    if let Some(bb) = find_tool("busybox") {
        if !is_static_elf(&bb)? && !missing.contains(&"busybox-static") {
            missing.push("busybox-static");
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "vm: installing host packages: {} (apt-get install --no-install-recommends)",
        missing.join(" ")
    );
    let install = || {
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_err() {
        apt_update()?;
        install()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Kernel

/// An unpacked Debian kernel package.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Root of the unpacked package (has boot/ and lib/modules/).
    pub root: PathBuf,
    /// Its release, e.g. "6.1.0-41-cloud-amd64".
    pub release: String,
    pub vmlinuz: PathBuf,
}

impl Kernel {
    fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

fn apt_field(out: &str, field: &str) -> Option<String> {
    out.lines()
        .map(|l| l.trim().trim_start_matches('|'))
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
}

/// When apt's package lists last changed (their newest mtime), to know when a remembered
/// answer of apt-cache is still good.
fn apt_lists_stamp() -> Option<u128> {
    let dir = Path::new("/var/lib/apt/lists");
    let mtime = |p: &Path| {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
    };
    let mut newest = mtime(dir)?;
    for e in fs::read_dir(dir).ok()?.filter_map(|e| e.ok()) {
        newest = newest.max(mtime(&e.path()).unwrap_or(0));
    }
    Some(newest)
}

/// The current cloud kernel package and its candidate version, remembered until apt's
/// package lists change (apt-cache takes over a second here).
fn current_kernel_package() -> Result<(String, String)> {
    let key = |stamp: u128| {
        format!(
            "{stamp} {}",
            std::env::var("XVS_VM_KERNEL_PKG").unwrap_or_default()
        )
    };
    let memo = cache_dir().join("kernel").join("resolved");
    let before = apt_lists_stamp();
    if let (Some(stamp), Ok(text)) = (before, fs::read_to_string(&memo)) {
        let mut l = text.lines();
        if l.next() == Some(key(stamp).as_str()) {
            if let Some((pkg, ver)) = l.next().and_then(|x| x.split_once(' ')) {
                return Ok((pkg.to_string(), ver.to_string()));
            }
        }
    }
    let (pkg, version) = resolve_kernel_package()?;
    // (An apt-get update during the resolution changes the stamp: then remember the new one.)
    if let Some(stamp) = apt_lists_stamp() {
        let _ = fs::create_dir_all(memo.parent().unwrap());
        let _ = fs::write(&memo, format!("{}\n{pkg} {version}\n", key(stamp)));
    }
    Ok((pkg, version))
}

fn resolve_kernel_package() -> Result<(String, String)> {
    let query = || -> Result<(String, String)> {
        let pkg = match std::env::var("XVS_VM_KERNEL_PKG") {
            Ok(p) => p,
            Err(_) => {
                let out =
                    run(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))?;
                out.lines()
                    .map(|l| l.trim().trim_start_matches('|'))
                    .filter_map(|l| l.strip_prefix("Depends:"))
                    .map(str::trim)
                    .find(|p| p.starts_with("linux-image-"))
                    .map(str::to_string)
                    .ok_or_else(|| {
                        anyhow!("apt-cache names no kernel for linux-image-cloud-amd64")
                    })?
            }
        };
        let policy = run(Command::new("apt-cache").args(["policy", &pkg]))?;
        let version = apt_field(&policy, "Candidate:")
            .filter(|v| v != "(none)")
            .ok_or_else(|| anyhow!("no candidate version of {pkg}"))?;
        Ok((pkg, version))
    };
    query().or_else(|_| {
        apt_update()?;
        query()
    })
}

/// Fetches and unpacks the current cloud kernel (cached), or falls back to a cached one when
/// the package lists cannot be read.
pub fn ensure_kernel() -> Result<Kernel> {
    let kroot = cache_dir().join("kernel");
    let (pkg, version) = match current_kernel_package() {
        Ok(v) => v,
        Err(e) => {
            let cached = fs::read_dir(&kroot).ok().and_then(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.join(".ready").exists())
                    .max()
            });
            match cached {
                Some(dir) => {
                    eprintln!("vm: {e:#}; using the cached {}", dir.display());
                    return load_kernel(&dir);
                }
                None => return Err(e.context("finding the Debian cloud kernel package")),
            }
        }
    };
    let dir = kroot.join(format!("{pkg}_{version}"));
    if dir.join(".ready").exists() {
        return load_kernel(&dir);
    }
    eprintln!("vm: fetching {pkg} {version} (apt-get download, dpkg -x)");
    // Work in private directories, then rename: concurrent runs do not trip over each other.
    let pid = std::process::id();
    let dl = kroot.join(format!("download-{pid}"));
    let tmp = kroot.join(format!("unpack-{pid}"));
    for d in [&dl, &tmp] {
        let _ = fs::remove_dir_all(d);
    }
    fs::create_dir_all(&dl)?;
    run(Command::new("apt-get")
        .args(["download", "-qq", &format!("{pkg}={version}")])
        .current_dir(&dl))?;
    let deb = fs::read_dir(&dl)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension() == Some(OsStr::new("deb")))
        .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", dl.display()))?;
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
    let _ = fs::remove_dir_all(&dl);
    let k = load_kernel(&tmp)?;
    run(Command::new(tool("depmod")?)
        .arg("-b")
        .arg(&tmp)
        .arg(&k.release))?;
    fs::write(tmp.join(".ready"), format!("{pkg} {version}\n"))?;
    let _ = fs::remove_dir_all(&dir);
    if fs::rename(&tmp, &dir).is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    // Older kernels are just disk space now.
    for e in fs::read_dir(&kroot)?.filter_map(|e| e.ok()) {
        if e.path() != dir && e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let n = e.file_name().to_string_lossy().into_owned();
            if !n.starts_with("download-") && !n.starts_with("unpack-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    load_kernel(&dir)
}

fn load_kernel(dir: &Path) -> Result<Kernel> {
    let release = fs::read_dir(dir.join("lib/modules"))
        .with_context(|| format!("{} has no lib/modules", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| anyhow!("no module directory in {}", dir.display()))?;
    let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.exists() {
        bail!("{} missing", vmlinuz.display());
    }
    Ok(Kernel {
        root: dir.to_path_buf(),
        release,
        vmlinuz,
    })
}

// ---------------------------------------------------------------------------------------
// cpio (newc), written directly

#[derive(Clone)]
enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// An initramfs being assembled: absolute paths (without the leading '/') to nodes. Parent
/// directories are added automatically.
#[derive(Default, Clone)]
struct Cpio {
    nodes: BTreeMap<String, Node>,
}

impl Cpio {
    fn dirs_for(&mut self, path: &str) {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(p);
            self.nodes.entry(acc.clone()).or_insert(Node::Dir);
        }
    }

    fn norm(path: &str) -> String {
        path.trim_start_matches('/').to_string()
    }

    fn dir(&mut self, path: &str) {
        let p = Self::norm(path);
        self.dirs_for(&p);
        self.nodes.insert(p, Node::Dir);
    }

    fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        let p = Self::norm(path);
        self.dirs_for(&p);
        self.nodes.insert(p, Node::File { data, mode });
    }

    fn host_file(&mut self, path: &str, host: &Path) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(host)?.permissions().mode() & 0o7777
        };
        self.file(path, data, mode | 0o444);
        Ok(())
    }

    fn symlink(&mut self, path: &str, target: &str) {
        let p = Self::norm(path);
        self.dirs_for(&p);
        self.nodes.insert(p, Node::Symlink(target.to_string()));
    }

    fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(&Self::norm(path))
    }

    /// A host binary and the shared libraries `ldd` lists, at their host paths.
    fn binary_with_libs(&mut self, guest_path: &str, host: &Path) -> Result<()> {
        self.host_file(guest_path, host)?;
        if elf_interp(&fs::read(host)?).is_none() {
            return Ok(());
        }
        let out = run(Command::new("ldd").arg(host))?;
        for line in out.lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                if !self.contains(p) {
                    self.host_file(p, Path::new(p))?;
                }
            }
        }
        Ok(())
    }

    fn write(&self, out: &mut impl Write) -> Result<()> {
        for (i, (path, node)) in self.nodes.iter().enumerate() {
            let ino = i as u32 + 1;
            let (mode, nlink, data): (u32, u32, &[u8]) = match node {
                Node::Dir => (0o040755, 2, &[]),
                Node::File { data, mode } => (0o100000 | mode, 1, data),
                Node::Symlink(t) => (0o120777, 1, t.as_bytes()),
            };
            write_entry(out, ino, mode, nlink, path, data)?;
        }
        write_entry(out, 0, 0, 1, "TRAILER!!!", &[])?;
        Ok(())
    }
}

fn pad4(out: &mut impl Write, len: usize) -> Result<()> {
    let pad = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..pad])?;
    Ok(())
}

fn write_entry(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
) -> Result<()> {
    let namesize = name.len() + 1;
    let hdr = format!(
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
        0, 0, 0, data.len(), 0, 0, 0, 0, 0
    );
    out.write_all(hdr.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad4(out, hdr.len() + namesize)?;
    out.write_all(data)?;
    pad4(out, data.len())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Base initramfs

fn hash_file(h: &mut DefaultHasher, path: &Path) -> Result<()> {
    h.write(path.to_string_lossy().as_bytes());
    h.write(&fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    Ok(())
}

fn ldd_paths(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = run(Command::new("ldd").arg(bin))?;
    Ok(out
        .lines()
        .filter_map(|line| match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        })
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

/// The module files (relative to the module directory) that `modules` need.
fn module_closure(k: &Kernel, modules: &[String]) -> Result<Vec<String>> {
    let out = run(Command::new(tool("modprobe")?)
        .arg("-d")
        .arg(&k.root)
        .arg("-S")
        .arg(&k.release)
        .arg("--show-depends")
        .arg("-a")
        .args(modules))?;
    let prefix = k.modules_dir();
    let mut files = Vec::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("insmod ") {
            let p = Path::new(rest.split_whitespace().next().unwrap_or_default());
            let rel = p.strip_prefix(&prefix).with_context(|| {
                format!("module path {} outside {}", p.display(), prefix.display())
            })?;
            let rel = rel.to_string_lossy().into_owned();
            if !files.contains(&rel) {
                files.push(rel);
            }
        }
    }
    Ok(files)
}

/// Builds (or reuses) the base initramfs for this kernel and module set.
fn ensure_base(k: &Kernel, extra_modules: &[String]) -> Result<PathBuf> {
    let mut modules: Vec<String> = BASE_MODULES.iter().map(|s| s.to_string()).collect();
    for m in extra_modules {
        if !modules.contains(m) {
            modules.push(m.clone());
        }
    }
    let busybox = tool("busybox")?;
    let ipvsadm = tool("ipvsadm")?;
    let ip = tool("ip")?;
    let node_exporter = tool("prometheus-node-exporter")?;

    let mut h = DefaultHasher::new();
    h.write_u32(BASE_FORMAT);
    h.write(k.root.to_string_lossy().as_bytes());
    h.write(modules.join(",").as_bytes());
    h.write(INIT_SH.as_bytes());
    for bin in [&busybox, &ipvsadm, &ip, &node_exporter] {
        hash_file(&mut h, bin)?;
        for lib in ldd_paths(bin).unwrap_or_default() {
            hash_file(&mut h, &lib)?;
        }
    }
    let out = cache_dir().join(format!("base-{}-{:016x}.cpio", k.release, h.finish()));
    if out.exists() {
        return Ok(out);
    }
    eprintln!("vm: building the base initramfs ({})", out.display());

    let mut c = Cpio::default();
    for d in [
        "proc", "sys", "dev", "run", "tmp", "etc", "root", "var", "mnt",
    ] {
        c.dir(d);
    }
    c.file("init", INIT_SH.as_bytes().to_vec(), 0o755);
    c.host_file("bin/busybox", &busybox)?;
    let list = run(Command::new(&busybox).arg("--list-full"))?;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if applet != "bin/busybox" {
            c.symlink(applet, "/bin/busybox");
        }
    }
    // The kernel's request_module() runs /sbin/modprobe.
    c.symlink("sbin/modprobe", "/bin/busybox");
    c.binary_with_libs("sbin/ipvsadm", &ipvsadm)?;
    // iproute2's ip replaces the busybox applet there (the shell still prefers its own
    // applet: call it as /sbin/ip).
    c.binary_with_libs("sbin/ip", &ip)?;
    c.binary_with_libs("usr/bin/prometheus-node-exporter", &node_exporter)?;
    c.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
        0o644,
    );
    c.file("etc/group", b"root:x:0:\n".to_vec(), 0o644);
    c.file(
        "etc/hosts",
        b"127.0.0.1 localhost\n::1 localhost\n".to_vec(),
        0o644,
    );

    // Modules: the closure of the list, re-indexed with depmod in a staging directory.
    let files = module_closure(k, &modules)?;
    let stage = cache_dir().join(format!("stage-{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    let stage_mods = stage.join("lib/modules").join(&k.release);
    fs::create_dir_all(&stage_mods)?;
    for f in &files {
        let dst = stage_mods.join(f);
        fs::create_dir_all(dst.parent().unwrap())?;
        fs::copy(k.modules_dir().join(f), &dst)?;
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let src = k.modules_dir().join(f);
        if src.exists() {
            fs::copy(&src, stage_mods.join(f))?;
        }
    }
    run(Command::new(tool("depmod")?)
        .arg("-b")
        .arg(&stage)
        .arg(&k.release))?;
    add_tree(&mut c, &stage, &stage)?;
    let _ = fs::remove_dir_all(&stage);

    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let mut w = std::io::BufWriter::new(fs::File::create(&tmp)?);
    c.write(&mut w)?;
    w.flush()?;
    drop(w);
    fs::rename(&tmp, &out)?;
    // Bases of other inputs are just disk space (left for a while to concurrent runs).
    if let Ok(rd) = fs::read_dir(cache_dir()) {
        for e in rd.filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy().into_owned();
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(600));
            if n.starts_with("base-") && e.path() != out && stale {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(out)
}

fn add_tree(c: &mut Cpio, root: &Path, dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let rel = p.strip_prefix(root)?.to_string_lossy().into_owned();
        if e.file_type()?.is_dir() {
            c.dir(&rel);
            add_tree(c, root, &p)?;
        } else {
            c.host_file(&rel, &p)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Test binaries

/// Builds integration test binaries (`cargo test -p PKG --test NAME --no-run`) for the VM.
///
/// By default they are the host's own test binaries (same target dir and flags as
/// `cargo test`, so nothing is rebuilt after it; dynamically linked, [`run_in_vm`] copies
/// their libraries in and strips debug info from its copy). With `static_link` they are built
/// for x86_64-unknown-linux-gnu with `-C target-feature=+crt-static` (a separate build).
pub fn build_test_binaries(tests: &[(&str, &str)], static_link: bool) -> Result<Vec<PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    for (pkg, test) in tests {
        cmd.args(["-p", pkg, "--test", test]);
    }
    if static_link {
        // With --target, RUSTFLAGS reach only the target's crates, not build scripts or proc
        // macros.
        let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
        flags.push_str(" -C target-feature=+crt-static -C strip=debuginfo");
        cmd.args(["--target", "x86_64-unknown-linux-gnu"])
            .env("RUSTFLAGS", flags.trim());
    }
    cmd.stderr(Stdio::inherit()).stdout(Stdio::piped());
    let out = cmd.output().context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed ({})", out.status);
    }
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["profile"]["test"] == true {
            if let Some(exe) = v["executable"].as_str() {
                exes.push(PathBuf::from(exe));
            }
        }
    }
    if exes.len() != tests.len() {
        bail!(
            "cargo built {} test binaries, wanted {}",
            exes.len(),
            tests.len()
        );
    }
    Ok(exes)
}

/// A copy of `bin` without debug info in `dir` (smaller initramfs), or `bin` itself when
/// `strip` is missing or fails.
fn stripped_copy(bin: &Path, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(format!("{name}.stripped"));
    let is_elf = fs::File::open(bin)
        .and_then(|mut f| {
            let mut m = [0u8; 4];
            f.read_exact(&mut m).map(|_| m == *b"\x7fELF")
        })
        .unwrap_or(false);
    let ok = is_elf
        && find_tool("strip").is_some_and(|strip| {
            Command::new(strip)
                .arg("--strip-debug")
                .arg("-o")
                .arg(&out)
                .arg(bin)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        });
    if ok {
        out
    } else {
        bin.to_path_buf()
    }
}

// ---------------------------------------------------------------------------------------
// Running

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn test_name(path: &Path) -> String {
    // cargo names test binaries NAME-HASH.
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "test".into());
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => stem,
    }
}

fn run_script(nonce: &str, names: &[String], opts: &VmOptions) -> String {
    let mut s = String::from("#!/bin/sh\n# Generated by xtask vm.rs\n");
    s.push_str("export XVS_IN_VM=1 XVS_VM_OUT=/xvs/out RUST_BACKTRACE=1\n");
    for (k, v) in &opts.env {
        s.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    s.push_str("mkdir -p /xvs/out\n");
    for m in &opts.load_modules {
        s.push_str(&format!(
            "modprobe {m} || echo \"XVS-VM: modprobe {m} failed\"\n"
        ));
    }
    let args: Vec<String> = opts.test_args.iter().map(|a| shell_quote(a)).collect();
    s.push_str("failed=\"\"\n");
    for n in names {
        s.push_str(&format!(
            "echo \"XVS-VM: running {n}\"\n(cd /tmp && /xvs/tests/{n} {args})\nrc=$?\n\
             echo \"XVS-VM-TEST {nonce} {n} $rc\"\n[ $rc -eq 0 ] || failed=\"$failed {n}\"\n",
            args = args.join(" ")
        ));
    }
    // Artifacts go out on the second serial port: "XVS-FILE <path> <size>\n" + bytes each.
    // Closing a serial tty waits until its output has drained.
    s.push_str(
        "stty -F /dev/ttyS1 raw -echo 2>/dev/null\n\
         (cd /xvs/out && find . -type f | while read -r f; do \
         printf 'XVS-FILE %s %s\\n' \"${f#./}\" \"$(wc -c < \"$f\")\"; cat \"$f\"; done; \
         echo XVS-END) > /dev/ttyS1\n",
    );
    s.push_str(&format!(
        "if [ -z \"$failed\" ]; then r=PASS; else r=FAIL; fi\n\
         echo \"XVS-VM-RESULT {nonce} $r$failed\"\n\
         stty -F /dev/console sane 2>/dev/null\n"
    ));
    s
}

fn parse_artifacts(raw: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < raw.len() {
        let nl = raw[i..]
            .iter()
            .position(|&c| c == b'\n')
            .map(|p| i + p)
            .ok_or_else(|| anyhow!("artifact stream cut off"))?;
        let line = String::from_utf8_lossy(&raw[i..nl])
            .trim_end_matches('\r')
            .to_string();
        i = nl + 1;
        if line == "XVS-END" {
            break;
        }
        let mut parts = line.splitn(3, ' ');
        let (tag, name, size) = (parts.next(), parts.next(), parts.next());
        if tag != Some("XVS-FILE") {
            bail!("unexpected artifact header {line:?}");
        }
        let size: usize = size.unwrap_or_default().trim().parse()?;
        let data = raw
            .get(i..i + size)
            .ok_or_else(|| anyhow!("artifact {name:?} cut off"))?;
        out.insert(name.unwrap_or_default().to_string(), data.to_vec());
        i += size;
    }
    Ok(out)
}

/// Everything the VM needs that does not change between runs.
pub struct Prepared {
    pub kernel: Kernel,
    pub base: PathBuf,
}

/// Host tools, kernel, base initramfs (all cached).
pub fn prepare(opts: &VmOptions) -> Result<Prepared> {
    ensure_host_tools()?;
    let kernel = ensure_kernel()?;
    let base = ensure_base(&kernel, &opts.extra_modules)?;
    Ok(Prepared { kernel, base })
}

/// Boots the VM with `binaries` (run in order, each as root with XVS_IN_VM=1) and reports
/// how it went. `Err` only when the VM could not be set up or started; failing tests, a panic,
/// a timeout or a missing result line are in [`VmReport::outcome`].
pub fn run_in_vm(binaries: &[PathBuf], opts: &VmOptions) -> Result<VmReport> {
    let t0 = Instant::now();
    let prep = prepare(opts)?;
    let prepare_secs = secs(t0.elapsed());

    let nonce = format!(
        "{:016x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64
            ^ ((std::process::id() as u64) << 32)
    );
    let run_dir = cache_dir().join("runs").join(&nonce);
    fs::create_dir_all(&run_dir)?;

    let mut c = Cpio::default();
    let mut names = Vec::new();
    for b in binaries {
        let mut name = test_name(b);
        while names.contains(&name) {
            name.push('_');
        }
        let b = stripped_copy(b, &run_dir, &name);
        c.binary_with_libs(&format!("xvs/tests/{name}"), &b)?;
        names.push(name);
    }
    for (host, guest) in &opts.extra_files {
        // Dynamically linked programs (the daemon) bring the libraries ldd lists.
        c.binary_with_libs(guest, host)?;
    }
    c.file(
        "xvs/run.sh",
        run_script(&nonce, &names, opts).into_bytes(),
        0o755,
    );
    let initrd = run_dir.join("initrd.cpio");
    {
        let mut w = std::io::BufWriter::new(fs::File::create(&initrd)?);
        std::io::copy(&mut fs::File::open(&prep.base)?, &mut w)?;
        c.write(&mut w)?;
        w.flush()?;
    }
    let serial1 = run_dir.join("serial1.bin");

    let mut cmd = Command::new(tool("qemu-system-x86_64")?);
    cmd.args(["-accel", "tcg", "-cpu", "max"])
        .args(["-m", &opts.memory_mb.to_string()])
        .args(["-smp", &opts.cpus.to_string()])
        .args(["-nographic", "-no-reboot", "-nodefaults"])
        .args(["-serial", "stdio"])
        .arg("-serial")
        .arg(format!("file:{}", serial1.display()))
        .arg("-kernel")
        .arg(&prep.kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!(
        "vm: booting {} with {} test binar{} (timeout {} s)",
        prep.kernel.release,
        names.len(),
        if names.len() == 1 { "y" } else { "ies" },
        opts.timeout.as_secs()
    );
    let t_vm = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let echo = opts.echo;
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if echo {
                        let mut o = std::io::stdout().lock();
                        let _ = o.write_all(&buf[..n]);
                        let _ = o.flush();
                    }
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::BufReader::new(&mut stderr).read_to_string(&mut s);
        s
    });

    let deadline = t_vm + opts.timeout;
    let mut console: Vec<u8> = Vec::new();
    let mut scanned = 0; // console[..scanned] is whole lines already looked at
    let mut outcome: Option<VmOutcome> = None;
    let result_tag = format!("XVS-VM-RESULT {nonce} ");
    let mut result_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // After the result line (or a panic), give qemu a few seconds to power off.
        let limit = match result_at {
            Some(t) => t + Duration::from_secs(15),
            None => deadline,
        };
        if now >= limit {
            if outcome.is_none() {
                outcome = Some(VmOutcome::Timeout);
            }
            let _ = child.kill();
            break;
        }
        match rx.recv_timeout(limit - now) {
            Ok(chunk) => {
                console.extend_from_slice(&chunk);
                while let Some(nl) = console[scanned..].iter().position(|&c| c == b'\n') {
                    let line = String::from_utf8_lossy(&console[scanned..scanned + nl]);
                    scanned += nl + 1;
                    if outcome.is_some() {
                        continue;
                    }
                    if line.contains("Kernel panic - not syncing") {
                        outcome = Some(VmOutcome::KernelPanic);
                    } else if let Some(pos) = line.find(&result_tag) {
                        let words: Vec<&str> =
                            line[pos + result_tag.len()..].split_whitespace().collect();
                        outcome = Some(match words.first() {
                            Some(&"PASS") => VmOutcome::Passed,
                            _ => VmOutcome::TestsFailed(
                                words.iter().skip(1).map(|s| s.to_string()).collect(),
                            ),
                        });
                    }
                    if outcome.is_some() {
                        result_at = Some(Instant::now());
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait()?;
    let _ = reader.join();
    let qemu_err = err_reader.join().unwrap_or_default();
    let vm_secs = secs(t_vm.elapsed());
    let console = String::from_utf8_lossy(&console).replace('\r', "");
    let outcome = outcome.unwrap_or(VmOutcome::NoResult);
    if outcome == VmOutcome::NoResult && !status.success() {
        eprintln!("vm: qemu exited with {status}: {}", qemu_err.trim());
    } else if !qemu_err.trim().is_empty() {
        eprintln!("vm: qemu said: {}", qemu_err.trim());
    }

    let test_tag = format!("XVS-VM-TEST {nonce} ");
    let tests = console
        .lines()
        .filter_map(|l| l.find(&test_tag).map(|p| &l[p + test_tag.len()..]))
        .filter_map(|rest| {
            let mut w = rest.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect();
    let artifacts = match fs::read(&serial1) {
        Ok(raw) if !raw.is_empty() => parse_artifacts(&raw).unwrap_or_else(|e| {
            eprintln!("vm: artifacts unreadable: {e:#}");
            BTreeMap::new()
        }),
        _ => BTreeMap::new(),
    };
    if opts.keep_run_dir {
        eprintln!("vm: run directory kept: {}", run_dir.display());
    } else {
        let _ = fs::remove_dir_all(&run_dir);
    }
    Ok(VmReport {
        outcome,
        tests,
        artifacts,
        console,
        kernel: prep.kernel.release.clone(),
        prepare_secs,
        vm_secs,
    })
}

// ---------------------------------------------------------------------------------------
// `cargo xtask vm-test`

/// The in-VM test binaries of `cargo xtask vm-test`: (package, integration test name).
/// Workspace binaries the in-VM tests run (the daemon), shipped stripped at /xvs/bin/NAME;
/// the tests find them through XVS_VM_BIN_DIR.
pub const VM_BINS: &[(&str, &str)] = &[("lb-user", "xvsd")];
const VM_BIN_DIR: &str = "/xvs/bin";

/// Builds workspace binaries and returns their paths, in the order asked.
pub fn build_bins(bins: &[(&str, &str)]) -> Result<Vec<PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .args(["build", "--message-format=json-render-diagnostics"]);
    for (pkg, bin) in bins {
        cmd.args(["-p", pkg, "--bin", bin]);
    }
    cmd.stderr(Stdio::inherit()).stdout(Stdio::piped());
    let out = cmd.output().context("running cargo build")?;
    if !out.status.success() {
        bail!("cargo build of {bins:?} failed ({})", out.status);
    }
    let mut found = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            found.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    bins.iter()
        .map(|(_, b)| {
            found
                .remove(*b)
                .with_context(|| format!("cargo built no binary {b}"))
        })
        .collect()
}

pub const VM_TESTS: &[(&str, &str)] = &[
    ("lb-user", "vm_ipvs_netlink"),
    ("lb-user", "vm_mirror"),
    ("lb-user", "vm_sched_equivalence"),
    ("lb-user", "vm_golden_traffic"),
];

/// Where `--record-golden` writes the artifacts (by their relative paths).
pub const GOLDEN_DIR: &str = "tests/data";

#[derive(clap::Args, Debug)]
pub struct VmTestArgs {
    /// Write the golden files the tests produce (ipvsadm outputs) under tests/data/.
    #[arg(long)]
    pub record_golden: bool,
    /// Kill the VM after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Keep the per-run directory (initrd, artifacts) under .xtask-cache/vm/runs/.
    #[arg(long)]
    pub keep: bool,
    /// Do not echo the VM console (it is printed anyway when something fails).
    #[arg(long)]
    pub quiet: bool,
    /// Only prepare the kernel and base initramfs (e.g. to warm a cache).
    #[arg(long)]
    pub prepare_only: bool,
    /// Build the test binaries statically (separate build for x86_64-unknown-linux-gnu with
    /// crt-static) instead of reusing the host's `cargo test` build.
    #[arg(long = "static")]
    pub static_link: bool,
    /// Arguments for the test binaries, after `--` (e.g. `-- --nocapture`).
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

pub fn vm_test(args: VmTestArgs) -> Result<()> {
    let t0 = Instant::now();
    let mut opts = VmOptions {
        timeout: Duration::from_secs(args.timeout),
        echo: !args.quiet,
        keep_run_dir: args.keep,
        test_args: args.test_args.clone(),
        ..Default::default()
    };
    if args.record_golden {
        opts.env.push(("XVS_RECORD_GOLDEN".into(), "1".into()));
    }
    if args.prepare_only {
        let p = prepare(&opts)?;
        eprintln!(
            "vm: prepared kernel {} and {} in {:.1} s",
            p.kernel.release,
            p.base.display(),
            secs(t0.elapsed())
        );
        return Ok(());
    }
    let t_build = Instant::now();
    let bins = build_test_binaries(VM_TESTS, args.static_link)?;
    let strip_dir = repo_root().join(".xtask-cache/vm/bins");
    fs::create_dir_all(&strip_dir)?;
    for ((_, name), path) in VM_BINS.iter().zip(build_bins(VM_BINS)?) {
        let small = stripped_copy(&path, &strip_dir, name);
        opts.extra_files
            .push((small, format!("{VM_BIN_DIR}/{name}")));
    }
    opts.env.push(("XVS_VM_BIN_DIR".into(), VM_BIN_DIR.into()));
    let build_secs = secs(t_build.elapsed());
    let report = run_in_vm(&bins, &opts)?;
    if !report.passed() && !opts.echo {
        println!("{}", report.console);
    }
    for (name, rc) in &report.tests {
        eprintln!("vm: {name}: exit {rc}");
    }
    if args.record_golden {
        let root = repo_root().join(GOLDEN_DIR);
        for (rel, data) in &report.artifacts {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap())?;
            fs::write(&p, data)?;
            eprintln!("vm: wrote {}", p.display());
        }
        if report.artifacts.is_empty() {
            eprintln!("vm: --record-golden: the tests produced no files");
        }
    }
    eprintln!(
        "vm: {:?} on kernel {}; build {:.1} s, prepare {:.1} s, VM {:.1} s, total {:.1} s",
        report.outcome,
        report.kernel,
        build_secs,
        report.prepare_secs,
        report.vm_secs,
        secs(t0.elapsed())
    );
    match report.outcome {
        VmOutcome::Passed => Ok(()),
        o => bail!("vm-test failed: {o:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The in-VM benchmark (part of `cargo xtask bench`)

/// The host's 1-minute load average (the VM's timing depends on it).
fn host_load() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Kernel IPVS vs the fast path (XDP native and generic) vs plain forwarding, end to end in
/// the VM (lb-user/tests/vm_bench.rs, run with XVS_VM_BENCH=1). Writes what it measured to
/// `bench/vm.json` and a markdown section to `bench/vm.md`; `quick` (2 rounds x 3 s instead
/// of 5 x 5 s: about 2 min instead of 6.5 with a warm cache) writes them under `bench/quick/`.
pub fn vm_bench(quick: bool) -> Result<()> {
    let t0 = Instant::now();
    let bins = build_test_binaries(&[("lb-user", "vm_bench")], false)?;
    let build_secs = secs(t0.elapsed());
    let mut opts = VmOptions {
        timeout: Duration::from_secs(if quick { 420 } else { 900 }),
        ..Default::default()
    };
    opts.env.push(("XVS_VM_BENCH".into(), "1".into()));
    if quick {
        opts.env.push(("XVS_VM_BENCH_QUICK".into(), "1".into()));
    }
    let load_before = host_load();
    let report = run_in_vm(&bins, &opts)?;
    let load_after = host_load();
    if !report.passed() {
        bail!(
            "the VM benchmark failed ({:?}); the console is above",
            report.outcome
        );
    }
    let artifact = |name: &str| {
        report
            .artifacts
            .get(name)
            .with_context(|| format!("the VM benchmark left no {name}"))
    };
    let mut json: serde_json::Value = serde_json::from_slice(artifact("vm-bench.json")?)?;
    let mut md = String::from_utf8_lossy(artifact("vm-bench.md")?).into_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let total_secs = secs(t0.elapsed());
    json["harness"] = serde_json::json!({
        "build_secs": build_secs,
        "prepare_secs": report.prepare_secs,
        "vm_secs": report.vm_secs,
        "total_secs": total_secs,
        "host_cores": cores,
        "host_load_before": load_before,
        "host_load_after": load_after,
    });
    let load = |l: Option<f64>| l.map_or("?".into(), |l| format!("{l:.1}"));
    md.push_str(&format!(
        "\nThe VM ran {:.0} s (boot to power-off; {:.0} s in all with the build); the host's \
         load average was {} before and {} after, on {cores} cores.\n",
        report.vm_secs,
        total_secs,
        load(load_before),
        load(load_after)
    ));
    let dir = if quick {
        repo_root().join("bench/quick")
    } else {
        repo_root().join("bench")
    };
    fs::create_dir_all(&dir)?;
    fs::write(
        dir.join("vm.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    fs::write(dir.join("vm.md"), md)?;
    eprintln!(
        "vm-bench: wrote {} and vm.md ({:.0} s in all, VM {:.0} s)",
        dir.join("vm.json").display(),
        total_secs,
        report.vm_secs
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_parents_come_first() {
        let mut c = Cpio::default();
        c.file("a/b/c", b"hello".to_vec(), 0o644);
        c.symlink("bin/sh", "/bin/busybox");
        let mut out = Vec::new();
        c.write(&mut out).unwrap();
        assert_eq!(out.len() % 4, 0);
        let s = String::from_utf8_lossy(&out);
        let (pa, pab, pabc) = (
            s.find("a\0").unwrap(),
            s.find("a/b\0").unwrap(),
            s.find("a/b/c\0").unwrap(),
        );
        assert!(pa < pab && pab < pabc);
        assert!(s.contains("TRAILER!!!"));
    }

    #[test]
    fn artifacts_parse() {
        let raw = b"XVS-FILE k/a.txt 3\nabcXVS-FILE b 0\nXVS-END\n";
        let a = parse_artifacts(raw).unwrap();
        assert_eq!(a["k/a.txt"], b"abc");
        assert_eq!(a["b"], b"");
    }

    #[test]
    fn test_names_drop_the_cargo_hash() {
        assert_eq!(
            test_name(Path::new("/t/vm_ipvs_netlink-0123456789abcdef")),
            "vm_ipvs_netlink"
        );
        assert_eq!(test_name(Path::new("/t/foo")), "foo");
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// The harness's own contract: pass/fail per binary, artifacts, and every way a run can
    /// go wrong. Boots the VM four times.
    #[test]
    #[ignore = "boots the VM four times (~40 s): cargo test -p xtask -- --ignored"]
    fn vm_outcomes_are_reported() {
        let dir = cache_dir().join("selftest");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let quick = VmOptions {
            timeout: Duration::from_secs(60),
            echo: false,
            ..Default::default()
        };

        let ok = script(
            &dir,
            "ok",
            "mkdir -p $XVS_VM_OUT/sub && printf 'a\\nb' > $XVS_VM_OUT/sub/f.txt && \
             [ \"$XVS_IN_VM\" = 1 ] && [ \"$XVS_X\" = 'y z' ] && [ \"$1\" = --flag ]",
        );
        let fail = script(&dir, "fail", "exit 3");
        let r = run_in_vm(
            &[ok, fail],
            &VmOptions {
                env: vec![("XVS_X".into(), "y z".into())],
                test_args: vec!["--flag".into()],
                ..quick.clone()
            },
        )
        .unwrap();
        assert_eq!(
            r.outcome,
            VmOutcome::TestsFailed(vec!["fail".into()]),
            "{}",
            r.console
        );
        assert_eq!(r.tests, vec![("ok".into(), 0), ("fail".into(), 3)]);
        assert_eq!(r.artifacts["sub/f.txt"], b"a\nb");

        let panic = script(&dir, "panic", "echo c > /proc/sysrq-trigger; sleep 30");
        let r = run_in_vm(&[panic], &quick).unwrap();
        assert_eq!(r.outcome, VmOutcome::KernelPanic, "{}", r.console);

        let off = script(&dir, "off", "poweroff -f; sleep 30");
        let r = run_in_vm(&[off], &quick).unwrap();
        assert_eq!(r.outcome, VmOutcome::NoResult, "{}", r.console);

        let hang = script(&dir, "hang", "sleep 600");
        let r = run_in_vm(
            &[hang],
            &VmOptions {
                timeout: Duration::from_secs(15),
                ..quick
            },
        )
        .unwrap();
        assert_eq!(r.outcome, VmOutcome::Timeout, "{}", r.console);
        let _ = fs::remove_dir_all(&dir);
    }
}
