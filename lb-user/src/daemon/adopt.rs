//! Whether the maps a previous xvsd left pinned can be taken over by this one: aya re-opens a
//! pinned map by name without comparing it with the program's definition, so a layout change
//! (an upgrade that changed a value, or maps created with other sizes) is caught here, before
//! anything reads or writes them.
use std::path::Path;

use aya::maps::{MapInfo, MapType};
use lb_common::{
    map_names as names, Config, ConnValue, DestStats, DestValue, FlowKey, L4Addr, ReplyValue,
    SchedSlot, SvcValue,
};

use crate::fastpath::Limits;

/// Every map the fast path pins: name, type, key size, value size, max_entries (None: any).
fn expected(l: &Limits) -> Vec<(&'static str, MapType, u32, u32, Option<u32>)> {
    use std::mem::size_of;
    let s = |n: usize| n as u32;
    vec![
        (
            names::SERVICES,
            MapType::Hash,
            s(size_of::<L4Addr>()),
            s(size_of::<SvcValue>()),
            Some(l.max_services),
        ),
        (
            names::SCHED_SLOTS,
            MapType::Array,
            4,
            s(size_of::<SchedSlot>()),
            Some(l.sched_slots),
        ),
        (
            names::DESTS,
            MapType::Array,
            4,
            s(size_of::<DestValue>()),
            Some(l.max_dests),
        ),
        (
            names::DEST_STATS,
            MapType::PerCpuArray,
            4,
            s(size_of::<DestStats>()),
            Some(l.max_dests),
        ),
        (
            names::BACKENDS,
            MapType::Hash,
            s(size_of::<L4Addr>()),
            4,
            Some(l.max_dests),
        ),
        (
            names::CONNS,
            MapType::LruHash,
            s(size_of::<FlowKey>()),
            s(size_of::<ConnValue>()),
            None,
        ),
        (
            names::REPLIES,
            MapType::LruHash,
            s(size_of::<FlowKey>()),
            s(size_of::<ReplyValue>()),
            None,
        ),
        (
            names::CONFIG,
            MapType::Array,
            4,
            s(size_of::<Config>()),
            Some(1),
        ),
    ]
}

/// Whether any map is pinned under `pin_dir`.
pub fn any_pinned(pin_dir: &Path) -> bool {
    [names::SERVICES, names::DESTS, names::CONNS, names::CONFIG]
        .iter()
        .any(|n| pin_dir.join(n).exists())
}

/// Checks the pinned maps against this xvsd's layout and `limits` (the sizes the durable
/// state or the saved engine recorded). Err names the first difference.
pub fn check_pins(pin_dir: &Path, limits: &Limits) -> Result<(), String> {
    for (name, ty, k, v, max) in expected(limits) {
        let p = pin_dir.join(name);
        if !p.exists() {
            return Err(format!("{name} is not pinned"));
        }
        let info = MapInfo::from_pin(&p).map_err(|e| format!("{name}: {e}"))?;
        let got_ty = info
            .map_type()
            .map_err(|e| format!("{name}: map type: {e}"))?;
        if got_ty != ty {
            return Err(format!(
                "{name} is a {got_ty:?} map, this xvsd needs {ty:?}"
            ));
        }
        if info.key_size() != k || info.value_size() != v {
            return Err(format!(
                "{name} has {}-byte keys and {}-byte values, this xvsd uses {k} and {v}",
                info.key_size(),
                info.value_size()
            ));
        }
        if let Some(max) = max {
            if info.max_entries() != max {
                return Err(format!(
                    "{name} has {} entries, the saved state {max}",
                    info.max_entries()
                ));
            }
        }
    }
    Ok(())
}

/// Unpins the maps (not the links): the programs attached through the pinned links keep the
/// old maps alive, and keep forwarding with them, until this daemon's program replaces theirs.
pub fn unpin_maps(pin_dir: &Path) {
    for n in [
        names::SERVICES,
        names::SCHED_SLOTS,
        names::DESTS,
        names::DEST_STATS,
        names::BACKENDS,
        names::CONNS,
        names::REPLIES,
        names::CONFIG,
        names::TX_PORTS,
        names::PATH_STATS,
    ] {
        let _ = std::fs::remove_file(pin_dir.join(n));
    }
}
