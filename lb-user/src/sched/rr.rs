//! rr (ip_vs_rr.c): a cursor on the last picked destination; each pick takes the next
//! available one after it, wrapping, the cursor's own destination last.

use super::{check_len, position, DestKey, Pick, SchedDest, SchedError};

/// One period: every available destination once, in list order, starting after the cursor.
pub(super) fn table(
    cursor: Option<DestKey>,
    list: &[SchedDest],
    max_len: usize,
) -> Result<Vec<Pick>, SchedError> {
    // The head cursor starts the walk at the first destination. A cursor that is not in the
    // list cannot happen when every deletion went through on_change; treat it as the head.
    let start = cursor.and_then(|k| position(list, k)).map_or(0, |j| j + 1);
    let order = (start..list.len()).chain(0..start);
    let picks: Vec<Pick> = order
        .filter(|&i| list[i].available())
        .map(|i| Pick {
            dest: Some(i),
            aux: 0,
        })
        .collect();
    check_len(picks.len() as u64, max_len)?;
    Ok(picks)
}

/// ip_vs_rr_del_dest: when the cursor's destination is unlinked, the cursor moves to its
/// predecessor (the head if it was first). Adds and edits leave the cursor alone.
pub(super) fn on_change(cursor: &mut Option<DestKey>, before: &[SchedDest], after: &[SchedDest]) {
    let Some(key) = *cursor else { return };
    if position(after, key).is_some() {
        return;
    }
    // Deletions one at a time each move the cursor one step back, so after any number of them
    // it rests on the nearest predecessor that survived.
    let Some(j) = position(before, key) else {
        *cursor = None;
        return;
    };
    *cursor = before[..j]
        .iter()
        .rev()
        .find(|d| position(after, d.key).is_some())
        .map(|d| d.key);
}
