//! `bench scale` and its hidden child `bench-stream` (see [`crate::bench_scale`]).
use std::path::PathBuf;

use clap::Args;

use crate::bench_scale::{self, ScaleBench};
use crate::error::Result;

/// `bench scale` options.
#[derive(Debug, Args)]
pub struct BenchScaleArgs {
    /// Cells of the synthetic atlases, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100000,250000,500000")]
    pub sizes: Vec<usize>,
    /// Genes of the atlases.
    #[arg(long, default_value_t = 20_000)]
    pub genes: usize,
    /// Mean expressed genes per cell.
    #[arg(long, default_value_t = 1_500)]
    pub expressed: usize,
    /// Python with scanpy, scikit-misc and cell2sentence (scripts/bench.sh creates .venv-ref).
    #[arg(long, default_value = ".venv-ref/bin/python")]
    pub python: PathBuf,
    /// Run only ours.
    #[arg(long)]
    pub no_reference: bool,
    /// Run the reference up to this many cells (larger atlases are reported as not run).
    #[arg(long, default_value_t = 500_000)]
    pub reference_max_cells: usize,
    /// Folder of the generated atlases (several GB at 500,000 cells).
    #[arg(long, default_value = ".cache/bench")]
    pub cache: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "results/benchmarks")]
    pub out: PathBuf,
}

/// `cellsentence bench scale`.
pub fn cmd_bench_scale(a: &BenchScaleArgs) -> Result<()> {
    let t = bench_scale::scale_bench(&ScaleBench {
        sizes: a.sizes.clone(),
        genes: a.genes,
        expressed: a.expressed,
        python: (!a.no_reference).then(|| a.python.clone()),
        reference_max_cells: a.reference_max_cells,
        cache: a.cache.clone(),
        out: a.out.clone(),
    })?;
    super::print_out(&t.to_markdown())
}

/// `cellsentence bench-stream`: one streamed run, printed as JSON.
pub fn cmd_bench_stream(input: &std::path::Path, chunk_cells: usize) -> Result<()> {
    let r = bench_scale::stream_run(input, chunk_cells)?;
    super::print_out(&format!(
        "{}\n",
        serde_json::to_string(&r).unwrap_or_default()
    ))
}
