//! `cellsentence bench scale`: the streaming pipeline (QC → seurat_v3 HVG → HVG sentences) on
//! seeded synthetic atlases of growing size, against scanpy + Cell2Sentence on the same files.
//! Memory should stay flat and time grow linearly with the cells; the reference holds the whole
//! matrix and fails where it no longer fits.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anndata::backend::{
    AttributeOp, Backend, Compression, DatasetOp, GroupOp, StoreOp, WriteConfig,
};
use anndata::data::{DataFrameIndex, SelectInfoElem, Shape};
use anndata::{AnnData, AnnDataOp};
use anndata_hdf5::H5;
use nalgebra_sparse::CsrMatrix;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::{self, Table};

/// Cells per chunk, written and streamed.
const CHUNK: usize = 5_000;

/// The synthetic atlas: `cells` × `genes` counts, ~`expressed` genes per cell, 10 cell types each
/// with its own block of 200 marker genes, 13 `MT-` genes; every cell from its own seeded stream.
fn synthetic_rows(
    start: usize,
    end: usize,
    genes: usize,
    expressed: usize,
    seed: u64,
) -> CsrMatrix<f32> {
    let rows: Vec<(Vec<usize>, Vec<f32>)> = (start..end)
        .into_par_iter()
        .map(|c| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let t = c % 10;
            let k = expressed / 2 + rng.random_range(0..expressed.max(1));
            let block = 2000 + t * 200;
            let mut idx: Vec<usize> = (0..k)
                .map(|_| {
                    if rng.random::<f64>() < 0.1 {
                        (block + rng.random_range(0..200)).min(genes - 1)
                    } else {
                        ((genes as f64) * rng.random::<f64>().powf(1.5)) as usize
                    }
                })
                .collect();
            idx.sort_unstable();
            idx.dedup();
            let vals = idx
                .iter()
                .map(|&j| {
                    let mean = 1.0
                        + 5.0 * (1.0 - j as f64 / genes as f64)
                        + if (block..block + 200).contains(&j) {
                            4.0
                        } else {
                            0.0
                        };
                    (1.0 + (-(rng.random::<f64>().max(1e-12)).ln() * mean).floor()) as f32
                })
                .collect();
            (idx, vals)
        })
        .collect();
    let mut indptr = vec![0usize];
    let (mut indices, mut data) = (Vec::new(), Vec::new());
    for (i, v) in rows {
        indices.extend(i);
        data.extend(v);
        indptr.push(indices.len());
    }
    CsrMatrix::try_from_csr_data(end - start, genes, indptr, indices, data)
        .expect("sorted, deduplicated, in-range columns")
}

/// Writes the synthetic atlas to `path` (`.h5ad`; X as CSR in gzip-compressed chunks of 65,536
/// entries that h5py reads, appended chunk by chunk through the `anndata` crate's backend),
/// beside and renamed: whole or absent.
pub fn write_synthetic(
    path: &Path,
    cells: usize,
    genes: usize,
    expressed: usize,
    seed: u64,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = crate::output::write_temp(dir, &[])?;
    let pb =
        crate::progress::Progress::bar(true, cells as u64, &format!("writing {}", path.display()));
    let written = (|| -> anyhow::Result<()> {
        let a = AnnData::<H5>::new(&tmp)?;
        a.set_obs_names(DataFrameIndex::from(
            (0..cells)
                .map(|c| format!("cell{c:07}"))
                .collect::<Vec<_>>(),
        ))?;
        let names: Vec<String> = (0..genes)
            .map(|j| {
                if j < 13 {
                    format!("MT-G{j:02}")
                } else {
                    format!("GENE{j:05}")
                }
            })
            .collect();
        a.set_var_names(DataFrameIndex::from(names))?;
        a.close()?;
        let store = H5::open_rw(&tmp)?;
        let mut g = store.new_group("X")?;
        g.new_attr("encoding-type", "csr_matrix")?;
        g.new_attr("encoding-version", "0.1.0")?;
        g.new_attr("shape", [cells as u64, genes as u64].as_slice())?;
        let cfg = || WriteConfig {
            compression: Some(Compression::Gzip(1)),
            block_size: Some(Shape::from(1usize << 16)),
        };
        let mut data = g.new_empty_dataset::<f32>("data", &Shape::from(0usize), cfg())?;
        let mut indices = g.new_empty_dataset::<i32>("indices", &Shape::from(0usize), cfg())?;
        let mut indptr: Vec<i64> = vec![0];
        for s in (0..cells).step_by(CHUNK) {
            let e = (s + CHUNK).min(cells);
            let m = synthetic_rows(s, e, genes, expressed, seed);
            let (ptr, idx, val) = m.csr_data();
            let lo = *indptr.last().unwrap_or(&0) as usize;
            let hi = lo + val.len();
            indptr.extend(ptr[1..].iter().map(|&p| (lo + p) as i64));
            let sel = [SelectInfoElem::from(lo..hi)];
            data.reshape(&Shape::from(hi))?;
            indices.reshape(&Shape::from(hi))?;
            data.write_array_slice(ndarray::ArrayView1::from(val).into(), &sel)?;
            let idx: ndarray::Array1<i32> = idx.iter().map(|&j| j as i32).collect();
            indices.write_array_slice(idx.view().into(), &sel)?;
            pb.inc((e - s) as u64);
        }
        g.new_array_dataset("indptr", ndarray::Array1::from(indptr).into(), cfg())?;
        store.close()
    })();
    pb.finish();
    let done = written
        .map_err(|e| {
            Error::format(
                path,
                format!("writing the synthetic atlas: {e:#}"),
                "check disk space",
            )
        })
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// One measured run (ours or the reference's), as the child prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleRun {
    /// Tool and version.
    pub tool: String,
    /// Wall seconds from opening the file to the last sentence.
    pub seconds: f64,
    /// Peak resident memory of the process (MiB).
    pub peak_rss_mb: f64,
    /// Cells after QC.
    pub cells: usize,
    /// Bytes of the HVG sentences.
    pub sentence_bytes: usize,
    /// Why the run failed (out of memory), if it did.
    #[serde(default)]
    pub failed: Option<String>,
}

/// The streamed run measured in this process (`cellsentence bench-stream`).
pub fn stream_run(path: &Path, chunk_cells: usize) -> Result<ScaleRun> {
    let t0 = Instant::now();
    let entry = crate::data::resolve(&path.to_string_lossy(), &[])?;
    let recipe = crate::pipeline::SentenceRecipe {
        preprocess: Some(Default::default()),
        hvg: crate::pipeline::HvgSource::Select {
            params: Default::default(),
            on: crate::pipeline::HvgInput::Log,
            batch_key: None,
        },
        genes: crate::sentence::GeneSet::Hvg,
        order: crate::deviation::Order::Expression,
        sentence: Default::default(),
    };
    let backend = crate::pipeline::Backend::Streamed { chunk_cells };
    let mut bytes = 0usize;
    let r = crate::pipeline::each_sentence(
        &entry,
        &recipe,
        backend,
        |_| Ok(()),
        |_, s| {
            // the sentence's text: its words and the spaces between them
            bytes += s.iter().map(|w| w.len()).sum::<usize>() + s.len().saturating_sub(1);
            Ok(())
        },
    )?;
    Ok(ScaleRun {
        tool: format!(
            "cellsentence {} (streamed, chunks of {chunk_cells})",
            env!("CARGO_PKG_VERSION")
        ),
        seconds: t0.elapsed().as_secs_f64(),
        peak_rss_mb: crate::bench::peak_rss_mb(),
        cells: r.cells_kept,
        sentence_bytes: bytes,
        failed: None,
    })
}

/// Options of `cellsentence bench scale`.
#[derive(Debug, Clone)]
pub struct ScaleBench {
    /// Cell counts of the synthetic atlases.
    pub sizes: Vec<usize>,
    /// Genes of the atlases.
    pub genes: usize,
    /// Mean expressed genes per cell.
    pub expressed: usize,
    /// Python with scanpy and cell2sentence; `None` skips the reference.
    pub python: Option<PathBuf>,
    /// The reference runs only up to this many cells (larger ones are reported as not run).
    pub reference_max_cells: usize,
    /// Folder of the generated atlases.
    pub cache: PathBuf,
    /// Output folder (scale.md, scale.csv, scale.json).
    pub out: PathBuf,
}

fn child(mut cmd: Command, what: &str) -> Result<ScaleRun> {
    let out = cmd.output().map_err(|e| Error::io(what, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = super::last_json_line(&text);
    match line.map(serde_json::from_str::<ScaleRun>) {
        Some(Ok(r)) => Ok(r),
        _ => Err(Error::format(
            what,
            format!(
                "benchmark child failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            "see the message above",
        )),
    }
}

/// One atlas size's row of `scale.{csv,md}`.
fn scale_row(
    n: usize,
    genes: usize,
    gb: f64,
    ours: &ScaleRun,
    theirs: Option<&ScaleRun>,
) -> [String; 11] {
    let ok = theirs.filter(|r| r.failed.is_none());
    let opt = |v: Option<f64>, d: usize| v.map_or("—".to_string(), |v| format!("{v:.d$}"));
    [
        n.to_string(),
        genes.to_string(),
        format!("{gb:.2}"),
        format!("{:.1}", ours.seconds),
        format!("{:.0}", ours.cells as f64 / ours.seconds),
        format!("{:.0}", ours.peak_rss_mb),
        opt(ok.map(|r| r.seconds), 1),
        opt(ok.map(|r| r.cells as f64 / r.seconds), 0),
        opt(ok.map(|r| r.peak_rss_mb), 0),
        opt(ok.map(|r| r.seconds / ours.seconds), 1),
        match theirs {
            None => "not run".to_string(),
            Some(r) => r.failed.clone().unwrap_or_else(|| "ok".into()),
        },
    ]
}

/// Generates the atlases (once), runs ours and the reference on each, writes the tables.
pub fn scale_bench(o: &ScaleBench) -> Result<Table> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let mut t = Table::new([
        "cells",
        "genes",
        "file_gb",
        "ours_s",
        "ours_cells_per_s",
        "ours_peak_mb",
        "reference_s",
        "reference_cells_per_s",
        "reference_peak_mb",
        "speedup",
        "reference_status",
    ]);
    let mut all = Vec::new();
    for &n in &o.sizes {
        let f = o
            .cache
            .join(format!("synthetic_{n}x{}_{}.h5ad", o.genes, o.expressed));
        if !f.exists() {
            eprintln!("[bench scale] writing {}", f.display());
            write_synthetic(&f, n, o.genes, o.expressed, 0)?;
        }
        let gb = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0) as f64 / 1e9;
        eprintln!("[bench scale] {n} cells: cellsentence (streamed)");
        let mut c = Command::new(&exe);
        c.args([
            "--quiet",
            "bench-stream",
            "--chunk-cells",
            &CHUNK.to_string(),
            "--input",
        ])
        .arg(&f);
        let ours = child(c, "cellsentence bench-stream")?;
        let theirs = match &o.python {
            Some(py) if n <= o.reference_max_cells => {
                eprintln!("[bench scale] {n} cells: scanpy + cell2sentence");
                let mut c = Command::new(py);
                c.arg(crate::project_file("bench/scale_ref.py")).arg(&f);
                Some(child(c, "bench/scale_ref.py")?)
            }
            _ => None,
        };
        if let Some(r) = theirs.as_ref().filter(|r| r.failed.is_none()) {
            if (r.cells, r.sentence_bytes) != (ours.cells, ours.sentence_bytes) {
                return Err(Error::format(
                    &f,
                    format!(
                        "tools disagree: ours {} cells / {} sentence bytes, reference {} / {}",
                        ours.cells, ours.sentence_bytes, r.cells, r.sentence_bytes
                    ),
                    "run the parity tests",
                ));
            }
        }
        t.push(scale_row(n, o.genes, gb, &ours, theirs.as_ref()));
        all.push(serde_json::json!({"cells": n, "file": f, "file_gb": gb, "cellsentence": ours, "reference": theirs}));
    }
    let md = format!(
        "# Benchmark at scale: QC → normalize → log10 → HVG (seurat_v3, 2000) → HVG cell sentences\n\n\
         Seeded synthetic atlases ({} genes, ~{} expressed genes per cell, 10 cell types; written once by the benchmark \
         as chunked gzip `.h5ad`), on {} cores. Ours streams the file in chunks of {CHUNK} cells (`sentences --chunk-cells`); \
         the reference is scanpy + Cell2Sentence reading the whole file (`bench/scale_ref.py`, limited to 20 GiB of address \
         space so that it fails cleanly rather than swap). Peaks are each process's maximum resident memory; \
         `speedup` = reference seconds / ours. Both produce the same cells and sentence bytes (checked).\n\n{}",
        o.genes,
        o.expressed,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        t.to_markdown()
    );
    std::fs::create_dir_all(&o.out).map_err(|e| Error::io(&o.out, e))?;
    report::write_atomic(o.out.join("scale.md"), md.as_bytes())?;
    report::write_atomic(o.out.join("scale.csv"), t.to_csv().as_bytes())?;
    let js = serde_json::to_vec_pretty(&all).unwrap_or_default();
    report::write_atomic(o.out.join("scale.json"), &js)?;
    Ok(t)
}
