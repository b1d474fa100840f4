//! The control socket: one JSON request, one JSON response per connection. Requests are
//! handled one at a time under the node's lock, so concurrent xvsadm calls and reloads each
//! see a consistent table.
//!
//! Who may use it, as kernel IPVS decides (CAP_NET_ADMIN for every command, listings
//! included): the socket file is mode 0600 (0660 and group `--list-group` when given),
//! whatever the umask, and each connection's peer (SO_PEERCRED, taken at connect) is checked
//! before its request is read: uid 0, or a process with CAP_NET_ADMIN in its effective set in
//! this daemon's user namespace, may do anything; members of the listing group may only list.
//! Anything else is answered with a "permission denied" error, logged with its uid and pid,
//! and changes nothing.
//!
//! The capability is read from /proc/PID/status, and a pid can name another process by the
//! time it is read (the client exited and its pid was reused). The pid is therefore checked
//! through a pidfd the kernel gives for the socket's peer (SO_PEERPIDFD, Linux 6.5+): the
//! status read counts only if that very process is still alive afterwards, so a reused pid
//! can never lend its capabilities. Before 6.5, the process must also have the peer's uid.
//! A client in a pid namespace this daemon cannot see (pid 0) is judged by its uid alone.
//! What no check can see: a client that sends its request and then executes a program with
//! file capabilities (the capability belongs to the program, the request to its caller); the
//! check is made when the connection is accepted, before anything is read, to keep that
//! window small. Grant file capabilities with CAP_NET_ADMIN only to trusted programs.
//!
//! Bounds, so that no client can take the daemon down or hold others up: a request larger
//! than `max_request` is refused after that many bytes (never read whole); at most
//! `max_clients` connections are served at once, and when all are taken, the one that has
//! waited longest on its peer (to send its request or to read its answer) is dropped for the
//! newcomer; a client must keep sending its request (something every `client_timeout`, all of
//! it within 12 times that) and take each MiB of its answer within `client_timeout`; the
//! accept loop backs off instead of spinning when the process is out of
//! descriptors (EMFILE, ENFILE), dropping waiting clients to free some. The node lock is held
//! only while a request is applied, never while a client is read from or written to.
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

use super::Node;
use crate::ctl::{Request, Response};

pub fn handle(node: &Mutex<Node>, req: Request) -> Response {
    let mut node = node.lock().unwrap_or_else(|p| p.into_inner());
    match req {
        Request::Apply(ops) => match node.apply(&ops) {
            Ok(()) => {
                tracing::info!(ops = ops.len(), "table changed");
                Response::Ok
            }
            Err(e) => {
                tracing::warn!(error = %e, "change refused");
                Response::Error(e)
            }
        },
        Request::Snapshot { conns } => match node.snapshot(conns) {
            Ok(s) => Response::Snapshot(Box::new(s)),
            Err(e) => Response::Error(e),
        },
        Request::Zero(key) => match node.zero(key.as_ref()) {
            Ok(()) => Response::Ok,
            Err(e) => Response::Error(e),
        },
        Request::SetTimeouts { tcp, tcpfin, udp } => match node.set_timeouts(tcp, tcpfin, udp) {
            Ok(()) => Response::Ok,
            Err(e) => Response::Error(e),
        },
    }
}

/// Requests (or answers) above this size leave enough freed memory behind to hand back.
const LARGE_REQUEST: usize = 1 << 20;

/// The default request size limit. A 50,000-service restore with 10 destinations each (the
/// largest table the benchmarks load) is a 103 MiB request: this leaves room for 2.5 times
/// that, and for longer addresses and line numbers.
pub const DEFAULT_MAX_REQUEST: usize = 256 << 20;
/// Connections served at once by default (each holds a descriptor: well below the usual
/// 1,024-descriptor limit).
pub const DEFAULT_MAX_CLIENTS: usize = lb_cli::xvsd::DEFAULT_MAX_CLIENTS;
/// How long a client may take to send its request, or to take one part of its answer.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// A listing request is a few dozen bytes: clients who may only list get this much.
const LIST_MAX_REQUEST: usize = 64 << 10;
/// The answer is written in parts of this size, each within the client timeout.
const WRITE_CHUNK: usize = 1 << 20;
/// Back-off of the accept loop when it cannot get a descriptor and frees none.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Clients dropped at once to free descriptors when the process is out of them.
const EVICT_BATCH: usize = 64;

/// The control socket's limits and access rules.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub max_request: usize,
    pub max_clients: usize,
    pub client_timeout: Duration,
    /// Members of this group (name, gid) may list the table, not change it.
    pub list_group: Option<(String, u32)>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_request: DEFAULT_MAX_REQUEST,
            max_clients: DEFAULT_MAX_CLIENTS,
            client_timeout: DEFAULT_CLIENT_TIMEOUT,
            list_group: None,
        }
    }
}

/// What a client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    /// Snapshot requests only (`--list-group`).
    List,
    /// Everything: uid 0 or CAP_NET_ADMIN.
    Admin,
}

/// A connected client, as the kernel describes it.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub access: Access,
}

const CAP_NET_ADMIN: u32 = 12;

/// A group by name or number.
pub fn lookup_group(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("bad group name {name:?}"))?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 1 << 16];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the use of grp's fields.
    let rc =
        unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc == 0 && !out.is_null() {
        return Ok(grp.gr_gid);
    }
    name.parse::<u32>()
        .map_err(|_| format!("group {name} does not exist (see /etc/group)"))
}

fn getsockopt_buf(fd: RawFd, opt: libc::c_int, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is valid for len bytes; the kernel writes at most len.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, buf.as_mut_ptr().cast(), &mut len) };
    if rc == 0 {
        Ok(len as usize)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The peer's supplementary groups at connect time (SO_PEERGROUPS).
fn peer_groups(fd: RawFd) -> Vec<u32> {
    let mut buf = vec![0u8; 64 * 4];
    for _ in 0..4 {
        match getsockopt_buf(fd, libc::SO_PEERGROUPS, &mut buf) {
            Ok(n) => {
                return buf[..n]
                    .chunks_exact(4)
                    .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
                    .collect()
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                let n = buf.len() * 4;
                buf.resize(n, 0);
            }
            Err(_) => break,
        }
    }
    Vec::new()
}

/// A pidfd for the socket's peer process (SO_PEERPIDFD, Linux 6.5+).
fn peer_pidfd(fd: RawFd) -> Option<OwnedFd> {
    let mut buf = [0u8; 4];
    let n = getsockopt_buf(fd, libc::SO_PEERPIDFD, &mut buf).ok()?;
    (n == 4).then(|| {
        // SAFETY: the kernel handed us a new descriptor we now own.
        unsafe { OwnedFd::from_raw_fd(i32::from_ne_bytes(buf)) }
    })
}

/// Whether the process behind a pidfd is still there (signal 0 only checks; EPERM: it is).
fn alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: a plain syscall on our own descriptor, with no signal info.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether process `pid` is in this daemon's user namespace. The namespace's link is readable
/// only with ptrace access to the process, which a daemon confined to the capabilities it
/// needs (the systemd unit: no CAP_SYS_PTRACE) lacks for other users' processes. Their id maps
/// are readable by anyone: a user namespace of one's own (unshare -U) maps ids differently
/// from this one, since only a process owning every id here can map them all the same.
fn same_user_ns(pid: i32) -> bool {
    let link = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/user"));
    if let (Ok(ours), Ok(theirs)) = (link("self"), link(&pid.to_string())) {
        return ours == theirs;
    }
    ["uid_map", "gid_map"].iter().all(|m| {
        let ours = std::fs::read_to_string(format!("/proc/self/{m}"));
        let theirs = std::fs::read_to_string(format!("/proc/{pid}/{m}"));
        matches!((ours, theirs), (Ok(a), Ok(b)) if a == b)
    })
}

/// Whether process `pid`, connected as `uid`, has CAP_NET_ADMIN in this daemon's user
/// namespace (a process in a user namespace of its own has every capability there, and none
/// here). Everything that cannot be read counts as "no".
fn has_net_admin(pid: i32, uid: u32, pidfd: Option<&OwnedFd>) -> bool {
    if !same_user_ns(pid) {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    // Uid: real, effective, saved, filesystem.
    let euid = field("Uid:").and_then(|u| u.split_whitespace().nth(1)?.parse::<u32>().ok());
    let caps = field("CapEff:").and_then(|c| u64::from_str_radix(c, 16).ok());
    let (Some(euid), Some(caps)) = (euid, caps) else {
        return false;
    };
    // Read after the status: a live process still owns its pid, so the status was its own.
    let same_process = pidfd.is_none_or(alive);
    euid == uid && caps & (1 << CAP_NET_ADMIN) != 0 && same_process
}

/// Who is connected on `stream`, and what it may do.
pub fn peer(stream: &UnixStream, list_gid: Option<u32>) -> Peer {
    let Ok(cred) = stream.peer_cred() else {
        return Peer {
            uid: u32::MAX,
            gid: u32::MAX,
            pid: 0,
            access: Access::None,
        };
    };
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid().unwrap_or(0));
    let fd = stream.as_raw_fd();
    let access = if uid == 0 || (pid > 0 && has_net_admin(pid, uid, peer_pidfd(fd).as_ref())) {
        Access::Admin
    } else if list_gid.is_some_and(|g| gid == g || peer_groups(fd).contains(&g)) {
        Access::List
    } else {
        Access::None
    };
    Peer {
        uid,
        gid,
        pid,
        access,
    }
}

/// Warnings about clients, at most a few per second: a client that floods the socket must not
/// flood the log too.
struct LogLimit {
    window: Option<Instant>,
    n: u32,
    suppressed: u64,
}

static LOG_LIMIT: Mutex<LogLimit> = Mutex::new(LogLimit {
    window: None,
    n: 0,
    suppressed: 0,
});

/// Whether to log now, and how many lines were suppressed before this one.
fn log_allowed() -> Option<u64> {
    const PER_SECOND: u32 = 10;
    let mut l = LOG_LIMIT.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if l.window
        .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
    {
        l.window = Some(now);
        l.n = 0;
    }
    if l.n < PER_SECOND {
        l.n += 1;
        Some(std::mem::take(&mut l.suppressed))
    } else {
        l.suppressed += 1;
        None
    }
}

macro_rules! client_warn {
    ($peer:expr, $($arg:tt)+) => {
        if let Some(suppressed) = log_allowed() {
            let p: &Peer = $peer;
            tracing::warn!(uid = p.uid, gid = p.gid, pid = p.pid, suppressed, $($arg)+);
        }
    };
}

fn no_access_message(list_group: Option<&(String, u32)>) -> String {
    match list_group {
        Some((name, _)) => format!(
            "permission denied: xvsd's table needs root or CAP_NET_ADMIN, listings included \
             (as kernel IPVS); members of group {name} may list it"
        ),
        None => "permission denied: xvsd's table needs root or CAP_NET_ADMIN, listings included \
                 (as kernel IPVS)"
            .to_string(),
    }
}

fn request_kind(req: &Request) -> &'static str {
    match req {
        Request::Apply(_) => "change",
        Request::Snapshot { .. } => "listing",
        Request::Zero(_) => "zero counters",
        Request::SetTimeouts { .. } => "set timeouts",
    }
}

/// The clients being served. Ids grow with time, so the first entry is the oldest.
struct Slots {
    max: usize,
    table: Mutex<BTreeMap<u64, SlotState>>,
    next: std::sync::atomic::AtomicU64,
}

struct SlotState {
    access: Access,
    /// Waiting on its peer (reading the request or writing the answer): may be dropped.
    on_peer: bool,
    evict: Arc<Notify>,
}

/// A client's place among the served; released when dropped.
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    evict: Arc<Notify>,
}

impl Slots {
    fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            table: Mutex::new(BTreeMap::new()),
            next: 0.into(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, SlotState>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops up to `n` clients waiting on their peers, oldest first, whose access is at most
    /// `upto` (a client who may only list never pushes out an administrator). Returns how many.
    fn evict(t: &mut BTreeMap<u64, SlotState>, n: usize, upto: Access) -> usize {
        let victims: Vec<u64> = t
            .iter()
            .filter(|(_, s)| s.on_peer && s.access <= upto)
            .take(n)
            .map(|(id, _)| *id)
            .collect();
        for id in &victims {
            if let Some(s) = t.remove(id) {
                s.evict.notify_one();
            }
        }
        victims.len()
    }

    /// A place for a new client, pushing out the longest-waiting one when all are taken;
    /// None when every place is busy with a request.
    fn acquire(self: &Arc<Self>, access: Access) -> Option<Slot> {
        let mut t = self.lock();
        if t.len() >= self.max && Self::evict(&mut t, 1, access) == 0 {
            return None;
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        t.insert(
            id,
            SlotState {
                access,
                on_peer: true,
                evict: evict.clone(),
            },
        );
        Some(Slot {
            slots: self.clone(),
            id,
            evict,
        })
    }
}

impl Slot {
    /// Marks the client as waiting on its peer or not; false when it was dropped already.
    fn on_peer(&self, on: bool) -> bool {
        match self.slots.lock().get_mut(&self.id) {
            Some(s) => {
                s.on_peer = on;
                true
            }
            None => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().remove(&self.id);
    }
}

/// Requests handled so far (for the trimmer).
static HANDLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// How often the allocator's free memory is handed back after requests were handled.
const TRIM_PERIOD: Duration = Duration::from_secs(5);

/// Hands freed memory back every TRIM_PERIOD in which requests were handled. Each request is
/// handled on one of tokio's blocking threads, each with a glibc arena of its own: freed
/// small allocations stay in those arenas (measured: ~600 KiB more in each of 5 arenas over
/// 12,000 add/edit/delete cycles, never returned), so a daemon that is changed often grew
/// for good. Idle, it costs nothing.
async fn trim_after_requests() {
    let mut seen = 0;
    let mut t = tokio::time::interval(TRIM_PERIOD);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        t.tick().await;
        let n = HANDLED.load(std::sync::atomic::Ordering::Relaxed);
        if n != seen {
            seen = n;
            let _ = tokio::task::spawn_blocking(release_freed_memory).await;
        }
    }
}

/// Hands the allocator's free memory back to the kernel. A 50,000-service `xvsadm -R` or
/// listing allocates hundreds of MiB transiently (the JSON, the operations, the listing)
/// that glibc would otherwise keep in the daemon's resident set for good.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The control socket at `path`, listening before its file appears there, mode 0600 whatever
/// the umask (0660 and owned by `group` when given): it is bound in a private directory
/// (0700), its mode set, then renamed into place. Clients (xvsadm, scripts, tests) wait for
/// the file to exist; with a plain bind they could find it in the moment between bind(2) and
/// listen(2) and be refused, and with a bind in place, reach it before its mode is set.
pub fn bind(path: &Path, group: Option<u32>) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp_dir = std::path::PathBuf::from(tmp);
    // The node lock is held: anything left here is stale (an earlier daemon's).
    let _ = std::fs::remove_file(&tmp_dir);
    let _ = std::fs::remove_dir_all(&tmp_dir);
    std::fs::DirBuilder::new().mode(0o700).create(&tmp_dir)?;
    let tmp = tmp_dir.join("s");
    let placed = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
        let mode = if let Some(gid) = group {
            std::os::unix::fs::chown(&tmp, None, Some(gid)).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot give the control socket to group {gid} for --list-group \
                         ({e}): xvsd needs CAP_CHOWN for it (with the systemd unit, add it \
                         to CapabilityBoundingSet and AmbientCapabilities)"
                    ),
                )
            })?;
            0o660
        } else {
            0o600
        };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, path)?;
        Ok::<_, std::io::Error>(listener)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&tmp_dir);
    let listener = placed?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Answers and closes at once, without waiting: for clients that get no place. A new
/// connection's send buffer is empty, so a short answer always fits.
fn refuse_now(stream: UnixStream, msg: String) {
    let out = serde_json::to_vec(&Response::Error(msg)).unwrap_or_default();
    let _ = stream.try_write(&out);
}

pub async fn serve(listener: UnixListener, node: Arc<Mutex<Node>>, cfg: ServerConfig) {
    let cfg = Arc::new(cfg);
    let slots = Slots::new(cfg.max_clients);
    let list_gid = cfg.list_group.as_ref().map(|g| g.1);
    tokio::spawn(trim_after_requests());
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) } == 0
        && (cfg.max_clients as u64).saturating_add(64) > nofile.rlim_cur
    {
        tracing::warn!(
            max_clients = cfg.max_clients,
            descriptor_limit = nofile.rlim_cur,
            "--max-clients is above what the descriptor limit allows: past it, clients that \
             wait on their peers are dropped when accept fails (EMFILE)"
        );
    }
    let mut last_emfile_log: Option<Instant> = None;
    let mut emfile_suppressed = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) if out_of_descriptors(&e) => {
                // Out of descriptors: a pending connection cannot be taken. Drop the clients
                // that wait longest on their peers to free some; with none to drop, wait.
                let freed = Slots::evict(&mut slots.lock(), EVICT_BATCH, Access::Admin);
                if last_emfile_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(
                        error = %e,
                        clients_dropped = freed,
                        suppressed = emfile_suppressed,
                        "control socket: out of descriptors; dropping waiting clients and \
                         backing off (raise the descriptor limit or lower --max-clients)"
                    );
                    last_emfile_log = Some(Instant::now());
                    emfile_suppressed = 0;
                } else {
                    emfile_suppressed += 1;
                }
                if freed == 0 {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                } else {
                    // Let the dropped clients' tasks close their descriptors.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
            Err(e) => {
                // A connection that went away before it was accepted, and the like: never a
                // reason to spin.
                tracing::debug!(error = %e, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let peer = peer(&stream, list_gid);
        if peer.access == Access::None {
            client_warn!(
                &peer,
                "control socket: refused a client without root or CAP_NET_ADMIN"
            );
            refuse_now(stream, no_access_message(cfg.list_group.as_ref()));
            continue;
        }
        let Some(slot) = slots.acquire(peer.access) else {
            client_warn!(
                &peer,
                max_clients = cfg.max_clients,
                "control socket: busy, client refused"
            );
            refuse_now(
                stream,
                format!(
                    "xvsd is busy: {} requests are being handled (xvsd --max-clients); try again",
                    cfg.max_clients
                ),
            );
            continue;
        };
        tokio::spawn(client(stream, peer, slot, node.clone(), cfg.clone()));
    }
}

enum ReadError {
    TooLarge,
    Io,
    TimedOut,
}

/// A client has this many client timeouts to send its whole request (if it keeps sending).
const REQUEST_DEADLINE_FACTOR: u32 = 12;

/// The whole request (up to EOF), refused past `limit` bytes without reading on. The client
/// must send something every `idle` and be done within REQUEST_DEADLINE_FACTOR times that:
/// a large request sent steadily is never cut off, one that trickles is.
async fn read_limited(
    stream: &mut UnixStream,
    limit: usize,
    idle: Duration,
) -> Result<Vec<u8>, ReadError> {
    const PART: usize = 64 << 10;
    let deadline = Instant::now() + idle * REQUEST_DEADLINE_FACTOR;
    let mut buf = Vec::new();
    loop {
        let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
        buf.reserve(PART);
        let n = tokio::time::timeout(wait, stream.read_buf(&mut buf))
            .await
            .map_err(|_| ReadError::TimedOut)?
            .map_err(|_| ReadError::Io)?;
        if buf.len() > limit {
            return Err(ReadError::TooLarge);
        }
        if n == 0 {
            return Ok(buf);
        }
    }
}

/// Writes the answer in parts, each within the client timeout: a client that stops reading
/// loses its connection, and never holds anything but its own place.
async fn write_answer(stream: &mut UnixStream, out: &[u8], timeout: Duration) -> bool {
    for part in out.chunks(WRITE_CHUNK) {
        match tokio::time::timeout(timeout, stream.write_all(part)).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
    let _ = tokio::time::timeout(timeout, stream.shutdown()).await;
    true
}

async fn client(
    mut stream: UnixStream,
    peer: Peer,
    slot: Slot,
    node: Arc<Mutex<Node>>,
    cfg: Arc<ServerConfig>,
) {
    let evicted = slot.evict.clone();
    let work = async {
        let limit = match peer.access {
            Access::Admin => cfg.max_request,
            _ => LIST_MAX_REQUEST.min(cfg.max_request),
        };
        let buf = match read_limited(&mut stream, limit, cfg.client_timeout).await {
            Ok(buf) => buf,
            Err(ReadError::TooLarge) => {
                client_warn!(&peer, limit, "control socket: request too large, refused");
                let msg = if peer.access == Access::Admin {
                    format!("request too large: more than {limit} bytes (xvsd --max-request-size)")
                } else {
                    format!("request too large: more than {limit} bytes for a listing")
                };
                let out = serde_json::to_vec(&Response::Error(msg)).unwrap_or_default();
                write_answer(&mut stream, &out, cfg.client_timeout).await;
                // The refused request's buffer was as large as the limit: give it back.
                return limit;
            }
            Err(ReadError::Io) => return 0,
            Err(ReadError::TimedOut) => {
                if let Some(suppressed) = log_allowed() {
                    tracing::debug!(
                        uid = peer.uid,
                        pid = peer.pid,
                        suppressed,
                        timeout = ?cfg.client_timeout,
                        "control socket: no complete request in time; client dropped"
                    );
                }
                return 0;
            }
        };
        let n_in = buf.len();
        let parsed = serde_json::from_slice::<Request>(&buf);
        drop(buf);
        let resp = match parsed {
            Ok(req) if peer.access == Access::List && !matches!(req, Request::Snapshot { .. }) => {
                client_warn!(
                    &peer,
                    request = request_kind(&req),
                    "control socket: refused a change from a client who may only list"
                );
                Response::Error(
                    "permission denied: changing the table needs root or CAP_NET_ADMIN \
                     (this client may only list it)"
                        .into(),
                )
            }
            Ok(req) => {
                // Dropped for another client in the meantime: nothing is applied.
                if !slot.on_peer(false) {
                    return 0;
                }
                // The lock is held in handle() only; the answer is serialized after it.
                HANDLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let out = tokio::task::spawn_blocking(move || {
                    let resp = handle(&node, req);
                    serde_json::to_vec(&resp).unwrap_or_default()
                })
                .await
                .unwrap_or_else(|e| {
                    serde_json::to_vec(&Response::Error(format!("internal error: {e}")))
                        .unwrap_or_default()
                });
                slot.on_peer(true);
                write_answer(&mut stream, &out, cfg.client_timeout).await;
                return n_in + out.len();
            }
            Err(e) => Response::Error(format!("bad request: {e}")),
        };
        let out = serde_json::to_vec(&resp).unwrap_or_default();
        write_answer(&mut stream, &out, cfg.client_timeout).await;
        n_in + out.len()
    };
    let moved = tokio::select! {
        n = work => n,
        _ = evicted.notified() => 0,
    };
    drop(stream);
    drop(slot);
    if moved > LARGE_REQUEST {
        tokio::task::spawn_blocking(release_freed_memory);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default request limit holds a 50,000-service restore with 10 destinations each
    /// twice over (measured whole: 107,602,054 bytes; here a tenth of it, times ten), with the
    /// longest addresses, ports and weights.
    #[test]
    fn the_largest_restore_fits_the_default_limit() {
        use crate::ctl::NumberedOp;
        use crate::model::{Destination, Op, ServiceConfig, ServiceKey};
        use std::net::Ipv4Addr;
        let mut ops = Vec::new();
        for s in 0..5_000u32 {
            let k = ServiceKey::tcp(Ipv4Addr::from(0xdf60_0000 + s), 65535);
            let line = Some(550_000 - s as usize * 11);
            ops.push(NumberedOp {
                line,
                op: Op::AddService(k, ServiceConfig::with_scheduler("wrr")),
            });
            for d in 0..10u32 {
                let a = Ipv4Addr::from(0xdfdf_0000 + s * 10 + d);
                ops.push(NumberedOp {
                    line,
                    op: Op::AddDest(k, Destination::masq(a, 65535, 65535)),
                });
            }
        }
        let n = serde_json::to_vec(&Request::Apply(ops)).unwrap().len() * 10;
        assert!(n < DEFAULT_MAX_REQUEST / 2, "{n} bytes");
    }

    /// When every place is taken, the client waiting longest on its peer makes room; a client
    /// whose request is being applied never does, nor an administrator for a listing client.
    #[test]
    fn a_full_server_drops_the_longest_waiting_client_it_may() {
        let slots = Slots::new(3);
        let admin = slots.acquire(Access::Admin).unwrap();
        let busy = slots.acquire(Access::List).unwrap();
        assert!(busy.on_peer(false));
        let list = slots.acquire(Access::List).unwrap();
        // The admin is the oldest waiting one, but a listing client may not push it out: the
        // other listing client goes.
        let newer = slots.acquire(Access::List).unwrap();
        assert!(!list.on_peer(true), "the listing client was dropped");
        assert!(admin.on_peer(true) && busy.on_peer(false));
        // An admin pushes out the oldest waiting client, the admin.
        let second = slots.acquire(Access::Admin).unwrap();
        assert!(!admin.on_peer(true));
        assert!(newer.on_peer(true) && second.on_peer(true));
        // Every client busy with its request: nobody is dropped, the newcomer is refused.
        assert!(newer.on_peer(false) && second.on_peer(false));
        assert!(slots.acquire(Access::Admin).is_none());
        drop(busy);
        assert!(slots.acquire(Access::List).is_some());
    }

    /// bind() leaves a listening socket at the path, no temporary file beside it, and replaces
    /// a stale socket file (a daemon that was killed leaves one).
    #[test]
    fn bind_replaces_a_stale_socket_and_leaves_no_temporary_file() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("xvs-bind-{}", std::process::id()));
        let path = dir.join("xvsd.sock");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A stale socket file: bound once, its listener gone.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
        let listener = rt.block_on(async { bind(&path, None) }).unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "the socket is for root only: {mode:o}");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["xvsd.sock"]);
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
