//! Inline display for evcxr (Rust Jupyter) notebooks: tables (HTML), figures (static SVG) and
//! Markdown, plus the helpers that keep notebook cells about the biology ([`counts`],
//! [`distinct`]).
//!
//! evcxr shows what a cell prints between `EVCXR_BEGIN_CONTENT <mime>` and `EVCXR_END_CONTENT`
//! as rich output; outside a notebook these functions print the same markers to stdout, and
//! under [`outputs::capture`] (the notebook tests) they record Jupyter outputs instead.
pub mod outputs;

use std::collections::BTreeMap;
use std::path::PathBuf;

use plotly::Plot;
use polars::prelude::DataFrame;

use crate::figure;
use crate::report::{frame_table, Table};

/// Shows `content` as an HTML output of the current cell.
pub fn show_html(content: &str) {
    outputs::emit("text/html", content);
}

/// An HTML `<table>` of `t` (cells escaped).
pub fn table_html(t: &Table) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = String::from("<table>\n<thead><tr>");
    for c in &t.columns {
        out.push_str(&format!("<th>{}</th>", esc(c)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for r in &t.rows {
        out.push_str("<tr>");
        for c in r {
            out.push_str(&format!("<td>{}</td>", esc(c)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>");
    out
}

/// Shows a [`Table`] (at most `max_rows` rows, then a count of the rest).
pub fn show_table(t: &Table, max_rows: usize) {
    let mut head = t.clone();
    let rest = head.rows.len().saturating_sub(max_rows);
    head.rows.truncate(max_rows);
    let mut html = table_html(&head);
    if rest > 0 {
        html.push_str(&format!("<p>… {rest} more rows</p>"));
    }
    show_html(&html);
}

/// Shows a polars DataFrame (floats with 4 decimals, as in the results tables).
pub fn show_frame(df: &DataFrame, max_rows: usize) {
    show_table(&frame_table(df), max_rows);
}

/// The project root (where `experiments/`, `data/` and `results/` live): notebooks
/// `set_current_dir` to it so relative paths mean what they mean on the command line.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `path` relative to the project root where it lies under it (`data/x.h5ad`,
/// `../shared/data/y.h5ad`): what notebooks print, the same on every machine and clone.
pub fn relative(path: &std::path::Path) -> String {
    path.strip_prefix(project_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Shows a plotly figure inline as a static SVG (readable where notebooks are rendered without
/// JavaScript, e.g. on GitHub); the interactive HTML is what the experiment runners write.
pub fn show_plot(plot: &Plot) -> crate::error::Result<()> {
    show_spec(&figure::spec(plot))
}

/// Shows a figure given as its JSON spec (as in [`crate::experiment::RunSummary::specs`]).
pub fn show_spec(spec: &serde_json::Value) -> crate::error::Result<()> {
    outputs::emit("image/svg+xml", &figure::svg::render(spec)?);
    Ok(())
}

/// Shows Markdown text (e.g. a results `.md` file).
pub fn show_markdown(text: &str) {
    outputs::emit("text/markdown", text);
}

/// How many times each value occurs, as a two-column table (value, count), sorted by value.
pub fn counts(values: &[String], value_name: &str, count_name: &str) -> Table {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values {
        *n.entry(v).or_insert(0) += 1;
    }
    let mut t = Table::new([value_name, count_name]);
    for (k, c) in n {
        t.push([k.to_string(), c.to_string()]);
    }
    t
}

/// The distinct values, sorted.
pub fn distinct(values: &[String]) -> Vec<String> {
    let mut v = values.to_vec();
    v.sort();
    v.dedup();
    v
}

impl Table {
    /// evcxr shows a cell's final value through this method: a table ends a cell as `t`.
    pub fn evcxr_display(&self) {
        show_table(self, 50);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_html_escapes_cells() {
        let mut t = Table::new(["a", "b<c"]);
        t.push(["1 & 2", "x"]);
        let h = table_html(&t);
        assert!(h.contains("<th>b&lt;c</th>"));
        assert!(h.contains("<td>1 &amp; 2</td>"));
        assert_eq!(h.matches("<tr>").count(), 2);
    }
}
