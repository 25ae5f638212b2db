//! A notebook's outputs, recorded and checked: tests/notebooks.rs runs every code cell against
//! the library with [`capture`] on, and [`check_or_update`] compares what each cell printed with
//! the outputs committed in the `.ipynb` (or writes them, with `CELLSENTENCE_UPDATE_NOTEBOOKS=1`).
//! The committed outputs are what evcxr shows: printed lines as a `stream`, each
//! `EVCXR_BEGIN_CONTENT <mime>` block as `display_data`.
use std::cell::RefCell;
use std::path::Path;

use serde_json::{json, Value};

/// Set to `1` to write the cells' outputs into the notebooks instead of checking them.
pub const UPDATE_ENV: &str = "CELLSENTENCE_UPDATE_NOTEBOOKS";

/// One output of a code cell.
#[derive(Clone, Debug, PartialEq)]
pub enum CellOutput {
    /// Printed text (stdout), lines ending in `\n`.
    Stdout(String),
    /// A rich output: its MIME type and content.
    Display { mime: String, content: String },
}

thread_local! {
    static CAPTURED: RefCell<Option<Vec<CellOutput>>> = const { RefCell::new(None) };
}

/// From now on (on this thread) outputs are recorded, not printed.
pub fn capture() {
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
}

/// The outputs recorded since the last call (empty when not capturing).
pub fn take() -> Vec<CellOutput> {
    CAPTURED.with(|c| {
        c.borrow_mut()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    })
}

fn record(out: CellOutput) -> Option<CellOutput> {
    CAPTURED.with(|c| match c.borrow_mut().as_mut() {
        Some(v) => {
            match (v.last_mut(), out) {
                (Some(CellOutput::Stdout(s)), CellOutput::Stdout(more)) => s.push_str(&more),
                (_, out) => v.push(out),
            }
            None
        }
        None => Some(out),
    })
}

/// Shows `content` as a `mime` output (evcxr's markers on stdout, or recorded).
pub fn emit(mime: &str, content: &str) {
    let out = CellOutput::Display {
        mime: mime.to_string(),
        content: content.to_string(),
    };
    if record(out).is_some() {
        println!("EVCXR_BEGIN_CONTENT {mime}\n{content}\nEVCXR_END_CONTENT");
    }
}

/// Prints a line (what `println!` does in a notebook cell; recorded when capturing).
pub fn print_line(line: String) {
    if record(CellOutput::Stdout(format!("{line}\n"))).is_some() {
        println!("{line}");
    }
}

/// nbformat's multi-line string: a list of lines, each but the last ending in `\n`.
fn lines_json(s: &str) -> Value {
    Value::Array(s.split_inclusive('\n').map(|l| json!(l)).collect())
}

fn joined(v: &Value) -> String {
    match v {
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

impl CellOutput {
    fn to_json(&self) -> Value {
        match self {
            CellOutput::Stdout(text) => {
                json!({"name": "stdout", "output_type": "stream", "text": lines_json(text)})
            }
            CellOutput::Display { mime, content } => json!({
                "data": {mime.as_str(): lines_json(content)},
                "metadata": {},
                "output_type": "display_data",
            }),
        }
    }

    fn from_json(v: &Value) -> Option<CellOutput> {
        match v["output_type"].as_str()? {
            "stream" if v["name"] == "stdout" => Some(CellOutput::Stdout(joined(&v["text"]))),
            "display_data" | "execute_result" => {
                let (mime, content) = v["data"].as_object()?.iter().next()?;
                Some(CellOutput::Display {
                    mime: mime.clone(),
                    content: joined(content),
                })
            }
            _ => None,
        }
    }

    fn text(&self) -> &str {
        match self {
            CellOutput::Stdout(s) => s,
            CellOutput::Display { content, .. } => content,
        }
    }
}

/// Words that mark a line (or a table column) as a timing or cache-state measurement: its
/// numbers change from run to run and are not compared.
const VOLATILE: [&str; 6] = ["/s", " s /", "seconds", "wall", "from the cache", "elapsed"];

fn volatile(s: &str) -> bool {
    VOLATILE.iter().any(|w| s.contains(w))
}

/// Splits text into non-numeric runs and numbers (`-?digits[.digits][e±digits]`).
fn tokens(s: &str) -> Vec<(bool, &str)> {
    let b = s.as_bytes();
    let (mut out, mut i, mut start) = (Vec::new(), 0, 0);
    while i < b.len() {
        let neg = b[i] == b'-' && i + 1 < b.len() && b[i + 1].is_ascii_digit();
        if b[i].is_ascii_digit() || neg {
            if start < i {
                out.push((false, &s[start..i]));
            }
            let j0 = i;
            i += usize::from(neg);
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i + 1 < b.len()
                && (b[i] == b'e' || b[i] == b'E')
                && (b[i + 1] == b'-' || b[i + 1].is_ascii_digit())
            {
                i += 2;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            out.push((true, &s[j0..i]));
            start = i;
        } else {
            i += 1;
        }
    }
    if start < b.len() {
        out.push((false, &s[start..]));
    }
    out
}

/// Whether two numbers agree: decimals within 0.04 (libtorch/BLAS differences between machines
/// and CPU vendors, the snapshot guard's tolerance), integers exactly (pixel positions in SVG
/// within 8, about 0.04 of a bar chart's unit).
fn same_number(a: &str, b: &str, svg: bool) -> bool {
    if a == b {
        return true;
    }
    let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) else {
        return false;
    };
    let decimal = a.contains('.') || b.contains('.');
    let tol = if svg {
        8.0
    } else if decimal {
        0.04
    } else {
        0.0
    };
    (x - y).abs() <= tol
}

/// Compares one line; `masked` columns (of a Markdown or HTML table row) are not compared.
fn same_line(a: &str, b: &str, svg: bool, masked: &[usize]) -> bool {
    if volatile(a) && volatile(b) && !svg {
        return mask_numbers(a) == mask_numbers(b);
    }
    if !masked.is_empty() {
        let (ca, cb) = (cells(a), cells(b));
        return ca.len() == cb.len()
            && ca
                .iter()
                .zip(&cb)
                .enumerate()
                .all(|(k, (x, y))| masked.contains(&k) || same_line(x, y, svg, &[]));
    }
    let (ta, tb) = (tokens(a), tokens(b));
    ta.len() == tb.len()
        && ta.iter().zip(&tb).all(|(x, y)| match (x, y) {
            ((true, p), (true, q)) => same_number(p, q, svg),
            ((false, p), (false, q)) => p == q,
            _ => false,
        })
}

fn mask_numbers(s: &str) -> String {
    tokens(s)
        .into_iter()
        .map(|(num, t)| if num { "#" } else { t })
        .collect()
}

/// The cells of a Markdown (`| a | b |`) or HTML (`<td>a</td>…`) table row.
fn cells(line: &str) -> Vec<String> {
    if line.contains("<td>") || line.contains("<th>") {
        return line
            .split("</t")
            .map(|c| c.rsplit('>').next().unwrap_or_default().to_string())
            .collect();
    }
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

fn table_row(line: &str) -> bool {
    line.trim_start().starts_with('|') || line.contains("<td>") || line.contains("<th>")
}

/// Whether a whole output agrees; a table's volatile columns (by their header) are skipped.
fn same_text(a: &str, b: &str, svg: bool) -> Result<(), String> {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    if la.len() != lb.len() {
        return Err(format!(
            "{} lines committed, {} printed",
            la.len(),
            lb.len()
        ));
    }
    let mut masked: Vec<usize> = Vec::new();
    for (k, (x, y)) in la.iter().zip(&lb).enumerate() {
        if !table_row(x) {
            masked.clear();
        } else if x.contains("<th>") || la.get(k + 1).is_some_and(|n| n.contains("---")) {
            masked = cells(x)
                .iter()
                .enumerate()
                .filter(|(_, c)| volatile(c) || c.starts_with("s /"))
                .map(|(k, _)| k)
                .collect();
        }
        if !same_line(x, y, svg, &masked) {
            let cut = |s: &str| s.chars().take(240).collect::<String>();
            return Err(format!(
                "line {}:\n  committed: {}\n  printed:   {}",
                k + 1,
                cut(x),
                cut(y)
            ));
        }
    }
    Ok(())
}

fn cell_matches(committed: &[CellOutput], printed: &[CellOutput]) -> Result<(), String> {
    if committed.len() != printed.len() {
        return Err(format!(
            "{} outputs committed, {} printed",
            committed.len(),
            printed.len()
        ));
    }
    for (a, b) in committed.iter().zip(printed) {
        let (ma, mb) = match (a, b) {
            (CellOutput::Stdout(_), CellOutput::Stdout(_)) => ("stdout", "stdout"),
            (CellOutput::Display { mime: x, .. }, CellOutput::Display { mime: y, .. }) => {
                (x.as_str(), y.as_str())
            }
            _ => ("stdout", "display"),
        };
        if ma != mb {
            return Err(format!("output kind: committed {ma}, printed {mb}"));
        }
        same_text(a.text(), b.text(), ma == "image/svg+xml")?;
    }
    Ok(())
}

/// Checks the outputs each code cell printed (`(cell id, outputs)`, in order) against those
/// committed in the notebook at `path`, or writes them there when [`UPDATE_ENV`] is `1`.
/// The error names the notebook, the cell and the first line that differs, and the fix.
pub fn check_or_update(path: &Path, printed: &[(String, Vec<CellOutput>)]) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut nb: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a notebook: {e}", path.display()))?;
    let update = std::env::var(UPDATE_ENV).is_ok_and(|v| v == "1");
    let code: Vec<&mut Value> = nb["cells"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .filter(|c| c["cell_type"] == "code")
        .collect();
    if code.len() != printed.len() {
        return Err(format!(
            "{}: {} code cells, {} ran",
            path.display(),
            code.len(),
            printed.len()
        ));
    }
    let mut errors = Vec::new();
    for (n, (cell, (id, outs))) in code.into_iter().zip(printed).enumerate() {
        if update {
            cell["outputs"] = Value::Array(outs.iter().map(CellOutput::to_json).collect());
            cell["execution_count"] = json!(n + 1);
            continue;
        }
        let committed: Vec<CellOutput> = cell["outputs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(CellOutput::from_json)
            .collect();
        if let Err(e) = cell_matches(&committed, outs) {
            errors.push(format!("cell {id}: {e}"));
        }
    }
    if update {
        let mut buf = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
        serde::Serialize::serialize(&nb, &mut ser).map_err(|e| e.to_string())?;
        buf.push(b'\n');
        crate::report::write_atomic(path, &buf).map_err(|e| e.to_string())?;
        return Ok(());
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}: the committed outputs differ from what the cells print now:\n{}\nIf the change is intended, \
         rewrite them with `{UPDATE_ENV}=1 cargo test --release --test notebooks` and review the diff.",
        path.display(),
        errors.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_lines_and_columns_are_not_compared() {
        assert!(same_text("7 cells, 1234 tokens/s", "7 cells, 99 tokens/s", false).is_ok());
        assert!(same_text("8 cells, 1234 tokens/s", "7 cells, 99 tokens/s", false).is_ok());
        let t = |v: &str, s: &str| {
            format!("| ds | cells/s | s / dataset |\n|---|---|---|\n| {v} | {s} | {s} |")
        };
        assert!(same_text(&t("0.91", "1.06"), &t("0.91", "17.2"), false).is_ok());
        assert!(same_text(&t("0.91", "1.06"), &t("0.85", "1.06"), false).is_err());
    }

    #[test]
    fn numbers_compare_with_the_guard_tolerance() {
        assert!(same_text("macro-F1 0.8123", "macro-F1 0.8200", false).is_ok());
        assert!(same_text("macro-F1 0.8123", "macro-F1 0.8700", false).is_err());
        assert!(same_text("700 cells", "701 cells", false).is_err());
        assert!(same_text("700 cells", "700 genes", false).is_err());
        assert!(same_text("<circle cx=\"100\"", "<circle cx=\"102\"", true).is_ok());
        assert!(same_text("<circle cx=\"100\"", "<circle cx=\"110\"", true).is_err());
    }

    #[test]
    fn captured_outputs_round_trip_through_json() {
        capture();
        print_line("a".into());
        print_line("b".into());
        emit("text/html", "<p>x</p>\n<p>y</p>");
        let outs = take();
        assert_eq!(outs[0], CellOutput::Stdout("a\nb\n".into()));
        let back: Vec<_> = outs
            .iter()
            .map(|o| CellOutput::from_json(&o.to_json()).unwrap())
            .collect();
        assert_eq!(back, outs);
        assert!(take().is_empty());
    }
}
