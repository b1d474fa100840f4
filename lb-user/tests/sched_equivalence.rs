//! The precomputed tables of `lb_user::sched` against an independent, per-connection simulation
//! of the kernel schedulers.
//!
//! The simulator below is written the way net/netfilter/ipvs/ip_vs_{rr,wrr,sh}.c are: a
//! doubly linked destination list with a head sentinel (nodes are never freed, so a deleted
//! node's `next` stays valid as after list_del_rcu), the rr cursor as a node pointer, the wrr
//! mark struct with the kernel's scan loop (last_pass / restarted / stop), the sh bucket array
//! filled like ip_vs_sh_reassign and looked up like ip_vs_sh_get / ip_vs_sh_get_fallback, with
//! its own hash. It shares nothing with the table code but the public types.
//!
//! Generated cases (a seeded PRNG, no dependency) run random operations on one service: add a
//! destination at the head, edit a weight (to 0 and back, or to the same value: the kernel runs
//! its hook anyway), delete any destination, flip a destination's OVERLOAD flag (no hook in the
//! kernel), republish the table without a change, and schedule k connections. The simulator
//! schedules each connection itself; the table side does what the daemon and the BPF program
//! do: walk `table[cursor % len]` with a cursor that restarts at 0 per published table, and
//! before every change call `advance` with the cursor, then `on_change`, then publish anew.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_user::sched::{sh_bucket, DestKey, Pick, SchedDest, SchedKind, ServiceSched};

// ---------------------------------------------------------------------------------------------
// A small PRNG (splitmix64): deterministic, seedable, good enough to generate cases.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel simulator.

/// Index of the list head sentinel (`&svc->destinations`).
const HEAD: usize = 0;
/// list_del_rcu poisons `prev` and keeps `next`.
const POISON: usize = usize::MAX;

struct Node {
    next: usize,
    prev: usize,
    key: DestKey,
    weight: i64,
    overload: bool,
}

struct KList {
    nodes: Vec<Node>,
}

impl KList {
    fn new() -> Self {
        let head = Node {
            next: HEAD,
            prev: HEAD,
            key: (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            weight: 0,
            overload: false,
        };
        KList { nodes: vec![head] }
    }

    /// list_add_rcu(&dest->n_list, &svc->destinations): insert after the head.
    fn list_add(&mut self, key: DestKey, weight: i64) -> usize {
        let new = self.nodes.len();
        let first = self.nodes[HEAD].next;
        self.nodes.push(Node {
            next: first,
            prev: HEAD,
            key,
            weight,
            overload: false,
        });
        self.nodes[first].prev = new;
        self.nodes[HEAD].next = new;
        new
    }

    fn list_del(&mut self, e: usize) {
        let (prev, next) = (self.nodes[e].prev, self.nodes[e].next);
        self.nodes[prev].next = next;
        self.nodes[next].prev = prev;
        self.nodes[e].prev = POISON;
    }

    fn entries(&self) -> Vec<usize> {
        let mut v = Vec::new();
        let mut p = self.nodes[HEAD].next;
        while p != HEAD {
            v.push(p);
            p = self.nodes[p].next;
        }
        v
    }

    fn find(&self, key: DestKey) -> Option<usize> {
        self.entries()
            .into_iter()
            .find(|&e| self.nodes[e].key == key)
    }

    fn is_empty(&self) -> bool {
        self.nodes[HEAD].next == HEAD
    }

    /// The list as the schedulers module sees it.
    fn to_sched(&self) -> Vec<SchedDest> {
        self.entries()
            .into_iter()
            .map(|e| SchedDest {
                key: self.nodes[e].key,
                weight: self.nodes[e].weight as u32,
                overloaded: self.nodes[e].overload,
            })
            .collect()
    }
}

/// struct ip_vs_wrr_mark.
struct WrrMark {
    cl: usize,
    cw: i64,
    mw: i64,
    di: i64,
}

const SH_TAB_BITS: u32 = 8;
const SH_TAB_SIZE: usize = 1 << SH_TAB_BITS;

enum SchedData {
    Rr { p: usize },
    Wrr(WrrMark),
    Sh { buckets: Vec<Option<usize>> },
}

struct KService {
    list: KList,
    data: SchedData,
    /// IP_VS_SVC_F_SCHED_SH_FALLBACK / _SH_PORT.
    sh_fallback: bool,
    sh_port: bool,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl KService {
    /// ip_vs_add_service + init_service on an empty list.
    fn new(kind: SchedKind) -> Self {
        let (data, sh_fallback, sh_port) = match kind {
            SchedKind::Rr => (SchedData::Rr { p: HEAD }, false, false),
            SchedKind::Wrr => (
                SchedData::Wrr(WrrMark {
                    cl: HEAD,
                    cw: 0,
                    mw: 0,
                    di: 1,
                }),
                false,
                false,
            ),
            SchedKind::Sh { fallback, port } => (
                SchedData::Sh {
                    buckets: vec![None; SH_TAB_SIZE],
                },
                fallback,
                port,
            ),
        };
        let mut s = KService {
            list: KList::new(),
            data,
            sh_fallback,
            sh_port,
        };
        if let SchedData::Wrr(_) = s.data {
            s.wrr_init();
        }
        s
    }

    // --- the control plane (ip_vs_ctl.c): change the list, then run the scheduler's hook ---

    fn add_dest(&mut self, key: DestKey, weight: i64) {
        let d = self.list.list_add(key, weight);
        self.hook_add_upd(d);
    }

    fn edit_dest(&mut self, key: DestKey, weight: i64) {
        let d = self.list.find(key).unwrap();
        self.list.nodes[d].weight = weight;
        self.hook_add_upd(d);
    }

    fn del_dest(&mut self, key: DestKey) {
        let d = self.list.find(key).unwrap();
        self.list.list_del(d);
        match &mut self.data {
            SchedData::Rr { p } => {
                // ip_vs_rr_del_dest: the node is unlinked, its next is valid, next->prev is
                // the predecessor.
                if *p == d {
                    *p = self.list.nodes[self.list.nodes[*p].next].prev;
                }
            }
            SchedData::Wrr(_) => self.wrr_dest_changed(),
            SchedData::Sh { .. } => self.sh_reassign(),
        }
    }

    /// IP_VS_DEST_F_OVERLOAD changes with connection counts: no scheduler hook runs.
    fn set_overload(&mut self, key: DestKey, on: bool) {
        let d = self.list.find(key).unwrap();
        self.list.nodes[d].overload = on;
    }

    fn hook_add_upd(&mut self, _dest: usize) {
        match self.data {
            SchedData::Rr { .. } => {} // rr has no add_dest / upd_dest
            SchedData::Wrr(_) => self.wrr_dest_changed(),
            SchedData::Sh { .. } => self.sh_reassign(),
        }
    }

    // --- rr ---

    fn rr_schedule(&mut self) -> Option<usize> {
        let SchedData::Rr { p } = &mut self.data else {
            unreachable!()
        };
        let n = &self.list.nodes;
        let start = *p;
        let last = start;
        let mut dest = start;
        let mut pass = 0;
        loop {
            // list_for_each_entry_continue_rcu(dest, &svc->destinations, n_list)
            dest = n[dest].next;
            while dest != HEAD {
                if !n[dest].overload && n[dest].weight > 0 {
                    *p = dest;
                    return Some(dest);
                }
                if dest == last {
                    return None;
                }
                dest = n[dest].next;
            }
            pass += 1;
            if !(pass < 2 && start != HEAD) {
                return None;
            }
        }
    }

    // --- wrr ---

    fn wrr_gcd_weight(&self) -> i64 {
        let mut g = 0;
        for e in self.list.entries() {
            let w = self.list.nodes[e].weight;
            if w > 0 {
                g = if g > 0 { gcd(w, g) } else { w };
            }
        }
        if g != 0 {
            g
        } else {
            1
        }
    }

    fn wrr_max_weight(&self) -> i64 {
        let mut weight = 0;
        for e in self.list.entries() {
            weight = weight.max(self.list.nodes[e].weight);
        }
        weight
    }

    fn wrr_init(&mut self) {
        let di = self.wrr_gcd_weight();
        let mw = self.wrr_max_weight() - (di - 1);
        self.data = SchedData::Wrr(WrrMark {
            cl: HEAD,
            cw: mw,
            mw,
            di,
        });
    }

    fn wrr_dest_changed(&mut self) {
        let di = self.wrr_gcd_weight();
        let mw = self.wrr_max_weight() - (di - 1);
        let SchedData::Wrr(mark) = &mut self.data else {
            unreachable!()
        };
        mark.cl = HEAD;
        mark.di = di;
        mark.mw = mw;
        if mark.cw > mark.mw || mark.cw == 0 {
            mark.cw = mark.mw;
        } else if mark.di > 1 {
            mark.cw = (mark.cw / mark.di) * mark.di + 1;
        }
    }

    fn wrr_schedule(&mut self) -> Option<usize> {
        let SchedData::Wrr(mark) = &mut self.data else {
            unreachable!()
        };
        let n = &self.list.nodes;
        let mut dest = mark.cl;
        if mark.mw == 0 {
            mark.cl = dest;
            return None; // err_noavail
        }
        let last = dest;
        let mut stop: Option<usize> = None;
        let (mut last_pass, mut restarted) = (false, false);
        loop {
            dest = n[dest].next;
            while dest != HEAD {
                if !n[dest].overload && n[dest].weight >= mark.cw {
                    mark.cl = dest;
                    return Some(dest);
                }
                if Some(dest) == stop {
                    mark.cl = dest;
                    return None; // err_over
                }
                dest = n[dest].next;
            }
            mark.cw -= mark.di;
            if mark.cw <= 0 {
                mark.cw = mark.mw;
                if last_pass || last == HEAD {
                    mark.cl = dest; // the head
                    return None;
                }
                restarted = true;
            }
            last_pass = mark.cw <= mark.di;
            if last_pass && restarted && last != HEAD {
                stop = Some(last);
            }
        }
    }

    // --- sh ---

    fn sh_reassign(&mut self) {
        let n = &self.list.nodes;
        let empty = self.list.is_empty();
        let mut p = HEAD;
        let mut d_count = 0;
        let mut buckets = vec![None; SH_TAB_SIZE];
        for b in buckets.iter_mut() {
            if empty {
                *b = None;
            } else {
                if p == HEAD {
                    p = n[p].next;
                }
                *b = Some(p);
                d_count += 1;
                if d_count >= n[p].weight {
                    p = n[p].next;
                    d_count = 0;
                }
            }
        }
        self.data = SchedData::Sh { buckets };
    }

    /// ip_vs_sh_hashkey, with its own hash_32 and the IPv6 fold done on raw big-endian words.
    fn sh_hashkey(addr: IpAddr, port_be: u16, offset: usize) -> usize {
        fn hash_32(val: u32, bits: u32) -> u32 {
            const GOLDEN_RATIO_32: u32 = 0x61C8_8647;
            val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
        }
        let addr_fold_be: u32 = match addr {
            IpAddr::V4(a) => u32::from_ne_bytes(a.octets()),
            IpAddr::V6(a) => {
                let o = a.octets();
                let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                w(0) ^ w(4) ^ w(8) ^ w(12)
            }
        };
        let v = (u16::from_be(port_be) as u32).wrapping_add(u32::from_be(addr_fold_be));
        (offset + hash_32(v, SH_TAB_BITS) as usize) & (SH_TAB_SIZE - 1)
    }

    fn sh_unavailable(&self, d: usize) -> bool {
        self.list.nodes[d].weight <= 0 || self.list.nodes[d].overload
    }

    fn sh_schedule(&self, addr: IpAddr, sport: u16) -> Option<usize> {
        let SchedData::Sh { buckets } = &self.data else {
            unreachable!()
        };
        let port = if self.sh_port { sport.to_be() } else { 0 };
        if !self.sh_fallback {
            let hash = Self::sh_hashkey(addr, port, 0);
            let dest = buckets[hash]?;
            return (!self.sh_unavailable(dest)).then_some(dest);
        }
        let ihash = Self::sh_hashkey(addr, port, 0);
        let dest = buckets[ihash]?;
        if !self.sh_unavailable(dest) {
            return Some(dest);
        }
        for offset in 0..SH_TAB_SIZE {
            let roffset = (offset + ihash) % SH_TAB_SIZE;
            let hash = Self::sh_hashkey(addr, port, roffset);
            let dest = buckets[hash]?;
            if !self.sh_unavailable(dest) {
                return Some(dest);
            }
        }
        None
    }

    fn key_of(&self, d: Option<usize>) -> Option<DestKey> {
        d.map(|d| self.list.nodes[d].key)
    }
}

// ---------------------------------------------------------------------------------------------
// The table side, driven as the daemon + BPF program drive it.

const MAX_LEN: usize = 1 << 16;

/// Deliberately wrong ways to drive the tables, to show the harness catches them.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mutation {
    None,
    /// Forget the scheduler state at every change (rr: cursor to the head; wrr: cw = mw).
    ResetStateOnChange,
    /// Tell `advance` one pick more than the fast path made.
    AdvanceOffByOne,
    /// Hash the client's port into its sh bucket even without sh-port.
    ShPortAlways,
}

struct Fast {
    sched: ServiceSched,
    list: Vec<SchedDest>,
    table: Vec<Pick>,
    cursor: u64,
    mutation: Mutation,
}

impl Fast {
    fn new(kind: SchedKind, mutation: Mutation) -> Self {
        let sched = ServiceSched::new(kind);
        let table = sched.table(&[], MAX_LEN).unwrap();
        Fast {
            sched,
            list: Vec::new(),
            table,
            cursor: 0,
            mutation,
        }
    }

    fn read_back_cursor(&mut self) {
        let picks = match self.mutation {
            Mutation::AdvanceOffByOne if self.cursor > 0 => self.cursor + 1,
            _ => self.cursor,
        };
        self.sched.advance(&self.list, &self.table, picks);
    }

    fn publish(&mut self) {
        self.table = self.sched.table(&self.list, MAX_LEN).unwrap();
        self.cursor = 0;
    }

    /// A table change: read the cursor back, run the hook, publish.
    fn change(&mut self, after: Vec<SchedDest>) {
        self.read_back_cursor();
        let before = std::mem::replace(&mut self.list, after);
        if self.mutation == Mutation::ResetStateOnChange {
            self.sched = ServiceSched::init(self.sched.kind(), &self.list);
        } else {
            self.sched.on_change(&before, &self.list);
        }
        self.publish();
    }

    /// Something the scheduler reads changed without a kernel hook (OVERLOAD), or the daemon
    /// just republishes: read back, publish.
    fn republish(&mut self, after: Vec<SchedDest>) {
        self.read_back_cursor();
        self.list = after;
        self.publish();
    }

    /// One new connection through the BPF program (a refused one is counted too).
    fn pick(&mut self) -> Option<DestKey> {
        let got = if self.table.is_empty() {
            None
        } else {
            let p = self.table[(self.cursor % self.table.len() as u64) as usize];
            p.dest.map(|i| self.list[i].key)
        };
        self.cursor += 1;
        got
    }

    fn pick_sh(&self, client: IpAddr, sport: u16) -> Option<DestKey> {
        let SchedKind::Sh { port, .. } = self.sched.kind() else {
            unreachable!()
        };
        let port = port || self.mutation == Mutation::ShPortAlways;
        let b = sh_bucket(client, if port { sport } else { 0 });
        self.table[b].dest.map(|i| self.list[i].key)
    }
}

// ---------------------------------------------------------------------------------------------
// Generated cases.

#[derive(Clone, Copy, Debug)]
enum Op {
    Add(DestKey, i64),
    Edit(DestKey, i64),
    Del(DestKey),
    Overload(DestKey, bool),
    /// Several OVERLOAD flags change before the daemon publishes again: bit i for list[i].
    OverloadMany(u8),
    Republish,
    Schedule(u32),
}

/// How weights are drawn in one case: multiples of `unit` (so gcd > 1 is common), sometimes
/// off-grid, sometimes large (long wrr periods, many levels).
struct WeightGen {
    unit: i64,
    max_mult: u64,
}

impl WeightGen {
    fn new(rng: &mut Rng) -> Self {
        let units = [1, 1, 2, 3, 4, 6];
        WeightGen {
            unit: units[rng.range(0, units.len() as u64 - 1) as usize],
            max_mult: if rng.chance(15) { 12 } else { 4 },
        }
    }
    fn draw(&self, rng: &mut Rng) -> i64 {
        if rng.chance(15) {
            0
        } else if rng.chance(10) {
            rng.range(1, 9) as i64
        } else {
            self.unit * rng.range(1, self.max_mult) as i64
        }
    }
}

fn dest_key(v6: bool, n: u8) -> DestKey {
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, n as u16))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 1, 0, n))
    };
    (addr, 8080)
}

/// The shape of one case.
struct CaseGen {
    weights: WeightGen,
    v6: bool,
    max_dests: usize,
    /// Percent of operations that flip an OVERLOAD flag. Some cases flip a lot, so that every
    /// destination is overloaded now and then: refused wrr picks move the mark, and that state
    /// only shows when a destination comes back without a hook.
    overload_pct: u64,
}

impl CaseGen {
    fn new(rng: &mut Rng) -> Self {
        CaseGen {
            weights: WeightGen::new(rng),
            v6: rng.chance(30),
            max_dests: if rng.chance(30) { 3 } else { 8 },
            overload_pct: if rng.chance(30) { 35 } else { 8 },
        }
    }

    /// A random valid next operation for a service whose list is `list`.
    fn op(&self, rng: &mut Rng, list: &[SchedDest]) -> Op {
        let any = |rng: &mut Rng| list[rng.range(0, list.len() as u64 - 1) as usize];
        if !list.is_empty() && rng.chance(self.overload_pct) {
            if rng.chance(30) {
                return Op::OverloadMany(rng.next() as u8);
            }
            let d = any(rng);
            return Op::Overload(d.key, !d.overloaded);
        }
        loop {
            match rng.range(0, 8) {
                0 | 1 if list.len() < self.max_dests => {
                    let free: Vec<u8> = (1..=12)
                        .filter(|&n| !list.iter().any(|d| d.key == dest_key(self.v6, n)))
                        .collect();
                    let n = free[rng.range(0, free.len() as u64 - 1) as usize];
                    return Op::Add(dest_key(self.v6, n), self.weights.draw(rng));
                }
                2 | 3 if !list.is_empty() => {
                    let d = any(rng);
                    // Sometimes the same weight: the kernel still runs its hook.
                    let w = if rng.chance(15) {
                        d.weight as i64
                    } else {
                        self.weights.draw(rng)
                    };
                    return Op::Edit(d.key, w);
                }
                4 if !list.is_empty() => return Op::Del(any(rng).key),
                5 => return Op::Republish,
                6..=8 => {
                    let k = if rng.chance(10) {
                        rng.range(20, 300)
                    } else {
                        rng.range(0, 12)
                    };
                    return Op::Schedule(k as u32);
                }
                _ => {}
            }
        }
    }
}

fn random_client(rng: &mut Rng, v6: bool) -> (IpAddr, u16) {
    let addr = if v6 {
        let mut o = [0u8; 16];
        for b in o.iter_mut() {
            *b = rng.next() as u8;
        }
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::from(rng.next() as u32))
    };
    (addr, rng.next() as u16)
}

fn apply_to_list(list: &[SchedDest], op: &Op) -> Vec<SchedDest> {
    let mut l = list.to_vec();
    match *op {
        Op::Add(key, w) => l.insert(
            0,
            SchedDest {
                key,
                weight: w as u32,
                overloaded: false,
            },
        ),
        Op::Edit(key, w) => l.iter_mut().find(|d| d.key == key).unwrap().weight = w as u32,
        Op::Del(key) => l.retain(|d| d.key != key),
        Op::Overload(key, on) => l.iter_mut().find(|d| d.key == key).unwrap().overloaded = on,
        Op::OverloadMany(bits) => {
            for (i, d) in l.iter_mut().enumerate() {
                d.overloaded = bits >> i & 1 == 1;
            }
        }
        Op::Republish | Op::Schedule(_) => {}
    }
    l
}

/// Runs one generated case; Err describes the first divergence.
fn run_case(seed: u64, kind: SchedKind, mutation: Mutation) -> Result<(), String> {
    let mut rng = Rng(seed);
    let gen = CaseGen::new(&mut rng);
    let n_ops = rng.range(10, 60);
    let mut done = 0;
    let next = |rng: &mut Rng, list: &[SchedDest]| {
        done += 1;
        (done <= n_ops).then(|| gen.op(rng, list))
    };
    run(seed, kind, mutation, rng, gen.v6, next)
}

/// Drives the simulator and the tables through the operations `next_op` hands out (None ends
/// the case); sh clients come from `rng`.
fn run(
    seed: u64,
    kind: SchedKind,
    mutation: Mutation,
    mut rng: Rng,
    v6: bool,
    mut next_op: impl FnMut(&mut Rng, &[SchedDest]) -> Option<Op>,
) -> Result<(), String> {
    let mut kernel = KService::new(kind);
    let mut fast = Fast::new(kind, mutation);
    let mut log = Vec::new();
    while let Some(op) = next_op(&mut rng, &fast.list) {
        log.push(op);
        match op {
            Op::Add(key, w) => {
                kernel.add_dest(key, w);
                fast.change(apply_to_list(&fast.list, &op));
            }
            Op::Edit(key, w) => {
                kernel.edit_dest(key, w);
                fast.change(apply_to_list(&fast.list, &op));
            }
            Op::Del(key) => {
                kernel.del_dest(key);
                fast.change(apply_to_list(&fast.list, &op));
            }
            Op::Overload(key, on) => {
                kernel.set_overload(key, on);
                fast.republish(apply_to_list(&fast.list, &op));
            }
            Op::OverloadMany(bits) => {
                for (i, d) in fast.list.iter().enumerate() {
                    kernel.set_overload(d.key, bits >> i & 1 == 1);
                }
                fast.republish(apply_to_list(&fast.list, &op));
            }
            Op::Republish => fast.republish(fast.list.clone()),
            Op::Schedule(k) => {
                for i in 0..k {
                    let (want, got) = match kind {
                        SchedKind::Rr => {
                            let d = kernel.rr_schedule();
                            (kernel.key_of(d), fast.pick())
                        }
                        SchedKind::Wrr => {
                            let d = kernel.wrr_schedule();
                            (kernel.key_of(d), fast.pick())
                        }
                        SchedKind::Sh { .. } => {
                            let (c, p) = random_client(&mut rng, v6);
                            let d = kernel.sh_schedule(c, p);
                            (kernel.key_of(d), fast.pick_sh(c, p))
                        }
                    };
                    if want != got {
                        return Err(format!(
                            "seed {seed} {kind:?}: connection {i} of the last op: kernel {want:?}, \
                             table {got:?}\nlist {:?}\nops: {log:#?}",
                            fast.list,
                        ));
                    }
                }
            }
        }
        if kernel.list.to_sched() != fast.list {
            return Err(format!("seed {seed}: the harness's two lists diverged"));
        }
    }
    Ok(())
}

fn kinds() -> Vec<SchedKind> {
    let mut v = vec![SchedKind::Rr, SchedKind::Wrr];
    for fallback in [false, true] {
        for port in [false, true] {
            v.push(SchedKind::Sh { fallback, port });
        }
    }
    v
}

/// rr and wrr cases; each of the four sh variants runs SH_CASES (an sh case rebuilds 256
/// buckets per change, the slowest part in a debug build).
const CASES: u64 = 1500;
const SH_CASES: u64 = 400;

#[test]
fn tables_match_the_kernel_simulator() {
    let mut n = 0;
    for kind in kinds() {
        let cases = if let SchedKind::Sh { .. } = kind {
            SH_CASES
        } else {
            CASES
        };
        for seed in 0..cases {
            if let Err(e) = run_case(seed, kind, Mutation::None) {
                panic!("{e}");
            }
            n += 1;
        }
    }
    assert_eq!(n, 2 * CASES + 4 * SH_CASES);
}

/// The harness can fail: each deliberately wrong driver is caught by some generated case.
///
/// - ResetStateOnChange, wrr: a case that adds rs1 w3, rs2 w2, rs3 w1 (cw ends at 1) and then
///   schedules is caught at once (the reset mark gives cw = mw = 3 and picks rs1 first, the
///   kernel rs3); more generally any case where a change arrives while cw != mw. For rr, any case
///   that schedules, then adds a destination and schedules again (the kernel resumes after its
///   cursor, the reset goes back to the head).
/// - AdvanceOffByOne: any case with a change after a number of picks that is not a multiple of
///   the table length, then more picks.
/// - ShPortAlways: any sh case without sh-port and with two destinations (clients with another
///   source port land in other buckets).
#[test]
fn wrong_drivers_are_caught() {
    let sh = SchedKind::Sh {
        fallback: false,
        port: false,
    };
    for (mutation, kind) in [
        (Mutation::ResetStateOnChange, SchedKind::Rr),
        (Mutation::ResetStateOnChange, SchedKind::Wrr),
        (Mutation::AdvanceOffByOne, SchedKind::Rr),
        (Mutation::AdvanceOffByOne, SchedKind::Wrr),
        (Mutation::ShPortAlways, sh),
    ] {
        let caught = (0..CASES).find(|&seed| run_case(seed, kind, mutation).is_err());
        assert!(caught.is_some(), "{mutation:?} on {kind:?} went unnoticed");
    }

    // The first scenario above, scripted: the kernel observation itself tells the carried cw
    // from a reset one.
    let script = || {
        let mut ops = vec![
            Op::Add(dest_key(false, 1), 3),
            Op::Add(dest_key(false, 2), 2),
            Op::Add(dest_key(false, 3), 1),
            Op::Schedule(12),
        ]
        .into_iter();
        move |_: &mut Rng, _: &[SchedDest]| ops.next()
    };
    let wrr = SchedKind::Wrr;
    assert!(run(0, wrr, Mutation::None, Rng(0), false, script()).is_ok());
    let err = run(
        0,
        wrr,
        Mutation::ResetStateOnChange,
        Rng(0),
        false,
        script(),
    )
    .unwrap_err();
    assert!(err.contains("connection 0 of the last op"), "{err}");
}

/// The simulator itself reproduces what real kernels were seen doing (ipvs-semantics.md), so
/// agreeing with it means something.
#[test]
fn simulator_reproduces_kernel_observations() {
    let k = |n| dest_key(false, n);
    let name = |s: &KService, d: Option<usize>| {
        let (IpAddr::V4(a), _) = s.key_of(d).unwrap() else {
            unreachable!()
        };
        a.octets()[3]
    };

    let mut rr = KService::new(SchedKind::Rr);
    for n in 1..=3 {
        rr.add_dest(k(n), 1);
    }
    let got: Vec<u8> = (0..6)
        .map(|_| {
            let d = rr.rr_schedule();
            name(&rr, d)
        })
        .collect();
    assert_eq!(got, [3, 2, 1, 3, 2, 1]);

    let mut wrr = KService::new(SchedKind::Wrr);
    for (n, w) in [(1, 3), (2, 2), (3, 1)] {
        wrr.add_dest(k(n), w);
    }
    let got: Vec<u8> = (0..12)
        .map(|_| {
            let d = wrr.wrr_schedule();
            name(&wrr, d)
        })
        .collect();
    assert_eq!(got, [3, 2, 1, 1, 2, 1, 3, 2, 1, 1, 2, 1]);

    let mut sh = KService::new(SchedKind::Sh {
        fallback: false,
        port: false,
    });
    assert_eq!(KService::sh_hashkey("10.0.0.1".parse().unwrap(), 0, 0), 39);
    for (n, w) in [(1, 1), (2, 2), (3, 1)] {
        sh.add_dest(k(n), w);
    }
    let got: Vec<u8> = (10..20)
        .map(|c| {
            let d = sh.sh_schedule(IpAddr::V4(Ipv4Addr::new(192, 168, 1, c)), 0);
            name(&sh, d)
        })
        .collect();
    assert_eq!(got, [3, 2, 3, 2, 3, 2, 1, 2, 1, 2]);
}
