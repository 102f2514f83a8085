//! Output helpers: JSON on stdout, or an aligned table.

use anyhow::Result;
use serde::Serialize;

/// Prints `items` as JSON, or `rows` as an aligned table under `header`.
pub fn emit<T: Serialize + ?Sized>(
    json: bool,
    items: &T,
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(items)?);
        return Ok(());
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}
