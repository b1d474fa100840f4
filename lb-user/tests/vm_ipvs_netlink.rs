use lb_user::ipvs_nl::IpvsClient;
use std::process::Command;

fn in_vm() -> bool {
    if std::env::var_os("XVS_IN_VM").is_none() {
        eprintln!("note: skipped outside the VM (run `cargo xtask vm-test`)");
        return false;
    }
    true
}

fn sh(cmd: &str) -> String {
    let o = Command::new("/bin/sh").arg("-c").arg(cmd).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn explore() {
    if !in_vm() {
        return;
    }
    let c = IpvsClient::new().unwrap();
    println!("info {:?}", c.info().unwrap());
    println!("{}", sh("ipvsadm -A -t 10.0.0.1:80 -s rr; ipvsadm -a -t 10.0.0.1:80 -r 10.244.1.5:8080 -m -w 1; ipvsadm -A -t [fd00::1]:443 -s mh -b mh-fallback,mh-port; ipvsadm -a -t [fd00::1]:443 -r [fd00:1::2]:8443 -i --tun-type gue --tun-port 6080 --tun-nocsum; ipvsadm -L -n; ipvsadm -S -n; ipvsadm -h 2>&1 | head -80"));
    println!("{:#?}", c.services().unwrap());
    std::fs::write("/xvs/out/hello.txt", "hi\n").unwrap();
}
