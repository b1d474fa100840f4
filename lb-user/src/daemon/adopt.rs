//! Whether the maps a previous xvsd left pinned can be taken over by this one: aya re-opens a
//! pinned map by name without comparing it with the program's definition, so a layout change
//! (an upgrade that changed a map's type or a value, or maps created with other sizes) is
//! caught here, before anything reads or writes them. The expected layout is read from the BPF
//! object this xvsd embeds, so the check follows the programs as they change.
use std::collections::HashMap;
use std::path::Path;

use aya::maps::MapInfo;
use lb_common::map_names as names;

use crate::fastpath::Limits;

/// Maps the engine sizes (their max_entries must be what the saved state says) and maps a
/// successor cannot do without.
fn sized(l: &Limits) -> HashMap<&'static str, u32> {
    [
        (names::SERVICES, l.max_services),
        (names::SCHED_SLOTS, l.sched_slots),
        (names::DESTS, l.max_dests),
        (names::DEST_STATS, l.max_dests),
        (names::BACKENDS, l.max_dests),
    ]
    .into_iter()
    .collect()
}

const REQUIRED: [&str; 3] = [names::CONNS, names::REPLIES, names::CONFIG];

/// Whether any map is pinned under `pin_dir`.
pub fn any_pinned(pin_dir: &Path) -> bool {
    [names::SERVICES, names::DESTS, names::CONNS, names::CONFIG]
        .iter()
        .any(|n| pin_dir.join(n).exists())
}

/// Checks the pinned maps against this xvsd's BPF object and `limits` (the sizes the durable
/// state or the saved engine recorded): every map of the object that is pinned must have its
/// type and key and value sizes, the engine's maps their recorded sizes; the engine's maps and
/// the connection tables must be there. Err names the first difference.
pub fn check_pins(pin_dir: &Path, limits: &Limits) -> Result<(), String> {
    let obj = aya_obj::Object::parse(crate::bpf_object::object())
        .map_err(|e| format!("reading this xvsd's BPF object: {e}"))?;
    let sized = sized(limits);
    for name in sized.keys().chain(REQUIRED.iter()) {
        if !obj.maps.contains_key(*name) {
            return Err(format!("this xvsd's programs have no map {name}"));
        }
    }
    let mut names: Vec<&String> = obj.maps.keys().filter(|n| !n.starts_with('.')).collect();
    names.sort();
    for name in names {
        let m = &obj.maps[name];
        let p = pin_dir.join(name);
        if !p.exists() {
            if sized.contains_key(name.as_str()) || REQUIRED.contains(&name.as_str()) {
                return Err(format!("{name} is not pinned"));
            }
            // A map new in this version: created at load.
            continue;
        }
        let info = MapInfo::from_pin(&p).map_err(|e| format!("{name}: {e}"))?;
        let ty = info
            .map_type()
            .map_err(|e| format!("{name}: map type: {e}"))?;
        if ty as u32 != m.map_type() {
            return Err(format!(
                "{name} is a {ty:?} map, this xvsd needs map type {}",
                m.map_type()
            ));
        }
        if info.key_size() != m.key_size() || info.value_size() != m.value_size() {
            return Err(format!(
                "{name} has {}-byte keys and {}-byte values, this xvsd uses {} and {}",
                info.key_size(),
                info.value_size(),
                m.key_size(),
                m.value_size()
            ));
        }
        if let Some(&max) = sized.get(name.as_str()) {
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
/// Every map of this xvsd's object goes, and those of the versions this one knows.
pub fn unpin_maps(pin_dir: &Path) {
    let mut all: Vec<String> = [
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Ok(obj) = aya_obj::Object::parse(crate::bpf_object::object()) {
        all.extend(obj.maps.into_keys().filter(|n| !n.starts_with('.')));
    }
    for n in all {
        let _ = std::fs::remove_file(pin_dir.join(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The object this xvsd embeds has every map the check needs, with the types the engine
    /// expects of its own maps.
    #[test]
    fn the_embedded_object_defines_the_checked_maps() {
        let obj = aya_obj::Object::parse(crate::bpf_object::object()).unwrap();
        let l = Limits {
            max_services: 1,
            max_dests: 1,
            sched_slots: 1,
            max_period: 1,
        };
        for n in sized(&l).keys().chain(REQUIRED.iter()) {
            assert!(obj.maps.contains_key(*n), "{n}");
        }
        assert_eq!(
            obj.maps[names::SERVICES].value_size() as usize,
            std::mem::size_of::<lb_common::SvcValue>()
        );
    }
}
