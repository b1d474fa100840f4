//! The machine: CPU pinning, what the machine is, and CPU time accounting for the end-to-end
//! runs.
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Pins the calling thread to one CPU (modulo the number of CPUs).
pub fn pin_to_cpu(cpu: usize) {
    let n = nproc();
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Lets the calling thread run on every CPU again.
pub fn unpin() {
    let n = nproc();
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..n {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPUs online (not the calling thread's affinity, which the benchmark changes).
pub fn nproc() -> usize {
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total_gib: f64,
    pub hostname_hidden: bool,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Machine {
        nproc: nproc(),
        cpu_model,
        kernel: kernel_release(),
        mem_total_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        hostname_hidden: true,
    }
}

pub fn kernel_release() -> String {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let c = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    c.to_string_lossy().into_owned()
}

/// The 1-minute load average (other work on the machine skews every figure).
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// The commit the benchmark ran on (with "-dirty" when the tree had changes).
pub fn git_commit() -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match out(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            let dirty = out(&["status", "--porcelain", "--untracked-files=no"])
                .map(|s| !s.is_empty())
                .unwrap_or(false);
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
        None => "unknown".into(),
    }
}

fn clk_tck() -> f64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Nanoseconds of CPU time, sampled at one instant, two ways:
/// * `pipeline`: this process (the traffic generator, the receivers, and the softirq work the
///   kernel does in their context: with tick-based accounting that is charged to the task it
///   interrupts) plus the ksoftirqd threads (softirq work deferred out of those contexts).
///   Other work on the machine does not count here.
/// * `busy` / `softirq`: the whole machine from /proc/stat (every CPU, everything but idle and
///   iowait; and the softirq column alone).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSample {
    pub pipeline_ns: f64,
    pub busy_ns: f64,
    pub softirq_ns: f64,
}

impl CpuSample {
    pub fn now() -> CpuSample {
        let tick_ns = 1e9 / clk_tck();
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 * 1e9 + t.tv_usec as f64 * 1e3;
        let mut pipeline_ns = tv(ru.ru_utime) + tv(ru.ru_stime);
        pipeline_ns += ksoftirqd_ns();
        let (busy, softirq) = proc_stat_ticks();
        CpuSample {
            pipeline_ns,
            busy_ns: busy * tick_ns,
            softirq_ns: softirq * tick_ns,
        }
    }

    pub fn since(&self, earlier: &CpuSample) -> CpuSample {
        CpuSample {
            pipeline_ns: self.pipeline_ns - earlier.pipeline_ns,
            busy_ns: self.busy_ns - earlier.busy_ns,
            softirq_ns: self.softirq_ns - earlier.softirq_ns,
        }
    }
}

/// CPU time of every ksoftirqd/N thread, in ns (/proc/PID/schedstat: time on CPU).
fn ksoftirqd_ns() -> f64 {
    let mut total = 0.0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if !comm.starts_with("ksoftirqd/") {
            continue;
        }
        if let Some(ns) = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
            })
        {
            total += ns;
        }
    }
    total
}

/// (busy, softirq) clock ticks over all CPUs from the first line of /proc/stat.
fn proc_stat_ticks() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().next() else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let g = |i: usize| v.get(i).copied().unwrap_or(0.0);
    let busy = g(0) + g(1) + g(2) + g(5) + g(6) + g(7);
    (busy, g(6))
}

/// Runs a command, returning stdout or an error with its output.
pub fn cmd(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with `input` on its stdin.
pub fn cmd_stdin(program: &str, args: &[&str], input: &str) -> Result<String, String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("{program} stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let head: String = err.chars().take(2000).collect();
        return Err(format!("{program} {}: {head}", args.join(" ")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
