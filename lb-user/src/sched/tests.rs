//! The examples of ipvs-semantics.md and the brief, pinned.

use super::*;
use std::net::{IpAddr, Ipv4Addr};

const MAX: usize = 1 << 16;

fn key(n: u8) -> DestKey {
    (IpAddr::V4(Ipv4Addr::new(10, 1, 0, n)), 80)
}

fn dest(n: u8, weight: u32) -> SchedDest {
    SchedDest {
        key: key(n),
        weight,
        overloaded: false,
    }
}

/// Adds destinations one by one, at the head, running the hook per add, as ipvsadm does.
fn add_all(s: &mut ServiceSched, list: &mut Vec<SchedDest>, adds: &[SchedDest]) {
    for d in adds {
        let before = list.clone();
        list.insert(0, *d);
        s.on_change(&before, list);
    }
}

/// The last octet of a test destination's address: its number.
fn octet(k: DestKey) -> u8 {
    match k.0 {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(_) => unreachable!(),
    }
}

/// The next `n` picks from the current state, as the fast path would make them from a fresh
/// table (the state is not advanced).
fn next_picks(s: &ServiceSched, list: &[SchedDest], n: usize) -> Vec<u8> {
    let t = s.table(list, MAX).unwrap();
    (0..n)
        .map(|i| match t[i % t.len()].dest {
            Some(j) => octet(list[j].key),
            None => 0,
        })
        .collect()
}

#[test]
fn rr_kernel_observation() {
    // rs1, rs2, rs3 added in that order give rs3 rs2 rs1 rs3 rs2 rs1.
    let mut s = ServiceSched::new(SchedKind::Rr);
    let mut list = Vec::new();
    add_all(&mut s, &mut list, &[dest(1, 1), dest(2, 1), dest(3, 1)]);
    assert_eq!(s.table(&list, MAX).unwrap().len(), 3);
    assert_eq!(next_picks(&s, &list, 6), [3, 2, 1, 3, 2, 1]);
}

#[test]
fn rr_first_pick_is_the_newest() {
    let mut s = ServiceSched::new(SchedKind::Rr);
    let mut list = Vec::new();
    add_all(&mut s, &mut list, &[dest(1, 1), dest(2, 1)]);
    assert_eq!(next_picks(&s, &list, 1), [2]);
}

#[test]
fn rr_deleting_the_cursor_moves_it_to_the_predecessor() {
    let mut s = ServiceSched::new(SchedKind::Rr);
    let mut list = Vec::new();
    add_all(&mut s, &mut list, &[dest(1, 1), dest(2, 1), dest(3, 1)]);
    // [3, 2, 1]: two picks (3, 2) leave the cursor on 2.
    let t = s.table(&list, MAX).unwrap();
    s.advance(&list, &t, 2);
    let before = list.clone();
    list.remove(1);
    s.on_change(&before, &list);
    // The cursor is on 3 now, so 1 comes next (the head would have given 3).
    assert_eq!(next_picks(&s, &list, 3), [1, 3, 1]);

    // Deleting the first destination while the cursor is on it moves the cursor to the head.
    let t = s.table(&list, MAX).unwrap();
    s.advance(&list, &t, 2); // 1, 3: the cursor is on 3, list [3, 1]
    let before = list.clone();
    list.remove(0);
    s.on_change(&before, &list);
    add_all(&mut s, &mut list, &[dest(4, 1)]); // [4, 1]; the head cursor starts at 4
    assert_eq!(next_picks(&s, &list, 2), [4, 1]);
}

#[test]
fn rr_skips_unavailable_and_refuses_when_none() {
    let mut s = ServiceSched::new(SchedKind::Rr);
    let mut list = Vec::new();
    add_all(&mut s, &mut list, &[dest(1, 1), dest(2, 0), dest(3, 1)]);
    list[0].overloaded = true;
    assert_eq!(next_picks(&s, &list, 2), [1, 1]);
    list[2].weight = 0;
    assert!(s.table(&list, MAX).unwrap().is_empty());
}

#[test]
fn wrr_kernel_observation() {
    // ipvsadm -A -s wrr; add rs1 w3, rs2 w2, rs3 w1: cw is 1 after the adds.
    let mut s = ServiceSched::new(SchedKind::Wrr);
    let mut list = Vec::new();
    add_all(&mut s, &mut list, &[dest(1, 3), dest(2, 2), dest(3, 1)]);
    let State::Wrr(m) = &s.state else { panic!() };
    assert_eq!(m.parts(), (None, 1, 3, 1));
    assert_eq!(
        next_picks(&s, &list, 12),
        [3, 2, 1, 1, 2, 1, 3, 2, 1, 1, 2, 1]
    );
}

#[test]
fn wrr_fresh_examples_are_exactly_one_period() {
    let abc = |a, b, c| vec![dest(1, a), dest(2, b), dest(3, c)];
    // [A=4, B=3, C=2] from cw = mw: A A B A B C A B C.
    let list = abc(4, 3, 2);
    let s = ServiceSched::init(SchedKind::Wrr, &list);
    let t = s.table(&list, MAX).unwrap();
    let dests: Vec<_> = t.iter().map(|p| p.dest.unwrap() as u8 + 1).collect();
    assert_eq!(dests, [1, 1, 2, 1, 2, 3, 1, 2, 3]);
    let cws: Vec<_> = t.iter().map(|p| p.aux).collect();
    assert_eq!(cws, [4, 3, 3, 2, 2, 2, 1, 1, 1]);
    // [A=4, B=2, C=6]: di = 2, mw = 5, levels 5, 3, 1: C A C A B C.
    let list = abc(4, 2, 6);
    let s = ServiceSched::init(SchedKind::Wrr, &list);
    let t = s.table(&list, MAX).unwrap();
    let dests: Vec<_> = t.iter().map(|p| p.dest.unwrap() as u8 + 1).collect();
    assert_eq!(dests, [3, 1, 3, 1, 2, 3]);
}

#[test]
fn wrr_state_is_carried_through_changes() {
    // [A=6, B=4, C=1] from cw = 6: A (6), A (5), A B (4): after four picks cl = B, cw = 4.
    let mut list = vec![dest(1, 6), dest(2, 4), dest(3, 1)];
    let mut s = ServiceSched::init(SchedKind::Wrr, &list);
    let t = s.table(&list, MAX).unwrap();
    assert_eq!(next_picks(&s, &list, 4), [1, 1, 1, 2]);
    s.advance(&list, &t, 4);
    let State::Wrr(m) = &s.state else { panic!() };
    assert_eq!(m.parts(), (Some(key(2)), 4, 6, 1));
    // C to weight 2: di = 2, mw = 5, cw = (4 / 2) * 2 + 1 = 5, cl = head.
    let before = list.clone();
    list[2].weight = 2;
    s.on_change(&before, &list);
    let State::Wrr(m) = &s.state else { panic!() };
    assert_eq!(m.parts(), (None, 5, 5, 2));
    assert_eq!(next_picks(&s, &list, 6), [1, 1, 2, 1, 2, 3]);

    // Wrapping: 6 + 2 picks from a 6-long table end after its second entry (A at cw 3).
    let t = s.table(&list, MAX).unwrap();
    s.advance(&list, &t, 8);
    let State::Wrr(m) = &s.state else { panic!() };
    assert_eq!(m.parts(), (Some(key(1)), 3, 5, 2));
}

#[test]
fn wrr_refused_picks_move_the_mark_like_the_kernel() {
    let mut list = vec![dest(1, 2), dest(2, 1)];
    let mut s = ServiceSched::init(SchedKind::Wrr, &list);
    // A (2), A B (1): cl = B, cw = 1.
    let t = s.table(&list, MAX).unwrap();
    s.advance(&list, &t, 3);
    list[0].overloaded = true;
    list[1].overloaded = true;
    let t = s.table(&list, MAX).unwrap();
    assert!(t.is_empty());
    // From a destination with cw <= di: a full restart, ending on the same one at level 1.
    s.advance(&list, &t, 5);
    let State::Wrr(m) = &s.state else { panic!() };
    assert_eq!(m.parts(), (Some(key(2)), 1, 2, 1));
    // From a destination with cw > di: back to the head at mw.
    let mut s = ServiceSched::init(SchedKind::Wrr, &list);
    s.state = State::Wrr(wrr_mark_at(&list, key(1), 2));
    s.advance(&list, &t, 1);
    let State::Wrr(m) = &s.state else { panic!() };
    assert_eq!(m.parts(), (None, 2, 2, 1));
}

fn wrr_mark_at(list: &[SchedDest], cl: DestKey, cw: u32) -> wrr::Mark {
    let mut m = wrr::Mark::new();
    m.dest_changed(list);
    m.picked(cl, cw);
    m
}

#[test]
fn wrr_period_cap_and_huge_unavailable_weights() {
    let list = vec![dest(1, i32::MAX as u32), dest(2, 1)];
    let s = ServiceSched::init(SchedKind::Wrr, &list);
    assert_eq!(
        s.table(&list, MAX),
        Err(SchedError::TableTooLong {
            needed: 1 << 31,
            max: MAX
        })
    );
    // Overloaded, the big one does not count, and its empty levels are skipped at once.
    let mut list = list;
    list[0].overloaded = true;
    let t = s.table(&list, MAX).unwrap();
    assert_eq!(
        t,
        [Pick {
            dest: Some(1),
            aux: 1
        }]
    );
}

#[test]
fn wrr_empty_service_schedules_nothing() {
    let s = ServiceSched::new(SchedKind::Wrr);
    assert!(s.table(&[], MAX).unwrap().is_empty());
    let list = vec![dest(1, 0)];
    let s = ServiceSched::init(SchedKind::Wrr, &list);
    assert!(s.table(&list, MAX).unwrap().is_empty());
}

#[test]
fn sh_reference_bucket() {
    assert_eq!(sh_bucket("10.0.0.1".parse().unwrap(), 0), 39);
    // IPv6 folds its four words: ::10.0.0.1 folds to 10.0.0.1.
    assert_eq!(sh_bucket("::a00:1".parse().unwrap(), 0), 39);
    let folded = 0x2001_0db8 ^ 0x1;
    assert_eq!(
        sh_bucket("2001:db8::1".parse().unwrap(), 7),
        lb_common::sh_hash(folded, 7) as usize
    );
}

#[test]
fn sh_kernel_observation() {
    // rs1 w1, rs2 w2, rs3 w1 added in that order; clients 192.168.1.10 .. .19.
    let kind = SchedKind::Sh {
        fallback: false,
        port: false,
    };
    let mut s = ServiceSched::new(kind);
    let mut list = Vec::new();
    add_all(&mut s, &mut list, &[dest(1, 1), dest(2, 2), dest(3, 1)]);
    let t = s.table(&list, MAX).unwrap();
    assert_eq!(t.len(), 256);
    let got: Vec<u8> = (10..20)
        .map(|n| {
            let b = sh_bucket(IpAddr::V4(Ipv4Addr::new(192, 168, 1, n)), 0);
            octet(list[t[b].dest.unwrap()].key)
        })
        .collect();
    assert_eq!(got, [3, 2, 3, 2, 3, 2, 1, 2, 1, 2]);
}

#[test]
fn sh_fill_and_fallback_probe() {
    let sh = |fallback| SchedKind::Sh {
        fallback,
        port: true,
    };
    assert_eq!(
        ServiceSched::new(sh(true)).table(&[], MAX).unwrap(),
        vec![Pick { dest: None, aux: 0 }; 256]
    );
    // Weight 0 still takes one bucket: [A=0, B=2] fills A B B A B B ...
    let list = vec![dest(1, 0), dest(2, 2)];
    let t = ServiceSched::new(sh(false)).table(&list, MAX).unwrap();
    let d: Vec<_> = t[..6].iter().map(|p| p.dest).collect();
    assert_eq!(d, [None, Some(1), Some(1), None, Some(1), Some(1)]);

    // [A, B, C, D], D overloaded: buckets 3, 7, ... belong to D. The fallback probe starts at
    // bucket 2 * ihash (not ihash + 1), which is C's for every one of them.
    let mut list = vec![dest(1, 1), dest(2, 1), dest(3, 1), dest(4, 1)];
    list[3].overloaded = true;
    let t = ServiceSched::new(sh(true)).table(&list, MAX).unwrap();
    for b in (3..256).step_by(4) {
        assert_eq!(t[b].dest, Some(2), "bucket {b}");
    }
    assert_eq!(t[0].dest, Some(0));
    let t = ServiceSched::new(sh(false)).table(&list, MAX).unwrap();
    assert_eq!(t[3].dest, None);
    // Nothing usable at all: refused even with fallback.
    let list = vec![dest(1, 0)];
    let t = ServiceSched::new(sh(true)).table(&list, MAX).unwrap();
    assert!(t.iter().all(|p| p.dest.is_none()));
}

#[test]
fn kind_from_config() {
    use crate::model::{ServiceConfig, ServiceFlags};
    assert_eq!(
        SchedKind::from_config(&ServiceConfig::with_scheduler("rr")),
        Some(SchedKind::Rr)
    );
    assert_eq!(
        SchedKind::from_config(&ServiceConfig::with_scheduler("wrr")),
        Some(SchedKind::Wrr)
    );
    let mut c = ServiceConfig::with_scheduler("sh");
    c.flags = ServiceFlags {
        sched1: true,
        ..Default::default()
    };
    assert_eq!(
        SchedKind::from_config(&c),
        Some(SchedKind::Sh {
            fallback: true,
            port: false
        })
    );
    assert_eq!(
        SchedKind::from_config(&ServiceConfig::with_scheduler("wlc")),
        None
    );
}
