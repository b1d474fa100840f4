//! Running the real xvsd binary inside a test's balancer namespace. Only the network namespace
//! is entered (nsenter --net), so the daemon shares this host's bpffs and the test can see its
//! pins. Every daemon is stopped and torn down on every exit path (Drop).
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lb_user::ctl::{NumberedOp, Request, Response};
use lb_user::daemon::server::request;
use lb_user::model::Op;

use crate::netns::Netns;

/// A workspace binary: target/<profile>/NAME, next to a binary or one level above a test
/// executable (target/<profile>/deps/).
pub fn find_bin(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let found = [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.exists());
    found
}

pub fn bin(name: &str) -> PathBuf {
    find_bin(name).unwrap_or_else(|| panic!("{name} not built (cargo build --workspace --bins)"))
}

/// Paths one test's daemon uses: unique per test.
#[derive(Clone)]
pub struct DaemonDirs {
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    /// --conn-table-size (small: tests run in parallel).
    pub conn_table_size: u32,
    /// --max-dests (4,096 unless a test needs the daemon's default room).
    pub max_dests: u32,
}

impl DaemonDirs {
    pub fn new(tag: &str) -> DaemonDirs {
        let id = format!("{tag}-{}", std::process::id());
        DaemonDirs {
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/xvs-t-{id}")),
            state_dir: std::env::temp_dir().join(format!("xvs-t-{id}")),
            conn_table_size: 16384,
            max_dests: 4096,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("xvsd.sock")
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--pin-dir".into(),
            self.pin_dir.display().to_string(),
            "--state-dir".into(),
            self.state_dir.display().to_string(),
            "--conn-table-size".into(),
            self.conn_table_size.to_string(),
            "--max-services".into(),
            "1024".into(),
            "--max-dests".into(),
            self.max_dests.to_string(),
            "--sched-slots".into(),
            "65536".into(),
        ]
    }

    /// `xvsd teardown`: what every test ends with.
    pub fn teardown(&self) -> Output {
        self.try_teardown().expect("xvsd teardown runs")
    }

    /// The same, never panicking (for Drop guards).
    pub fn try_teardown(&self) -> Option<Output> {
        Command::new(find_bin("xvsd")?)
            .arg("teardown")
            .args(self.args())
            .output()
            .ok()
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub dirs: DaemonDirs,
}

impl Daemon {
    /// Starts xvsd in `ns` with `extra` arguments and waits for its control socket.
    pub fn start(ns: &Netns, dirs: &DaemonDirs, extra: &[&str]) -> Daemon {
        Self::start_with(ns, dirs, extra, Stdio::inherit())
    }

    /// Like `start`, with the daemon's log (stderr) written to `log_file` at `rust_log` level.
    pub fn start_logged(
        ns: &Netns,
        dirs: &DaemonDirs,
        extra: &[&str],
        log_file: &std::path::Path,
        rust_log: &str,
    ) -> Daemon {
        std::env::set_var("RUST_LOG", rust_log);
        let log = std::fs::File::create(log_file).unwrap();
        let d = Self::start_with(ns, dirs, extra, Stdio::from(log));
        std::env::remove_var("RUST_LOG");
        d
    }

    /// Like `start`, with the daemon's log (stderr) sent to `log`.
    pub fn start_with(ns: &Netns, dirs: &DaemonDirs, extra: &[&str], log: Stdio) -> Daemon {
        Self::start_cmd(ns, dirs, extra, log, |_| {})
    }

    /// Like `start_with`, with the command adjusted by `setup` first (a umask or a resource
    /// limit in pre_exec, say). The daemon keeps the child's pid (nsenter execs it).
    pub fn start_cmd(
        ns: &Netns,
        dirs: &DaemonDirs,
        extra: &[&str],
        log: Stdio,
        setup: impl FnOnce(&mut Command),
    ) -> Daemon {
        let _ = std::fs::remove_file(dirs.socket());
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", ns.name))
            .arg(bin("xvsd"))
            .args(dirs.args())
            .args(extra)
            .stdin(Stdio::null())
            .stderr(log);
        setup(&mut cmd);
        let child = cmd.spawn().expect("spawn xvsd");
        let mut d = Daemon {
            child: Some(child),
            dirs: dirs.clone(),
        };
        let t0 = Instant::now();
        while !dirs.socket().exists() {
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("xvsd exited at start: {st}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "xvsd did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    pub fn request(&self, req: &Request) -> Response {
        request(&self.dirs.socket(), req).expect("xvsd answers")
    }

    pub fn apply(&self, ops: Vec<Op>) -> Response {
        self.request(&Request::Apply(
            ops.into_iter()
                .map(|op| NumberedOp { line: None, op })
                .collect(),
        ))
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(mut self) {
        let mut c = self.child.take().unwrap();
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let st = c.wait().unwrap();
        assert!(st.success(), "xvsd stopped with {st}");
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.as_ref().unwrap().id() as i32, sig) };
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Tears the fast path down when the test ends, however it ends.
pub struct Teardown(pub DaemonDirs);

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = self.0.try_teardown();
        let _ = std::fs::remove_dir_all(&self.0.state_dir);
    }
}

/// A fast-path verdict counter (lb_common::path::*) of the daemon's pinned PATH_STATS map,
/// summed over CPUs.
pub fn path_stat(dirs: &DaemonDirs, index: u32) -> u64 {
    let data = aya::maps::MapData::from_pin(dirs.pin_dir.join(lb_common::map_names::PATH_STATS))
        .expect("pinned PATH_STATS");
    let m: aya::maps::PerCpuArray<_, u64> =
        aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).unwrap();
    m.get(&index, 0).unwrap().iter().sum()
}
