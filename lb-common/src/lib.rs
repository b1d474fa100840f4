//! Map layouts shared by the BPF programs (`lb-ebpf`) and userspace (`lb-user`).
//!
//! Every key and value that crosses the BPF boundary is defined here once, `#[repr(C)]`,
//! with explicit padding, so the two sides cannot drift apart. Addresses and ports are kept
//! in network byte order exactly as they appear in packets: the BPF side never swaps bytes
//! on the hot path; userspace converts with `u32::from_be`/`to_be` where it needs numbers.
#![no_std]

/// IP protocol numbers the fast path handles.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Program names (the entry functions of lb-ebpf), used by the loader to find them.
pub mod prog_names {
    /// The balancer at the XDP hook.
    pub const XDP: &str = "xvs_xdp";
    /// The same balancer at the tc (tcx ingress) hook.
    pub const TC: &str = "xvs_tc";
    /// The pass-through XDP program for the peers of veth devices.
    pub const XDP_PASS: &str = "xvs_pass";
    /// A pass-through tc classifier (the benchmark's floor for `xvs_tc`; never attached).
    pub const TC_PASS: &str = "xvs_tc_pass";
    /// Socket-level balancing of the node's own clients (cgroup hooks and sockops).
    pub const CONNECT4: &str = "xvs_connect4";
    pub const SENDMSG4: &str = "xvs_sendmsg4";
    pub const RECVMSG4: &str = "xvs_recvmsg4";
    pub const GETPEERNAME4: &str = "xvs_getpeername4";
    pub const SOCKOPS: &str = "xvs_sockops";
    /// Every program of the object (a test in lb-user checks the object against it).
    pub const ALL: [&str; 9] = [
        XDP,
        TC,
        XDP_PASS,
        TC_PASS,
        CONNECT4,
        SENDMSG4,
        RECVMSG4,
        GETPEERNAME4,
        SOCKOPS,
    ];
}

/// Map names, used by the loader to find and pin them.
pub mod map_names {
    pub const SERVICES: &str = "SERVICES";
    pub const SCHED_SLOTS: &str = "SCHED_SLOTS";
    pub const DESTS: &str = "DESTS";
    pub const DEST_STATS: &str = "DEST_STATS";
    pub const BACKENDS: &str = "BACKENDS";
    pub const CONNS: &str = "CONNS";
    pub const REPLIES: &str = "REPLIES";
    pub const CONFIG: &str = "CONFIG";
    pub const TX_PORTS: &str = "TX_PORTS";
    pub const PATH_STATS: &str = "PATH_STATS";
    pub const SOCK_CONNS: &str = "SOCK_CONNS";
    pub const SOCK_REV: &str = "SOCK_REV";
    pub const NEIGH_WANTED: &str = "NEIGH_WANTED";
    pub const TC_BEHIND: &str = "TC_BEHIND";
    pub const FRAGS: &str = "FRAGS";
    /// Every map of the object, all pinned (a test in lb-user checks the object against it).
    pub const ALL: [&str; 15] = [
        SERVICES,
        SCHED_SLOTS,
        DESTS,
        DEST_STATS,
        BACKENDS,
        CONNS,
        REPLIES,
        CONFIG,
        TX_PORTS,
        PATH_STATS,
        SOCK_CONNS,
        SOCK_REV,
        NEIGH_WANTED,
        TC_BEHIND,
        FRAGS,
    ];
}

/// Scheduler kinds the fast path walks. rr and wrr are both a precomputed period walked by
/// an atomic cursor; sh is a 256-bucket table indexed by the kernel's source hash.
pub const SCHED_RR: u8 = 0;
pub const SCHED_WRR: u8 = 1;
pub const SCHED_SH: u8 = 2;

/// Service flag: sh hashes the client's source port too (ipvsadm `-b sh-port`, SCHED2).
pub const SVC_F_SH_PORT: u8 = 1;

/// Number of buckets of the sh table (IP_VS_SH_TAB_BITS = 8 in the kernel).
pub const SH_TAB_SIZE: u32 = 256;

/// A transport endpoint: (address, port, protocol). Keys SERVICES (the VIP side) and
/// BACKENDS (the real-server side). Generic over the address so the same layout serves
/// IPv4 (`u32`, the default) and, later, IPv6 (`[u32; 4]`) maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct L4Addr<A = u32> {
    /// Address, network byte order.
    pub addr: A,
    /// Port, network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of SERVICES: how to schedule a new connection to this VIP.
///
/// Userspace replaces the whole value when the schedule changes (a hash-map update is atomic
/// for readers), pointing at a freshly written table region; the old region is freed later.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SvcValue {
    /// Index into per-service userspace state; stable for the service's life.
    pub svc_id: u32,
    pub sched: u8,
    pub flags: u8,
    pub _pad: u16,
    /// Offset of this service's table in SCHED_SLOTS.
    pub table_off: u32,
    /// Length of the table (rr/wrr: one period; sh: 256; 0: no destination available).
    pub table_len: u32,
    /// rr/wrr: number of picks made from this table (atomically incremented by BPF).
    pub cursor: u64,
}

/// No destination: the scheduler found none available for this slot.
pub const NO_DEST: u32 = u32::MAX;

/// One entry of SCHED_SLOTS.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SchedSlot {
    /// Index into DESTS, or NO_DEST.
    pub dest_id: u32,
    /// Scheduler state after this pick (wrr: the current weight cw), so userspace can carry
    /// the kernel's state across a table change or a daemon restart.
    pub aux: u32,
}

/// DEST_F_LIVE: the destination is in its service's list (weight 0 included). Cleared when it
/// is deleted, which expires its connections on their next packet (expire_nodest_conn=1).
pub const DEST_F_LIVE: u8 = 1;

/// Value of DESTS (array indexed by destination id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DestValue {
    /// Real server address, network byte order.
    pub addr: u32,
    /// Real server port, network byte order.
    pub port: u16,
    pub flags: u8,
    pub _pad: u8,
    /// Bumped every time the id is reused, so a connection can tell its destination is gone.
    pub gen: u32,
    pub svc_id: u32,
}

/// Per-destination counters (per-CPU array indexed by destination id). Service counters
/// are the sum over its destinations, folded in userspace: one map write per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct DestStats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

/// A packet's flow tuple. Keys CONNS (client -> VIP, as the client sends it) and REPLIES
/// (real server -> client, as the server sends it). Generic over the address like `L4Addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey<A = u32> {
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// TCP connection states, numbered as the kernel's IP_VS_TCP_S_* (ip_vs.h).
pub mod tcp_state {
    pub const NONE: u8 = 0;
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT: u8 = 4;
    pub const TIME_WAIT: u8 = 5;
    pub const CLOSE: u8 = 6;
    pub const CLOSE_WAIT: u8 = 7;
    pub const LAST_ACK: u8 = 8;
    pub const LISTEN: u8 = 9;
    pub const SYNACK: u8 = 10;
    /// Number of TCP states.
    pub const LAST: u8 = 11;
}

/// The state of every UDP connection (the kernel's IP_VS_UDP_S_NORMAL), kept after the TCP
/// states so one timeout array serves both protocols.
pub const UDP_STATE: u8 = 12;
/// Entries of `Config::timeouts_ns`.
pub const N_TIMEOUTS: usize = 16;

/// Value of CONNS: where the connection goes and its state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnValue {
    pub dest_id: u32,
    pub dest_gen: u32,
    /// Real server address and port, network byte order.
    pub rip: u32,
    pub rport: u16,
    /// tcp_state::* or UDP_STATE.
    pub state: u8,
    pub flags: u8,
    /// bpf_ktime_get_coarse_ns() of the last packet, either direction.
    pub last_seen_ns: u64,
}

/// ConnValue flag: a flow kernel IPVS already held when the fast path took its service over
/// (mirror mode). Its packets go to the kernel untouched until it goes idle, so kernel IPVS
/// (and its conntrack entries) keep serving it; new flows are the fast path's.
pub const CONN_F_KERNEL: u8 = 1;

/// Value of REPLIES: what a reply's source is rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReplyValue {
    pub vip: u32,
    pub vport: u16,
    pub _pad: u16,
}

/// Key of FRAGS: the IP fragments of one datagram, as its packets carry them (before any
/// rewrite). Every fragment of a datagram has the same source, destination, IP id and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragKey {
    pub saddr: u32,
    pub daddr: u32,
    /// IP identification, network byte order.
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of FRAGS: what the first fragment's L4 header said, so the datagram's later
/// fragments (which have no L4 header) find the same connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragValue {
    /// Ports, network byte order.
    pub sport: u16,
    pub dport: u16,
    /// TCP flags of the first fragment (0 for UDP).
    pub tcp_flags: u8,
    pub _pad: [u8; 3],
}

/// Entries of FRAGS (an LRU: datagrams in flight, oldest forgotten first).
pub const FRAGS_ENTRIES: u32 = 8192;

/// Config flag: forward rewritten packets with a FIB lookup + redirect (else XDP_PASS).
pub const CFG_F_FIB_REDIRECT: u32 = 1;

/// Value of CONFIG (array with one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Idle timeout per connection state (tcp_state::* and UDP_STATE), nanoseconds.
    pub timeouts_ns: [u64; N_TIMEOUTS],
    pub flags: u32,
    pub _pad: u32,
    /// The network namespace whose processes the socket hooks balance (its cookie, as
    /// bpf_get_netns_cookie and SO_NETNS_COOKIE give it; 0: none). The cgroup hooks see every
    /// namespace's sockets; only this one's are the node's.
    pub netns_cookie: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeouts_ns: default_timeouts_ns(),
            flags: CFG_F_FIB_REDIRECT,
            _pad: 0,
            netns_cookie: 0,
        }
    }
}

/// Key of NEIGH_WANTED: a next hop the XDP program found without a neighbour entry (XDP cannot
/// have the kernel resolve one); the daemon makes it a managed neighbour.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NeighKey {
    pub ifindex: u32,
    /// IPv4 address, network byte order.
    pub addr: u32,
}

/// Key of the socket-level balancer's maps: a socket (its cookie) and an endpoint. In
/// SOCK_CONNS the endpoint is the VIP the socket asked for; in SOCK_REV the real server it was
/// sent to (so replies and getpeername() can name the VIP again).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SockKey {
    pub cookie: u64,
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of SOCK_CONNS: one connection of a process on the node to a VIP, balanced at the
/// socket (connect()/sendmsg()) rather than per packet. `conn` is kept like a CONNS entry
/// (destination, kernel TCP state, last use); `client` is the socket's own address once bound.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockConnValue {
    pub conn: ConnValue,
    pub client_addr: u32,
    pub client_port: u16,
    pub _pad: u16,
}

/// IPVS's default timeouts (ip_vs_proto_tcp.c / ip_vs_proto_udp.c), in seconds.
pub const fn default_timeouts_s() -> [u32; N_TIMEOUTS] {
    let mut t = [0u32; N_TIMEOUTS];
    t[tcp_state::NONE as usize] = 2;
    t[tcp_state::ESTABLISHED as usize] = 900;
    t[tcp_state::SYN_SENT as usize] = 120;
    t[tcp_state::SYN_RECV as usize] = 60;
    t[tcp_state::FIN_WAIT as usize] = 120;
    t[tcp_state::TIME_WAIT as usize] = 120;
    t[tcp_state::CLOSE as usize] = 10;
    t[tcp_state::CLOSE_WAIT as usize] = 60;
    t[tcp_state::LAST_ACK as usize] = 30;
    t[tcp_state::LISTEN as usize] = 120;
    t[tcp_state::SYNACK as usize] = 120;
    t[UDP_STATE as usize] = 300;
    t
}

pub const fn default_timeouts_ns() -> [u64; N_TIMEOUTS] {
    let s = default_timeouts_s();
    let mut t = [0u64; N_TIMEOUTS];
    let mut i = 0;
    while i < N_TIMEOUTS {
        t[i] = s[i] as u64 * 1_000_000_000;
        i += 1;
    }
    t
}

/// Indexes of PATH_STATS (per-CPU array of u64): what the program did with packets, for
/// tests, benchmarks and metrics.
pub mod path {
    pub const PASS_NOT_IPV4: u32 = 0;
    pub const PASS_NOT_VIP: u32 = 1;
    pub const PASS_FRAGMENT: u32 = 2;
    pub const PASS_IP_OPTIONS: u32 = 3;
    pub const PASS_TRUNCATED: u32 = 4;
    pub const PASS_OTHER_PROTO: u32 = 5;
    pub const PASS_NO_DEST: u32 = 6;
    pub const PASS_TCP_NOT_SYN: u32 = 7;
    pub const FWD_NEW: u32 = 8;
    pub const FWD_ESTABLISHED: u32 = 9;
    pub const REPLY: u32 = 10;
    pub const TX_REDIRECT: u32 = 11;
    pub const TX_PASS: u32 = 12;
    pub const CONN_EXPIRED: u32 = 13;
    pub const CONN_NODEST: u32 = 14;
    pub const CONN_REUSED: u32 = 15;
    pub const REPLY_NO_CONN: u32 = 16;
    pub const INSERT_FAILED: u32 = 17;
    pub const PASS_KERNEL_FLOW: u32 = 18;
    /// Failed validation (IP version or header length, total length against the frame, TCP
    /// data offset, UDP length): passed untouched, the kernel drops it as it would anyway.
    pub const PASS_MALFORMED: u32 = 19;
    /// A new connection refused because the connection table is full (dropped, as kernel IPVS
    /// drops a packet whose connection it cannot allocate). Established ones are never evicted.
    pub const DROP_TABLE_FULL: u32 = 20;
    /// tc: forwarded with bpf_redirect_neigh (the kernel resolves the next hop's MAC).
    pub const TX_REDIRECT_NEIGH: u32 = 21;
    /// A process on the node connected (or sent) to a VIP: scheduled at the socket.
    pub const SOCK_NEW: u32 = 22;
    /// A UDP socket sent to a VIP again: its connection's destination.
    pub const SOCK_ESTABLISHED: u32 = 23;
    /// A process on the node connected to a VIP with no destination available.
    pub const SOCK_NO_DEST: u32 = 24;
    /// The socket table is full: the connection goes to the VIP unbalanced.
    pub const SOCK_TABLE_FULL: u32 = 25;
    /// XDP: the packet's L4 checksum looks like a CHECKSUM_PARTIAL seed (a local sender's
    /// packet on a virtual device); passed untouched to the tc program behind, which sees
    /// the skb's checksum state and rewrites it correctly.
    pub const PASS_CSUM_PARTIAL: u32 = 26;
    /// A non-first IP fragment balanced like the first fragment of its datagram (FRAGS). A
    /// non-first fragment whose first fragment was not seen counts PASS_FRAGMENT (2).
    pub const FWD_FRAGMENT: u32 = 27;
    /// An ICMP error (destination unreachable, source quench, time exceeded) about a reply of
    /// a connection, from the client's side: translated and sent to the real server.
    pub const ICMP_TO_REAL: u32 = 28;
    /// An ICMP error about a packet sent to a real server, from the real server's side:
    /// translated and sent to the client as coming from the VIP.
    pub const ICMP_TO_CLIENT: u32 = 29;
    /// A reply (or an ICMP error toward a client) with TTL <= 1: passed untouched, so the
    /// kernel's time-exceeded goes to its sender on the real servers' side.
    pub const PASS_TTL_EXPIRED: u32 = 30;
    /// A packet to a VIP with TTL <= 1, balanced and sent on with TTL 1 (not expired here).
    pub const FWD_TTL_KEPT: u32 = 31;
    pub const N: u32 = 32;

    /// Every defined index with the name metrics and reports use for it (lower case,
    /// underscores), in index order.
    pub const NAMES: [(u32, &str); 26] = [
        (PASS_NOT_IPV4, "pass_not_ipv4"),
        (PASS_NOT_VIP, "pass_not_vip"),
        (PASS_FRAGMENT, "pass_fragment"),
        (PASS_IP_OPTIONS, "pass_ip_options"),
        (PASS_TRUNCATED, "pass_truncated"),
        (PASS_OTHER_PROTO, "pass_other_proto"),
        (PASS_NO_DEST, "pass_no_dest"),
        (PASS_TCP_NOT_SYN, "pass_tcp_not_syn"),
        (FWD_NEW, "fwd_new"),
        (FWD_ESTABLISHED, "fwd_established"),
        (REPLY, "reply"),
        (TX_REDIRECT, "tx_redirect"),
        (TX_PASS, "tx_pass"),
        (CONN_EXPIRED, "conn_expired"),
        (CONN_NODEST, "conn_nodest"),
        (CONN_REUSED, "conn_reused"),
        (REPLY_NO_CONN, "reply_no_conn"),
        (INSERT_FAILED, "insert_failed"),
        (PASS_KERNEL_FLOW, "pass_kernel_flow"),
        (PASS_MALFORMED, "pass_malformed"),
        (DROP_TABLE_FULL, "drop_table_full"),
        (TX_REDIRECT_NEIGH, "tx_redirect_neigh"),
        (SOCK_NEW, "sock_new"),
        (SOCK_ESTABLISHED, "sock_established"),
        (SOCK_NO_DEST, "sock_no_dest"),
        (SOCK_TABLE_FULL, "sock_table_full"),
    ];
}

/// The kernel's TCP state table for NAT connections (tcp_states in ip_vs_proto_tcp.c):
/// `[direction][event][state] -> next state`. Direction 0 is client->server (INPUT),
/// 1 is server->client (OUTPUT). Events: 0 syn, 1 fin, 2 ack, 3 rst (checked in the
/// kernel's order rst, syn, fin, ack).
pub const TCP_STATES: [[[u8; 11]; 4]; 2] = {
    use tcp_state::*;
    const S_ES: u8 = ESTABLISHED;
    const S_SS: u8 = SYN_SENT;
    const S_SR: u8 = SYN_RECV;
    const S_FW: u8 = FIN_WAIT;
    const S_TW: u8 = TIME_WAIT;
    const S_CL: u8 = CLOSE;
    const S_CW: u8 = CLOSE_WAIT;
    const S_LA: u8 = LAST_ACK;
    const S_LI: u8 = LISTEN;
    [
        // INPUT: sNO, sES, sSS, sSR, sFW, sTW, sCL, sCW, sLA, sLI, sSA
        [
            [
                S_SR, S_ES, S_ES, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR, S_SR,
            ], // syn
            [
                S_CL, S_CW, S_SS, S_TW, S_TW, S_TW, S_CL, S_CW, S_LA, S_LI, S_TW,
            ], // fin
            [
                S_CL, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_CL, S_LI, S_ES,
            ], // ack
            [
                S_CL, S_CL, S_CL, S_SR, S_CL, S_CL, S_CL, S_CL, S_LA, S_LI, S_SR,
            ], // rst
        ],
        // OUTPUT
        [
            [
                S_SS, S_ES, S_SS, S_SR, S_SS, S_SS, S_SS, S_SS, S_SS, S_LI, S_SR,
            ], // syn
            [
                S_TW, S_FW, S_SS, S_TW, S_FW, S_TW, S_CL, S_TW, S_LA, S_LI, S_TW,
            ], // fin
            [
                S_ES, S_ES, S_SS, S_ES, S_FW, S_TW, S_CL, S_CW, S_LA, S_ES, S_ES,
            ], // ack
            [
                S_CL, S_CL, S_SS, S_CL, S_CL, S_TW, S_CL, S_CL, S_CL, S_CL, S_CL,
            ], // rst
        ],
    ]
};

/// The kernel's sh hash: `hash_32(v, 8)` with the golden-ratio multiplier (include/linux/hash.h).
#[inline(always)]
pub const fn sh_hash(host_order_addr: u32, host_order_port: u16) -> u32 {
    (host_order_port as u32)
        .wrapping_add(host_order_addr)
        .wrapping_mul(0x61C8_8647)
        >> 24
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], Copy, made only of integers with explicit padding
    // fields, so every bit pattern is valid.
    unsafe impl aya::Pod for L4Addr {}
    unsafe impl aya::Pod for SvcValue {}
    unsafe impl aya::Pod for SchedSlot {}
    unsafe impl aya::Pod for DestValue {}
    unsafe impl aya::Pod for DestStats {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for ConnValue {}
    unsafe impl aya::Pod for ReplyValue {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for SockKey {}
    unsafe impl aya::Pod for NeighKey {}
    unsafe impl aya::Pod for SockConnValue {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(core::mem::size_of::<L4Addr>(), 8);
        assert_eq!(core::mem::size_of::<SvcValue>(), 24);
        assert_eq!(core::mem::size_of::<SchedSlot>(), 8);
        assert_eq!(core::mem::size_of::<DestValue>(), 16);
        assert_eq!(core::mem::size_of::<DestStats>(), 40);
        assert_eq!(core::mem::size_of::<FlowKey>(), 16);
        assert_eq!(core::mem::size_of::<ConnValue>(), 24);
        assert_eq!(core::mem::size_of::<ReplyValue>(), 8);
        assert_eq!(core::mem::size_of::<Config>(), 144);
        assert_eq!(core::mem::size_of::<SockKey>(), 16);
        assert_eq!(core::mem::size_of::<SockConnValue>(), 32);
        assert_eq!(core::mem::size_of::<FragKey>(), 12);
        assert_eq!(core::mem::size_of::<FragValue>(), 8);
    }

    /// Every verdict has a distinct name, listed at its own index (a new verdict is added to
    /// `path::NAMES` with the next index, or this fails).
    #[test]
    fn every_path_verdict_has_a_name() {
        for (i, (idx, name)) in path::NAMES.iter().enumerate() {
            assert_eq!(*idx as usize, i, "{name}");
            assert!(*idx < path::N);
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert!(path::NAMES[..i].iter().all(|(_, n)| n != name), "{name}");
        }
        assert_eq!(path::NAMES.last().unwrap().0, path::SOCK_TABLE_FULL);
    }

    #[test]
    fn sh_hash_matches_reference_example() {
        // ipvs-semantics.md: client 10.0.0.1 without port lands in bucket 39.
        assert_eq!(sh_hash(0x0a00_0001, 0), 39);
    }
}
