//! Numbers of the kernel's IPVS generic netlink API (include/uapi/linux/ip_vs.h) and of the
//! generic netlink controller.

/// Generic netlink family name and version of IPVS.
pub const FAMILY_NAME: &str = "IPVS";
pub const FAMILY_VERSION: u8 = 1;

/// `IP_VS_VERSION_CODE` of every kernel since 2.6.x: 1.2.1.
pub const IPVS_VERSION_CODE: u32 = 0x01_02_01;

pub const AF_INET: u16 = libc::AF_INET as u16;
pub const AF_INET6: u16 = libc::AF_INET6 as u16;

/// Generic netlink controller (resolves family names to ids).
pub mod ctrl {
    pub const GENL_ID_CTRL: u16 = 0x10;
    pub const CMD_GETFAMILY: u8 = 3;
    pub const ATTR_FAMILY_ID: u16 = 1;
    pub const ATTR_FAMILY_NAME: u16 = 2;
    pub const VERSION: u8 = 2;
}

/// IPVS_CMD_*.
pub mod cmd {
    pub const NEW_SERVICE: u8 = 1;
    pub const SET_SERVICE: u8 = 2;
    pub const DEL_SERVICE: u8 = 3;
    pub const GET_SERVICE: u8 = 4;
    pub const NEW_DEST: u8 = 5;
    pub const SET_DEST: u8 = 6;
    pub const DEL_DEST: u8 = 7;
    pub const GET_DEST: u8 = 8;
    pub const SET_CONFIG: u8 = 12;
    pub const GET_CONFIG: u8 = 13;
    pub const GET_INFO: u8 = 15;
    pub const ZERO: u8 = 16;
    pub const FLUSH: u8 = 17;
}

/// IPVS_CMD_ATTR_*: top-level attributes of a request or reply.
pub mod cmd_attr {
    pub const SERVICE: u16 = 1;
    pub const DEST: u16 = 2;
    pub const TIMEOUT_TCP: u16 = 4;
    pub const TIMEOUT_TCP_FIN: u16 = 5;
    pub const TIMEOUT_UDP: u16 = 6;
}

/// IPVS_SVC_ATTR_*: inside CMD_ATTR_SERVICE.
pub mod svc_attr {
    /// u16 address family.
    pub const AF: u16 = 1;
    /// u16 IP protocol number.
    pub const PROTOCOL: u16 = 2;
    /// 16 bytes, `union nf_inet_addr` (an IPv4 address in the first 4 bytes).
    pub const ADDR: u16 = 3;
    /// be16.
    pub const PORT: u16 = 4;
    /// u32.
    pub const FWMARK: u16 = 5;
    /// NUL-terminated string, at most 15 characters.
    pub const SCHED_NAME: u16 = 6;
    /// `struct ip_vs_flags { u32 flags; u32 mask; }`.
    pub const FLAGS: u16 = 7;
    /// u32 seconds.
    pub const TIMEOUT: u16 = 8;
    /// be32 mask for IPv4; for IPv6 the prefix length as a native u32.
    pub const NETMASK: u16 = 9;
    /// Nested STATS_ATTR_* (u32 counters and rates, u64 bytes).
    pub const STATS: u16 = 10;
    /// NUL-terminated string (persistence engine, e.g. "sip").
    pub const PE_NAME: u16 = 11;
    /// Nested STATS_ATTR_*, all u64.
    pub const STATS64: u16 = 12;
}

/// IPVS_DEST_ATTR_*: inside CMD_ATTR_DEST.
pub mod dest_attr {
    pub const ADDR: u16 = 1;
    pub const PORT: u16 = 2;
    pub const FWD_METHOD: u16 = 3;
    pub const WEIGHT: u16 = 4;
    pub const U_THRESH: u16 = 5;
    pub const L_THRESH: u16 = 6;
    pub const ACTIVE_CONNS: u16 = 7;
    pub const INACT_CONNS: u16 = 8;
    pub const PERSIST_CONNS: u16 = 9;
    pub const STATS: u16 = 10;
    pub const ADDR_FAMILY: u16 = 11;
    pub const STATS64: u16 = 12;
    /// u8: IP_VS_CONN_F_TUNNEL_TYPE_{IPIP 0, GUE 1, GRE 2}.
    pub const TUN_TYPE: u16 = 13;
    /// be16.
    pub const TUN_PORT: u16 = 14;
    /// u16: IP_VS_TUNNEL_ENCAP_FLAG_{CSUM 1, REMCSUM 2} (0: no checksum).
    pub const TUN_FLAGS: u16 = 15;
}

/// IPVS_STATS_ATTR_*.
pub mod stats_attr {
    pub const CONNS: u16 = 1;
    pub const INPKTS: u16 = 2;
    pub const OUTPKTS: u16 = 3;
    pub const INBYTES: u16 = 4;
    pub const OUTBYTES: u16 = 5;
    pub const CPS: u16 = 6;
    pub const INPPS: u16 = 7;
    pub const OUTPPS: u16 = 8;
    pub const INBPS: u16 = 9;
    pub const OUTBPS: u16 = 10;
}

/// IPVS_INFO_ATTR_*.
pub mod info_attr {
    pub const VERSION: u16 = 1;
    pub const CONN_TAB_SIZE: u16 = 2;
}
