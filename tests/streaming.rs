//! The streaming pipeline (issue 15 item 1): `sentences --chunk-cells` equals the in-memory path
//! byte for byte on every bundled and shared dataset (≥ 5 chunks each), to stdout and to
//! Parquet; a kill -9 leaves no output and a rerun gives the same; a corrupt chunk, a truncated
//! file and a file changed during the run are clear errors with nothing written.
use assert_cmd::Command;
use std::path::{Path, PathBuf};

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sentences(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("cellsentence")
        .unwrap()
        .arg("--quiet")
        .arg("sentences")
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> Vec<u8> {
    let r = sentences(args);
    assert!(
        r.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    r.stdout
}

/// The datasets: the synthetic fixture, `data/*.h5ad` (scripts/fetch-data.sh) and
/// `../shared/data/*.h5ad` where present; with whether X is already log-normalized.
fn datasets() -> Vec<(PathBuf, bool)> {
    let mut out = vec![(root().join("tests/fixtures/synthetic.h5ad"), false)];
    for dir in [root().join("data"), root().join("../shared/data")] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            eprintln!("SKIP {}: not found", dir.display());
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "h5ad"))
            .collect();
        files.sort();
        for f in files {
            let log = f.file_name().is_some_and(|n| n == "pbmc68k_reduced.h5ad");
            out.push((f, log));
        }
    }
    assert!(
        out.len() >= 3,
        "bundled datasets missing: run scripts/fetch-data.sh"
    );
    out
}

#[test]
fn streaming_equals_in_memory_on_every_dataset() {
    for (path, log) in datasets() {
        let p = path.to_str().unwrap();
        let b = cellsentence::data::backed::Backed::open(&path, Default::default()).unwrap();
        let chunk = (b.n_rows() / 5).max(1).to_string();
        for genes in ["all", "hvg"] {
            let mut args = vec!["--input", p, "--genes", genes];
            if log {
                args.push("--no-preprocess");
            }
            let memory = ok(&args);
            args.extend(["--chunk-cells", &chunk]);
            let streamed = ok(&args);
            assert!(!memory.is_empty());
            assert!(
                memory == streamed,
                "{p} ({genes}): streamed sentences differ"
            );
            eprintln!(
                "{p} {genes}: {} bytes equal, chunks of {chunk}",
                memory.len()
            );
        }
    }
}

/// A batch column of `path`'s obs (`batch`, or Baron's `donor`), if it has one.
fn batch_key(path: &Path) -> Option<&'static str> {
    let ds = cellsentence::data::backed::Backed::open(path, Default::default()).unwrap();
    ["batch", "donor"]
        .into_iter()
        .find(|k| ds.meta.obs_column(k).is_ok())
}

#[test]
fn every_log_data_flavor_and_batch_key_streams_as_in_memory() {
    for (path, log) in datasets() {
        let p = path.to_str().unwrap();
        let b = cellsentence::data::backed::Backed::open(&path, Default::default()).unwrap();
        let chunk = (b.n_rows() / 5).max(1).to_string();
        let key = batch_key(&path);
        for flavor in ["seurat_v3", "seurat", "cell_ranger"] {
            for batch in std::iter::once(None).chain(key.map(Some)) {
                if flavor == "seurat_v3" && batch.is_none() {
                    continue; // streaming_equals_in_memory_on_every_dataset
                }
                let mut args = vec!["--input", p, "--genes", "hvg", "--flavor", flavor];
                if log {
                    args.push("--no-preprocess");
                }
                if let Some(k) = batch {
                    args.extend(["--batch-key", k]);
                }
                let memory = sentences(&args);
                args.extend(["--chunk-cells", &chunk]);
                let streamed = sentences(&args);
                let what = format!("{p} {flavor} batch {batch:?}");
                assert_eq!(
                    memory.status.success(),
                    streamed.status.success(),
                    "{what}: in memory {}, streamed {}",
                    String::from_utf8_lossy(&memory.stderr),
                    String::from_utf8_lossy(&streamed.stderr)
                );
                if memory.status.success() {
                    assert!(!memory.stdout.is_empty(), "{what}");
                    assert!(memory.stdout == streamed.stdout, "{what}: sentences differ");
                    eprintln!("{what}: {} bytes equal", memory.stdout.len());
                } else {
                    let err = |o: &std::process::Output| {
                        String::from_utf8_lossy(&o.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                            .to_string()
                    };
                    assert_eq!(err(&memory), err(&streamed), "{what}: errors differ");
                    eprintln!("{what}: both refuse: {}", err(&memory));
                }
            }
        }
    }
    // the count-model flavors need the whole matrix: refused before any work, naming the option
    let f = root().join("tests/fixtures/synthetic.h5ad");
    let args = ["--input", f.to_str().unwrap(), "--genes", "hvg"];
    for flavor in ["deviance", "pearson_residuals"] {
        let r = sentences(&[&args[..], &["--flavor", flavor, "--chunk-cells", "50"]].concat());
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && r.stdout.is_empty(), "{flavor}");
        assert!(
            err.contains("--chunk-cells") && err.contains("seurat_v3, seurat, cell_ranger"),
            "{err}"
        );
    }
}

fn read_parquet(p: &Path) -> polars::prelude::DataFrame {
    use polars::prelude::{ParquetReader, SerReader};
    ParquetReader::new(std::fs::File::open(p).unwrap())
        .finish()
        .unwrap()
}

#[test]
fn streamed_parquet_survives_kill_and_equals_in_memory() {
    let fx = root().join("../shared/data/kang2018.h5ad");
    let fx = if fx.is_file() {
        fx
    } else {
        root().join("data/baron_human.h5ad")
    };
    let f = fx.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mem, out) = (dir.path().join("mem.parquet"), dir.path().join("s.parquet"));
    let (ms, os) = (mem.to_str().unwrap(), out.to_str().unwrap());
    ok(&["--input", f, "--genes", "hvg", "--out", ms]);
    // killed mid-run: no output, no temporary left behind once rerun
    common::kill_after(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("cellsentence")).args([
            "--quiet",
            "sentences",
            "--input",
            f,
            "--genes",
            "hvg",
            "--chunk-cells",
            "50",
            "--out",
            os,
        ]),
        400,
    );
    assert!(!out.exists(), "a killed run left {}", out.display());
    ok(&[
        "--input",
        f,
        "--genes",
        "hvg",
        "--chunk-cells",
        "500",
        "--out",
        os,
    ]);
    assert!(
        read_parquet(&mem).equals(&read_parquet(&out)),
        "streamed Parquet differs"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".parquet"))
        .collect();
    assert!(leftovers.len() <= 1, "temporary files left: {leftovers:?}");
}

/// Runs `script` (Python, h5py) on a copy of the synthetic fixture at `to`.
fn damaged_copy(to: &Path, script: &str) {
    std::fs::copy(root().join("tests/fixtures/synthetic.h5ad"), to).unwrap();
    let r = std::process::Command::new("python")
        .arg("-c")
        .arg(format!(
            "import sys, h5py\nf = h5py.File(sys.argv[1], 'r+')\n{script}\nf.close()"
        ))
        .arg(to)
        .output()
        .expect("python (the project venv) on PATH");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn bad_input_while_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.parquet");
    let refused = |input: &Path, what: &[&str]| {
        let r = sentences(&[
            "--input",
            input.to_str().unwrap(),
            "--genes",
            "hvg",
            "--chunk-cells",
            "60",
            "--out",
            out.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{} streamed", input.display());
        for w in what {
            assert!(err.contains(w), "`{w}` not in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "output written after an error");
    };
    // a column index past the genes in the fourth chunk (cells 180..240)
    let bad = dir.path().join("bad_index.h5ad");
    damaged_copy(&bad, "p = f['X/indptr'][200]\nf['X/indices'][p] = 999999");
    refused(&bad, &["bad_index.h5ad", "`X` of cells 180..240", "999999"]);
    // offsets that decrease
    let bad = dir.path().join("bad_indptr.h5ad");
    damaged_copy(&bad, "f['X/indptr'][130] = 0");
    refused(&bad, &["bad_indptr.h5ad", "X/indptr", "decrease"]);
    // a truncated file
    let cut = dir.path().join("truncated.h5ad");
    let bytes = std::fs::read(root().join("tests/fixtures/synthetic.h5ad")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    refused(&cut, &["truncated.h5ad"]);
    // a CSC matrix cannot be read in cell rows
    let csc = dir.path().join("csc.h5ad");
    damaged_copy(&csc, "f['X'].attrs['encoding-type'] = 'csc_matrix'");
    refused(&csc, &["csc.h5ad", "csr"]);
}

#[test]
fn a_file_changed_during_the_run_is_refused() {
    use cellsentence::data::backed::Backed;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data.h5ad");
    std::fs::copy(root().join("tests/fixtures/synthetic.h5ad"), &f).unwrap();
    let b = Backed::open(&f, Default::default()).unwrap();
    let pre = cellsentence::preprocess::PreprocessParams::default();
    let sp = cellsentence::sentence::SentenceParams::default();
    let mut touched = false;
    let params = cellsentence::stream::StreamParams {
        chunk_cells: 50,
        preprocess: Some(pre),
        hvg: None,
        batch_key: None,
        hvg_list: None,
        sentence: sp,
        progress: false,
    };
    let r = cellsentence::stream::sentences(&b, &params, |_, _| {
        if !touched {
            // another process rewrites the file while the last pass reads it
            let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
            std::fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(later)
                .unwrap();
            touched = true;
        }
        Ok(())
    });
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("data.h5ad") && err.contains("changed while it was being read"),
        "{err}"
    );
}

#[test]
fn streamed_embeddings_equal_in_memory() {
    let fx = root().join("tests/fixtures/synthetic.h5ad");
    let f = fx.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let cfg = r#"{"layers": 1, "hidden": 32, "heads": 4, "intermediate": 64, "steps": 3, "batch_size": 8, "max_genes": 50}"#;
    let run = |args: &[&str]| {
        let r = Command::cargo_bin("cellsentence")
            .unwrap()
            .arg("--quiet")
            .args(args)
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    };
    let m = model.to_str().unwrap();
    run(&[
        "train-lm", "--input", f, "--genes", "hvg", "--config", cfg, "--out", m,
    ]);
    let cache = dir.path().join("cache");
    let c = cache.to_str().unwrap();
    for genes in ["all", "hvg"] {
        let (mem, st) = (
            dir.path().join(format!("m_{genes}.npy")),
            dir.path().join(format!("s_{genes}.npy")),
        );
        let e = |out: &Path, extra: &[&str]| {
            // the model was trained on HVG sentences: most of the full sentences' genes are
            // unknown to it (refused unless allowed; the comparison only needs equal bytes)
            let mut args = vec![
                "embed",
                "--model",
                m,
                "--input",
                f,
                "--genes",
                genes,
                "--cache",
                c,
                "--allow-unknown-genes",
            ];
            args.extend(extra);
            args.extend(["--out", out.to_str().unwrap()]);
            run(&args);
        };
        e(&mem, &[]);
        e(&st, &["--chunk-cells", "70"]);
        assert_eq!(
            std::fs::read(&mem).unwrap(),
            std::fs::read(&st).unwrap(),
            "{genes}: streamed .npy differs"
        );
        assert_eq!(
            std::fs::read(mem.with_extension("cells.txt")).unwrap(),
            std::fs::read(st.with_extension("cells.txt")).unwrap()
        );
    }
    // a shard into an .h5ad: streamed equals in memory, embeddings and uns alike
    let h5 = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "embed", "--model", m, "--input", f, "--genes", "hvg", "--cache", c, "--cells",
            "100:250",
        ];
        args.extend(extra);
        args.extend(["--out", out.to_str().unwrap()]);
        run(&args);
        cellsentence::data::h5ad_out::read_embeddings(&out).unwrap()
    };
    let (mem, st) = (h5("m.h5ad", &[]), h5("s.h5ad", &["--chunk-cells", "70"]));
    assert_eq!(st.m.rows, 150);
    assert_eq!((&st.cells, &st.m.data), (&mem.cells, &mem.m.data));
    assert_eq!(st.about, mem.about);
}
