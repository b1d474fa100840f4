//! Rules files (ipvsadm-save format) into a table: one bad line rejects the whole file,
//! naming the line.
use crate::ctl::NumberedOp;
use crate::model::Table;

/// Parses and applies a rules file onto an empty table.
pub fn parse(text: &str) -> Result<Table, String> {
    let ops = parse_ops(text)?;
    let mut t = Table::new();
    for n in &ops {
        t.apply_op(&n.op).map_err(|e| match n.line {
            Some(l) => format!("line {l}: {e}"),
            None => e.to_string(),
        })?;
    }
    Ok(t)
}

pub fn parse_ops(text: &str) -> Result<Vec<NumberedOp>, String> {
    crate::ipvsadm::parse_restore(text).map_err(|e| e.to_string())
}
