//! The `cellsentence` command line.
mod annotate;
mod args;
mod bench;
pub mod domain;
mod embed;
mod finetune;
mod lm;
mod merge;
mod metrics;
mod probe;
mod stream;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

pub use args::{CacheArgs, DataDirArgs, InputArgs, LabelArgs, PrepArgs};

use crate::data::{self, DatasetEntry};
use crate::deviation::Order;
use crate::error::{Error, Result};
use crate::hvg::HvgParams;
use crate::output::OutKind;
use crate::pipeline::{Counts, HvgSource, Pipeline, Prepared};
use crate::preprocess::PreprocessParams;
use crate::report::Table;
use crate::sentence::{GeneSet, SentenceParams, Sentences};

/// Cell sentences: scanpy-exact preprocessing and HVG, Cell2Sentence sentences, and the
/// experiments of "HVG cell sentences" regenerated from one command.
#[derive(Debug, Parser)]
#[command(name = "cellsentence", version, about, long_about = None)]
pub struct Cli {
    /// Silence progress bars.
    #[arg(long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a dataset's shape, X kind and obs columns with their category counts.
    Info(InputArgs),
    /// Print the highly variable genes, one per line, in the dataset's gene order.
    Hvg(HvgArgs),
    /// Print one cell sentence per line, cells in the filtered dataset's order.
    Sentences(SentenceArgs),
    /// Reconstruct expression from sentence ranks and print R², Pearson and Spearman as JSON.
    Reconstruct(ReconstructArgs),
    /// Run an experiment file (experiments/*.yaml) and write results/<name>/.
    Run(RunArgs),
    /// List the datasets found in the data directories.
    Datasets(DataDirArgs),
    /// Run the default experiments on the bundled data and write results/.
    Reproduce(ReproduceArgs),
    /// Embed cells (or prompts) with a GPT-NeoX model directory; writes a cells × hidden .npy.
    Embed(embed::EmbedArgs),
    /// Stack the shards of a sharded `embed` run (.h5ad, any order) into one .h5ad; a missing,
    /// overlapping or foreign shard is refused.
    Merge(merge::MergeArgs),
    /// Train a small cell-sentence language model on a dataset's sentences (Hugging Face layout).
    TrainLm(lm::TrainArgs),
    /// Pretrain one cell-sentence LM on every reachable dataset except the held-out ones; writes
    /// corpus.json beside the Hugging Face files.
    PretrainLm(lm::PretrainArgs),
    /// Fine-tune an LM on a task with labels: `--task cell_type` trains Cell2Sentence's cell-type
    /// prediction (prompt → the cell type, loss on the answer alone) and keeps the step of the
    /// lowest validation answer loss.
    FinetuneLm(finetune::FinetuneArgs),
    /// Answer each cell's type with a model from `finetune-lm --task cell_type` (answers restricted
    /// to its trained labels; CSV of the answer and every label's score).
    PredictCellType(finetune::PredictArgs),
    /// Embed every hidden state of one or more models and score each for cell identity (classifier
    /// probe, between-type variance share, anisotropy).
    LmProbe(probe::ProbeArgs),
    /// Gene-token attribution: which genes of a cell's sentence drive the MLP's predicted cell type
    /// (gradient × input or integrated gradients through the LM); top genes per type.
    Attribute(probe::AttributeArgs),
    /// Cell-type annotation from an embedding matrix: k-fold or leave-one-batch-out, MLP or SVM.
    Annotate(annotate::AnnotateArgs),
    /// Embedding quality (scIB-style): Leiden NMI/ARI, label silhouette, and with a batch key batch
    /// mixing, graph connectivity and k-NN label transfer; JSON plus the clusters as CSV.
    Metrics(metrics::MetricsArgs),
    /// Report the libtorch build this binary uses (CPU threads, CUDA).
    Env,
    /// Benchmarks against the reference tools.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// One timed pipeline run printed as JSON (used by `bench`).
    #[command(hide = true)]
    BenchRun {
        /// Input .h5ad.
        #[arg(long)]
        input: PathBuf,
    },
    /// One streamed run printed as JSON (used by `bench scale`).
    #[command(hide = true)]
    BenchStream {
        /// Input .h5ad.
        #[arg(long)]
        input: PathBuf,
        /// Cells per chunk.
        #[arg(long, default_value_t = 5_000)]
        chunk_cells: usize,
    },
}

/// `hvg` options.
#[derive(Debug, Args)]
pub struct HvgArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub prep: PrepArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
}

/// `sentences` options.
#[derive(Debug, Args)]
pub struct SentenceArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub prep: PrepArgs,
    /// Genes that enter the sentences.
    #[arg(long, value_parser = domain::choice::<GeneSet>(), default_value = "all")]
    pub genes: GeneSet,
    /// Keep only the first N genes of each sentence (the C2S model uses 200).
    #[arg(long, value_parser = self::domain::count())]
    pub max_genes: Option<usize>,
    /// Seed of the tie-breaking shuffle (Cell2Sentence: 42); `--seed` is accepted as well.
    #[arg(long, alias = "seed", default_value_t = crate::sentence::C2S_TIE_SEED)]
    pub tie_seed: u32,
    /// Gene order: `expression` (Cell2Sentence) or `deviation` (how far above the mean profile of
    /// all the input's cells, label-free; the same genes, reordered).
    #[arg(long, value_parser = domain::choice::<Order>(), default_value = "expression")]
    pub order: Order,
    /// Write a Parquet file (columns cell, sentence, n_genes) instead of one sentence a line on
    /// stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub stream: StreamArgs,
}

/// When an `.h5ad` is read in row chunks instead of whole.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Stream the .h5ad in chunks of N cells (QC, normalization, HVG of log data and sentences in
    /// passes over the file; memory holds one chunk): the same output as in memory.
    #[arg(long, value_parser = self::domain::count())]
    pub chunk_cells: Option<usize>,
    /// Files larger than this stream in chunks of 5,000 cells when the options allow (e.g. 2G).
    #[arg(long, value_parser = self::domain::bytes, default_value = "2G")]
    pub max_memory: u64,
}

/// `reconstruct` options.
#[derive(Debug, Args)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub prep: PrepArgs,
    /// Genes that enter the sentences (HVG: ranks within the HVG set).
    #[arg(long, value_parser = domain::choice::<GeneSet>(), default_value = "all")]
    pub genes: GeneSet,
    /// Number of sampled cells, or `all`.
    #[arg(long, default_value = "1024")]
    pub cells: crate::experiment::CellCount,
    /// Seed of the cell sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Model: Cell2Sentence's global line or one line per gene (the paper's equation 1).
    #[arg(long, value_parser = domain::choice::<crate::reconstruct::RecModel>(), default_value = "c2s")]
    pub model: crate::reconstruct::RecModel,
    /// Gene order of the sentences: `deviation` fits the line to the deviations from the mean
    /// profile of all cells and adds the profile back.
    #[arg(long, value_parser = domain::choice::<Order>(), default_value = "expression")]
    pub order: Order,
}

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Experiment file.
    pub file: PathBuf,
    #[command(flatten)]
    pub dirs: DataDirArgs,
    /// Results root; the experiment writes into <out>/<name>/.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    #[command(flatten)]
    pub stages: CacheArgs,
    /// Run on these dataset ids instead of the file's list.
    #[arg(long, value_delimiter = ',')]
    pub datasets: Option<Vec<String>>,
    /// The paper's numbers (default: the transcription built into this binary).
    #[arg(long)]
    pub reported: Option<PathBuf>,
    /// Retrain the committed pretrained LM (`annotation.pretrain.checkpoint`) from its settings.
    #[arg(long)]
    pub retrain_lm: bool,
}

/// `reproduce` options.
#[derive(Debug, Args)]
pub struct ReproduceArgs {
    #[command(flatten)]
    pub dirs: DataDirArgs,
    /// Output folder.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Datasets of the sentence-length and compute tables (default: the bundled baron_human and
    /// pbmc68k_reduced); the experiments use their own files' lists.
    #[arg(long, value_delimiter = ',')]
    pub datasets: Option<Vec<String>>,
    /// A GPT-NeoX checkpoint directory (C2S-Pythia-410M) for the annotation experiments and the
    /// compute table, instead of the small LM trained here (GPU recommended).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Experiment files to run (default: experiments/*.yaml), in dependency order.
    #[arg(long)]
    pub experiments: Option<Vec<PathBuf>>,
    #[command(flatten)]
    pub stages: CacheArgs,
    /// Retrain the committed pretrained LM (`annotation.pretrain.checkpoint`) from the same
    /// command and seed (~30 min on 2 cores; resumes after a kill).
    #[arg(long)]
    pub retrain_lm: bool,
}

fn load(args: &InputArgs) -> Result<(DatasetEntry, data::Dataset)> {
    let entry = stream::entry_of(args)?;
    let ds = crate::pipeline::read(&entry)?;
    Ok((entry, ds))
}

/// The input read and prepared, its HVG from `prep` (selected, or the `--hvg-list`).
fn pipeline_of(args: &InputArgs, prep: &PrepArgs) -> Result<Pipeline> {
    let (_, ds) = load(args)?;
    let p = PreprocessParams::default();
    Pipeline::new(
        ds,
        (!prep.no_preprocess).then_some(&p),
        hvg_source(prep),
        Counts::Drop,
    )
}

/// Where `prep` takes the HVG from.
fn hvg_source(prep: &PrepArgs) -> HvgSource {
    match &prep.hvg_list {
        Some(list) => HvgSource::List(list.clone()),
        None => HvgSource::Select {
            params: hvg_params(prep),
            on: prep.hvg_on(),
            batch_key: prep.batch_key.clone(),
        },
    }
}

fn hvg_params(prep: &PrepArgs) -> HvgParams {
    HvgParams {
        flavor: prep.flavor,
        n_top_genes: prep.n_top,
        ..HvgParams::default()
    }
}

fn cmd_info(a: &InputArgs) -> Result<()> {
    let (entry, ds) = load(a)?;
    print_out(&data::describe::describe(&entry, &ds)?)
}

fn print_out(s: &str) -> Result<()> {
    let mut so = std::io::stdout().lock();
    match so.write_all(s.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| Error::io("<stdout>", e)),
    }
}

fn cmd_hvg(a: &HvgArgs) -> Result<()> {
    if stream::stream_hvg(a)? {
        return Ok(());
    }
    let mut pl = pipeline_of(&a.input, &a.prep)?;
    let (p, h) = pl.with_hvg()?;
    let mut out = String::new();
    for j in h.indices() {
        out.push_str(&p.data.genes[j]);
        out.push('\n');
    }
    print_out(&out)
}

/// `--hvg-list` is read only for HVG sentences: given with `--genes all` it is refused, not ignored.
fn check_hvg_list(prep: &PrepArgs, genes: GeneSet) -> Result<()> {
    match (&prep.hvg_list, genes) {
        (Some(list), GeneSet::All) => Err(Error::bad_value(
            list,
            "--hvg-list",
            "is given but the sentences hold all genes (--genes all), so it would be ignored"
                .to_string(),
            "add --genes hvg to build the sentences from that list, or leave --hvg-list out",
        )),
        _ => Ok(()),
    }
}

/// Prepares an input and builds its sentences (HVG-only when `genes` says so): the data and one
/// sentence per kept cell.
fn prepared_sentences(
    input: &InputArgs,
    prep: &PrepArgs,
    genes: GeneSet,
    params: &SentenceParams,
) -> Result<(Prepared, Sentences)> {
    prepared_sentences_in(input, prep, genes, Order::Expression, params)
}

/// [`prepared_sentences`] in `order`.
fn prepared_sentences_in(
    input: &InputArgs,
    prep: &PrepArgs,
    genes: GeneSet,
    order: Order,
    params: &SentenceParams,
) -> Result<(Prepared, Sentences)> {
    check_hvg_list(prep, genes)?;
    let mut pl = pipeline_of(input, prep)?;
    let s = pl.sentences(genes, order, params)?;
    Ok((pl.into_prepared(), s))
}

fn cmd_sentences(a: &SentenceArgs) -> Result<()> {
    if let Some(out) = &a.out {
        let parquet = out.extension().is_some_and(|e| e == "parquet");
        if !parquet {
            return Err(Error::bad_value(
                out,
                "--out",
                "is not a .parquet file".to_string(),
                "name the output <name>.parquet, or leave --out out for text on stdout",
            ));
        }
        crate::output::check_out("--out", out, &[Path::new(&a.input.input)], OutKind::File)?;
    }
    check_hvg_list(&a.prep, a.genes)?;
    stream::write_sentences(a)
}

fn cmd_reconstruct(a: &ReconstructArgs) -> Result<()> {
    use crate::reconstruct;
    let mut pl = pipeline_of(&a.input, &a.prep)?;
    let x = match a.genes {
        GeneSet::All => pl.prepared().data.x.clone(),
        GeneSet::Hvg => {
            let (p, h) = pl.with_hvg()?;
            p.data.x.select_cols(&h.indices())
        }
    };
    let n = x.n_rows;
    let cells = reconstruct::sample_cells(n, a.cells.of(n), a.seed);
    let tie = crate::sentence::C2S_TIE_SEED;
    let r = match a.order {
        Order::Expression => reconstruct::reconstruct(&x, &cells, a.model, tie)?,
        Order::Deviation => {
            let all: Vec<usize> = (0..n).collect();
            let reference = crate::deviation::reference_profile(&x, &all)?;
            crate::deviation::reconstruct(&x, &reference, &cells, a.model, tie)?
        }
    };
    let js = serde_json::json!({"r2": r.r2, "pearson": r.pearson, "spearman": r.spearman, "n_cells": r.n_cells, "n_entries": r.n_entries});
    print_out(&format!("{js}\n"))
}

fn cmd_run(a: &RunArgs, quiet: bool) -> Result<()> {
    use crate::experiment;
    let t0 = std::time::Instant::now();
    let opts = experiment::RunOptions {
        out: a.out.clone(),
        cache: a.stages.cache.clone(),
        force: a.stages.force,
        data_dir: a.dirs.data_dir.clone(),
        datasets: a.datasets.clone(),
        reported: a.reported.clone(),
        quiet,
        retrain_lm: a.retrain_lm,
    };
    let s = experiment::run_file(&a.file, &opts)?;
    eprintln!(
        "[run] {}: {} stage(s) from cache, {} computed; wrote {} file(s) to {} in {:.2} s",
        a.file.display(),
        s.hits,
        s.computed,
        s.files.len(),
        s.out.display(),
        t0.elapsed().as_secs_f64()
    );
    for f in &s.skipped {
        eprintln!("[run] skipped {f}");
    }
    Ok(())
}

fn cmd_datasets(a: &DataDirArgs) -> Result<()> {
    let dirs = data::default_data_dirs(a.data_dir.as_deref());
    let mut t = Table::new(["id", "path", "label_key", "batch_key", "matrix"]);
    for e in data::catalog(&dirs) {
        t.push([
            e.id.clone(),
            e.path.display().to_string(),
            e.label_key.clone().unwrap_or_default(),
            e.batch_key.clone().unwrap_or_default(),
            format!("{:?}", e.matrix),
        ]);
    }
    print_out(&t.to_markdown())
}

/// The foundation part of the default run: QC, HVG and sentence lengths per dataset.
fn cmd_reproduce(a: &ReproduceArgs, quiet: bool) -> Result<()> {
    let t0 = std::time::Instant::now();
    let mut o = crate::reproduce::ReproduceOptions {
        out: a.out.clone(),
        cache: a.stages.cache.clone(),
        force: a.stages.force,
        data_dir: a.dirs.data_dir.clone(),
        experiments: a.experiments.clone(),
        model: a.model.clone(),
        quiet,
        retrain_lm: a.retrain_lm,
        ..Default::default()
    };
    if let Some(d) = &a.datasets {
        o.datasets = d.clone();
    }
    let s = crate::reproduce::reproduce(&o)?;
    eprintln!(
        "[reproduce] {} stage(s) from cache, {} computed, {:.1} s; report: {}",
        s.hits,
        s.computed,
        t0.elapsed().as_secs_f64(),
        s.report.display()
    );
    Ok(())
}

fn cmd_env() -> Result<()> {
    let mut out = String::new();
    out.push_str(&format!(
        "libtorch built against: {}\n",
        option_env!("CELLSENTENCE_LIBTORCH_BUILT").unwrap_or("unknown")
    ));
    out.push_str(&format!("libtorch loaded: {}\n", loaded_libtorch()));
    out.push_str(&format!("libtorch threads: {}\n", tch::get_num_threads()));
    for (key, value) in crate::cpu_kernels() {
        let value = value.unwrap_or_else(|| "(unset)".into());
        out.push_str(&format!("{key}: {value}\n"));
    }
    out.push_str(&format!(
        "cuda available: {} (devices: {})\n",
        tch::Cuda::is_available(),
        tch::Cuda::device_count()
    ));
    if tch::Cuda::is_available() {
        out.push_str(&format!(
            "cudnn available: {}\n",
            tch::Cuda::cudnn_is_available()
        ));
    }
    let t = tch::Tensor::from_slice(&[1f32, 2.0, 3.0]);
    out.push_str(&format!(
        "tensor check: sum([1,2,3]) = {}\n",
        t.sum(tch::Kind::Float).double_value(&[])
    ));
    print_out(&out)
}

/// The libtorch this process mapped (from /proc/self/maps) and the PyTorch release beside it
/// (a wheel's `torch/version.py`): on a GPU machine `LD_LIBRARY_PATH` may point elsewhere than the
/// build's rpath.
fn loaded_libtorch() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let Some(lib) = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
    else {
        return "unknown (no libtorch_cpu.so in /proc/self/maps)".into();
    };
    let dir = Path::new(lib).parent().unwrap_or(Path::new("/"));
    let version = std::fs::read_to_string(dir.join("../version.py"))
        .ok()
        .and_then(|v| {
            let line = v
                .lines()
                .find(|l| l.starts_with("__version__"))?
                .to_string();
            Some(line.split('\'').nth(1)?.to_string())
        })
        .unwrap_or_else(|| "version unknown".into());
    format!("{version} ({})", dir.display())
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    crate::pin_cpu_kernels();
    let cli = Cli::parse();
    crate::progress::set_quiet(cli.quiet);
    let r = match &cli.command {
        Command::Info(a) => cmd_info(a),
        Command::Hvg(a) => cmd_hvg(a),
        Command::Sentences(a) => cmd_sentences(a),
        Command::Datasets(a) => cmd_datasets(a),
        Command::Reconstruct(a) => cmd_reconstruct(a),
        Command::Run(a) => cmd_run(a, cli.quiet),
        Command::Reproduce(a) => cmd_reproduce(a, cli.quiet),
        Command::Env => cmd_env(),
        Command::Embed(a) => embed::cmd_embed(a),
        Command::Annotate(a) => annotate::cmd_annotate(a),
        Command::Metrics(a) => metrics::cmd_metrics(a),
        Command::Merge(a) => merge::cmd_merge(a),
        Command::TrainLm(a) => lm::cmd_train(a, cli.quiet),
        Command::PretrainLm(a) => lm::cmd_pretrain(a, cli.quiet),
        Command::FinetuneLm(a) => finetune::cmd_finetune(a, cli.quiet),
        Command::PredictCellType(a) => finetune::cmd_predict(a),
        Command::LmProbe(a) => probe::cmd_probe(a),
        Command::Attribute(a) => probe::cmd_attribute(a),
        Command::Bench(b) => bench::cmd_bench(b),
        Command::BenchStream { input, chunk_cells } => bench::cmd_bench_stream(input, *chunk_cells),
        Command::BenchRun { input } => crate::bench::run_pipeline(input).and_then(|r| {
            print_out(&format!(
                "{}\n",
                serde_json::to_string(&r).unwrap_or_default()
            ))
        }),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
