//! The maps the programs use. Sizes here are placeholders: the loader sets every
//! max_entries from its configuration before loading.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    Config, ConnValue, DestStats, DestValue, FlowKey, FragKey, FragValue, L4Addr, NeighKey,
    ReplyValue, SchedSlot, SockConnValue, SockKey, SvcValue, FRAGS_ENTRIES,
};

/// VIP:port/proto -> how to schedule new connections.
#[map(name = "SERVICES")]
pub static SERVICES: HashMap<L4Addr, SvcValue> = HashMap::with_max_entries(1024, 0);

/// Precomputed scheduler tables of all services, one region per service.
#[map(name = "SCHED_SLOTS")]
pub static SCHED_SLOTS: Array<SchedSlot> = Array::with_max_entries(1024, 0);

/// Destinations by id.
#[map(name = "DESTS")]
pub static DESTS: Array<DestValue> = Array::with_max_entries(1024, 0);

/// Per-destination counters, per CPU.
#[map(name = "DEST_STATS")]
pub static DEST_STATS: PerCpuArray<DestStats> = PerCpuArray::with_max_entries(1024, 0);

/// Real-server endpoints (addr, port, proto): a packet from one of these may be a reply.
/// Keeps the reply lookup off the path of unrelated traffic.
#[map(name = "BACKENDS")]
pub static BACKENDS: HashMap<L4Addr, u32> = HashMap::with_max_entries(1024, 0);

/// Connections, keyed as the client sends them (client -> VIP). A plain (preallocated) hash,
/// not an LRU: a full table refuses new connections rather than evicting live ones; userspace
/// reclaims expired entries.
#[map(name = "CONNS")]
pub static CONNS: HashMap<FlowKey, ConnValue> = HashMap::with_max_entries(1024, 0);

/// Reverse index of CONNS, keyed as the real server replies (RIP -> client). Created and
/// deleted together with its CONNS entry.
#[map(name = "REPLIES")]
pub static REPLIES: HashMap<FlowKey, ReplyValue> = HashMap::with_max_entries(1024, 0);

/// Datagrams being fragmented: the first fragment's ports, so later fragments follow it (as
/// Cilium does). An LRU: a datagram whose fragments stop coming is forgotten in time.
#[map(name = "FRAGS")]
pub static FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::with_max_entries(FRAGS_ENTRIES, 0);

/// Timeouts and flags (one entry).
#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Interfaces an XDP redirect may transmit on (ifindex -> ifindex). Userspace lists only
/// devices where a redirect really delivers (see README: veth needs XDP on its peer).
#[map(name = "TX_PORTS")]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// What the program did with packets (lb_common::path::*), per CPU.
#[map(name = "PATH_STATS")]
pub static PATH_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(lb_common::path::N, 0);

#[inline(always)]
pub fn count(what: u32) {
    if let Some(c) = PATH_STATS.get_ptr_mut(what) {
        // Per-CPU slot: no other writer.
        unsafe { *c += 1 };
    }
}

/// Connections of the node's own processes to VIPs, balanced at the socket: (socket, VIP).
#[map(name = "SOCK_CONNS")]
pub static SOCK_CONNS: HashMap<SockKey, SockConnValue> = HashMap::with_max_entries(1024, 0);

/// (socket, real server) -> the VIP it stands for: replies' sources and getpeername().
#[map(name = "SOCK_REV")]
pub static SOCK_REV: HashMap<SockKey, L4Addr> = HashMap::with_max_entries(1024, 0);

/// Next hops XDP found without a neighbour entry, for the daemon to resolve (value: when).
#[map(name = "NEIGH_WANTED")]
pub static NEIGH_WANTED: LruHashMap<NeighKey, u64> = LruHashMap::with_max_entries(256, 0);

/// Interfaces where the tc program runs behind the XDP one (ifindex -> 1): XDP leaves them
/// packets whose checksum may be a CHECKSUM_PARTIAL seed, which only tc can rewrite right.
#[map(name = "TC_BEHIND")]
pub static TC_BEHIND: HashMap<u32, u32> = HashMap::with_max_entries(256, 0);
