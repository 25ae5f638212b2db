//! `cellsentence bench …`: the options of every benchmark and their thin calls into
//! [`crate::bench`] (preprocess, scale, embed, annotate), which does the work.
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::lm::{sentence_words, RunDevice, SentenceSource};
use super::{print_out, DataDirArgs, PrepArgs};
use crate::bench::scale::ScaleBench;
use crate::error::Result;
use crate::lm::PromptStyle;
use crate::pipeline;
use crate::sentence::GeneSet;

/// Benchmark subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// read + QC + normalize + log + HVG + sentences vs scanpy + cell2sentence, on the largest
    /// dataset and on a tiled (Heart-sized) matrix; writes results/benchmarks/preprocess.*
    Preprocess {
        /// Start from this file (default: the largest raw-count dataset found).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Python with scanpy and cell2sentence (scripts/bench.sh creates .venv-ref).
        #[arg(long, default_value = ".venv-ref/bin/python")]
        python: PathBuf,
        /// Cells of the tiled matrix.
        #[arg(long, default_value_t = 60000)]
        tile_cells: usize,
        /// Genes of the tiled matrix.
        #[arg(long, default_value_t = 27000)]
        tile_genes: usize,
        /// Skip the tiled matrix.
        #[arg(long)]
        no_tiled: bool,
        /// Runs per tool and file (the median run is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Output folder.
        #[arg(long, default_value = "results/benchmarks")]
        out: PathBuf,
    },
    /// GPT-NeoX embedding throughput vs transformers (eager, sdpa) on the same prompts;
    /// writes results/benchmarks/embed_{cpu,cuda}.*
    Embed(BenchEmbedArgs),
    /// MLP epoch time vs PyTorch and linear-SVM fit time vs scikit-learn on the same data;
    /// writes results/benchmarks/annotation.*
    Annotate(BenchAnnotateArgs),
    /// The streaming pipeline on synthetic atlases of 100k–500k cells vs scanpy + cell2sentence:
    /// memory and cells/s; writes results/benchmarks/scale.*
    Scale(BenchScaleArgs),
}

/// `bench embed` options.
#[derive(Debug, Args)]
pub struct BenchEmbedArgs {
    /// Model directory (default: a random-weight Pythia-410M made by scripts/bench-embed.sh).
    #[arg(long, default_value = ".cache/bench/pythia-410m-random")]
    pub model: PathBuf,
    /// Python with torch + transformers (scripts/lm-ref-env.sh creates .venv-lm).
    #[arg(long, default_value = ".venv-lm/bin/python")]
    pub python: PathBuf,
    /// Dataset whose first cells give the prompts.
    #[arg(long, default_value = "baron_human")]
    pub input: String,
    /// Number of prompts.
    #[arg(long, default_value_t = 64, value_parser = super::domain::count())]
    pub n: usize,
    /// Transformers attention implementations to time.
    #[arg(long, value_delimiter = ',', default_value = "eager,sdpa")]
    pub attn: Vec<String>,
    /// Batch size of the transformers runs (Cell2Sentence: 8).
    #[arg(long, default_value_t = 8, value_parser = super::domain::count())]
    pub hf_batch: usize,
    #[command(flatten)]
    pub run: RunDevice,
    #[command(flatten)]
    pub dirs: DataDirArgs,
    /// Output folder.
    #[arg(long, default_value = "results/benchmarks")]
    pub out: PathBuf,
}

/// `bench annotate` options.
#[derive(Debug, Args)]
pub struct BenchAnnotateArgs {
    /// Python with torch + scikit-learn (scripts/lm-ref-env.sh creates .venv-lm).
    #[arg(long, default_value = ".venv-lm/bin/python")]
    pub python: PathBuf,
    #[command(flatten)]
    pub dirs: DataDirArgs,
    /// Output folder.
    #[arg(long, default_value = "results/benchmarks")]
    pub out: PathBuf,
}

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
fn cmd_bench_scale(a: &BenchScaleArgs) -> Result<()> {
    let t = crate::bench::scale::scale_bench(&ScaleBench {
        sizes: a.sizes.clone(),
        genes: a.genes,
        expressed: a.expressed,
        python: (!a.no_reference).then(|| a.python.clone()),
        reference_max_cells: a.reference_max_cells,
        cache: a.cache.clone(),
        out: a.out.clone(),
    })?;
    print_out(&t.to_markdown())
}

/// `cellsentence bench-stream`: one streamed run, printed as JSON.
pub fn cmd_bench_stream(input: &std::path::Path, chunk_cells: usize) -> Result<()> {
    let r = crate::bench::scale::stream_run(input, chunk_cells)?;
    print_out(&format!(
        "{}\n",
        serde_json::to_string(&r).unwrap_or_default()
    ))
}

/// `cellsentence bench …`.
pub fn cmd_bench(b: &BenchCmd) -> Result<()> {
    match b {
        BenchCmd::Preprocess {
            input,
            python,
            tile_cells,
            tile_genes,
            no_tiled,
            repeats,
            out,
        } => crate::bench::preprocess_bench(&crate::bench::PreprocessBench {
            input: input.clone(),
            python: python.clone(),
            tiled: (!no_tiled).then_some((*tile_cells, *tile_genes)),
            out: out.clone(),
            cache: PathBuf::from(".cache/bench"),
            repeats: *repeats,
        })
        .and_then(|t| print_out(&t.to_markdown())),
        BenchCmd::Scale(a) => cmd_bench_scale(a),
        BenchCmd::Embed(a) => cmd_bench_embed(a),
        BenchCmd::Annotate(a) => print_out(&crate::bench::annotate::annotate_bench(
            &crate::bench::annotate::AnnotateBench {
                python: a.python.clone(),
                data_dir: a.dirs.data_dir.clone(),
                out: a.out.clone(),
            },
        )?),
    }
}

/// `cellsentence bench embed`: the first `--n` cells of `--input` as Cell2Sentence prompts (top 200
/// genes), then [`crate::bench::embed::embed_bench`].
fn cmd_bench_embed(a: &BenchEmbedArgs) -> Result<()> {
    let src = SentenceSource {
        genes: GeneSet::All,
        tie_seed: crate::sentence::C2S_TIE_SEED,
        adata_layer: None,
        raw: false,
        dirs: a.dirs.clone(),
        prep: PrepArgs {
            no_preprocess: false,
            flavor: crate::hvg::Flavor::SeuratV3,
            n_top: 2000,
            on: Some(pipeline::HvgInput::Log),
            batch_key: None,
            hvg_list: None,
        },
    };
    let (_, words) = sentence_words(&a.input, &src, Some(200))?;
    let refs: Vec<Vec<&str>> = words
        .iter()
        .take(a.n)
        .map(|w| w.iter().map(String::as_str).collect())
        .collect();
    let texts = PromptStyle::c2s_default().render(&refs, 200);
    print_out(&crate::bench::embed::embed_bench(
        &crate::bench::embed::EmbedBench {
            model: a.model.clone(),
            python: a.python.clone(),
            texts,
            source: a.input.clone(),
            attn: a.attn.clone(),
            hf_batch: a.hf_batch,
            cuda: a.run.cuda,
            dtype: a.run.dtype,
            batch_tokens: a.run.batch_tokens,
            out: a.out.clone(),
        },
    )?)
}
