//! Conversions between the table model and IPVS netlink attributes.

use std::net::IpAddr;

use crate::model::{
    family_of, Destination, Family, Forward, Protocol, Service, ServiceConfig, ServiceFlags,
    ServiceKey,
};

use super::attrs::{decode_inet_addr, AttrList, Attrs};
use super::consts::{dest_attr, stats_attr, svc_attr, AF_INET, AF_INET6};
use super::error::IpvsError;
use super::types::{
    DestOptions, DestState, KernelService, ServiceOptions, Stats, Tunnel, TunnelKind,
};

pub(crate) fn af(f: Family) -> u16 {
    match f {
        Family::Inet => AF_INET,
        Family::Inet6 => AF_INET6,
    }
}

fn family_from_af(af: u16) -> Result<Family, IpvsError> {
    match af {
        AF_INET => Ok(Family::Inet),
        AF_INET6 => Ok(Family::Inet6),
        other => Err(IpvsError::Decode(format!("unknown address family {other}"))),
    }
}

/// The attributes that identify a service (enough for DEL, GET, ZERO and dest commands).
pub(crate) fn service_id(key: &ServiceKey) -> Result<AttrList, IpvsError> {
    let mut l = AttrList::new();
    l.u16(svc_attr::AF, af(key.family()))?;
    match key {
        ServiceKey::Inet { proto, addr, port } => {
            l.u16(svc_attr::PROTOCOL, proto.number() as u16)?
                .inet_addr(svc_attr::ADDR, addr)?
                .be16(svc_attr::PORT, *port)?;
        }
        ServiceKey::Fwmark { mark, .. } => {
            l.u32(svc_attr::FWMARK, *mark)?;
        }
    }
    Ok(l)
}

/// NETMASK on the wire: IPv4 as a big-endian mask, IPv6 as the prefix length (a native u32).
/// The model's default mask (0xffff_ffff, "no mask") means /128 for IPv6.
pub(crate) fn netmask_to_wire(family: Family, netmask: u32) -> [u8; 4] {
    match family {
        Family::Inet => netmask.to_be_bytes(),
        Family::Inet6 if netmask == u32::MAX => 128u32.to_ne_bytes(),
        Family::Inet6 => netmask.to_ne_bytes(),
    }
}

fn netmask_from_wire(family: Family, b: [u8; 4]) -> u32 {
    match family {
        Family::Inet => u32::from_be_bytes(b),
        Family::Inet6 => u32::from_ne_bytes(b),
    }
}

/// Everything NEW/SET_SERVICE needs: the identity, scheduler, flags (with mask ~0, so the
/// kernel takes them as given), timeout, netmask and, if any, the persistence engine.
pub(crate) fn service_full(
    key: &ServiceKey,
    config: &ServiceConfig,
    options: &ServiceOptions,
) -> Result<AttrList, IpvsError> {
    let mut l = service_id(key)?;
    let mut flags = Vec::with_capacity(8);
    flags.extend_from_slice(&config.flags.bits().to_ne_bytes());
    flags.extend_from_slice(&u32::MAX.to_ne_bytes());
    l.string(svc_attr::SCHED_NAME, &config.scheduler)?;
    if let Some(pe) = &options.pe_name {
        l.string(svc_attr::PE_NAME, pe)?;
    }
    l.bytes(svc_attr::FLAGS, flags)?
        .u32(svc_attr::TIMEOUT, config.timeout)?
        .bytes(
            svc_attr::NETMASK,
            netmask_to_wire(key.family(), config.netmask).to_vec(),
        )?;
    Ok(l)
}

/// The destination attributes: identity only (DEL_DEST) or everything (NEW/SET_DEST).
pub(crate) fn dest(
    d: &Destination,
    options: &DestOptions,
    full: bool,
) -> Result<AttrList, IpvsError> {
    let mut l = AttrList::new();
    l.u16(dest_attr::ADDR_FAMILY, af(family_of(&d.addr)))?
        .inet_addr(dest_attr::ADDR, &d.addr)?
        .be16(dest_attr::PORT, d.port)?;
    if full {
        l.u32(dest_attr::FWD_METHOD, d.forward.code())?
            .u32(dest_attr::WEIGHT, d.weight)?
            .u32(dest_attr::U_THRESH, d.u_thresh)?
            .u32(dest_attr::L_THRESH, d.l_thresh)?;
        if d.forward == Forward::Tunnel {
            let t = &options.tunnel;
            l.u8(dest_attr::TUN_TYPE, t.kind.code())?
                .be16(dest_attr::TUN_PORT, t.port)?
                .u16(dest_attr::TUN_FLAGS, t.flags)?;
        }
    }
    Ok(l)
}

/// A destination's identity, for DEL_DEST.
pub(crate) fn dest_id(addr: IpAddr, port: u16) -> Result<AttrList, IpvsError> {
    dest(
        &Destination::masq(addr, port, 0),
        &DestOptions::default(),
        false,
    )
}

/// STATS64 if present, else STATS.
fn stats(a: &Attrs, stats64: u16, stats32: u16) -> Result<Stats, IpvsError> {
    let n = if a.has(stats64) {
        a.nested(stats64, "stats64")?
    } else if a.has(stats32) {
        a.nested(stats32, "stats")?
    } else {
        return Ok(Stats::default());
    };
    let v = |ty: u16, what: &str| -> Result<u64, IpvsError> {
        if n.has(ty) {
            n.uint(ty, what)
        } else {
            Ok(0)
        }
    };
    Ok(Stats {
        conns: v(stats_attr::CONNS, "conns")?,
        inpkts: v(stats_attr::INPKTS, "inpkts")?,
        outpkts: v(stats_attr::OUTPKTS, "outpkts")?,
        inbytes: v(stats_attr::INBYTES, "inbytes")?,
        outbytes: v(stats_attr::OUTBYTES, "outbytes")?,
        cps: v(stats_attr::CPS, "cps")?,
        inpps: v(stats_attr::INPPS, "inpps")?,
        outpps: v(stats_attr::OUTPPS, "outpps")?,
        inbps: v(stats_attr::INBPS, "inbps")?,
        outbps: v(stats_attr::OUTBPS, "outbps")?,
    })
}

/// A service from the attributes nested in CMD_ATTR_SERVICE (its destinations come from a
/// separate GET_DEST dump).
pub(crate) fn decode_service(a: &Attrs) -> Result<KernelService, IpvsError> {
    let family = family_from_af(a.u16(svc_attr::AF, "service address family")?)?;
    let key = if a.has(svc_attr::FWMARK) {
        ServiceKey::Fwmark {
            family,
            mark: a.u32(svc_attr::FWMARK, "fwmark")?,
        }
    } else {
        let p = a.u16(svc_attr::PROTOCOL, "protocol")?;
        ServiceKey::Inet {
            proto: Protocol::from_number(p)
                .ok_or_else(|| IpvsError::Decode(format!("unknown protocol {p}")))?,
            addr: decode_inet_addr(af(family), a.get(svc_attr::ADDR).unwrap_or_default())?,
            port: a.be16(svc_attr::PORT, "port")?,
        }
    };
    let flags = a.get(svc_attr::FLAGS).unwrap_or_default();
    let raw_flags = flags
        .get(..4)
        .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
        .ok_or_else(|| IpvsError::Decode("service flags missing".into()))?;
    let netmask = a
        .get(svc_attr::NETMASK)
        .and_then(|b| b.get(..4))
        .map(|b| netmask_from_wire(family, b.try_into().unwrap()))
        .ok_or_else(|| IpvsError::Decode("service netmask missing".into()))?;
    let config = ServiceConfig {
        scheduler: a.string(svc_attr::SCHED_NAME, "scheduler")?,
        flags: ServiceFlags::from_bits(raw_flags),
        timeout: a.u32(svc_attr::TIMEOUT, "timeout")?,
        netmask,
    };
    let pe_name = if a.has(svc_attr::PE_NAME) {
        Some(a.string(svc_attr::PE_NAME, "persistence engine")?).filter(|s| !s.is_empty())
    } else {
        None
    };
    Ok(KernelService {
        service: Service {
            key,
            config,
            dests: Vec::new(),
        },
        options: ServiceOptions { pe_name },
        raw_flags,
        stats: stats(a, svc_attr::STATS64, svc_attr::STATS)?,
        dest_state: Vec::new(),
    })
}

/// A destination from the attributes nested in CMD_ATTR_DEST. `svc_family` is used when the
/// kernel sends no ADDR_FAMILY (before Linux 3.18).
pub(crate) fn decode_dest(
    a: &Attrs,
    svc_family: Family,
) -> Result<(Destination, DestState), IpvsError> {
    let family = if a.has(dest_attr::ADDR_FAMILY) {
        family_from_af(a.u16(dest_attr::ADDR_FAMILY, "destination address family")?)?
    } else {
        svc_family
    };
    let fwd = a.u32(dest_attr::FWD_METHOD, "forwarding method")?;
    let opt_u32 = |ty: u16, what: &str| -> Result<u32, IpvsError> {
        if a.has(ty) {
            a.u32(ty, what)
        } else {
            Ok(0)
        }
    };
    let dest = Destination {
        addr: decode_inet_addr(af(family), a.get(dest_attr::ADDR).unwrap_or_default())?,
        port: a.be16(dest_attr::PORT, "destination port")?,
        forward: Forward::from_code(fwd)
            .ok_or_else(|| IpvsError::Decode(format!("unknown forwarding method {fwd}")))?,
        weight: a.u32(dest_attr::WEIGHT, "weight")?,
        u_thresh: opt_u32(dest_attr::U_THRESH, "upper threshold")?,
        l_thresh: opt_u32(dest_attr::L_THRESH, "lower threshold")?,
    };
    let tunnel = Tunnel {
        kind: if a.has(dest_attr::TUN_TYPE) {
            TunnelKind::from_code(a.u8(dest_attr::TUN_TYPE, "tunnel type")?)
        } else {
            TunnelKind::Ipip
        },
        port: if a.has(dest_attr::TUN_PORT) {
            a.be16(dest_attr::TUN_PORT, "tunnel port")?
        } else {
            0
        },
        flags: if a.has(dest_attr::TUN_FLAGS) {
            a.u16(dest_attr::TUN_FLAGS, "tunnel flags")?
        } else {
            0
        },
    };
    let state = DestState {
        options: DestOptions { tunnel },
        active_conns: opt_u32(dest_attr::ACTIVE_CONNS, "active connections")?,
        inactive_conns: opt_u32(dest_attr::INACT_CONNS, "inactive connections")?,
        persist_conns: opt_u32(dest_attr::PERSIST_CONNS, "persistent connections")?,
        stats: stats(a, dest_attr::STATS64, dest_attr::STATS)?,
    };
    Ok((dest, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs_nl::consts::cmd_attr;

    /// Encodes with neli, then decodes the bytes with our parser, as the kernel would echo them.
    fn bytes_of(l: AttrList) -> Vec<u8> {
        use neli::ToBytes;
        let mut c = std::io::Cursor::new(Vec::new());
        l.into_genl().to_bytes(&mut c).unwrap();
        c.into_inner()
    }

    #[test]
    fn service_encoding_matches_the_kernel_layout() {
        let key = ServiceKey::tcp("10.0.0.1".parse::<IpAddr>().unwrap(), 80);
        let mut cfg = ServiceConfig::with_scheduler("sh");
        cfg.flags.persistent = true;
        cfg.flags.sched1 = true;
        cfg.timeout = 300;
        cfg.netmask = 0xffff_ff00;
        let b = bytes_of(service_full(&key, &cfg, &ServiceOptions::default()).unwrap());
        let a = Attrs::parse(&b).unwrap();
        assert_eq!(a.u16(svc_attr::AF, "").unwrap(), AF_INET);
        assert_eq!(a.u16(svc_attr::PROTOCOL, "").unwrap(), 6);
        assert_eq!(
            a.get(svc_attr::ADDR).unwrap(),
            &[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(a.get(svc_attr::PORT).unwrap(), &[0, 80]);
        assert_eq!(a.get(svc_attr::SCHED_NAME).unwrap(), b"sh\0");
        let f = a.get(svc_attr::FLAGS).unwrap();
        assert_eq!(f.len(), 8);
        assert_eq!(u32::from_ne_bytes(f[..4].try_into().unwrap()), 0x9);
        assert_eq!(u32::from_ne_bytes(f[4..].try_into().unwrap()), u32::MAX);
        assert_eq!(a.get(svc_attr::NETMASK).unwrap(), &[255, 255, 255, 0]);
        let ks = decode_service(&a).unwrap();
        assert_eq!(ks.service.key, key);
        assert_eq!(ks.service.config, cfg);
        assert_eq!(ks.options.pe_name, None);
    }

    #[test]
    fn ipv6_fwmark_service_and_tunnel_dest_round_trip() {
        let key = ServiceKey::Fwmark {
            family: Family::Inet6,
            mark: 7,
        };
        let mut cfg = ServiceConfig::with_scheduler("mh");
        cfg.netmask = 64;
        let opts = ServiceOptions {
            pe_name: Some("sip".into()),
        };
        let b = bytes_of(service_full(&key, &cfg, &opts).unwrap());
        let a = Attrs::parse(&b).unwrap();
        assert!(!a.has(svc_attr::ADDR));
        assert_eq!(a.get(svc_attr::NETMASK).unwrap(), &64u32.to_ne_bytes());
        let ks = decode_service(&a).unwrap();
        assert_eq!((ks.service.key, &ks.service.config), (key, &cfg));
        assert_eq!(ks.options, opts);

        let d = Destination {
            addr: "fd00::5".parse().unwrap(),
            port: 0,
            forward: Forward::Tunnel,
            weight: 3,
            u_thresh: 10,
            l_thresh: 5,
        };
        let dopts = DestOptions {
            tunnel: Tunnel {
                kind: TunnelKind::Gue,
                port: 6080,
                flags: Tunnel::CSUM,
            },
        };
        let mut outer = AttrList::new();
        outer
            .nested(cmd_attr::DEST, dest(&d, &dopts, true).unwrap())
            .unwrap();
        let b = bytes_of(outer);
        let top = Attrs::parse(&b).unwrap();
        let n = top.nested(cmd_attr::DEST, "").unwrap();
        assert_eq!(n.get(dest_attr::TUN_PORT).unwrap(), &6080u16.to_be_bytes());
        let (d2, st) = decode_dest(&n, Family::Inet6).unwrap();
        assert_eq!(d2, d);
        assert_eq!(st.options, dopts);
    }

    #[test]
    fn default_ipv6_netmask_is_a_full_prefix() {
        assert_eq!(
            netmask_to_wire(Family::Inet6, u32::MAX),
            128u32.to_ne_bytes()
        );
        assert_eq!(netmask_to_wire(Family::Inet, u32::MAX), [255; 4]);
    }
}
