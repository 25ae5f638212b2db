//! `cellsentence merge`: the shards of a sharded `embed` run, stacked into one `.h5ad`.
use std::path::{Path, PathBuf};

use clap::Args;

use crate::data::h5ad_out::{self, Embeddings};
use crate::error::{Error, Result};
use crate::output::{check_out, OutKind};

/// `merge` options.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shards (.h5ad from `embed --cells`/`--shard … --out S.h5ad`), in any order.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Output .h5ad: every cell in the input's order, as one unsharded `embed` writes it.
    #[arg(long)]
    pub out: PathBuf,
}

/// `cellsentence merge`.
pub fn cmd_merge(a: &MergeArgs) -> Result<()> {
    if a.out.extension().is_none_or(|e| e != "h5ad") {
        return Err(Error::bad_value(
            &a.out,
            "--out",
            "is not an .h5ad file",
            "name the output <name>.h5ad",
        ));
    }
    let inputs: Vec<&Path> = a.shards.iter().map(PathBuf::as_path).collect();
    check_out("--out", &a.out, &inputs, OutKind::File)?;
    let shards = a
        .shards
        .iter()
        .map(|p| Ok((p.clone(), h5ad_out::read_embeddings(p)?)))
        .collect::<Result<Vec<(PathBuf, Embeddings)>>>()?;
    let merged = h5ad_out::merge_shards(&shards)?;
    h5ad_out::write_embeddings(&a.out, &merged.cells, &merged.m, &merged.about)?;
    eprintln!(
        "[merge] {} shards → {} cells × {} dims → {}",
        shards.len(),
        merged.m.rows,
        merged.m.cols,
        a.out.display()
    );
    Ok(())
}
