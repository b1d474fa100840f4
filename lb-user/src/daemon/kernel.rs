//! Kernel IPVS as an engine: model changes applied through the netlink client, and the
//! kernel's connection table read from /proc/net/ip_vs_conn (netlink has no connection dump).
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::ipvs_nl::{IpvsClient, IpvsError};
use crate::model::{Change, Protocol};

pub fn apply(k: &IpvsClient, c: &Change) -> Result<(), IpvsError> {
    match c {
        Change::AddService(key, cfg) => k.add_service(key, cfg),
        Change::EditService(key, cfg) => k.edit_service(key, cfg),
        Change::DelService(key) => k.del_service(key),
        Change::AddDest(key, d) => k.add_dest(key, d),
        Change::EditDest(key, d) => k.edit_dest(key, d),
        Change::DelDest(key, (a, p)) => k.del_dest(key, *a, *p),
    }
}

/// One line of /proc/net/ip_vs_conn (IPv4 entries; the IPv6 ones are skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelConn {
    pub proto: Protocol,
    pub client: (Ipv4Addr, u16),
    pub vip: (Ipv4Addr, u16),
    pub dest: (Ipv4Addr, u16),
    pub state: String,
    pub expires_in: Duration,
}

fn hex_addr(s: &str) -> Option<Ipv4Addr> {
    (s.len() == 8).then(|| u32::from_str_radix(s, 16).ok().map(Ipv4Addr::from))?
}

fn hex_port(s: &str) -> Option<u16> {
    u16::from_str_radix(s, 16).ok()
}

/// Parses the kernel's format:
/// `Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData`.
pub fn parse_proc_conns(text: &str) -> Vec<KernelConn> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 9 {
                return None;
            }
            let proto = match f[0] {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                _ => return None,
            };
            Some(KernelConn {
                proto,
                client: (hex_addr(f[1])?, hex_port(f[2])?),
                vip: (hex_addr(f[3])?, hex_port(f[4])?),
                dest: (hex_addr(f[5])?, hex_port(f[6])?),
                state: f[7].to_string(),
                expires_in: Duration::from_secs(f[8].parse().ok()?),
            })
        })
        .collect()
}

/// The calling thread's namespace's table (/proc/net follows the process, not the thread).
pub fn read_proc_conns() -> Vec<KernelConn> {
    std::fs::read_to_string("/proc/thread-self/net/ip_vs_conn")
        .map(|t| parse_proc_conns(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_connection_table() {
        let text = "\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
UDP 0A0A0002 B0F2 0A000035 0035 0A0B0102 1F90 UDP             298
TCP 0A0A0002 9C40 0A00000A 0050 0A0B0302 1F90 ESTABLISHED     899
IP  0A0A0002 0000 0A00000A 0050 0A0B0302 1F90 NONE            300
";
        let c = parse_proc_conns(text);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].proto, Protocol::Udp);
        assert_eq!(c[0].client, (Ipv4Addr::new(10, 10, 0, 2), 0xb0f2));
        assert_eq!(c[0].vip, (Ipv4Addr::new(10, 0, 0, 53), 53));
        assert_eq!(c[0].dest, (Ipv4Addr::new(10, 11, 1, 2), 8080));
        assert_eq!(c[0].expires_in, Duration::from_secs(298));
        assert_eq!(c[1].state, "ESTABLISHED");
    }
}
