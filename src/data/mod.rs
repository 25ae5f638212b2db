//! Data stage: the [`Dataset`] type, the AnnData `.h5ad` ([`h5ad`]) and 10x `matrix.mtx`
//! ([`tenx`]) readers, and the [`catalog`](mod@catalog) that resolves dataset ids from data directories.
//!
//! The count matrix is read with HDF5 directly (values converted to `f32` and indices to `u32`
//! by HDF5 itself, in chunks, so a large file is never held twice); `obs`/`var` tables go through
//! the `anndata` crate.
use std::path::{Path, PathBuf};

use polars::prelude::DataFrame;

use rayon::prelude::*;

use crate::csr::Csr;
use crate::error::{Error, Result};

pub mod backed;
pub mod catalog;
pub mod describe;
pub mod h5ad;
pub mod h5ad_out;
pub mod tenx;

pub use catalog::{catalog, corpus_data_dirs, default_data_dirs, resolve, DatasetEntry};
pub use h5ad::read_h5ad;
pub use tenx::read_10x_mtx;

std::thread_local!(static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });

/// Runs a read through the anndata crate, which can panic (an `unwrap` on an HDF5 error) on a
/// damaged file instead of returning an error: the panic becomes an error, and its message stays
/// off stderr (the caller names the file and the fix).
pub(crate) fn contain_panics<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(|q| q.get()) {
                prev(info)
            }
        }));
    });
    QUIET_PANICS.with(|q| q.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(false));
    r.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let first = msg.lines().next().unwrap_or("").to_string();
        Err(anyhow::anyhow!(
            "the HDF5 structure is damaged (the anndata reader gave up: {first})"
        ))
    })
}

/// How the values in `X` were transformed, mirroring scanpy's `uns["log1p"]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum XState {
    /// Raw (integer-valued) counts.
    Counts,
    /// `normalize_total` + `log1p`; `base: None` means natural log (scanpy's convention).
    LogNormalized {
        /// Logarithm base (scanpy `uns["log1p"]["base"]`).
        base: Option<f64>,
    },
    /// Anything else (scaled, unknown).
    Other,
}

/// A cells × genes matrix with its annotations.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Expression matrix (cells × genes), CSR with `f32` values.
    pub x: Csr,
    /// Gene symbols (unique; made unique on read if the file had duplicates).
    pub genes: Vec<String>,
    /// Cell names (obs index).
    pub cells: Vec<String>,
    /// Cell annotations, one row per cell.
    pub obs: DataFrame,
    /// What `x` holds.
    pub state: XState,
    /// The file this dataset was read from (for error messages).
    pub source: PathBuf,
    /// Non-fatal problems found while reading (duplicate names, ...).
    pub warnings: Vec<String>,
}

impl Dataset {
    /// Number of cells.
    pub fn n_cells(&self) -> usize {
        self.x.n_rows
    }
    /// Number of genes.
    pub fn n_genes(&self) -> usize {
        self.x.n_cols
    }

    /// Keeps the given cells (in that order) and, optionally, the given genes (increasing indices).
    pub fn subset(&self, cells: &[usize], genes: Option<&[usize]>) -> Result<Dataset> {
        let idx =
            polars::prelude::IdxCa::from_vec("idx".into(), cells.iter().map(|&i| i as _).collect());
        let obs = self.obs.take(&idx).map_err(|e| {
            Error::format(
                &self.source,
                format!("obs subset failed: {e}"),
                "report this as a bug",
            )
        })?;
        Ok(Dataset {
            x: self.x.select(cells, genes),
            genes: match genes {
                Some(g) => g.iter().map(|&j| self.genes[j].clone()).collect(),
                None => self.genes.clone(),
            },
            cells: cells.iter().map(|&i| self.cells[i].clone()).collect(),
            obs,
            state: self.state,
            source: self.source.clone(),
            warnings: self.warnings.clone(),
        })
    }

    /// The values of an `obs` column as strings (categorical, string, integer or boolean).
    pub fn obs_column(&self, key: &str) -> Result<Vec<String>> {
        let col = self.obs.column(key).map_err(|_| {
            let have: Vec<String> = self
                .obs
                .get_column_names()
                .iter()
                .map(|s| s.to_string())
                .collect();
            Error::missing(
                &self.source,
                format!("obs/{key}"),
                format!("choose one of the obs columns: {}", have.join(", ")),
            )
        })?;
        let s = col.cast(&polars::prelude::DataType::String).map_err(|e| {
            Error::bad_value(
                &self.source,
                format!("obs/{key}"),
                format!("cannot read as text: {e}"),
                "use a categorical or string column",
            )
        })?;
        let ca = s.str().map_err(|e| {
            Error::bad_value(
                &self.source,
                format!("obs/{key}"),
                e.to_string(),
                "use a categorical or string column",
            )
        })?;
        Ok((0..ca.len())
            .map(|i| ca.get(i).unwrap_or("NA").to_string())
            .collect())
    }

    /// A label or batch column with missing entries (null, NaN, empty text) as `None`.
    pub fn obs_optional(&self, key: &str) -> Result<Vec<Option<String>>> {
        let col = self.obs_column(key)?;
        let nulls = self.obs.column(key).map(|c| c.is_null()).map_err(|e| {
            Error::bad_value(
                &self.source,
                format!("obs/{key}"),
                e.to_string(),
                "use a categorical or string column",
            )
        })?;
        Ok(col
            .into_iter()
            .zip(nulls.iter())
            .map(|(v, null)| {
                let t = v.trim();
                (!null.unwrap_or(false) && !t.is_empty() && !t.eq_ignore_ascii_case("nan"))
                    .then_some(v)
            })
            .collect())
    }

    /// A label or batch column in which every cell has a value; a missing one (null, NaN, empty)
    /// is an error naming how many cells lack it, the first of them, and `fix`.
    pub fn obs_labels(&self, key: &str, fix: &str) -> Result<Vec<String>> {
        let vals = self.obs_optional(key)?;
        let missing: Vec<usize> = (0..vals.len()).filter(|&i| vals[i].is_none()).collect();
        if let Some(&first) = missing.first() {
            return Err(Error::bad_value(
                &self.source,
                format!("obs/{key}"),
                format!(
                    "{} of {} cells have no value (missing/NaN), the first is `{}`; a missing label is not a class",
                    missing.len(),
                    vals.len(),
                    self.cells[first]
                ),
                fix,
            ));
        }
        Ok(vals.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Errors if any stored value is NaN or infinite.
    pub fn check_finite(&self) -> Result<()> {
        check_matrix(&self.x, 0, &self.cells, &self.genes, &self.source, None)
    }

    /// Errors unless X can be log-normalized expression, as `--no-preprocess` declares it: at
    /// least one cell, finite, and no negative value (a scaled or centred matrix, as
    /// `sc.pp.scale` writes, would rank genes by z-score and not by expression).
    pub fn check_log_normalized(&self) -> Result<()> {
        if self.n_cells() == 0 {
            return Err(Error::Empty {
                path: self.source.clone(),
                what: "X has no cells".into(),
                fix: "use a file with cells (with --no-preprocess nothing filters them)".into(),
            });
        }
        self.check_finite()?;
        if let Some(k) = first_where(&self.x.data, |v| v < 0.0) {
            let row = self.x.indptr.partition_point(|&p| p <= k) - 1;
            return Err(Error::bad_value(
                &self.source,
                "X",
                format!(
                    "negative value {} at cell {row} ({}), gene {}: log-normalized expression is never negative; this matrix looks scaled or centred (sc.pp.scale)",
                    self.x.data[k],
                    self.cells[row],
                    self.genes[self.x.indices[k] as usize]
                ),
                "give the log-normalized matrix (--raw for adata.raw, --adata-layer NAME for a layer), or raw counts without --no-preprocess",
            ));
        }
        Ok(())
    }

    /// Errors unless X holds raw counts (finite, non-negative integers); `what` needs them.
    pub fn check_counts(&self, what: &str) -> Result<()> {
        check_matrix(
            &self.x,
            0,
            &self.cells,
            &self.genes,
            &self.source,
            Some(what),
        )
    }
}

/// Checks the values of `x`, whose rows are the cells `cells[row0..]`: finite, and with
/// `counts_for` (what needs them) non-negative integers. The error names the cell and gene.
pub fn check_matrix(
    x: &Csr,
    row0: usize,
    cells: &[String],
    genes: &[String],
    source: &Path,
    counts_for: Option<&str>,
) -> Result<()> {
    let at = |k: usize| {
        let row = x.indptr.partition_point(|&p| p <= k) - 1 + row0;
        format!(
            "cell {row} ({}), gene {}",
            cells[row], genes[x.indices[k] as usize]
        )
    };
    if let Some(k) = first_where(&x.data, |v| !v.is_finite()) {
        return Err(Error::bad_value(
            source,
            "X",
            format!("non-finite value {} at {}", x.data[k], at(k)),
            "remove or impute NaN/Inf entries before running cellsentence",
        ));
    }
    let Some(what) = counts_for else {
        return Ok(());
    };
    if let Some(k) = first_where(&x.data, |v| v < 0.0 || v != v.trunc()) {
        let v = x.data[k];
        let kind = if v < 0.0 {
            "negative count"
        } else {
            "non-integer value"
        };
        return Err(Error::bad_value(
            source,
            "X",
            format!("{kind} {v} at {}: {what} needs raw counts", at(k)),
            "point at a file (or layer) holding raw counts, or declare the data log-normalized: --no-preprocess on the command line, `log_normalized: [ID]` in an experiment file",
        ));
    }
    Ok(())
}

/// Index of the first value matching `bad`, scanning chunks in parallel.
fn first_where(v: &[f32], bad: impl Fn(f32) -> bool + Sync) -> Option<usize> {
    const CHUNK: usize = 1 << 16;
    let c = v
        .par_chunks(CHUNK)
        .position_first(|c| c.iter().any(|&x| bad(x)))?;
    let base = c * CHUNK;
    v[base..].iter().position(|&x| bad(x)).map(|k| base + k)
}

/// Which matrix of an `.h5ad` file to read as `X`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum MatrixSource {
    /// `X` itself.
    #[default]
    X,
    /// `layers/<name>`.
    Layer(String),
    /// `raw/X` with `raw/var` gene names.
    Raw,
}

/// Options for [`read_h5ad`].
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Matrix to read.
    pub matrix: MatrixSource,
    /// Show a progress bar.
    pub progress: bool,
}

/// Makes names unique the way anndata's `var_names_make_unique` does: the second occurrence of
/// `X` becomes `X-1`, the third `X-2`, ... Returns the new names and the duplicated originals.
pub fn make_unique(names: &[String]) -> (Vec<String>, Vec<String>) {
    use std::collections::{HashMap, HashSet};
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for n in names {
        *seen.entry(n.as_str()).or_default() += 1;
    }
    let dups: Vec<String> = {
        let mut d: Vec<String> = seen
            .iter()
            .filter(|(_, &c)| c > 1)
            .map(|(k, _)| k.to_string())
            .collect();
        d.sort();
        d
    };
    if dups.is_empty() {
        return (names.to_vec(), dups);
    }
    let mut taken: HashSet<String> = names.iter().cloned().collect();
    let mut counter: HashMap<&str, usize> = HashMap::new();
    let mut first: HashSet<&str> = HashSet::new();
    let out = names
        .iter()
        .map(|n| {
            if seen[n.as_str()] == 1 || first.insert(n.as_str()) {
                return n.clone();
            }
            let c = counter.entry(n.as_str()).or_insert(0);
            loop {
                *c += 1;
                let cand = format!("{n}-{c}");
                if taken.insert(cand.clone()) {
                    return cand;
                }
            }
        })
        .collect();
    (out, dups)
}

fn dedup_warning(
    path: &Path,
    field: &str,
    names: Vec<String>,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let (unique, dups) = make_unique(&names);
    if !dups.is_empty() {
        let ex: Vec<&str> = dups.iter().take(5).map(|s| s.as_str()).collect();
        warnings.push(format!(
            "{}: {} {} name(s) occur more than once (e.g. {}); made unique like anndata's var_names_make_unique: later copies get suffixes -1, -2, ...",
            path.display(),
            dups.len(),
            field,
            ex.join(", ")
        ));
    }
    unique
}

/// Reads a dataset from an `.h5ad` file or a 10x directory (or its `matrix.mtx(.gz)` file).
pub fn read(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<Dataset> {
    let path = path.as_ref();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if path.is_dir() {
        read_10x_mtx(path)
    } else if name.starts_with("matrix.mtx") {
        read_10x_mtx(path.parent().unwrap_or(Path::new(".")))
    } else {
        read_h5ad(path, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_unique_like_anndata() {
        let names: Vec<String> = ["A", "B", "A", "A", "A-1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (u, d) = make_unique(&names);
        assert_eq!(d, vec!["A".to_string()]);
        assert_eq!(u, vec!["A", "B", "A-2", "A-3", "A-1"]);
    }
}
