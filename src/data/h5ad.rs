//! AnnData `.h5ad` reading: the count matrix through HDF5 directly (chunked, converted by HDF5),
//! `obs`/`var` tables decoded from their HDF5 groups.
use std::io::Read;
use std::path::Path;

use anndata::backend::{AttributeOp, DataContainer};
use anndata::data::{DynArray, Readable};
use anndata::{AnnData, AnnDataOp};
use anndata_hdf5::H5;
use hdf5_metno as hdf5;
use polars::prelude::{Column, DataFrame};

use super::{dedup_warning, Dataset, MatrixSource, ReadOptions, XState};
use crate::csr::Csr;
use crate::error::{Error, Result};
use crate::progress::Progress;

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
    if file.group(key).is_ok() {
        read_sparse(path, file, key, progress)
    } else {
        read_dense(path, file, key, progress)
    }
}

/// `key` stored as an anndata sparse group (csr or csc: `data`, `indices`, `indptr`, `shape`).
fn read_sparse(path: &Path, file: &hdf5::File, key: &str, progress: bool) -> Result<Csr> {
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
}

/// `key` stored as a dense 2-D dataset.
fn read_dense(path: &Path, file: &hdf5::File, key: &str, progress: bool) -> Result<Csr> {
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

/// A dataframe column stored as a group: a categorical (`codes`, `categories`) or a nullable
/// array (`values`, `mask`: masked entries become missing, kept as text).
fn read_column_group(path: &Path, sub: &hdf5::Group, name: &str, field: &str) -> Result<Column> {
    let enc = attr_string(sub, "encoding-type").unwrap_or_default();
    if enc == "categorical" {
        let codes = sub
            .dataset("codes")
            .and_then(|d| d.read_raw::<i64>())
            .map_err(|e| h5err(path, field, e))?;
        let cats = sub
            .dataset("categories")
            .and_then(|d| read_array_column(&d, "c"))
            .map_err(|e| h5err(path, field, e))?;
        return Ok(decode_categories(name, codes, &cats));
    }
    let vals = sub.dataset("values").map_err(|e| h5err(path, field, e))?;
    let col = read_array_column(&vals, name).map_err(|e| h5err(path, field, e))?;
    let Ok(mask) = sub.dataset("mask").and_then(|d| d.read_raw::<bool>()) else {
        return Ok(col);
    };
    let text = col
        .cast(&polars::prelude::DataType::String)
        .map_err(|e| h5err(path, field, e))?;
    let ca = text.str().map_err(|e| h5err(path, field, e))?;
    let vals: Vec<Option<String>> = (0..ca.len())
        .map(|i| {
            if mask[i] {
                None
            } else {
                ca.get(i).map(|s| s.to_string())
            }
        })
        .collect();
    Ok(Column::new(name.into(), vals))
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
        let col = match g.group(name) {
            Ok(sub) => read_column_group(path, &sub, name, &field)?,
            Err(_) => {
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
    read_impl(path.as_ref(), opts, true).map(|(ds, _)| ds)
}

/// Reads everything of an `.h5ad` but the matrix's entries: its `x` has the matrix's shape and
/// no stored entry, for a reader of row chunks (`backed`). Also returns the matrix's
/// key (`X`, `layers/NAME` or `raw/X`).
pub fn read_h5ad_meta(path: &Path, opts: &ReadOptions) -> Result<(Dataset, String)> {
    read_impl(path, opts, false)
}

fn read_impl(path: &Path, opts: &ReadOptions, with_x: bool) -> Result<(Dataset, String)> {
    let file = open_h5ad(path)?;
    let mut warnings = Vec::new();
    let (xkey, var_key) = matrix_keys(path, &file, &opts.matrix)?;
    let x = if with_x {
        read_matrix(path, &file, &xkey, opts.progress)?
    } else {
        let (nr, nc) = matrix_shape(path, &file, &xkey)?;
        Csr::from_parts(nr, nc, vec![0; nr + 1], Vec::new(), Vec::new())
            .map_err(|e| Error::format(path, e, "rewrite the file with anndata"))?
    };
    let state = match file.group("uns").and_then(|u| u.group("log1p")) {
        Ok(g) => XState::LogNormalized {
            base: log1p_base(path, &g)?,
        },
        Err(_) => XState::Counts,
    };
    let (genes, cells, obs) = read_names(path, &file, opts, &var_key)?;
    drop(file);
    let shape_error =
        |what: String| Err(Error::format(path, what, "rewrite the file with anndata"));
    if genes.len() != x.n_cols {
        let (n, c) = (genes.len(), x.n_cols);
        return shape_error(format!(
            "`{var_key}` has {n} genes but `{xkey}` has {c} columns"
        ));
    }
    if cells.len() != x.n_rows {
        let (n, r) = (cells.len(), x.n_rows);
        return shape_error(format!("`obs` has {n} cells but `{xkey}` has {r} rows"));
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
    Ok((ds, xkey))
}

/// Opens `path` as HDF5: a missing path, a directory and a file that is not HDF5 are named.
fn open_h5ad(path: &Path) -> Result<hdf5::File> {
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
    hdf5::File::open(path).map_err(|e| {
        Error::format(
            path,
            format!("cannot open as HDF5 ({e})"),
            "the file is truncated or corrupt; download or write it again",
        )
    })
}

/// The keys of the matrix to read and of its gene table, checked to exist.
fn matrix_keys(path: &Path, file: &hdf5::File, matrix: &MatrixSource) -> Result<(String, String)> {
    let (xkey, var_key) = match matrix {
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
        let (field, fix) = match matrix {
            MatrixSource::X => ("X".to_string(), "this .h5ad has no expression matrix; store counts in X (or read a layer with --layer NAME)".to_string()),
            MatrixSource::Layer(l) => {
                let have = file.group("layers").and_then(|g| g.member_names()).unwrap_or_default();
                (format!("layers/{l}"), format!("available layers: [{}]", have.join(", ")))
            }
            MatrixSource::Raw => ("raw/X".into(), "read X instead".into()),
        };
        return Err(Error::missing(path, field, fix));
    }
    Ok((xkey, var_key))
}

/// Gene names, cell names and obs: through anndata-rs, and for files in older layouts (anndata
/// <= 0.7, or any the crate cannot read) through our own reader.
fn read_names(
    path: &Path,
    file: &hdf5::File,
    opts: &ReadOptions,
    var_key: &str,
) -> Result<(Vec<String>, Vec<String>, DataFrame)> {
    let via_crate = || -> anyhow::Result<(Vec<String>, Vec<String>, DataFrame)> {
        let store = <H5 as anndata::Backend>::open(path)?;
        if opts.matrix == MatrixSource::Raw {
            let genes = read_df_index(path, &store, var_key)?;
            let cells = read_df_index(path, &store, "obs")?;
            let obs = DataFrame::read(&DataContainer::<H5>::open(&store, "obs")?)?;
            Ok((genes, cells, obs))
        } else {
            let ad = AnnData::<H5>::open(store)?;
            let obs = ad.read_obs()?;
            Ok((ad.var_names().into_vec(), ad.obs_names().into_vec(), obs))
        }
    };
    match super::contain_panics(via_crate) {
        Ok(v) => Ok(v),
        Err(_) => {
            let (genes, _) = read_frame_h5(path, file, var_key)?;
            let (cells, obs) = read_frame_h5(path, file, "obs")?;
            Ok((genes, cells, obs))
        }
    }
}

/// The shape of the matrix at `key` (a sparse group's `shape` attribute, or a dense dataset's).
fn matrix_shape(path: &Path, file: &hdf5::File, key: &str) -> Result<(usize, usize)> {
    let shape: Vec<u64> = match file.group(key) {
        Ok(g) => g
            .attr("shape")
            .and_then(|a| a.read_raw::<u64>())
            .map_err(|e| h5err(path, &format!("{key}.attrs[shape]"), e))?,
        Err(_) => file
            .dataset(key)
            .map_err(|e| h5err(path, key, e))?
            .shape()
            .into_iter()
            .map(|v| v as u64)
            .collect(),
    };
    match shape[..] {
        [nr, nc] => Ok((nr as usize, nc as usize)),
        _ => Err(Error::format(
            path,
            format!("`{key}` has shape {shape:?}, expected 2 dimensions"),
            "store a cells × genes matrix",
        )),
    }
}

/// `uns["log1p"]["base"]` as scanpy and anndata write it: absent or `None` (anndata's `null`
/// encoding, an HDF5 dataset with a null dataspace) is the natural log; a number is that base.
/// A base that is no logarithm base (≤ 0, 1, not finite) is refused by name.
fn log1p_base(path: &Path, g: &hdf5::Group) -> Result<Option<f64>> {
    let Ok(d) = g.dataset("base") else {
        return Ok(None);
    };
    let null_encoded = attr_string(&d, "encoding-type").is_some_and(|v| v == "null");
    if null_encoded || d.space().map_or(true, |s| s.is_null()) {
        return Ok(None);
    }
    let bad = |what: String| {
        Error::bad_value(
            path,
            "uns/log1p/base",
            what,
            "write the base scanpy used (None for the natural log, e.g. 2 or 10), or delete uns['log1p'] if X holds counts",
        )
    };
    let b = d
        .read_scalar::<f64>()
        .map_err(|e| bad(format!("is not a number ({e})")))?;
    if !b.is_finite() || b <= 0.0 || b == 1.0 {
        return Err(bad(format!("is {b}, not a logarithm base")));
    }
    Ok(Some(b))
}
