//! Host and service names, for the places where ipvsadm uses them: names on the command line
//! (`-t www.example.com:http`) and listings without `-n`.
//!
//! ipvsadm calls the C library (`gethostbyname`, `gethostbyaddr`, `getservbyname`,
//! `getservbyport`), so its names come from NSS: `/etc/hosts` and DNS for hosts,
//! `/etc/services` for ports. [`SystemResolver`] asks the same C library the same questions
//! (`getaddrinfo`/`getnameinfo` for hosts, `getservbyname`/`getservbyport` for services), so
//! a listing without `-n` prints what ipvsadm prints on the same machine: the address when a
//! reverse lookup fails (ipvsadm falls back to `inet_ntop`), the port number when
//! `/etc/services` has no name for it (and always for fwmark services, whose protocol is 0).
//! Like ipvsadm, a listing without `-n` waits for DNS when DNS is configured but slow; `-n`
//! never asks anything.
//!
//! [`NumericResolver`] resolves nothing; [`StaticResolver`] answers from fixed tables (tests,
//! or a services file read once).
use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::sync::Mutex;

use crate::model::Protocol;

/// The name lookups ipvsadm makes.
pub trait Resolver {
    /// `gethostbyname`: the first IPv4 address of a host name.
    fn host_to_ipv4(&self, name: &str) -> Option<Ipv4Addr>;
    /// `gethostbyaddr`: the name of an address; `None` when the lookup fails.
    fn addr_to_host(&self, addr: &IpAddr) -> Option<String>;
    /// `getservbyname(name, "tcp"|"udp"|"sctp")`.
    fn service_to_port(&self, name: &str, proto: Protocol) -> Option<u16>;
    /// `getservbyport(port, "tcp"|"udp"|"sctp")`.
    fn port_to_service(&self, port: u16, proto: Protocol) -> Option<String>;
}

fn proto_name(p: Protocol) -> &'static CStr {
    match p {
        Protocol::Tcp => c"tcp",
        Protocol::Udp => c"udp",
        Protocol::Sctp => c"sctp",
    }
}

/// The C library's answers (NSS), as ipvsadm gets them.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

/// `getservby*` return a pointer into static storage: one caller at a time.
static SERVENT_LOCK: Mutex<()> = Mutex::new(());

impl Resolver for SystemResolver {
    fn host_to_ipv4(&self, name: &str) -> Option<Ipv4Addr> {
        if name.is_empty() || name.contains('\0') {
            return None;
        }
        (name, 0u16)
            .to_socket_addrs()
            .ok()?
            .find_map(|a| match a.ip() {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
    }

    fn addr_to_host(&self, addr: &IpAddr) -> Option<String> {
        let mut host = [0 as libc::c_char; 1025];
        // SAFETY: the sockaddr is fully initialised and outlives the call; `host` is a
        // writable buffer of the length passed; no service buffer is requested.
        let rc = unsafe {
            match addr {
                IpAddr::V4(a) => {
                    let mut sin: libc::sockaddr_in = std::mem::zeroed();
                    sin.sin_family = libc::AF_INET as libc::sa_family_t;
                    sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
                    libc::getnameinfo(
                        &sin as *const libc::sockaddr_in as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                        host.as_mut_ptr(),
                        host.len() as libc::socklen_t,
                        std::ptr::null_mut(),
                        0,
                        libc::NI_NAMEREQD,
                    )
                }
                IpAddr::V6(a) => {
                    let mut sin6: libc::sockaddr_in6 = std::mem::zeroed();
                    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                    sin6.sin6_addr.s6_addr = a.octets();
                    libc::getnameinfo(
                        &sin6 as *const libc::sockaddr_in6 as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                        host.as_mut_ptr(),
                        host.len() as libc::socklen_t,
                        std::ptr::null_mut(),
                        0,
                        libc::NI_NAMEREQD,
                    )
                }
            }
        };
        if rc != 0 {
            return None;
        }
        // SAFETY: on success getnameinfo wrote a NUL-terminated string into `host`.
        let name = unsafe { CStr::from_ptr(host.as_ptr()) };
        Some(name.to_string_lossy().into_owned())
    }

    fn service_to_port(&self, name: &str, proto: Protocol) -> Option<u16> {
        let cname = CString::new(name).ok()?;
        let _guard = SERVENT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: both arguments are NUL-terminated; the result points into libc's static
        // storage, read before the lock is released.
        unsafe {
            let se = libc::getservbyname(cname.as_ptr(), proto_name(proto).as_ptr());
            if se.is_null() {
                return None;
            }
            Some(u16::from_be((*se).s_port as u16))
        }
    }

    fn port_to_service(&self, port: u16, proto: Protocol) -> Option<String> {
        let _guard = SERVENT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as in service_to_port.
        unsafe {
            let se = libc::getservbyport(port.to_be() as libc::c_int, proto_name(proto).as_ptr());
            if se.is_null() || (*se).s_name.is_null() {
                return None;
            }
            Some(CStr::from_ptr((*se).s_name).to_string_lossy().into_owned())
        }
    }
}

/// Resolves nothing: every lookup fails, so names on the command line are refused and
/// listings print numbers (ipvsadm's output when resolution fails).
#[derive(Clone, Copy, Debug, Default)]
pub struct NumericResolver;

impl Resolver for NumericResolver {
    fn host_to_ipv4(&self, _: &str) -> Option<Ipv4Addr> {
        None
    }
    fn addr_to_host(&self, _: &IpAddr) -> Option<String> {
        None
    }
    fn service_to_port(&self, _: &str, _: Protocol) -> Option<u16> {
        None
    }
    fn port_to_service(&self, _: u16, _: Protocol) -> Option<String> {
        None
    }
}

/// Fixed answers: hosts as (address, name) pairs, services in `/etc/services` syntax.
#[derive(Clone, Debug, Default)]
pub struct StaticResolver {
    hosts: Vec<(IpAddr, String)>,
    /// (name or alias, port, protocol name), in file order.
    services: Vec<(String, u16, String)>,
    /// (official name, port, protocol name), in file order.
    official: Vec<(String, u16, String)>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds services from text in `/etc/services` syntax
    /// (`name port/protocol [aliases...] [# comment]`); the first entry for a port wins, as
    /// with the C library's files backend.
    pub fn with_services(mut self, text: &str) -> Self {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(name), Some(pp)) = (words.next(), words.next()) else {
                continue;
            };
            let Some((port, proto)) = pp.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            self.official
                .push((name.to_string(), port, proto.to_string()));
            self.services
                .push((name.to_string(), port, proto.to_string()));
            for alias in words {
                self.services
                    .push((alias.to_string(), port, proto.to_string()));
            }
        }
        self
    }

    /// Adds a host (the first name given for an address is the one a reverse lookup returns).
    pub fn with_host(mut self, addr: IpAddr, name: &str) -> Self {
        self.hosts.push((addr, name.to_string()));
        self
    }
}

fn proto_str(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

impl Resolver for StaticResolver {
    fn host_to_ipv4(&self, name: &str) -> Option<Ipv4Addr> {
        self.hosts.iter().find_map(|(a, n)| match a {
            IpAddr::V4(v4) if n == name => Some(*v4),
            _ => None,
        })
    }

    fn addr_to_host(&self, addr: &IpAddr) -> Option<String> {
        self.hosts
            .iter()
            .find(|(a, _)| a == addr)
            .map(|(_, n)| n.clone())
    }

    fn service_to_port(&self, name: &str, proto: Protocol) -> Option<u16> {
        self.services
            .iter()
            .find(|(n, _, p)| n == name && p == proto_str(proto))
            .map(|(_, port, _)| *port)
    }

    fn port_to_service(&self, port: u16, proto: Protocol) -> Option<String> {
        self.official
            .iter()
            .find(|(_, pt, p)| *pt == port && p == proto_str(proto))
            .map(|(n, _, _)| n.clone())
    }
}
