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
