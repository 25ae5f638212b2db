//! 10x Genomics `matrix.mtx(.gz)` + `features.tsv(.gz)`/`genes.tsv` + `barcodes.tsv(.gz)` reading.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use polars::prelude::{Column, DataFrame};

use super::{dedup_warning, Dataset, XState};
use crate::csr::Csr;
use crate::error::{Error, Result};

fn open_maybe_gz(path: &Path) -> Result<Box<dyn BufRead>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            f,
        ))))
    } else {
        Ok(Box::new(BufReader::new(f)))
    }
}

fn find_one(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.exists())
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for line in open_maybe_gz(path)?.lines() {
        let line = line.map_err(|e| {
            Error::format(
                path,
                format!("cannot read line: {e}"),
                "the file is truncated or not text",
            )
        })?;
        if !line.is_empty() {
            out.push(line);
        }
    }
    Ok(out)
}

/// Reads a 10x Genomics matrix directory: `matrix.mtx(.gz)`, `features.tsv(.gz)` or `genes.tsv`,
/// `barcodes.tsv(.gz)`. Gene symbols (second column) become gene names, made unique.
pub fn read_10x_mtx(dir: impl AsRef<Path>) -> Result<Dataset> {
    let dir = dir.as_ref();
    let (mtx, feats, bcs) = tenx_files(dir)?;
    let t = read_triplets(&mtx)?;
    let x = triplets_to_csr(&t).map_err(|e| Error::format(&mtx, e, "the file is corrupt"))?;
    let mut warnings = Vec::new();
    let genes = gene_names(&feats, t.n_genes, &mut warnings)?;
    let cells: Vec<String> = read_lines(&bcs)?
        .into_iter()
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .collect();
    if cells.len() != t.n_cells {
        return Err(Error::format(
            &bcs,
            format!(
                "{} barcodes but the matrix has {} columns",
                cells.len(),
                t.n_cells
            ),
            "use the barcodes file from the same Cell Ranger output",
        ));
    }
    let cells = dedup_warning(&bcs, "barcode", cells, &mut warnings);
    let obs = DataFrame::new(
        cells.len(),
        vec![Column::new("barcode".into(), cells.clone())],
    )
    .map_err(|e| Error::format(&bcs, e.to_string(), "report this as a bug"))?;
    let ds = Dataset {
        x,
        genes,
        cells,
        obs,
        state: XState::Counts,
        source: dir.into(),
        warnings,
    };
    ds.check_finite()?;
    Ok(ds)
}

/// The directory's matrix, features and barcodes files (each name refused by name when missing).
fn tenx_files(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    if !dir.is_dir() {
        return Err(Error::NotFound {
            path: dir.into(),
            hint: " (expected a 10x directory with matrix.mtx)".into(),
        });
    }
    let mtx = find_one(dir, &["matrix.mtx.gz", "matrix.mtx"]).ok_or_else(|| {
        Error::missing(dir, "matrix.mtx", "a 10x directory needs matrix.mtx(.gz)")
    })?;
    let names = [
        "features.tsv.gz",
        "features.tsv",
        "genes.tsv.gz",
        "genes.tsv",
    ];
    let feats = find_one(dir, &names).ok_or_else(|| {
        Error::missing(
            dir,
            "features.tsv",
            "a 10x directory needs features.tsv(.gz) or genes.tsv",
        )
    })?;
    let bcs = find_one(dir, &["barcodes.tsv.gz", "barcodes.tsv"]).ok_or_else(|| {
        Error::missing(
            dir,
            "barcodes.tsv",
            "a 10x directory needs barcodes.tsv(.gz)",
        )
    })?;
    Ok((mtx, feats, bcs))
}

/// A MatrixMarket coordinate file's entries (0-based genes × cells triplets) and its size.
struct Triplets {
    n_genes: usize,
    n_cells: usize,
    rows: Vec<u32>,
    cols: Vec<u32>,
    vals: Vec<f32>,
}

/// Reads `matrix.mtx(.gz)`: the header, the size line, then `row col value` lines (a pattern
/// file's missing value is 1), each checked against the size; the entry count must match.
fn read_triplets(mtx: &Path) -> Result<Triplets> {
    let mut lines = open_maybe_gz(mtx)?.lines();
    let header = lines
        .next()
        .transpose()
        .map_err(|e| Error::io(mtx, e))?
        .unwrap_or_default();
    if !header.starts_with("%%MatrixMarket matrix coordinate") {
        return Err(Error::format(
            mtx,
            "not a MatrixMarket coordinate file (bad header)",
            "pass the matrix.mtx written by Cell Ranger",
        ));
    }
    let mut dims: Option<(usize, usize, usize)> = None;
    let (mut rows, mut cols, mut vals) = (Vec::new(), Vec::new(), Vec::new());
    for (ln, line) in lines.enumerate() {
        let line = line.map_err(|e| {
            Error::format(
                mtx,
                format!("cannot read line {}: {e}", ln + 2),
                "the file is truncated",
            )
        })?;
        if line.starts_with('%') || line.trim().is_empty() {
            continue;
        }
        let mut it = line.split_ascii_whitespace();
        let bad = || {
            Error::format(
                mtx,
                format!("line {}: expected `row col value`, found `{line}`", ln + 2),
                "the file is corrupt",
            )
        };
        let a: usize = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let b: usize = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let Some((g, c, _)) = dims else {
            let n: usize = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            dims = Some((a, b, n));
            rows.reserve(n);
            cols.reserve(n);
            vals.reserve(n);
            continue;
        };
        let v: f32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(1.0);
        if a == 0 || b == 0 || a > g || b > c {
            return Err(Error::format(
                mtx,
                format!(
                    "line {}: entry ({a}, {b}) outside the {g} × {c} matrix",
                    ln + 2
                ),
                "the file is corrupt",
            ));
        }
        rows.push((a - 1) as u32);
        cols.push((b - 1) as u32);
        vals.push(v);
    }
    let (n_genes, n_cells, nnz) =
        dims.ok_or_else(|| Error::format(mtx, "no size line", "the file is truncated"))?;
    if vals.len() != nnz {
        return Err(Error::format(
            mtx,
            format!("header says {nnz} entries but {} were read", vals.len()),
            "the file is truncated",
        ));
    }
    Ok(Triplets {
        n_genes,
        n_cells,
        rows,
        cols,
        vals,
    })
}

/// Genes × cells triplets as a cells × genes CSR (entries of a cell in file order).
fn triplets_to_csr(t: &Triplets) -> std::result::Result<Csr, String> {
    let nnz = t.vals.len();
    let mut counts = vec![0usize; t.n_cells + 1];
    for &c in &t.cols {
        counts[c as usize + 1] += 1;
    }
    for i in 0..t.n_cells {
        counts[i + 1] += counts[i];
    }
    let indptr = counts.clone();
    let mut next = counts;
    let mut indices = vec![0u32; nnz];
    let mut data = vec![0f32; nnz];
    for k in 0..nnz {
        let c = t.cols[k] as usize;
        indices[next[c]] = t.rows[k];
        data[next[c]] = t.vals[k];
        next[c] += 1;
    }
    Csr::from_parts(t.n_cells, t.n_genes, indptr, indices, data)
}

/// The features file's gene symbols (second column, else the first), one per matrix row, made
/// unique with a warning.
fn gene_names(feats: &Path, n_genes: usize, warnings: &mut Vec<String>) -> Result<Vec<String>> {
    let feat_lines = read_lines(feats)?;
    if feat_lines.len() != n_genes {
        return Err(Error::format(
            feats,
            format!(
                "{} features but the matrix has {n_genes} rows",
                feat_lines.len()
            ),
            "use the features file from the same Cell Ranger output",
        ));
    }
    let names: Vec<String> = feat_lines
        .iter()
        .map(|l| {
            l.split('\t')
                .nth(1)
                .unwrap_or_else(|| l.split('\t').next().unwrap_or(""))
                .to_string()
        })
        .collect();
    Ok(dedup_warning(feats, "gene", names, warnings))
}
