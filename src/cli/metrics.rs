//! `cellsentence metrics`: the embedding-quality panel of one embedding (see [`crate::quality`]).
use std::path::{Path, PathBuf};

use clap::Args;

use super::{print_out, DataDirArgs};
use crate::embedding::rows::{labelled_rows, RowSource, Rows};
use crate::error::{Error, Result};
use crate::output::{self, OutKind};
use crate::quality::{self, QualityParams};
use crate::report::Table;

/// `metrics` options.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Embedding, cells × dimensions: .npy (float32/float64; rows are the input's cells in order,
    /// or the cells listed in <embeddings>.cells.txt, written by `embed`), or an .h5ad from
    /// `embed` or `merge` (obsm["X_cell_sentence"], rows named by its obs index).
    #[arg(long)]
    pub embeddings: PathBuf,
    /// The dataset the rows belong to (labels and batches are read from its obs).
    #[arg(long, short)]
    pub input: String,
    #[command(flatten)]
    pub dirs: DataDirArgs,
    /// obs column with the cell types.
    #[arg(long)]
    pub label_key: String,
    /// obs column with batches: adds asw_batch, graph_connectivity and knn_accuracy.
    #[arg(long)]
    pub batch_key: Option<String>,
    /// Neighbours of the cell graph, the cell itself included (scanpy's default).
    #[arg(long, default_value_t = 15, value_parser = super::domain::at_least(2, "--n-neighbors"))]
    pub n_neighbors: usize,
    /// Seed of the Leiden node orderings.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Leave out cells whose label (or batch) is missing, with a warning; without it they are an error.
    #[arg(long)]
    pub drop_missing: bool,
    /// Output JSON; the Leiden clusters go beside it as <out stem>.clusters.csv (cell,cluster).
    #[arg(long)]
    pub out: PathBuf,
}

/// The clusters file that goes with `out` (`M.json` → `M.clusters.csv`).
pub fn clusters_path(out: &Path) -> PathBuf {
    out.with_extension("clusters.csv")
}

/// The embedding's labelled rows, held to what the panel needs (labels and batches named by
/// their `obs` column; a constant embedding refused).
fn checked_rows(a: &MetricsArgs) -> Result<(crate::npy::Matrix, Rows)> {
    let entry = super::stream::entry_of(&super::InputArgs {
        input: a.input.clone(),
        layer: None,
        raw: false,
        dirs: a.dirs.clone(),
    })?;
    let (x, rows) = labelled_rows(&RowSource {
        embeddings: &a.embeddings,
        input: &a.input,
        entry: &entry,
        label_key: &a.label_key,
        batch_key: a.batch_key.as_deref(),
        drop_missing: a.drop_missing,
    })?;
    let what = a.embeddings.display().to_string();
    quality::check_inputs(&x, &rows.labels, rows.batches.as_deref(), &what).map_err(|e| {
        match e {
            // the labels and batches come from the input's obs
            Error::BadValue {
                field, what, fix, ..
            } if field == "labels" || field == "batches" => {
                let key = match field.as_str() {
                    "labels" => a.label_key.as_str(),
                    _ => a.batch_key.as_deref().unwrap_or_default(),
                };
                Error::bad_value(&a.input, format!("obs/{key}"), what, fix)
            }
            e => e,
        }
    })?;
    if x.rows > 1 && (1..x.rows).all(|i| x.row(i) == x.row(0)) {
        return Err(Error::bad_value(
            &a.embeddings,
            "rows",
            format!(
                "all {} rows are identical (a constant embedding): clusters and silhouettes would score ties, not structure",
                x.rows
            ),
            "check how it was made (e.g. embeddings of empty prompts, or of genes the model's vocabulary lacks)",
        ));
    }
    Ok((x, rows))
}

/// `cellsentence metrics`.
pub fn cmd_metrics(a: &MetricsArgs) -> Result<()> {
    let inputs = [a.embeddings.as_path(), Path::new(&a.input)];
    output::check_out("--out", &a.out, &inputs, OutKind::File)?;
    let clusters_out = clusters_path(&a.out);
    output::check_out("--out (clusters)", &clusters_out, &inputs, OutKind::File)?;
    let (x, rows) = checked_rows(a)?;
    // scanpy's neighbors: "n_obs too small: adjusting to `n_neighbors = n_obs`"
    let n_neighbors = if a.n_neighbors > x.rows {
        eprintln!(
            "warning: --n-neighbors {} is more than the {} cells: adjusted to {} (as scanpy does); the graph links every cell to every other",
            a.n_neighbors, x.rows, x.rows
        );
        x.rows
    } else {
        a.n_neighbors
    };
    let params = QualityParams {
        n_neighbors,
        seed: a.seed,
        ..QualityParams::default()
    };
    let q = quality::evaluate(&x, &rows.labels, rows.batches.as_deref(), &params)?;
    let json = serde_json::json!({
        "embeddings": a.embeddings, "input": a.input, "label_key": a.label_key,
        "batch_key": a.batch_key, "params": params, "panel": q.panel,
    });
    let mut t = Table::new(["cell", "cluster"]);
    for (c, k) in rows.cells.iter().zip(&q.clusters) {
        t.push([c.clone(), k.to_string()]);
    }
    let text = serde_json::to_string_pretty(&json).unwrap_or_default() + "\n";
    let dir = a
        .out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staged = [
        (output::write_temp(dir, text.as_bytes())?, a.out.clone()),
        (
            output::write_temp(dir, t.to_csv().as_bytes())?,
            clusters_out,
        ),
    ];
    output::commit_files(dir, "metrics", &staged)?;
    print_out(&text)
}
