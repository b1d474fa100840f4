//! Errors of the IPVS netlink client, named after what the kernel meant by its errno.

use std::fmt;
use std::io;

use crate::model::ServiceKey;

/// What a request was doing, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    ResolveFamily,
    GetInfo,
    GetConfig,
    SetConfig,
    ListServices,
    GetService,
    AddService,
    EditService,
    DelService,
    ListDests,
    AddDest,
    EditDest,
    DelDest,
    Zero,
    Flush,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::ResolveFamily => "resolve the IPVS netlink family",
            Op::GetInfo => "get IPVS info",
            Op::GetConfig => "get IPVS timeouts",
            Op::SetConfig => "set IPVS timeouts",
            Op::ListServices => "list services",
            Op::GetService => "get service",
            Op::AddService => "add service",
            Op::EditService => "edit service",
            Op::DelService => "delete service",
            Op::ListDests => "list destinations",
            Op::AddDest => "add destination",
            Op::EditDest => "edit destination",
            Op::DelDest => "delete destination",
            Op::Zero => "zero counters",
            Op::Flush => "flush the table",
        })
    }
}

/// Why an IPVS request failed.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The "IPVS" generic netlink family does not exist (ENOENT when resolving it).
    #[error("this kernel has no IPVS (module ip_vs not loaded/built; `modprobe ip_vs`)")]
    NoIpvs,
    /// EPERM/EACCES: every IPVS command needs CAP_NET_ADMIN.
    #[error("{op}: permission denied: needs CAP_NET_ADMIN")]
    PermissionDenied { op: Op },
    /// EEXIST on NEW_SERVICE.
    #[error("Service already exists: {0}")]
    ServiceExists(ServiceKey),
    /// ESRCH: the service named in the request does not exist.
    #[error("No such service: {0}")]
    NoSuchService(ServiceKey),
    /// EEXIST on NEW_DEST.
    #[error("Destination already exists: {dest} in {service}")]
    DestExists { service: ServiceKey, dest: String },
    /// ENOENT on SET_DEST/DEL_DEST.
    #[error("No such destination: {dest} in {service}")]
    NoSuchDest { service: ServiceKey, dest: String },
    /// ENOENT on NEW/SET_SERVICE: no module ip_vs_<name> (or, when one was named, no
    /// persistence engine module ip_vs_pe_<name>).
    #[error("Scheduler not found: {scheduler}{}", pe_note(.pe_name))]
    SchedulerNotFound {
        scheduler: String,
        pe_name: Option<String>,
    },
    /// ERANGE on NEW/SET_DEST because of the weight (the kernel reads it as a signed int).
    #[error("Weight {0} out of range (0..=2147483647)")]
    WeightRange(i64),
    /// ERANGE on NEW/SET_DEST because the lower threshold is above the upper one.
    #[error("Lower threshold {lower} above upper threshold {upper}")]
    ThresholdRange { lower: u32, upper: u32 },
    /// EINVAL: the kernel refused the request's contents.
    #[error("{op}: invalid argument ({hint})")]
    Invalid { op: Op, hint: &'static str },
    /// EAFNOSUPPORT: the family is not enabled in this kernel (IPv6 disabled?).
    #[error("{op}: address family not supported by this kernel's IPVS (IPv6 disabled?)")]
    FamilyNotSupported { op: Op },
    /// Any other errno.
    #[error("{op}: {}", io::Error::from_raw_os_error(*.errno))]
    Kernel { op: Op, errno: i32 },
    /// A reply that does not parse as the API says.
    #[error("unexpected IPVS netlink reply: {0}")]
    Decode(String),
    /// Socket or protocol trouble below the IPVS API.
    #[error("netlink: {0}")]
    Netlink(String),
}

fn pe_note(pe: &Option<String>) -> String {
    match pe {
        Some(p) => format!(" (or persistence engine {p})"),
        None => String::new(),
    }
}

impl IpvsError {
    /// The errno the kernel returned, where there was one.
    pub fn errno(&self) -> Option<i32> {
        Some(match self {
            IpvsError::NoIpvs => libc::ENOENT,
            IpvsError::PermissionDenied { .. } => libc::EPERM,
            IpvsError::ServiceExists(_) | IpvsError::DestExists { .. } => libc::EEXIST,
            IpvsError::NoSuchService(_) => libc::ESRCH,
            IpvsError::NoSuchDest { .. } | IpvsError::SchedulerNotFound { .. } => libc::ENOENT,
            IpvsError::WeightRange(_) | IpvsError::ThresholdRange { .. } => libc::ERANGE,
            IpvsError::Invalid { .. } => libc::EINVAL,
            IpvsError::FamilyNotSupported { .. } => libc::EAFNOSUPPORT,
            IpvsError::Kernel { errno, .. } => *errno,
            IpvsError::Decode(_) | IpvsError::Netlink(_) => return None,
        })
    }
}

/// What the failing request was about, to turn an errno into a typed error.
pub(crate) struct Ctx<'a> {
    pub op: Op,
    pub service: Option<&'a ServiceKey>,
    pub scheduler: Option<&'a str>,
    pub pe_name: Option<&'a str>,
    /// (addr:port as ipvsadm prints it, weight, lower, upper threshold)
    pub dest: Option<(String, u32, u32, u32)>,
}

impl<'a> Ctx<'a> {
    pub fn op(op: Op) -> Self {
        Ctx {
            op,
            service: None,
            scheduler: None,
            pe_name: None,
            dest: None,
        }
    }

    pub fn service(op: Op, key: &'a ServiceKey) -> Self {
        Ctx {
            service: Some(key),
            ..Ctx::op(op)
        }
    }

    /// Maps a kernel errno (positive) to the error it means for this request.
    pub fn errno(&self, errno: i32) -> IpvsError {
        let op = self.op;
        match errno {
            libc::EPERM | libc::EACCES => return IpvsError::PermissionDenied { op },
            libc::EAFNOSUPPORT => return IpvsError::FamilyNotSupported { op },
            _ => {}
        }
        if op == Op::ResolveFamily && errno == libc::ENOENT {
            return IpvsError::NoIpvs;
        }
        if let Some(key) = self.service {
            let dest_name = || self.dest.as_ref().map(|d| d.0.clone()).unwrap_or_default();
            match (errno, op) {
                (libc::ESRCH, _) => return IpvsError::NoSuchService(*key),
                (libc::EEXIST, Op::AddService) => return IpvsError::ServiceExists(*key),
                (libc::EEXIST, Op::AddDest) => {
                    return IpvsError::DestExists {
                        service: *key,
                        dest: dest_name(),
                    }
                }
                (libc::ENOENT, Op::AddService | Op::EditService) => {
                    return IpvsError::SchedulerNotFound {
                        scheduler: self.scheduler.unwrap_or_default().to_string(),
                        pe_name: self.pe_name.map(str::to_string),
                    }
                }
                (libc::ENOENT, Op::EditDest | Op::DelDest) => {
                    return IpvsError::NoSuchDest {
                        service: *key,
                        dest: dest_name(),
                    }
                }
                (libc::ERANGE, Op::AddDest | Op::EditDest) => {
                    if let Some((_, weight, lower, upper)) = &self.dest {
                        if lower > upper {
                            return IpvsError::ThresholdRange {
                                lower: *lower,
                                upper: *upper,
                            };
                        }
                        return IpvsError::WeightRange(*weight as i64);
                    }
                }
                _ => {}
            }
        }
        if errno == libc::EINVAL {
            let hint = match op {
                Op::AddService | Op::EditService => {
                    "bad service: protocol, netmask (IPv6: prefix length 1..128), flags or name"
                }
                Op::AddDest | Op::EditDest | Op::DelDest => {
                    "bad destination: address, forwarding method (only tunnel may mix families) \
                     or tunnel port"
                }
                Op::SetConfig => "timeout out of range",
                _ => "malformed request",
            };
            return IpvsError::Invalid { op, hint };
        }
        IpvsError::Kernel { op, errno }
    }
}
