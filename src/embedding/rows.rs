//! An embedding read back with its cells' labels (and batches): the rows of an `.npy` (named by
//! its `.cells.txt`, else the input's cells in order) or an `.h5ad` from `embed`, matched to the
//! labelled input's cells (`annotate`, `metrics`).
use std::path::Path;

use crate::data::DatasetEntry;
use crate::error::{Error, Result};

/// Cell names, labels and batches of the feature rows.
pub struct Rows {
    /// Rows the embedding must have.
    pub total: usize,
    /// Embedding rows kept (cells with a label and, where asked, a batch).
    pub rows: Vec<usize>,
    pub cells: Vec<String>,
    pub labels: Vec<String>,
    pub batches: Option<Vec<String>>,
}

/// Where the rows of an embedding get their labels: `annotate`'s and `metrics`' options.
pub struct RowSource<'a> {
    pub embeddings: &'a Path,
    /// The labelled input as the user named it, and resolved.
    pub input: &'a str,
    pub entry: &'a DatasetEntry,
    pub label_key: &'a str,
    pub batch_key: Option<&'a str>,
    pub drop_missing: bool,
}

/// Reads the labels (and batches) of the rows of `embeddings`; `listed`: the rows' cell names
/// (from `<embeddings>.cells.txt` or the `.h5ad`'s obs index) and where they come from.
fn row_annotations(a: &RowSource<'_>, listed: Option<(&Path, &[String])>) -> Result<Rows> {
    let (entry, ds) = (a.entry, crate::pipeline::read(a.entry)?);
    let labels = ds.obs_optional(a.label_key)?;
    let batches = a.batch_key.map(|k| ds.obs_optional(k)).transpose()?;
    let rows: Vec<usize> = if let Some((listed, names)) = listed {
        let pos: std::collections::HashMap<&str, usize> = ds
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        names
            .iter()
            .map(|c| {
                pos.get(c.as_str()).copied().ok_or_else(|| {
                    Error::bad_value(
                        listed,
                        "cell",
                        format!("`{c}` is not a cell of {}", entry.path.display()),
                        "embed and annotate the same file",
                    )
                })
            })
            .collect::<Result<_>>()?
    } else {
        (0..ds.n_cells()).collect()
    };
    // rows (embedding row, dataset cell) with a label and, where asked, a batch
    let unusable = |&(_, i): &(usize, usize)| {
        labels[i].is_none() || batches.as_ref().is_some_and(|b| b[i].is_none())
    };
    let pairs: Vec<(usize, usize)> = rows.into_iter().enumerate().collect();
    let total = pairs.len();
    let dropped = pairs.iter().filter(|p| unusable(p)).count();
    if dropped > 0 {
        let first = &ds.cells[pairs.iter().find(|p| unusable(p)).map_or(0, |p| p.1)];
        let what =
            format!(
            "{dropped} of {} cells have no value in obs/{}{} (missing/NaN), the first is `{first}`",
            pairs.len(),
            a.label_key,
            a.batch_key.map(|b| format!(" or obs/{b}")).unwrap_or_default()
        );
        if !a.drop_missing {
            return Err(Error::bad_value(
                &entry.path,
                format!("obs/{}", a.label_key),
                format!("{what}; a missing label is not a class"),
                "pass --drop-missing to leave those cells out (with a warning), or label them",
            ));
        }
        eprintln!("warning: {what}; --drop-missing leaves them out");
    }
    let kept: Vec<(usize, usize)> = pairs.into_iter().filter(|p| !unusable(p)).collect();
    let known = |v: &[Option<String>]| {
        kept.iter()
            .map(|&(_, i)| v[i].clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    Ok(Rows {
        total,
        rows: kept.iter().map(|&(r, _)| r).collect(),
        cells: kept.iter().map(|&(_, i)| ds.cells[i].clone()).collect(),
        labels: known(&labels),
        batches: batches.as_ref().map(|b| known(b)),
    })
}

/// The embedding's rows that have a label (and a batch), with their annotations.
pub fn labelled_rows(a: &RowSource<'_>) -> Result<(crate::npy::Matrix, Rows)> {
    let (x, names) = if a.embeddings.extension().is_some_and(|e| e == "h5ad") {
        let e = crate::data::h5ad_out::read_embeddings(a.embeddings)?;
        (e.m, Some((a.embeddings.to_path_buf(), e.cells)))
    } else {
        let listed = a.embeddings.with_extension("cells.txt");
        let names = if listed.is_file() {
            let text = std::fs::read_to_string(&listed).map_err(|e| Error::io(&listed, e))?;
            Some((listed, text.lines().map(String::from).collect()))
        } else {
            None
        };
        (crate::npy::read(a.embeddings)?, names)
    };
    let r = row_annotations(a, names.as_ref().map(|(p, n)| (p.as_path(), n.as_slice())))?;
    if x.rows != r.total {
        let (what, fix) = match &names {
            Some((listed, _)) => (
                format!("{} rows but {} lists {} cells", x.rows, listed.display(), r.total),
                "the embeddings and their cell list must come from one `embed` run; embed again (it writes both)",
            ),
            None => (
                format!("{} rows but {} has {} cells", x.rows, a.input, r.total),
                "embed the same file (rows = its cells in order), or keep the .cells.txt list `embed` writes",
            ),
        };
        return Err(Error::bad_value(a.embeddings, "rows", what, fix));
    }
    if r.rows.len() == r.total {
        return Ok((x, r));
    }
    let data = r
        .rows
        .iter()
        .flat_map(|&i| x.row(i).iter().copied())
        .collect();
    let x = crate::npy::Matrix {
        rows: r.rows.len(),
        cols: x.cols,
        data,
    };
    Ok((x, r))
}
