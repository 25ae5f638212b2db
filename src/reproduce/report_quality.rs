//! REPORT.md's "Beyond the paper — embedding quality": each embedding's panel per dataset (best
//! per column in bold), a reading generated from the numbers, and the UMAP maps.
use std::path::Path;

use super::ExperimentRun;
use crate::error::Result;
use crate::experiment::outputs::names;
use crate::report::Table;

use crate::report::relative as rel;

/// The quality columns the report shows, higher is better in each.
const QUALITY_COLS: [(&str, &str); 8] = [
    ("embedding", "embedding"),
    ("nmi", "NMI"),
    ("ari", "ARI"),
    ("asw_label", "ASW label"),
    ("avg_bio", "AvgBIO"),
    ("asw_batch", "ASW batch"),
    ("graph_connectivity", "graph conn."),
    ("knn_accuracy", "kNN transfer acc."),
];

/// `t` with the best value of each numeric column in bold (ties all bold).
fn bold_best(t: &Table) -> Table {
    let mut out = t.clone();
    for j in 1..t.columns.len() {
        let vals: Vec<Option<f64>> = t.rows.iter().map(|r| r[j].parse().ok()).collect();
        let best = vals
            .iter()
            .flatten()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        for (r, v) in out.rows.iter_mut().zip(&vals) {
            if *v == Some(best) {
                r[j] = format!("**{}**", r[j]);
            }
        }
    }
    out
}

/// "Beyond the paper — embedding quality": per dataset, every embedding's panel (best in
/// bold), what it says about the LM rows, and the UMAP maps.
pub(super) fn quality_section(out: &Path, r: &ExperimentRun) -> Result<String> {
    let Ok(t) = r.summary.table(names::QUALITY) else {
        return Ok(String::new());
    };
    let link = rel(out, &r.summary.out);
    let mut md = String::from(
        "## Beyond the paper — embedding quality

",
    );
    md.push_str(&format!("How well each embedding of [{link}]({link}/index.md) separates the cell types without a classifier (scIB's bio-conservation scores; Kedzierska et al. 2025 score foundation models this way) and, with batches, how well it mixes them. Settings and definitions: [{link}/quality.md]({link}/quality.md). Best per column in bold.\n\n"));
    let mut ids: Vec<&str> = t.rows.iter().map(|row| t.cell(row, "dataset")).collect();
    ids.dedup();
    for id in ids {
        let mut sub = Table::new(t.columns.clone());
        for row in t.rows.iter().filter(|row| t.cell(row, "dataset") == id) {
            sub.push(row.clone());
        }
        let has_batch = sub
            .rows
            .iter()
            .any(|row| !sub.cell(row, "asw_batch").is_empty());
        let cols: Vec<(&str, &str)> = QUALITY_COLS
            .iter()
            .copied()
            .filter(|(c, _)| {
                has_batch || !matches!(*c, "asw_batch" | "graph_connectivity" | "knn_accuracy")
            })
            .collect();
        md.push_str(&format!("**{id}**\n\n"));
        md.push_str(&bold_best(&sub.select(&cols)).to_markdown());
        md.push_str(&format!("\n{}\n", quality_reading(&sub)));
        let maps: Vec<(String, String)> = sub
            .rows
            .iter()
            .map(|row| {
                let e = sub.cell(row, "embedding");
                (
                    e.to_string(),
                    names::svg(&names::umap_figure(id, e, "cell type")),
                )
            })
            .filter(|(_, f)| r.summary.files.contains(f))
            .collect();
        let links: Vec<String> = maps
            .iter()
            .map(|(e, f)| format!("[{e}]({link}/{f})"))
            .collect();
        if !links.is_empty() {
            let by_batch = if has_batch {
                " (the same maps coloured by batch: `…_by_batch.svg` beside them)"
            } else {
                ""
            };
            md.push_str(&format!(
                "\nUMAP maps by cell type{by_batch}: {}.\n\n",
                links.join(", ")
            ));
        }
        // the pretrained LM's map beside PCA of HVG
        for (e, f) in maps.iter().filter(|(e, _)| {
            e == "pretrained LM full sentences" || e.ends_with("of HVG expression")
        }) {
            md.push_str(&format!("![{id}: {e}]({link}/{f})\n"));
        }
        md.push('\n');
    }
    Ok(md)
}

/// One sentence per dataset, from the numbers: the best AvgBIO, and the pretrained LM against
/// its untrained control and PCA of HVG.
fn quality_reading(t: &Table) -> String {
    let avg = |name: &str| {
        t.rows
            .iter()
            .find(|row| t.cell(row, "embedding") == name)
            .and_then(|row| t.cell(row, "avg_bio").parse::<f64>().ok())
    };
    let best = t
        .rows
        .iter()
        .filter_map(|row| {
            Some((
                t.cell(row, "embedding"),
                t.cell(row, "avg_bio").parse::<f64>().ok()?,
            ))
        })
        .fold(None, |b: Option<(&str, f64)>, x| match b {
            Some(b) if b.1 >= x.1 => Some(b),
            _ => Some(x),
        });
    let mut s = best.map_or(String::new(), |(e, v)| {
        format!("Best AvgBIO: {e} ({v:.3}).")
    });
    let metrics = |name: &str| {
        t.rows
            .iter()
            .find(|row| t.cell(row, "embedding").ends_with(name))
            .map(|row| row[2..].to_vec())
    };
    if metrics("of HVG expression").is_some()
        && metrics("of HVG expression") == metrics("of all genes")
    {
        s.push_str(" The HVG set is every gene here (the file has fewer genes than `n_top_genes`), so HVG and full rows coincide.");
    }
    let pca = t
        .rows
        .iter()
        .map(|row| t.cell(row, "embedding"))
        .find(|e| e.ends_with("of HVG expression"));
    for mode in ["full", "hvg"] {
        let (p, u) = (
            avg(&format!("pretrained LM {mode} sentences")),
            avg(&format!("untrained LM {mode} sentences")),
        );
        if let (Some(p), Some(u)) = (p, u) {
            let rel = if p > u { "above" } else { "below" };
            s.push_str(&format!(
                " Pretrained LM, {mode} sentences: {p:.3}, {rel} its untrained control ({u:.3})"
            ));
            if let Some(q) = pca.and_then(avg) {
                s.push_str(&format!(
                    " and {} PCA of HVG ({q:.3})",
                    if p > q { "above" } else { "below" }
                ));
            }
            s.push('.');
        }
    }
    s
}
