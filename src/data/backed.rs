//! Row chunks of an `.h5ad` matrix, read through the `anndata` crate's backend (hyperslabs of
//! `indptr`, `indices` and `data`, or of a dense `X`): a file larger than memory streams one chunk
//! at a time. Each chunk is checked as the whole-file reader checks the matrix.
use std::path::{Path, PathBuf};

use anndata::backend::{AttributeOp, Backend, DatasetOp, GroupOp};
use anndata::data::{DynArray, SelectInfoElem};
use anndata_hdf5::H5;

use super::{Dataset, MatrixSource, ReadOptions};
use crate::csr::Csr;
use crate::error::{Error, Result};

/// How the matrix is stored.
enum Layout {
    Csr,
    Dense,
}

/// An `.h5ad` opened for reading its matrix in row chunks.
pub struct Backed {
    /// Everything but the matrix's entries (`x` has the shape and no stored entry).
    pub meta: Dataset,
    path: PathBuf,
    key: String,
    store: <H5 as Backend>::Store,
    layout: Layout,
}

impl Backed {
    /// Opens `path`'s matrix (`X`, a layer or `raw/X`) for row-chunked reading.
    pub fn open(path: &Path, matrix: MatrixSource) -> Result<Self> {
        let opts = ReadOptions {
            matrix,
            progress: false,
        };
        let (meta, key) = super::h5ad::read_h5ad_meta(path, &opts)?;
        let store = H5::open(path).map_err(|e| {
            Error::format(
                path,
                format!("cannot open as HDF5 ({e})"),
                "write the file again",
            )
        })?;
        let layout = match store.open_group(&key) {
            Ok(g) => {
                let enc: String = g.get_attr("encoding-type").unwrap_or_default();
                match enc.as_str() {
                    "csr_matrix" => Layout::Csr,
                    other => {
                        return Err(Error::bad_value(
                            path,
                            &key,
                            format!("is stored as `{other}`; chunked reading reads cell rows"),
                            "store the matrix as CSR (adata.X = adata.X.tocsr(); adata.write_h5ad(f)), or leave out --chunk-cells",
                        ))
                    }
                }
            }
            Err(_) => Layout::Dense,
        };
        Ok(Backed {
            meta,
            path: path.to_path_buf(),
            key,
            store,
            layout,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of cells (matrix rows).
    pub fn n_rows(&self) -> usize {
        self.meta.x.n_rows
    }

    /// The rows `start..end` as a CSR matrix (f32 values, as the whole-file reader converts them).
    pub fn chunk(&self, start: usize, end: usize) -> Result<Csr> {
        let nc = self.meta.x.n_cols;
        let corrupt = |field: &str, e: String| {
            let at = match field {
                "" => self.key.clone(),
                f => format!("{}/{f}", self.key),
            };
            Error::format(
                &self.path,
                format!("`{at}` of cells {start}..{end}: {e}"),
                "the file is truncated or corrupt; write it again with anndata",
            )
        };
        match self.layout {
            Layout::Dense => {
                let ds = self
                    .store
                    .open_dataset(&self.key)
                    .map_err(|e| corrupt("", e.to_string()))?;
                let sel = [SelectInfoElem::from(start..end), SelectInfoElem::full()];
                let a = ds
                    .read_dyn_array_slice(&sel)
                    .map_err(|e| corrupt("", format!("{e:#}")))?;
                let v = to_f32(a).map_err(|e| corrupt("", e))?;
                Ok(Csr::from_dense(end - start, nc, &v))
            }
            Layout::Csr => {
                let g = self
                    .store
                    .open_group(&self.key)
                    .map_err(|e| corrupt("", e.to_string()))?;
                let read = |name: &str, a: usize, b: usize| -> Result<DynArray> {
                    g.open_dataset(name)
                        .and_then(|d| d.read_dyn_array_slice(&[SelectInfoElem::from(a..b)]))
                        .map_err(|e| corrupt(name, format!("{e:#}")))
                };
                let ptr =
                    to_i64(read("indptr", start, end + 1)?).map_err(|e| corrupt("indptr", e))?;
                if ptr.len() != end - start + 1 {
                    return Err(corrupt(
                        "indptr",
                        format!("{} offsets for {} rows", ptr.len(), end - start),
                    ));
                }
                if ptr.windows(2).any(|w| w[1] < w[0]) || ptr.first().is_some_and(|&p| p < 0) {
                    return Err(corrupt("indptr", "offsets are negative or decrease".into()));
                }
                let (lo, hi) = (ptr[0] as usize, ptr[ptr.len() - 1] as usize);
                let data = to_f32(read("data", lo, hi)?).map_err(|e| corrupt("data", e))?;
                let indices =
                    to_u32(read("indices", lo, hi)?).map_err(|e| corrupt("indices", e))?;
                let indptr = ptr.iter().map(|&p| p as usize - lo).collect();
                Csr::from_parts(end - start, nc, indptr, indices, data).map_err(|e| corrupt("", e))
            }
        }
    }

    /// The row chunks `(first row, rows)` of at most `size` cells, in order.
    pub fn chunks(&self, size: usize) -> impl Iterator<Item = Result<(usize, Csr)>> + '_ {
        let n = self.n_rows();
        (0..n)
            .step_by(size.max(1))
            .map(move |s| self.chunk(s, (s + size).min(n)).map(|c| (s, c)))
    }
}

macro_rules! convert {
    ($a:expr, $t:ty, [$($v:ident),*]) => {
        match $a {
            $(DynArray::$v(x) => Ok(x.iter().map(|&v| v as $t).collect()),)*
            DynArray::Bool(_) | DynArray::String(_) => Err("is not numeric".to_string()),
        }
    };
}

fn to_f32(a: DynArray) -> std::result::Result<Vec<f32>, String> {
    match a {
        // the common layout: no conversion, no copy
        DynArray::F32(x) => Ok(x.into_raw_vec_and_offset().0),
        a => convert!(a, f32, [I8, I16, I32, I64, U8, U16, U32, U64, F32, F64]),
    }
}

/// Column indices as `u32`; a negative or too large index is an error.
fn to_u32(a: DynArray) -> std::result::Result<Vec<u32>, String> {
    fn narrow<T: Copy + std::fmt::Display>(
        v: &[T],
        ok: impl Fn(T) -> Option<u32>,
    ) -> std::result::Result<Vec<u32>, String> {
        v.iter()
            .map(|&i| ok(i).ok_or_else(|| format!("index {i} is not a column")))
            .collect()
    }
    match a {
        DynArray::I32(x) => {
            let v = x.into_raw_vec_and_offset().0;
            if let Some(i) = v.iter().find(|&&i| i < 0) {
                return Err(format!("index {i} is not a column"));
            }
            // non-negative i32 have the same bits as u32
            Ok(v.into_iter().map(|i| i as u32).collect())
        }
        DynArray::I64(x) => narrow(&x.into_raw_vec_and_offset().0, |i| u32::try_from(i).ok()),
        DynArray::U32(x) => Ok(x.into_raw_vec_and_offset().0),
        DynArray::U64(x) => narrow(&x.into_raw_vec_and_offset().0, |i| u32::try_from(i).ok()),
        DynArray::I16(x) => narrow(&x.into_raw_vec_and_offset().0, |i| u32::try_from(i).ok()),
        DynArray::U16(x) => Ok(x.iter().map(|&i| i as u32).collect()),
        DynArray::I8(x) => narrow(&x.into_raw_vec_and_offset().0, |i| u32::try_from(i).ok()),
        DynArray::U8(x) => Ok(x.iter().map(|&i| i as u32).collect()),
        _ => Err("is not an integer array".to_string()),
    }
}

fn to_i64(a: DynArray) -> std::result::Result<Vec<i64>, String> {
    convert!(a, i64, [I8, I16, I32, I64, U8, U16, U32, U64, F32, F64])
}
