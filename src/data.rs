//! Data stage: AnnData `.h5ad` and 10x `matrix.mtx` readers, the [`Dataset`] type, and the
//! catalog that resolves dataset ids from data directories.
//!
//! The count matrix is read with HDF5 directly (values converted to `f32` and indices to `u32`
//! by HDF5 itself, in chunks, so a large file is never held twice); `obs`/`var` tables go through
//! the `anndata` crate.
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anndata::backend::{AttributeOp, DataContainer};
use anndata::data::{DynArray, Readable};
use anndata::{AnnData, AnnDataOp};
use anndata_hdf5::H5;
use hdf5_metno as hdf5;
use polars::prelude::{Column, DataFrame};

use rayon::prelude::*;

use crate::csr::Csr;
use crate::error::{Error, Result};
use crate::progress::Progress;

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
        if let Some(k) = first_where(&self.x.data, |v| !v.is_finite()) {
            let row = self.x.indptr.partition_point(|&p| p <= k) - 1;
            return Err(Error::bad_value(
                &self.source,
                "X",
                format!(
                    "non-finite value {} at cell {} ({}), gene {}",
                    self.x.data[k], row, self.cells[row], self.genes[self.x.indices[k] as usize]
                ),
                "remove or impute NaN/Inf entries before running cellsentence",
            ));
        }
        Ok(())
    }

    /// Errors unless every value is a non-negative integer (raw counts).
    pub fn check_counts(&self, what: &str) -> Result<()> {
        self.check_finite()?;
        if let Some(k) = first_where(&self.x.data, |v| v < 0.0 || v != v.trunc()) {
            let row = self.x.indptr.partition_point(|&p| p <= k) - 1;
            let v = self.x.data[k];
            let kind = if v < 0.0 {
                "negative count"
            } else {
                "non-integer value"
            };
            return Err(Error::bad_value(
                &self.source,
                "X",
                format!("{kind} {v} at cell {row} ({}), gene {}: {what} needs raw counts", self.cells[row], self.genes[self.x.indices[k] as usize]),
                "point at a file (or --layer) holding raw counts, or pass --no-preprocess for already normalized data",
            ));
        }
        Ok(())
    }
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

const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

fn check_hdf5_signature(path: &Path) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    // HDF5 looks for its superblock at 0, 512, 1024, 2048...
    let mut buf = vec![0u8; len.min(1 << 16) as usize];
    f.read_exact(&mut buf).map_err(|e| Error::io(path, e))?;
    let mut off = 0usize;
    while off + 8 <= buf.len() {
        if &buf[off..off + 8] == HDF5_SIGNATURE {
            return Ok(());
        }
        off = if off == 0 { 512 } else { off * 2 };
    }
    Err(Error::format(
        path,
        "not an HDF5 file (no HDF5 signature), so not an .h5ad",
        "pass an AnnData .h5ad file written by anndata/scanpy, or a 10x matrix.mtx directory",
    ))
}

fn attr_string(loc: &hdf5::Location, name: &str) -> Option<String> {
    let a = loc.attr(name).ok()?;
    if let Ok(s) = a.read_scalar::<hdf5::types::VarLenUnicode>() {
        return Some(s.as_str().to_string());
    }
    if let Ok(s) = a.read_scalar::<hdf5::types::VarLenAscii>() {
        return Some(s.as_str().to_string());
    }
    a.read_raw::<hdf5::types::FixedAscii<64>>()
        .ok()
        .and_then(|v| v.first().map(|s| s.as_str().to_string()))
}

fn h5err(path: &Path, field: &str, e: impl std::fmt::Display) -> Error {
    Error::format(
        path,
        format!("cannot read `{field}`: {e}"),
        "the file may be truncated or not written by anndata; rewrite it with anndata.write_h5ad",
    )
}

/// Reads a 1-D numeric dataset in chunks (converted by HDF5 to `T`), ticking the progress bar.
fn read_1d_chunked<T: hdf5::H5Type + Clone + Default>(
    path: &Path,
    ds: &hdf5::Dataset,
    field: &str,
    pb: &Progress,
) -> Result<Vec<T>> {
    let n = ds.size();
    let mut out: Vec<T> = Vec::with_capacity(n);
    const CHUNK: usize = 1 << 20;
    let mut s = 0;
    while s < n {
        let e = (s + CHUNK).min(n);
        let part = ds
            .read_slice_1d::<T, _>(s..e)
            .map_err(|err| h5err(path, field, err))?;
        match part.as_slice() {
            Some(sl) => out.extend_from_slice(sl),
            None => out.extend(part.iter().cloned()),
        }
        pb.inc((e - s) as u64);
        s = e;
    }
    Ok(out)
}

/// Reads sparse column indices in their stored integer width (no HDF5 conversion, which is slow)
/// and narrows them to `u32` chunk by chunk, rejecting negative values.
fn read_indices(path: &Path, ds: &hdf5::Dataset, field: &str, pb: &Progress) -> Result<Vec<u32>> {
    let size = ds.dtype().map(|t| t.size()).unwrap_or(8);
    let n = ds.size();
    let mut out: Vec<u32> = Vec::with_capacity(n);
    const CHUNK: usize = 1 << 20;
    let neg = || {
        Error::bad_value(
            path,
            field,
            "negative index in sparse matrix",
            "the file is corrupt; rewrite it with anndata",
        )
    };
    let mut s = 0;
    while s < n {
        let e = (s + CHUNK).min(n);
        if size == 4 {
            let part = ds
                .read_slice_1d::<i32, _>(s..e)
                .map_err(|err| h5err(path, field, err))?;
            for &v in part.iter() {
                out.push(u32::try_from(v).map_err(|_| neg())?);
            }
        } else {
            let part = ds
                .read_slice_1d::<i64, _>(s..e)
                .map_err(|err| h5err(path, field, err))?;
            for &v in part.iter() {
                out.push(u32::try_from(v).map_err(|_| neg())?);
            }
        }
        pb.inc((e - s) as u64);
        s = e;
    }
    Ok(out)
}

fn read_matrix(path: &Path, file: &hdf5::File, key: &str, progress: bool) -> Result<Csr> {
    let loc_is_group = file.group(key).is_ok();
    if loc_is_group {
        let g = file.group(key).map_err(|e| h5err(path, key, e))?;
        let enc = attr_string(&g, "encoding-type")
            .or_else(|| attr_string(&g, "h5sparse_format").map(|f| format!("{f}_matrix")));
        let enc = enc.ok_or_else(|| {
            Error::format(
                path,
                format!("`{key}` is a group without an `encoding-type` attribute"),
                "rewrite the file with anndata >= 0.8",
            )
        })?;
        let shape: Vec<u64> = g
            .attr("shape")
            .and_then(|a| a.read_raw::<u64>())
            .or_else(|_| g.attr("h5sparse_shape").and_then(|a| a.read_raw::<u64>()))
            .map_err(|e| h5err(path, &format!("{key}.attrs[shape]"), e))?;
        if shape.len() != 2 {
            return Err(Error::format(
                path,
                format!("`{key}` has shape {shape:?}, expected 2 dimensions"),
                "store a cells × genes matrix",
            ));
        }
        let (nr, nc) = (shape[0] as usize, shape[1] as usize);
        let need = |name: &str| -> Result<hdf5::Dataset> {
            g.dataset(name).map_err(|_| {
                Error::missing(
                    path,
                    format!("{key}/{name}"),
                    "the sparse matrix is incomplete; rewrite the file with anndata",
                )
            })
        };
        let (data_ds, idx_ds, ptr_ds) = (need("data")?, need("indices")?, need("indptr")?);
        let nnz = data_ds.size();
        let pb = Progress::bar(
            progress,
            (2 * nnz) as u64,
            &format!("reading {}", path.display()),
        );
        let data: Vec<f32> = read_1d_chunked(path, &data_ds, &format!("{key}/data"), &pb)?;
        let idx_field = format!("{key}/indices");
        let indices: Vec<u32> = read_indices(path, &idx_ds, &idx_field, &pb)?;
        pb.finish();
        let indptr_i64: Vec<i64> = ptr_ds
            .read_raw::<i64>()
            .map_err(|e| h5err(path, &format!("{key}/indptr"), e))?;
        if indptr_i64.iter().any(|&i| i < 0) {
            return Err(Error::bad_value(
                path,
                format!("{key}/indptr"),
                "negative offset in sparse matrix",
                "the file is corrupt; rewrite it with anndata",
            ));
        }
        drop(data_ds);
        let indptr: Vec<usize> = indptr_i64.into_iter().map(|i| i as usize).collect();
        let bad = |e: String| {
            Error::format(
                path,
                format!("`{key}` is not a valid {enc}: {e}"),
                "rewrite the file with anndata",
            )
        };
        match enc.as_str() {
            "csr_matrix" => Csr::from_parts(nr, nc, indptr, indices, data).map_err(bad),
            "csc_matrix" => Csr::from_csc_parts(nr, nc, &indptr, &indices, &data).map_err(bad),
            other => Err(Error::format(
                path,
                format!("`{key}` has unsupported encoding `{other}`"),
                "store X as a dense array or a csr/csc sparse matrix",
            )),
        }
    } else {
        let ds = file.dataset(key).map_err(|_| {
            Error::missing(path, key, if key == "X" { "this .h5ad has no expression matrix; write one with adata.X = counts (or read a layer with --layer NAME)" } else { "check the layer name with `cellsentence info`" })
        })?;
        let shape = ds.shape();
        if shape.len() != 2 {
            return Err(Error::format(
                path,
                format!("`{key}` has shape {shape:?}, expected 2 dimensions"),
                "store a cells × genes matrix",
            ));
        }
        let (nr, nc) = (shape[0], shape[1]);
        let pb = Progress::bar(
            progress,
            (nr * nc) as u64,
            &format!("reading {}", path.display()),
        );
        let vals: Vec<f32> = read_1d_chunked_2d(path, &ds, key, nr, nc, &pb)?;
        pb.finish();
        Ok(Csr::from_dense(nr, nc, &vals))
    }
}

fn read_1d_chunked_2d(
    path: &Path,
    ds: &hdf5::Dataset,
    key: &str,
    nr: usize,
    nc: usize,
    pb: &Progress,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(nr * nc);
    let rows_per = ((1usize << 22) / nc.max(1)).max(1);
    let mut s = 0;
    while s < nr {
        let e = (s + rows_per).min(nr);
        let part = ds
            .read_slice_2d::<f32, _>((s..e, ..))
            .map_err(|err| h5err(path, key, err))?;
        out.extend(part.iter().copied());
        pb.inc(((e - s) * nc) as u64);
        s = e;
    }
    Ok(out)
}

/// Reads the index (row names) of a dataframe group such as `obs`, `var` or `raw/var`.
fn read_df_index(
    path: &Path,
    store: &<H5 as anndata::Backend>::Store,
    key: &str,
) -> Result<Vec<String>> {
    let c = DataContainer::<H5>::open(store, key).map_err(|e| h5err(path, key, e))?;
    let index_name: String = c
        .get_attr("_index")
        .map_err(|e| h5err(path, &format!("{key}.attrs[_index]"), e))?;
    let group = c.as_group().map_err(|e| h5err(path, key, e))?;
    let col = DataContainer::<H5>::open(group, &index_name)
        .map_err(|e| h5err(path, &format!("{key}/{index_name}"), e))?;
    match DynArray::read(&col).map_err(|e| h5err(path, &format!("{key}/{index_name}"), e))? {
        DynArray::String(a) => Ok(a.into_iter().collect()),
        other => Ok(format!("{other:?}")
            .lines()
            .map(|s| s.to_string())
            .collect()),
    }
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

/// Reads a 1-D string dataset whatever its HDF5 string type (variable or fixed length).
fn read_strings(ds: &hdf5::Dataset) -> hdf5::Result<Vec<String>> {
    use hdf5::types::{FixedAscii, FixedUnicode, VarLenAscii, VarLenUnicode};
    if let Ok(v) = ds.read_raw::<VarLenUnicode>() {
        return Ok(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    if let Ok(v) = ds.read_raw::<VarLenAscii>() {
        return Ok(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    if let Ok(v) = ds.read_raw::<FixedUnicode<1024>>() {
        return Ok(v.iter().map(|s| s.as_str().to_string()).collect());
    }
    ds.read_raw::<FixedAscii<1024>>()
        .map(|v| v.iter().map(|s| s.as_str().to_string()).collect())
}

/// Reads one 1-D array (strings, numbers or booleans) as a polars column.
fn read_array_column(ds: &hdf5::Dataset, name: &str) -> hdf5::Result<Column> {
    use hdf5::types::TypeDescriptor as T;
    let td = ds.dtype()?.to_descriptor()?;
    Ok(match td {
        T::Integer(_) | T::Unsigned(_) => Column::new(name.into(), ds.read_raw::<i64>()?),
        T::Float(_) => Column::new(name.into(), ds.read_raw::<f64>()?),
        T::Boolean => Column::new(name.into(), ds.read_raw::<bool>()?),
        T::Enum(_) => Column::new(
            name.into(),
            ds.read_raw::<i8>()?
                .into_iter()
                .map(|v| v != 0)
                .collect::<Vec<bool>>(),
        ),
        _ => Column::new(name.into(), read_strings(ds)?),
    })
}

/// Maps category codes to their labels (`-1` = missing).
fn decode_categories(name: &str, codes: Vec<i64>, cats: &Column) -> Column {
    let cats = cats.cast(&polars::prelude::DataType::String).ok();
    let labels: Vec<Option<String>> = match cats.as_ref().and_then(|c| c.str().ok()) {
        Some(ca) => codes
            .iter()
            .map(|&c| {
                if c < 0 {
                    None
                } else {
                    ca.get(c as usize).map(|s| s.to_string())
                }
            })
            .collect(),
        None => codes.iter().map(|c| Some(c.to_string())).collect(),
    };
    Column::new(name.into(), labels)
}

/// Hand-written dataframe reader for layouts anndata-rs does not read (anndata 0.7's
/// `__categories` groups) and the modern one; returns (index, columns).
fn read_frame_h5(path: &Path, file: &hdf5::File, key: &str) -> Result<(Vec<String>, DataFrame)> {
    let g = file.group(key).map_err(|_| {
        if file.dataset(key).is_ok() {
            Error::format(
                path,
                format!("`{key}` uses the pre-0.7 anndata layout (a compound dataset)"),
                "rewrite it with a current anndata: anndata.read_h5ad(f).write_h5ad(f2)",
            )
        } else {
            Error::missing(path, key, "write the file with anndata.write_h5ad")
        }
    })?;
    let index_name = attr_string(&g, "_index").unwrap_or_else(|| "_index".into());
    let index = g
        .dataset(&index_name)
        .and_then(|d| read_strings(&d))
        .map_err(|e| h5err(path, &format!("{key}/{index_name}"), e))?;
    let order: Vec<String> = match g.attr("column-order") {
        Ok(a) => a
            .read_raw::<hdf5::types::VarLenUnicode>()
            .map(|v| v.iter().map(|s| s.as_str().to_string()).collect())
            .or_else(|_| {
                a.read_raw::<hdf5::types::VarLenAscii>()
                    .map(|v| v.iter().map(|s| s.as_str().to_string()).collect())
            })
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let mut cols = Vec::new();
    for name in order.iter().filter(|n| **n != index_name) {
        let field = format!("{key}/{name}");
        let col = if let Ok(sub) = g.group(name) {
            let enc = attr_string(&sub, "encoding-type").unwrap_or_default();
            match enc.as_str() {
                "categorical" => {
                    let codes = sub
                        .dataset("codes")
                        .and_then(|d| d.read_raw::<i64>())
                        .map_err(|e| h5err(path, &field, e))?;
                    let cats = sub
                        .dataset("categories")
                        .and_then(|d| read_array_column(&d, "c"))
                        .map_err(|e| h5err(path, &field, e))?;
                    decode_categories(name, codes, &cats)
                }
                _ => {
                    let vals = sub.dataset("values").map_err(|e| h5err(path, &field, e))?;
                    let mut col =
                        read_array_column(&vals, name).map_err(|e| h5err(path, &field, e))?;
                    if let Ok(mask) = sub.dataset("mask").and_then(|d| d.read_raw::<bool>()) {
                        // nullable arrays: masked entries become missing (kept as text)
                        let text = col
                            .cast(&polars::prelude::DataType::String)
                            .map_err(|e| h5err(path, &field, e))?;
                        let ca = text.str().map_err(|e| h5err(path, &field, e))?;
                        let vals: Vec<Option<String>> = (0..ca.len())
                            .map(|i| {
                                if mask[i] {
                                    None
                                } else {
                                    ca.get(i).map(|s| s.to_string())
                                }
                            })
                            .collect();
                        col = Column::new(name.into(), vals);
                    }
                    col
                }
            }
        } else {
            let ds = g.dataset(name).map_err(|e| h5err(path, &field, e))?;
            if ds.attr("categories").is_ok() {
                // anndata 0.7: codes here, labels in `__categories/<name>`
                let codes = ds.read_raw::<i64>().map_err(|e| h5err(path, &field, e))?;
                let cats = g
                    .group("__categories")
                    .and_then(|c| c.dataset(name))
                    .and_then(|d| read_array_column(&d, "c"))
                    .map_err(|e| h5err(path, &format!("{key}/__categories/{name}"), e))?;
                decode_categories(name, codes, &cats)
            } else {
                read_array_column(&ds, name).map_err(|e| h5err(path, &field, e))?
            }
        };
        cols.push(col);
    }
    let df = DataFrame::new(index.len(), cols).map_err(|e| {
        Error::format(
            path,
            format!("`{key}` columns differ in length: {e}"),
            "rewrite the file with anndata",
        )
    })?;
    Ok((index, df))
}

/// Reads an AnnData `.h5ad` file.
pub fn read_h5ad(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<Dataset> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(Error::NotFound {
            path: path.into(),
            hint: "; check the path, or run scripts/fetch-data.sh for the default datasets".into(),
        });
    }
    if path.is_dir() {
        return Err(Error::format(
            path,
            "is a directory, not an .h5ad file",
            "pass the .h5ad file, or use a 10x directory with matrix.mtx",
        ));
    }
    check_hdf5_signature(path)?;
    hdf5::silence_errors(true);
    let file = hdf5::File::open(path).map_err(|e| {
        Error::format(
            path,
            format!("cannot open as HDF5 ({e})"),
            "the file is truncated or corrupt; download or write it again",
        )
    })?;
    let mut warnings = Vec::new();
    let (xkey, var_key) = match &opts.matrix {
        MatrixSource::X => ("X".to_string(), "var".to_string()),
        MatrixSource::Layer(l) => (format!("layers/{l}"), "var".to_string()),
        MatrixSource::Raw => {
            if file.group("raw").is_ok() {
                ("raw/X".to_string(), "raw/var".to_string())
            } else if file.link_exists("raw.X") {
                return Err(Error::format(
                    path,
                    "uses the pre-0.7 anndata layout (`raw.X`)",
                    "rewrite it with a current anndata: anndata.read_h5ad(f).write_h5ad(f2)",
                ));
            } else {
                return Err(Error::missing(
                    path,
                    "raw",
                    "this file has no raw matrix; read X or a layer instead",
                ));
            }
        }
    };
    if !file.link_exists(&xkey) {
        let (field, fix) = match &opts.matrix {
            MatrixSource::X => ("X".to_string(), "this .h5ad has no expression matrix; store counts in X (or read a layer with --layer NAME)".to_string()),
            MatrixSource::Layer(l) => {
                let have = file.group("layers").and_then(|g| g.member_names()).unwrap_or_default();
                (format!("layers/{l}"), format!("available layers: [{}]", have.join(", ")))
            }
            MatrixSource::Raw => ("raw/X".into(), "read X instead".into()),
        };
        return Err(Error::missing(path, field, fix));
    }
    let x = read_matrix(path, &file, &xkey, opts.progress)?;
    let state = match file.group("uns").and_then(|u| u.group("log1p")) {
        Ok(g) => {
            let base = g
                .dataset("base")
                .ok()
                .and_then(|d| d.read_scalar::<f64>().ok());
            XState::LogNormalized { base }
        }
        Err(_) => XState::Counts,
    };
    // obs/var through anndata-rs; files in older layouts (anndata <= 0.7) through our own reader
    let via_crate = || -> anyhow::Result<(Vec<String>, Vec<String>, DataFrame)> {
        let store = <H5 as anndata::Backend>::open(path)?;
        if opts.matrix == MatrixSource::Raw {
            let genes = read_df_index(path, &store, &var_key)?;
            let cells = read_df_index(path, &store, "obs")?;
            let obs = DataFrame::read(&DataContainer::<H5>::open(&store, "obs")?)?;
            Ok((genes, cells, obs))
        } else {
            let ad = AnnData::<H5>::open(store)?;
            let obs = ad.read_obs()?;
            Ok((ad.var_names().into_vec(), ad.obs_names().into_vec(), obs))
        }
    };
    let (genes, cells, obs) = match via_crate() {
        Ok(v) => v,
        Err(_) => {
            let (genes, _) = read_frame_h5(path, &file, &var_key)?;
            let (cells, obs) = read_frame_h5(path, &file, "obs")?;
            (genes, cells, obs)
        }
    };
    drop(file);
    if genes.len() != x.n_cols {
        return Err(Error::format(
            path,
            format!(
                "`{var_key}` has {} genes but `{xkey}` has {} columns",
                genes.len(),
                x.n_cols
            ),
            "rewrite the file with anndata",
        ));
    }
    if cells.len() != x.n_rows {
        return Err(Error::format(
            path,
            format!(
                "`obs` has {} cells but `{xkey}` has {} rows",
                cells.len(),
                x.n_rows
            ),
            "rewrite the file with anndata",
        ));
    }
    let obs = if obs.width() == 0 {
        DataFrame::empty_with_height(cells.len())
    } else {
        obs
    };
    let genes = dedup_warning(path, &format!("{var_key} (gene)"), genes, &mut warnings);
    let cells = dedup_warning(path, "obs (cell)", cells, &mut warnings);
    let state = if opts.matrix == MatrixSource::Raw && state != XState::Counts {
        XState::Other
    } else {
        state
    };
    let ds = Dataset {
        x,
        genes,
        cells,
        obs,
        state,
        source: path.into(),
        warnings,
    };
    ds.check_finite()?;
    Ok(ds)
}

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
    if !dir.is_dir() {
        return Err(Error::NotFound {
            path: dir.into(),
            hint: " (expected a 10x directory with matrix.mtx)".into(),
        });
    }
    let mtx = find_one(dir, &["matrix.mtx.gz", "matrix.mtx"]).ok_or_else(|| {
        Error::missing(dir, "matrix.mtx", "a 10x directory needs matrix.mtx(.gz)")
    })?;
    let feats = find_one(
        dir,
        &[
            "features.tsv.gz",
            "features.tsv",
            "genes.tsv.gz",
            "genes.tsv",
        ],
    )
    .ok_or_else(|| {
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
    let mut lines = open_maybe_gz(&mtx)?.lines();
    let header = lines
        .next()
        .transpose()
        .map_err(|e| Error::io(&mtx, e))?
        .unwrap_or_default();
    if !header.starts_with("%%MatrixMarket matrix coordinate") {
        return Err(Error::format(
            &mtx,
            "not a MatrixMarket coordinate file (bad header)",
            "pass the matrix.mtx written by Cell Ranger",
        ));
    }
    let mut dims: Option<(usize, usize, usize)> = None;
    let mut rows: Vec<u32> = Vec::new();
    let mut cols: Vec<u32> = Vec::new();
    let mut vals: Vec<f32> = Vec::new();
    for (ln, line) in lines.enumerate() {
        let line = line.map_err(|e| {
            Error::format(
                &mtx,
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
                &mtx,
                format!("line {}: expected `row col value`, found `{line}`", ln + 2),
                "the file is corrupt",
            )
        };
        let a: usize = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let b: usize = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        match dims {
            None => {
                let n: usize = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
                dims = Some((a, b, n));
                rows.reserve(n);
                cols.reserve(n);
                vals.reserve(n);
            }
            Some((g, c, _)) => {
                let v: f32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(1.0);
                if a == 0 || b == 0 || a > g || b > c {
                    return Err(Error::format(
                        &mtx,
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
        }
    }
    let (n_genes, n_cells, nnz) =
        dims.ok_or_else(|| Error::format(&mtx, "no size line", "the file is truncated"))?;
    if vals.len() != nnz {
        return Err(Error::format(
            &mtx,
            format!("header says {nnz} entries but {} were read", vals.len()),
            "the file is truncated",
        ));
    }
    // genes × cells triplets → cells × genes CSR
    let mut counts = vec![0usize; n_cells + 1];
    for &c in &cols {
        counts[c as usize + 1] += 1;
    }
    for i in 0..n_cells {
        counts[i + 1] += counts[i];
    }
    let indptr = counts.clone();
    let mut next = counts;
    let mut indices = vec![0u32; nnz];
    let mut data = vec![0f32; nnz];
    for k in 0..nnz {
        let c = cols[k] as usize;
        indices[next[c]] = rows[k];
        data[next[c]] = vals[k];
        next[c] += 1;
    }
    let x = Csr::from_parts(n_cells, n_genes, indptr, indices, data)
        .map_err(|e| Error::format(&mtx, e, "the file is corrupt"))?;
    let feat_lines = read_lines(&feats)?;
    if feat_lines.len() != n_genes {
        return Err(Error::format(
            &feats,
            format!(
                "{} features but the matrix has {n_genes} rows",
                feat_lines.len()
            ),
            "use the features file from the same Cell Ranger output",
        ));
    }
    let mut warnings = Vec::new();
    let names: Vec<String> = feat_lines
        .iter()
        .map(|l| {
            l.split('\t')
                .nth(1)
                .unwrap_or_else(|| l.split('\t').next().unwrap_or(""))
                .to_string()
        })
        .collect();
    let genes = dedup_warning(&feats, "gene", names, &mut warnings);
    let cells: Vec<String> = read_lines(&bcs)?
        .into_iter()
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .collect();
    if cells.len() != n_cells {
        return Err(Error::format(
            &bcs,
            format!(
                "{} barcodes but the matrix has {n_cells} columns",
                cells.len()
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
        if !self.counts {
            ds.state = XState::LogNormalized { base: None };
        }
        Ok(ds)
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
