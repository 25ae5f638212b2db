//! Results back into AnnData: an `.h5ad` holding the cells' names (`obs` index), an embedding in
//! `obsm` and a JSON description in `uns`, written through the `anndata` crate, read by Python
//! `anndata.read_h5ad` and scanpy.
use std::path::Path;

use anndata::backend::{
    get_default_write_config, set_default_write_config, Compression, WriteConfig,
};
use anndata::data::{Data, DataFrameIndex};
use anndata::{AnnData, AnnDataOp, AxisArraysOp, ElemCollectionOp};
use anndata_hdf5::H5;
use ndarray::Array2;

use crate::error::{Error, Result};
use crate::npy::Matrix;

/// The `obsm` key of cell-sentence embeddings (scanpy's `X_<name>` convention).
pub const OBSM_KEY: &str = "X_cell_sentence";
/// The `uns` key of the JSON text that says how the embedding was made.
pub const UNS_KEY: &str = "cellsentence";

/// Writes `path` (`.h5ad`) with `cells` as the `obs` index, `m` (cells × dims, float32) as
/// `obsm[OBSM_KEY]` and `about` (JSON) as the string `uns[UNS_KEY]`. Written beside `path` and
/// renamed into place: a kill leaves the old file or the new one.
pub fn write_embeddings(
    path: &Path,
    cells: &[String],
    m: &Matrix,
    about: &serde_json::Value,
) -> Result<()> {
    if cells.len() != m.rows {
        return Err(Error::param(
            "embeddings",
            format!(
                "{} cell names for {} embedding rows; they must match",
                cells.len(),
                m.rows
            ),
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = crate::output::write_temp(dir, &[])?;
    let fail = |e: anyhow::Error| {
        Error::format(
            path,
            format!("writing AnnData: {e:#}"),
            "check the folder is writable and has space",
        )
    };
    // anndata-rs compresses with blosc-zstd by default, a filter plugin h5py does not ship
    // (Python would fail to read obsm): gzip, which every HDF5 reads, for this write only
    let previous = get_default_write_config();
    set_default_write_config(WriteConfig {
        compression: Some(Compression::Gzip(4)),
        ..previous.clone()
    });
    let written = (|| -> anyhow::Result<()> {
        let a = AnnData::<H5>::new(&tmp)?;
        a.set_obs_names(DataFrameIndex::from(cells.to_vec()))?;
        let x = Array2::from_shape_vec((m.rows, m.cols), m.data.clone())?;
        a.obsm().add(OBSM_KEY, x)?;
        a.uns().add(UNS_KEY, Data::from(about.to_string()))?;
        a.close()
    })();
    set_default_write_config(previous);
    let renamed = written
        .map_err(fail)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

/// An embedding read back from an `.h5ad` that [`write_embeddings`] wrote.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// The `obs` index.
    pub cells: Vec<String>,
    /// `obsm[OBSM_KEY]`, cells × dims.
    pub m: Matrix,
    /// `uns[UNS_KEY]`, parsed (`null` when the file has none).
    pub about: serde_json::Value,
}

/// Reads the cells, `obsm[OBSM_KEY]` (float32) and `uns[UNS_KEY]` of `path`.
pub fn read_embeddings(path: &Path) -> Result<Embeddings> {
    let fail = |what: String| {
        Error::format(
            path,
            what,
            format!("pass an .h5ad written by `cellsentence embed --out X.h5ad` (obsm[\"{OBSM_KEY}\"], float32)"),
        )
    };
    if !path.is_file() {
        return Err(Error::io(path, std::io::ErrorKind::NotFound.into()));
    }
    type Parts = (Vec<String>, Option<Array2<f32>>, Option<String>);
    let read = super::contain_panics(|| -> anyhow::Result<Parts> {
        let store = <H5 as anndata::Backend>::open(path)?;
        let a = AnnData::<H5>::open(store)?;
        let cells = a.obs_names().into_vec();
        let x = a.obsm().get_item::<Array2<f32>>(OBSM_KEY)?;
        let about = a.uns().get_item::<String>(UNS_KEY).ok().flatten();
        Ok((cells, x, about))
    });
    let (cells, x, about) = read.map_err(|e| fail(format!("reading AnnData: {e:#}")))?;
    let x = x.ok_or_else(|| fail(format!("has no obsm[\"{OBSM_KEY}\"]")))?;
    if x.nrows() != cells.len() {
        return Err(fail(format!(
            "obsm[\"{OBSM_KEY}\"] has {} rows for {} cells",
            x.nrows(),
            cells.len()
        )));
    }
    let about = match about {
        Some(s) => serde_json::from_str(&s)
            .map_err(|e| fail(format!("uns[\"{UNS_KEY}\"] is not JSON ({e})")))?,
        None => serde_json::Value::Null,
    };
    let (rows, cols) = x.dim();
    Ok(Embeddings {
        cells,
        m: Matrix {
            rows,
            cols,
            data: x.iter().copied().collect(),
        },
        about,
    })
}

/// The cell range `START:END` of a shard (`uns[UNS_KEY]["cells"]`; the whole input when unset)
/// and the input's cell count (`["n_cells"]`).
fn shard_range(path: &Path, about: &serde_json::Value) -> Result<(usize, usize, usize)> {
    let field = format!("uns/{UNS_KEY}/n_cells");
    let n = about["n_cells"].as_u64().ok_or_else(|| {
        Error::missing(
            path,
            &field,
            "embed the shard again with this version (it records the input's cell count)",
        )
    })? as usize;
    match about["cells"].as_str() {
        None => Ok((0, n, n)),
        Some(r) => {
            let bad = || {
                Error::bad_value(
                    path,
                    format!("uns/{UNS_KEY}/cells"),
                    format!("`{r}` is not a shard range START:END within {n} cells"),
                    "embed the shard again with `embed --cells START:END`",
                )
            };
            let (s, e) = r.split_once(':').ok_or_else(bad)?;
            let s: usize = s.parse().map_err(|_| bad())?;
            let e: usize = e.parse().map_err(|_| bad())?;
            if s >= e || e > n {
                return Err(bad());
            }
            Ok((s, e, n))
        }
    }
}

/// Stacks the shards of one sharded `embed` run (any order) into the embedding of all its cells,
/// as one unsharded run writes it (`uns["cells"]` unset, `["shards"]` listing the files).
/// Refused, naming the file and the field: shards of different runs (input, model, layer, …),
/// overlapping shards, and cells no shard covers (a missing shard).
pub fn merge_shards(shards: &[(std::path::PathBuf, Embeddings)]) -> Result<Embeddings> {
    let Some((_, first)) = shards.first() else {
        return Err(Error::param("shards", "give at least one shard"));
    };
    let (reference, mut ranges) = shard_ranges(shards)?;
    ranges.sort_unstable();
    let n = check_coverage(shards, &ranges)?;
    let mut cells = Vec::with_capacity(n);
    let mut data = Vec::with_capacity(n * first.m.cols);
    for &(_, _, _, i) in &ranges {
        cells.extend(shards[i].1.cells.iter().cloned());
        data.extend_from_slice(&shards[i].1.m.data);
    }
    let mut about = reference;
    if let Some(o) = about.as_object_mut() {
        o.insert("cells".into(), serde_json::Value::Null);
        let files: Vec<String> = ranges
            .iter()
            .map(|&(_, _, _, i)| shards[i].0.display().to_string())
            .collect();
        o.insert("shards".into(), files.into());
    }
    Ok(Embeddings {
        cells,
        m: Matrix {
            rows: n,
            cols: first.m.cols,
            data,
        },
        about,
    })
}

/// A shard's record without its own cell range: what every shard of one run shares.
fn run_record(a: &serde_json::Value) -> serde_json::Value {
    let mut a = a.clone();
    if let Some(o) = a.as_object_mut() {
        o.remove("cells");
    }
    a
}

/// A shard's (start, end, cells of the run, position in the list).
type ShardRange = (usize, usize, usize, usize);

/// The run record the shards share and each shard's range; a shard of another run, of other
/// dimensions or with rows not its range's is refused.
fn shard_ranges(
    shards: &[(std::path::PathBuf, Embeddings)],
) -> Result<(serde_json::Value, Vec<ShardRange>)> {
    let (first_path, first) = &shards[0];
    let run = run_record;
    let reference = run(&first.about);
    let mut ranges = Vec::with_capacity(shards.len());
    for (i, (path, e)) in shards.iter().enumerate() {
        let this = run(&e.about);
        if this != reference {
            let key = reference
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k.as_str())
                .chain(
                    this.as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, _)| k.as_str()),
                )
                .find(|k| reference[*k] != this[*k])
                .unwrap_or("");
            return Err(Error::bad_value(
                path,
                format!("uns/{UNS_KEY}/{key}"),
                format!(
                    "is {} but {} has {}: the shards come from different runs",
                    this[key],
                    first_path.display(),
                    reference[key]
                ),
                "merge the shards of one run (same input, model, layer, pool and options)",
            ));
        }
        if e.m.cols != first.m.cols {
            return Err(Error::bad_value(
                path,
                format!("obsm/{OBSM_KEY}"),
                format!(
                    "has {} dims, {} has {}",
                    e.m.cols,
                    first_path.display(),
                    first.m.cols
                ),
                "merge the shards of one run",
            ));
        }
        let (s, end, n) = shard_range(path, &e.about)?;
        if e.m.rows != end - s {
            return Err(Error::bad_value(
                path,
                format!("obsm/{OBSM_KEY}"),
                format!("has {} rows for the shard {s}:{end}", e.m.rows),
                "embed the shard again",
            ));
        }
        ranges.push((s, end, n, i));
    }
    Ok((reference, ranges))
}

/// The sorted shards cover the run's cells once each; returns the number of cells.
fn check_coverage(
    shards: &[(std::path::PathBuf, Embeddings)],
    ranges: &[ShardRange],
) -> Result<usize> {
    let n = ranges[0].2;
    let mut next = 0;
    for &(s, end, _, i) in ranges {
        let path = &shards[i].0;
        if s > next {
            return Err(Error::bad_value(
                path,
                format!("uns/{UNS_KEY}/cells"),
                format!("cells {next}:{s} of {n} are in no shard (a shard is missing)"),
                format!("embed them (`embed --cells {next}:{s}` with the same options) and merge all shards"),
            ));
        }
        if s < next {
            return Err(Error::bad_value(
                path,
                format!("uns/{UNS_KEY}/cells"),
                format!("the shard {s}:{end} overlaps cells below {next} of another shard"),
                "merge each shard once, and shards that do not overlap",
            ));
        }
        next = end;
    }
    if next < n {
        return Err(Error::bad_value(
            &shards[ranges[ranges.len() - 1].3].0,
            format!("uns/{UNS_KEY}/cells"),
            format!("cells {next}:{n} of {n} are in no shard (a shard is missing)"),
            format!("embed them (`embed --cells {next}:{n}` with the same options) and merge all shards"),
        ));
    }
    Ok(n)
}
