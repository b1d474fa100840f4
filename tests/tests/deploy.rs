//! The deployment files: the Kubernetes manifests validate offline against the Kubernetes API
//! schema, and xvsd runs with exactly the capabilities the DaemonSet grants it, answering the
//! DaemonSet's readiness probe and leaving the fast path running when it is stopped.
//!
//! No cluster is reachable here: `kubernetes-validate` (PyPI, installed by `cargo xtask setup`
//! into target/k8s-validate) validates every resource against the JSON schemas of the
//! Kubernetes API it ships, strictly (unknown fields are errors).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xvs_tests::daemon::{bin, DaemonDirs, Teardown};
use xvs_tests::netns::Netns;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

const DAEMONSET: &str = "dist/kubernetes/xvsd-daemonset.yaml";

fn validate(file: &Path) -> std::process::Output {
    let exe = repo().join("target/k8s-validate/bin/kubernetes-validate");
    Command::new(&exe)
        .args(["--strict", "--kubernetes-version", "1.37.0"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{} ({e}): run `cargo xtask setup`", exe.display()))
}

#[test]
fn the_manifests_validate_against_the_kubernetes_api_schema() {
    let dir = repo().join("dist/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in &files {
        let out = validate(f);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {text}", f.display());
        assert!(!text.contains("WARN"), "{}: {text}", f.display());
    }
    let out = validate(&repo().join(DAEMONSET));
    let text = String::from_utf8_lossy(&out.stdout);
    for kind in ["serviceaccount/xvsd", "daemonset/xvsd"] {
        assert!(
            text.contains(&format!("passed for resource {kind} against version 1.37")),
            "{text}"
        );
    }
    // The validator does catch mistakes: a misspelled field and a wrong type.
    let yaml = std::fs::read_to_string(repo().join(DAEMONSET)).unwrap();
    let tmp = std::env::temp_dir().join(format!("xvs-ds-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for (from, to) in [
        (
            "mountPropagation: HostToContainer",
            "mountPropgation: HostToContainer",
        ),
        ("containerPort: 9477", "containerPort: metrics"),
    ] {
        assert!(yaml.contains(from));
        let bad = tmp.join("bad.yaml");
        std::fs::write(&bad, yaml.replacen(from, to, 1)).unwrap();
        let out = validate(&bad);
        assert!(!out.status.success(), "{to} accepted: {out:?}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The xvsd container's added capabilities, from the DaemonSet (`add: [...]`).
fn daemonset_caps(yaml: &str) -> Vec<String> {
    let adds: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("add: "))
        .collect();
    assert_eq!(adds.len(), 1, "one container adds capabilities");
    adds[0]
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_lowercase())
        .collect()
}

/// The readiness probe's command, from the DaemonSet.
fn readiness_probe(yaml: &str) -> Vec<String> {
    let i = yaml.find("readinessProbe:").expect("a readiness probe");
    let line = yaml[i..]
        .lines()
        .find_map(|l| l.trim().strip_prefix("command: "))
        .unwrap();
    serde_json::from_str(line).unwrap()
}

fn cap_number(name: &str) -> u32 {
    match name {
        "net_admin" => 12,
        "sys_admin" => 21,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("unexpected capability {other}"),
    }
}

#[test]
fn xvsd_runs_with_exactly_the_daemonsets_capabilities() {
    let yaml = std::fs::read_to_string(repo().join(DAEMONSET)).unwrap();
    let caps = daemonset_caps(&yaml);
    assert_eq!(caps, ["bpf", "net_admin", "perfmon"]);
    let probe = readiness_probe(&yaml);
    assert_eq!(probe, ["/usr/local/sbin/xvsadm", "-L", "--timeout"]);

    let ns = Netns::new("cap");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["link", "set", "d1", "up"]);
    let dirs = DaemonDirs::new("caps");
    let _cleanup = Teardown(dirs.clone());
    // Root with the bounding set cut to the DaemonSet's capabilities: exec gives xvsd exactly
    // those (as the container runtime does), and no ambient or inheritable ones.
    let bounding = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .args(["setpriv", "--bounding-set", &bounding, "--inh-caps=-all"])
        .arg(bin("xvsd"))
        .args(dirs.args())
        .args(["--iface", "d0"])
        .stdin(Stdio::null())
        .spawn()
        .expect("xvsd under setpriv");
    let t0 = Instant::now();
    while !dirs.socket().exists() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("xvsd with the DaemonSet's capabilities exited at start: {st}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "xvsd did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // It holds those capabilities and no others.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let want = caps.iter().fold(0u64, |m, c| m | 1 << cap_number(c));
    assert_eq!(eff, want, "CapEff {eff:#x}");
    // The readiness probe passes: the control socket answers.
    let out = Command::new(bin("xvsadm"))
        .args(&probe[1..])
        .env("XVSADM_SOCKET", dirs.socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    // Attached at tc and balancing the node's own sockets, all with these capabilities.
    for pin in ["link_tc_d0", "link_sock_xvs_connect4", "SERVICES"] {
        assert!(dirs.pin_dir.join(pin).exists(), "{pin}");
    }
    // Terminated as Kubernetes does (SIGTERM): a clean exit that leaves the fast path.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
    assert!(dirs.pin_dir.join("link_tc_d0").exists());
    assert!(dirs.state_dir.join("engine.json").exists());
}
