//! Inline display for evcxr (Rust Jupyter) notebooks: tables and plotly figures.
//!
//! evcxr shows what a cell prints between `EVCXR_BEGIN_CONTENT <mime>` and `EVCXR_END_CONTENT`
//! as rich output; outside a notebook these functions print the same markers to stdout.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use plotly::Plot;
use polars::prelude::DataFrame;

use crate::figure::{self, PLOTLY_JS};
use crate::report::{frame_table, Table};

static PLOTLY_SENT: AtomicBool = AtomicBool::new(false);
static FIGURE_ID: AtomicUsize = AtomicUsize::new(0);

/// Shows `content` as an HTML output of the current cell.
pub fn show_html(content: &str) {
    println!("EVCXR_BEGIN_CONTENT text/html\n{content}\nEVCXR_END_CONTENT");
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

/// Shows a plotly figure inline; plotly.js (offline bundle) is sent with the first figure.
pub fn show_plot(plot: &Plot) {
    show_spec(&figure::spec(plot));
}

/// Shows a figure given as its JSON spec (as in [`crate::experiment::RunSummary::specs`]).
pub fn show_spec(spec: &serde_json::Value) {
    let id = FIGURE_ID.fetch_add(1, Ordering::Relaxed);
    let json = serde_json::to_string(spec)
        .unwrap_or_default()
        .replace("</", "<\\/");
    let lib = if PLOTLY_SENT.swap(true, Ordering::Relaxed) {
        String::new()
    } else {
        format!("<script type=\"text/javascript\">{PLOTLY_JS}</script>\n")
    };
    show_html(&format!(
        "{lib}<div id=\"cellsentence-figure-{id}\" style=\"width:100%;height:480px;\"></div>\n<script type=\"text/javascript\">Plotly.newPlot(\"cellsentence-figure-{id}\", {json});</script>"
    ));
}

/// Shows Markdown text (e.g. a results `.md` file).
pub fn show_markdown(text: &str) {
    println!("EVCXR_BEGIN_CONTENT text/markdown\n{text}\nEVCXR_END_CONTENT");
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
