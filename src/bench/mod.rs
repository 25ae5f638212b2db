//! Benchmarks, each against its reference tool on the same data in the same run: here the
//! foundation pipeline (read → QC → normalize/log → HVG → sentences) against scanpy +
//! Cell2Sentence; [`scale`] the streaming pipeline on synthetic atlases; [`embed`] GPT-NeoX
//! embedding against transformers; [`annotate`] the MLP and SVM against PyTorch and scikit-learn.
pub mod annotate;
pub mod embed;
pub mod scale;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{self, ReadOptions};
use crate::error::{Error, Result};
use crate::hvg::HvgParams;
use crate::pipeline::{self, HvgInput};
use crate::preprocess::PreprocessParams;
use crate::report::{self, Table};
use crate::sentence::{self, SentenceParams};

/// Timings and memory of one pipeline run (ours or the reference's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStats {
    /// Tool and version.
    pub tool: String,
    /// Seconds per step.
    pub seconds: std::collections::BTreeMap<String, f64>,
    /// Sum of the steps.
    pub total_seconds: f64,
    /// Peak resident memory of the process (MiB).
    pub peak_rss_mb: f64,
    /// Resident memory before reading the data (MiB): the loaded libraries (libtorch with its CUDA
    /// libraries is ~390 MiB for us, the Python modules for the reference).
    #[serde(default)]
    pub baseline_rss_mb: f64,
    /// Cells after QC.
    pub cells: usize,
    /// Genes after QC.
    pub genes: usize,
    /// Bytes of all sentences (all genes + HVG), as a cross-check between tools.
    pub sentence_bytes: usize,
    /// Mean words per all-gene sentence.
    pub mean_words_all: f64,
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

fn status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs the paper's foundation steps on one file in this process.
pub fn run_pipeline(path: &Path) -> Result<RunStats> {
    let baseline = status_mb("VmRSS:");
    let mut t = std::collections::BTreeMap::new();
    let t0 = Instant::now();
    let ds = data::read(path, &ReadOptions::default())?;
    t.insert("read".to_string(), t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    let (mut d, _) = crate::preprocess::qc_owned(ds, &PreprocessParams::default().qc)?;
    t.insert("qc".into(), t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    crate::preprocess::normalize_total(&mut d, None);
    crate::preprocess::log1p(&mut d, Some(10.0));
    d.x.eliminate_zeros();
    t.insert("normalize_log".into(), t0.elapsed().as_secs_f64());
    let p = pipeline::Prepared {
        data: d,
        counts: None,
        report: None,
    };
    let t0 = Instant::now();
    let h = pipeline::select_hvg(&p, &HvgParams::default(), HvgInput::Log, None)?;
    t.insert("hvg".into(), t0.elapsed().as_secs_f64());
    let mut bytes = 0usize;
    let words: usize = p.data.x.nnz();
    let t0 = Instant::now();
    sentence::for_each_sentence(
        &p.data.x,
        &p.data.genes,
        &SentenceParams::default(),
        |_, s| {
            bytes += s.len();
        },
    )?;
    t.insert("sentences_all".into(), t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    let idx = h.indices();
    let xh = p.data.x.select_cols(&idx);
    let names: Vec<String> = idx.iter().map(|&j| p.data.genes[j].clone()).collect();
    sentence::for_each_sentence(&xh, &names, &SentenceParams::default(), |_, s| {
        bytes += s.len()
    })?;
    t.insert("sentences_hvg".into(), t0.elapsed().as_secs_f64());
    Ok(RunStats {
        tool: format!("cellsentence {}", env!("CARGO_PKG_VERSION")),
        total_seconds: t.values().sum(),
        seconds: t,
        peak_rss_mb: peak_rss_mb(),
        baseline_rss_mb: baseline,
        cells: p.data.n_cells(),
        genes: p.data.n_genes(),
        sentence_bytes: bytes,
        mean_words_all: words as f64 / p.data.n_cells().max(1) as f64,
    })
}

/// Options of `cellsentence bench preprocess`.
#[derive(Debug, Clone)]
pub struct PreprocessBench {
    /// Dataset to start from (default: the largest .h5ad found).
    pub input: Option<PathBuf>,
    /// Python with scanpy + cell2sentence (the reference venv).
    pub python: PathBuf,
    /// Size of the tiled matrix (cells, genes); `None` skips it.
    pub tiled: Option<(usize, usize)>,
    /// Output folder.
    pub out: PathBuf,
    /// Folder for the generated tiled file.
    pub cache: PathBuf,
    /// Runs per tool and file; the run with the median total time is reported.
    pub repeats: usize,
}

/// Runs a child `repeats` times and keeps the run with the median total time (peak = the max).
fn median_run(make: impl Fn() -> Command, what: &str, repeats: usize) -> Result<RunStats> {
    let mut runs: Vec<RunStats> = Vec::new();
    for _ in 0..repeats.max(1) {
        runs.push(child_json(make(), what)?);
    }
    let peak = runs.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max);
    runs.sort_by(|a, b| a.total_seconds.total_cmp(&b.total_seconds));
    let mut m = runs.swap_remove(runs.len() / 2);
    m.peak_rss_mb = peak;
    Ok(m)
}

/// The last line of a benchmark child's output that holds a JSON object (the children print
/// their result last). The opening brace is written as an escape so that brace-counting tools
/// read the callers whole.
pub(crate) fn last_json_line(text: &str) -> Option<&str> {
    text.lines().rev().find(|l| l.starts_with('\u{7b}'))
}

fn child_json<T: for<'de> Deserialize<'de>>(mut cmd: Command, what: &str) -> Result<T> {
    let out = cmd.output().map_err(|e| Error::io(what, e))?;
    if !out.status.success() {
        return Err(Error::format(
            what,
            format!(
                "benchmark child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            "see the message above",
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = last_json_line(&text).unwrap_or("");
    serde_json::from_str(line).map_err(|e| {
        Error::format(
            what,
            format!("unreadable benchmark output ({e}): {text}"),
            "see the child's output",
        )
    })
}

/// Size in MiB of the input's count matrix in scipy's CSR layout (f32 data, i32 indices, i64 indptr).
fn csr_mb(path: &Path) -> Result<f64> {
    let ds = data::read(path, &ReadOptions::default())?;
    Ok((ds.x.nnz() * 8 + (ds.n_cells() + 1) * 8) as f64 / (1024.0 * 1024.0))
}

/// Runs ours and the reference on the largest dataset and on a tiled matrix; writes tables.
pub fn preprocess_bench(o: &PreprocessBench) -> Result<Table> {
    let input = match &o.input {
        Some(p) => p.clone(),
        None => largest_counts_file()?,
    };
    let mut files = vec![input.clone()];
    if let Some((c, g)) = o.tiled {
        files.push(tiled_file(o, &input, c, g)?);
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let mut t = Table::new(PREPROCESS_COLUMNS);
    let mut all = Vec::new();
    for f in &files {
        eprintln!("[bench] {}: cellsentence", f.display());
        let ours = median_run(
            || {
                let mut c = Command::new(&exe);
                c.arg("bench-run").arg("--input").arg(f).arg("--quiet");
                c
            },
            "cellsentence bench-run",
            o.repeats,
        )?;
        eprintln!("[bench] {}: scanpy + cell2sentence", f.display());
        let mut c = Command::new(&o.python);
        c.arg(crate::project_file("bench/preprocess_ref.py")).arg(f);
        let theirs: RunStats = child_json(c, "bench/preprocess_ref.py")?;
        if ours.cells != theirs.cells || ours.genes != theirs.genes {
            return Err(Error::format(
                f,
                format!(
                    "tools disagree after QC: ours {}×{}, reference {}×{}",
                    ours.cells, ours.genes, theirs.cells, theirs.genes
                ),
                "run the parity tests",
            ));
        }
        let csr = csr_mb(f)?;
        t.push(preprocess_row(f, csr, &ours, &theirs));
        all.push(serde_json::json!({"file": f, "csr_mb": csr, "cellsentence": ours, "reference": theirs}));
    }
    write_preprocess_tables(o, &t, &all)?;
    Ok(t)
}

/// The columns of `preprocess.{csv,md}`.
const PREPROCESS_COLUMNS: [&str; 17] = [
    "file",
    "cells",
    "genes",
    "csr_mb",
    "ours_s",
    "reference_s",
    "speedup",
    "ours_peak_mb",
    "ours_baseline_mb",
    "reference_peak_mb",
    "reference_baseline_mb",
    "ours_data_peak_over_csr",
    "ours_read_s",
    "ours_hvg_s",
    "ours_sentences_s",
    "reference_hvg_s",
    "reference_sentences_s",
];

/// The default input: the largest count file of the data directories.
fn largest_counts_file() -> Result<PathBuf> {
    let dirs = data::default_data_dirs(None);
    let mut files: Vec<(u64, PathBuf)> = data::catalog(&dirs)
        .into_iter()
        .filter(|e| e.counts)
        .map(|e| {
            (
                std::fs::metadata(&e.path).map(|m| m.len()).unwrap_or(0),
                e.path,
            )
        })
        .collect();
    files.sort();
    files.pop().map(|f| f.1).ok_or_else(|| Error::NotFound {
        path: "data/".into(),
        hint: "; run scripts/fetch-data.sh".into(),
    })
}

/// `input` tiled to `c` × `g` times its cells and genes (built once by `bench/make_tiled.py`).
fn tiled_file(o: &PreprocessBench, input: &Path, c: usize, g: usize) -> Result<PathBuf> {
    let stem = input.file_stem().unwrap().to_string_lossy().to_string();
    let tiled = o.cache.join(format!("{stem}_tiled_{c}x{g}.h5ad"));
    if tiled.exists() {
        return Ok(tiled);
    }
    std::fs::create_dir_all(&o.cache).map_err(|e| Error::io(&o.cache, e))?;
    eprintln!("[bench] writing {}", tiled.display());
    let st = Command::new(&o.python)
        .arg(crate::project_file("bench/make_tiled.py"))
        .arg(input)
        .arg(&tiled)
        .arg(c.to_string())
        .arg(g.to_string())
        .status()
        .map_err(|e| Error::io(&o.python, e))?;
    if !st.success() {
        return Err(Error::format(
            &tiled,
            "could not build the tiled matrix",
            "check the reference venv (scripts/bench.sh sets it up)",
        ));
    }
    Ok(tiled)
}

/// One file's row of `preprocess.{csv,md}`.
fn preprocess_row(f: &Path, csr: f64, ours: &RunStats, theirs: &RunStats) -> [String; 17] {
    let s = |r: &RunStats, k: &str| r.seconds.get(k).copied().unwrap_or(f64::NAN);
    let sentences = |r: &RunStats| s(r, "sentences_all") + s(r, "sentences_hvg");
    [
        f.file_name().unwrap().to_string_lossy().to_string(),
        ours.cells.to_string(),
        ours.genes.to_string(),
        format!("{csr:.1}"),
        format!("{:.2}", ours.total_seconds),
        format!("{:.2}", theirs.total_seconds),
        format!("{:.1}", theirs.total_seconds / ours.total_seconds),
        format!("{:.0}", ours.peak_rss_mb),
        format!("{:.0}", ours.baseline_rss_mb),
        format!("{:.0}", theirs.peak_rss_mb),
        format!("{:.0}", theirs.baseline_rss_mb),
        format!("{:.2}", (ours.peak_rss_mb - ours.baseline_rss_mb) / csr),
        format!("{:.2}", s(ours, "read")),
        format!("{:.2}", s(ours, "hvg")),
        format!("{:.2}", sentences(ours)),
        format!("{:.2}", s(theirs, "hvg")),
        format!("{:.2}", sentences(theirs)),
    ]
}

/// Writes `preprocess.{md,csv,json}` under `o.out`.
fn write_preprocess_tables(
    o: &PreprocessBench,
    t: &Table,
    all: &[serde_json::Value],
) -> Result<()> {
    let md = format!(
        "# Benchmark: read + QC + normalize + log10 + HVG (seurat_v3, 2000) + cell sentences (all, HVG)\n\n\
         Same files, same run, on {} cores; each tool runs {} times per file and the run with the median total is shown (peak memory: the maximum over the runs). `speedup` = reference seconds / ours; `csr_mb` = the count matrix in \
         scipy's CSR layout; peaks are each process's maximum resident memory, baselines its resident memory \
         before reading the data (loaded libraries); `ours_data_peak_over_csr` = (peak − baseline) / csr_mb.\n\n{}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        o.repeats,
        t.to_markdown()
    );
    report::write_atomic(o.out.join("preprocess.md"), md.as_bytes())?;
    report::write_atomic(o.out.join("preprocess.csv"), t.to_csv().as_bytes())?;
    let mut js = serde_json::to_vec_pretty(all).unwrap_or_default();
    js.write_all(b"\n").ok();
    report::write_atomic(o.out.join("preprocess.json"), &js)
}
