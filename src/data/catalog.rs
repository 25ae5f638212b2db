//! The dataset catalog: ids resolved to files in the data directories, with each known dataset's
//! label and batch columns.
use std::path::{Path, PathBuf};

use super::{read, Dataset, MatrixSource, ReadOptions, XState};
use crate::error::{Error, Result};

/// Where a dataset comes from and which obs columns hold its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetEntry {
    /// Dataset id (file stem).
    pub id: String,
    /// Path of the file or directory.
    pub path: PathBuf,
    /// obs column with cell types, if known.
    pub label_key: Option<String>,
    /// obs column with batches, if any.
    pub batch_key: Option<String>,
    /// Matrix to read.
    pub matrix: MatrixSource,
    /// True when X holds raw counts (so QC + normalization apply).
    pub counts: bool,
}

/// Known datasets' annotations; others get `cell_type`/`batch` when present.
fn known(id: &str) -> Option<(&'static str, Option<&'static str>, MatrixSource, bool)> {
    match id {
        "baron_human" | "baron_mouse" => Some(("cell_type1", Some("donor"), MatrixSource::X, true)),
        "pbmc68k_reduced" => Some(("bulk_labels", None, MatrixSource::Raw, false)),
        _ => None,
    }
}

/// The data directories searched, in order: `--data-dir`/`CELLSENTENCE_DATA` (if given), the
/// project's `data/` (default datasets fetched at set-up), and `../shared/data`.
pub fn default_data_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = explicit {
        dirs.push(d.to_path_buf());
    } else if let Ok(d) = std::env::var("CELLSENTENCE_DATA") {
        dirs.push(PathBuf::from(d));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dirs.push(root.join("data"));
    dirs.push(root.join("..").join("shared").join("data"));
    dirs
}

/// The data directories plus the project's `data/corpus/` (datasets fetched only for pretraining
/// corpora, e.g. Baron mouse, kept out of the experiments' `available` list).
pub fn corpus_data_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = default_data_dirs(explicit);
    dirs.push(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("data")
            .join("corpus"),
    );
    dirs
}

/// Lists every `.h5ad` dataset found in `dirs` (first occurrence of an id wins), sorted by id.
pub fn catalog(dirs: &[PathBuf]) -> Vec<DatasetEntry> {
    let mut out: Vec<DatasetEntry> = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "h5ad"))
            .collect();
        files.sort();
        for p in files {
            let id = p.file_stem().unwrap().to_string_lossy().to_string();
            if out.iter().any(|e| e.id == id) {
                continue;
            }
            out.push(entry_for(&id, p));
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn entry_for(id: &str, path: PathBuf) -> DatasetEntry {
    match known(id) {
        Some((l, b, m, counts)) => DatasetEntry {
            id: id.into(),
            path,
            label_key: Some(l.into()),
            batch_key: b.map(Into::into),
            matrix: m,
            counts,
        },
        None => DatasetEntry {
            id: id.into(),
            path,
            label_key: Some("cell_type".into()),
            batch_key: Some("batch".into()),
            matrix: MatrixSource::X,
            counts: true,
        },
    }
}

/// Resolves a dataset id (or a path) against the data directories.
pub fn resolve(id_or_path: &str, dirs: &[PathBuf]) -> Result<DatasetEntry> {
    let p = Path::new(id_or_path);
    if p.exists() {
        let id = p
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| id_or_path.to_string());
        return Ok(entry_for(&id, p.to_path_buf()));
    }
    catalog(dirs).into_iter().find(|e| e.id == id_or_path).ok_or_else(|| Error::NotFound {
        path: id_or_path.into(),
        hint: format!(
            " (no dataset with this id in {}); run scripts/fetch-data.sh, or set --data-dir / CELLSENTENCE_DATA to a folder with <id>.h5ad",
            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    })
}

impl DatasetEntry {
    /// Reads the dataset, dropping obs columns the entry does not name as missing ones.
    pub fn load(&self, progress: bool) -> Result<Dataset> {
        let mut ds = read(
            &self.path,
            &ReadOptions {
                matrix: self.matrix.clone(),
                progress,
            },
        )?;
        // declared log-normalized: the base the file records (uns['log1p']['base']) is kept,
        // natural log otherwise (scanpy's default)
        if !self.counts && !matches!(ds.state, XState::LogNormalized { .. }) {
            ds.state = XState::LogNormalized { base: None };
        }
        Ok(ds)
    }
}
