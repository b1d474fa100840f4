//! The service table of the end-to-end runs, written three ways: model changes for the fast
//! path, an iptables-restore script shaped like kube-proxy's iptables mode, and nft scripts
//! shaped like kube-proxy's nftables mode.
//!
//! N services of one protocol (the one the traffic uses), VIP 10.100.0.0 + i, port 80, each
//! with the same 10 endpoints :8080 (five addresses in each of the two destination
//! namespaces). Only kube-proxy's NAT path is reproduced (service dispatch, endpoint choice,
//! DNAT, the masquerade mark and its POSTROUTING check); its filter-table chains would add the
//! same per-packet cost to both rule sets.
use std::net::Ipv4Addr;

use lb_user::model::{Change, Destination, ServiceConfig, ServiceKey};

use super::micro::vip;

pub const VPORT: u16 = 80;
pub const EPORT: u16 = 8080;
pub const ENDPOINTS: u32 = 10;

/// Endpoint j: 10.11.(1 + j % 2).(2 + j / 2).
pub fn endpoint(j: u32) -> u32 {
    0x0a0b_0000 | ((1 + j % 2) << 8) | (2 + j / 2)
}

/// The services the traffic goes to. iptables walks KUBE-SERVICES linearly, so the position
/// in the list matters: four services at 1/8, 3/8, 5/8 and 7/8 of it (on average half the list
/// is walked, as for a service taken at random); service 0 when there are fewer than eight.
pub fn targets(n: u32) -> Vec<u32> {
    if n < 8 {
        vec![0]
    } else {
        (0..4).map(|k| (2 * k + 1) * n / 8).collect()
    }
}

fn ip(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

pub fn proto_name(proto: u8) -> &'static str {
    if proto == crate::packet::TCP {
        "tcp"
    } else {
        "udp"
    }
}

/// The fast path's table: rr services of 10 destinations.
pub fn xvs_changes(n: u32, proto: u8) -> Vec<Change> {
    let mut v = Vec::with_capacity(n as usize * (ENDPOINTS as usize + 1));
    for i in 0..n {
        let key = if proto == crate::packet::TCP {
            ServiceKey::tcp(ip(vip(i)), VPORT)
        } else {
            ServiceKey::udp(ip(vip(i)), VPORT)
        };
        v.push(Change::AddService(key, ServiceConfig::with_scheduler("rr")));
        for j in 0..ENDPOINTS {
            v.push(Change::AddDest(
                key,
                Destination::masq(ip(endpoint(j)), EPORT, 1),
            ));
        }
    }
    v
}

/// splitmix64's finaliser: a bijection of u64, so distinct ids give distinct names.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 16 base32 characters, as kube-proxy's chain-name hashes (it takes them from SHA-256; a
/// bijective mix of the id gives names of the same shape that never collide). Shared with
/// the control-plane benchmark's rule sets.
pub fn hash16(id: u64) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let a = mix(id);
    let b = mix(id ^ 0x5555_5555_5555_5555);
    (0..16)
        .map(|k| {
            let v = if k < 12 {
                a >> (k * 5)
            } else {
                b >> ((k - 12) * 5)
            };
            ALPHA[(v & 31) as usize] as char
        })
        .collect()
}

/// Name ids: a service by index and protocol, an endpoint of it by position (from 1).
fn name_id(i: u32, proto: u8, j: Option<u32>) -> u64 {
    ((i as u64) << 16) | ((proto as u64) << 8) | j.map_or(0, |j| 1 + j as u64)
}

pub fn svc_chain(i: u32, proto: u8) -> String {
    format!("KUBE-SVC-{}", hash16(name_id(i, proto, None)))
}

fn sep_chain(i: u32, proto: u8, j: u32) -> String {
    format!("KUBE-SEP-{}", hash16(name_id(i, proto, Some(j))))
}

/// An iptables-restore script (nat table) shaped like kube-proxy's iptables mode.
pub fn iptables_script(n: u32, proto: u8) -> String {
    let p = proto_name(proto);
    let mut chains = String::new();
    let mut rules = String::new();
    chains.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n");
    rules.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    rules.push_str(
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    rules.push_str("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n");
    rules.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n");
    rules.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
    rules.push_str("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n");
    rules.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    let mut svc_rules = String::new();
    for i in 0..n {
        let svc = svc_chain(i, proto);
        chains.push_str(&format!(":{svc} - [0:0]\n"));
        svc_rules.push_str(&format!(
            "-A KUBE-SERVICES -d {}/32 -p {p} -m comment --comment \"ns/svc-{i}:{p} cluster IP\" -m {p} --dport {VPORT} -j {svc}\n",
            ip(vip(i))
        ));
        for j in 0..ENDPOINTS {
            let sep = sep_chain(i, proto, j);
            let ep = ip(endpoint(j));
            chains.push_str(&format!(":{sep} - [0:0]\n"));
            if j + 1 < ENDPOINTS {
                rules.push_str(&format!(
                    "-A {svc} -m comment --comment \"ns/svc-{i}:{p} -> {ep}:{EPORT}\" -m statistic --mode random --probability {:.11} -j {sep}\n",
                    1.0 / (ENDPOINTS - j) as f64
                ));
            } else {
                rules.push_str(&format!(
                    "-A {svc} -m comment --comment \"ns/svc-{i}:{p} -> {ep}:{EPORT}\" -j {sep}\n"
                ));
            }
            rules.push_str(&format!(
                "-A {sep} -s {ep}/32 -m comment --comment \"ns/svc-{i}:{p}\" -j KUBE-MARK-MASQ\n"
            ));
            rules.push_str(&format!(
                "-A {sep} -p {p} -m comment --comment \"ns/svc-{i}:{p}\" -m {p} -j DNAT --to-destination {ep}:{EPORT}\n"
            ));
        }
    }
    let mut s = chains;
    s.push_str(&svc_rules);
    s.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
    s.push_str(&rules);
    s.push_str("COMMIT\n");
    // KUBE-NODEPORTS is referenced: declare it (empty, as on a node without NodePorts).
    s.replace(
        ":KUBE-MARK-MASQ - [0:0]\n",
        ":KUBE-MARK-MASQ - [0:0]\n:KUBE-NODEPORTS - [0:0]\n",
    )
}

fn nft_svc_chain(i: u32, proto: u8) -> String {
    let p = proto_name(proto);
    format!(
        "service-{}-ns/svc-{i}/{p}/p{VPORT}",
        &hash16(name_id(i, proto, None))[..8]
    )
}

fn nft_ep_chain(i: u32, proto: u8, j: u32) -> String {
    let p = proto_name(proto);
    format!(
        "endpoint-{}-ns/svc-{i}/{p}/p{VPORT}__{}/{EPORT}",
        &hash16(name_id(i, proto, Some(j)))[..8],
        ip(endpoint(j))
    )
}

/// nft scripts shaped like kube-proxy's nftables mode, in the order to load them. One
/// transaction per batch of services: nft's commit time grows with the square of a
/// transaction's size (10,000 services in one transaction take minutes, in batches seconds).
pub fn nft_scripts(n: u32, proto: u8, batch: u32) -> Vec<String> {
    let p = proto_name(proto);
    let mut v = Vec::new();
    v.push(
        "table ip kube-proxy {\n\
         \tmap service-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t}\n\
         \tchain mark-for-masquerade {\n\t\tmeta mark set meta mark or 0x4000\n\t}\n\
         \tchain masquerading {\n\t\tmeta mark & 0x4000 == 0 return\n\t\tmeta mark set meta mark ^ 0x4000\n\t\tmasquerade fully-random\n\t}\n\
         \tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t}\n\
         \tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}\n\
         \tchain nat-output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}\n\
         \tchain nat-postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tjump masquerading\n\t}\n\
         }\n"
            .to_string(),
    );
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let mut s = String::from("table ip kube-proxy {\n");
        let mut elems = Vec::new();
        for i in start..end {
            let mut vm = Vec::new();
            for j in 0..ENDPOINTS {
                let ec = nft_ep_chain(i, proto, j);
                let ep = ip(endpoint(j));
                s.push_str(&format!(
                    "\tchain {ec} {{\n\t\tip saddr {ep} jump mark-for-masquerade\n\t\tmeta l4proto {p} dnat to {ep}:{EPORT}\n\t}}\n"
                ));
                vm.push(format!("{j} : goto {ec}"));
            }
            let sc = nft_svc_chain(i, proto);
            s.push_str(&format!(
                "\tchain {sc} {{\n\t\tnumgen random mod {ENDPOINTS} vmap {{ {} }}\n\t}}\n",
                vm.join(", ")
            ));
            elems.push(format!("{} . {p} . {VPORT} : goto {sc}", ip(vip(i))));
        }
        s.push_str("}\n");
        s.push_str(&format!(
            "add element ip kube-proxy service-ips {{ {} }}\n",
            elems.join(", ")
        ));
        v.push(s);
        start = end;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_targets() {
        assert_eq!(ip(endpoint(0)).to_string(), "10.11.1.2");
        assert_eq!(ip(endpoint(1)).to_string(), "10.11.2.2");
        assert_eq!(ip(endpoint(9)).to_string(), "10.11.2.6");
        assert_eq!(targets(1), vec![0]);
        assert_eq!(targets(1000), vec![125, 375, 625, 875]);
    }

    #[test]
    fn iptables_script_shape() {
        let s = iptables_script(2, crate::packet::UDP);
        assert_eq!(s.matches("-A KUBE-SERVICES -d").count(), 2);
        assert_eq!(s.matches("-j DNAT").count(), 20);
        assert_eq!(s.matches("--probability 0.10000000000").count(), 2);
        assert!(s.contains(":KUBE-NODEPORTS - [0:0]"));
        assert!(s.ends_with("COMMIT\n"));
    }
}
