//! What an attribution run reports: the per-type top genes (CSV and Markdown, known markers
//! marked), a per-type summary, and a heat map of each type's top 5 genes.
use super::Attribution;
use crate::report::Table;

/// The attribution's tables: `top_genes.csv` rows, the Markdown top genes with known markers, and
/// the per-type summary.
pub fn tables(id: &str, r: &Attribution, markers: &[(String, String)]) -> (Table, Table, Table) {
    let is_marker = |t: &str, g: &str| markers.iter().any(|(mt, mg)| mt == t && mg == g);
    let mut csv = Table::new(["dataset", "cell_type", "rank", "gene", "score"]);
    let mut md = Table::new(["cell_type", "rank", "gene", "score", "known marker"]);
    for g in &r.top {
        let score = format!("{:.6}", g.score);
        csv.push([
            id.to_string(),
            g.cell_type.clone(),
            g.rank.to_string(),
            g.gene.clone(),
            score.clone(),
        ]);
        let known = if is_marker(&g.cell_type, &g.gene) {
            "yes"
        } else {
            ""
        };
        md.push([
            g.cell_type.clone(),
            g.rank.to_string(),
            g.gene.clone(),
            score,
            known.to_string(),
        ]);
    }
    let mut summary = Table::new([
        "cell_type",
        "attributed cells",
        "cells",
        "known markers in top",
        "markers listed",
    ]);
    for (t, (ok, all)) in &r.cells {
        let listed = markers.iter().filter(|(mt, _)| mt == t).count();
        let found: Vec<&str> = r
            .top
            .iter()
            .filter(|g| &g.cell_type == t && is_marker(t, &g.gene))
            .map(|g| g.gene.as_str())
            .collect();
        summary.push([
            t.clone(),
            ok.to_string(),
            all.to_string(),
            found.join(" "),
            listed.to_string(),
        ]);
    }
    (csv, md, summary)
}

/// Heat map of each type's top 5 genes.
pub fn heatmap(id: &str, r: &Attribution) -> plotly::Plot {
    let types: Vec<String> = r.cells.keys().cloned().collect();
    let mut genes: Vec<String> = Vec::new();
    for g in r.top.iter().filter(|g| g.rank <= 5) {
        if !genes.contains(&g.gene) {
            genes.push(g.gene.clone());
        }
    }
    let z: Vec<Vec<f64>> = types
        .iter()
        .map(|t| {
            genes
                .iter()
                .map(|g| {
                    r.top
                        .iter()
                        .find(|x| &x.cell_type == t && &x.gene == g)
                        .map_or(0.0, |x| x.score)
                })
                .collect()
        })
        .collect();
    crate::figure::heatmap(
        &format!("Gene-token attribution — {} (top 5 genes per type)", id),
        &genes,
        &types,
        &z,
        "gene",
        "cell type",
    )
}
