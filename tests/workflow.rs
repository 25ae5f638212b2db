//! The sharded workflow (issue 15): `workflow/Snakefile` run locally by Snakemake (2 shards,
//! 2 cores), reading the input whole or streaming it, gives the embeddings of one unsharded
//! `embed` byte for byte and annotates them;
//! `merge` refuses a missing shard, shards of different runs, and shards of an input that
//! changed between the jobs, writing nothing.
use assert_cmd::Command;
use cellsentence::data::h5ad_out::read_embeddings;
use std::path::{Path, PathBuf};

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cellsentence")
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) {
    let r = run(args);
    assert!(
        r.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
}

/// A tiny model trained on the fixture's HVG sentences (3 steps).
fn tiny_model(fx: &str, dir: &Path) -> String {
    let model = dir.join("model");
    let cfg = r#"{"layers": 1, "hidden": 32, "heads": 4, "intermediate": 64, "steps": 3, "batch_size": 8, "max_genes": 50}"#;
    let m = model.to_str().unwrap();
    ok(&[
        "train-lm", "--input", fx, "--genes", "hvg", "--config", cfg, "--out", m,
    ]);
    m.to_string()
}

#[test]
fn snakemake_sharded_embedding_equals_one_run() {
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthetic.h5ad");
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(fx, dir.path());
    let work = dir.path().join("run");
    snakemake(&work, fx, &model, &["label_key=cell_type"]);
    let out = work.join("results/workflow");
    let merged = read_embeddings(&out.join("embeddings.h5ad")).unwrap();
    let one = dir.path().join("one.h5ad");
    let one_s = one.to_str().unwrap();
    ok(&[
        "embed", "--model", &model, "--input", fx, "--genes", "hvg", "--out", one_s,
    ]);
    let one = read_embeddings(&one).unwrap();
    assert!(merged.m.rows > 300, "{} cells", merged.m.rows);
    assert_eq!(merged.cells, one.cells);
    assert_eq!(
        merged.m.data, one.m.data,
        "merged shards differ from one run"
    );
    assert_eq!(merged.about["shards"].as_array().unwrap().len(), 2);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("annotation/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["n_folds"], 5);

    // the same workflow streaming the input in chunks of 50 cells (hvg and embed jobs): the
    // same HVG list and embeddings; its shards and the in-memory ones are interchangeable
    let streamed = dir.path().join("streamed");
    snakemake(&streamed, fx, &model, &["chunk_cells=50"]);
    let sout = streamed.join("results/workflow");
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(sout.join("hvg.txt")), read(out.join("hvg.txt")));
    let smerged = read_embeddings(&sout.join("embeddings.h5ad")).unwrap();
    assert_eq!(smerged.cells, one.cells);
    assert_eq!(
        smerged.m.data, one.m.data,
        "streamed shards differ from one run"
    );
    let mixed = dir.path().join("mixed.h5ad");
    ok(&[
        "merge",
        out.join("shards/1.h5ad").to_str().unwrap(),
        sout.join("shards/2.h5ad").to_str().unwrap(),
        "--out",
        mixed.to_str().unwrap(),
    ]);
    assert_eq!(read_embeddings(&mixed).unwrap().m.data, one.m.data);

    // a missing shard: named with the cells it would hold; nothing written
    let s1 = out.join("shards/1.h5ad");
    let s2 = out.join("shards/2.h5ad");
    let m = dir.path().join("m.h5ad");
    let refused = |shards: &[&Path], what: &[&str]| {
        let mut args = vec!["merge"];
        args.extend(shards.iter().map(|p| p.to_str().unwrap()));
        args.extend(["--out", m.to_str().unwrap()]);
        let r = run(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} succeeded");
        for w in what {
            assert!(err.contains(w), "`{w}` not in: {err}");
        }
        assert!(!m.exists(), "merge wrote {} after an error", m.display());
    };
    let half = merged.m.rows / 2;
    refused(
        &[&s1],
        &["1.h5ad", "a shard is missing", &format!("--cells {half}:")],
    );
    refused(&[&s2], &["2.h5ad", &format!("cells 0:{half}")]);
    refused(&[&s1, &s1], &["overlaps"]);
    // a shard of another run (a different tie seed): the differing setting is named
    let other = dir.path().join("other.h5ad");
    let h = out.join("hvg.txt");
    let hs = h.to_str().unwrap();
    let os = other.to_str().unwrap();
    let shard = |input: &str, seed: &str, k: &str, to: &str| {
        ok(&[
            "embed",
            "--model",
            &model,
            "--input",
            input,
            "--genes",
            "hvg",
            "--hvg-list",
            hs,
            "--tie-seed",
            seed,
            "--shard",
            k,
            "--out",
            to,
        ])
    };
    shard(fx, "7", "2/2", os);
    refused(
        &[&s1, &other],
        &["other.h5ad", "uns/cellsentence/sentences", "different runs"],
    );
    // the input changes between the shard jobs: its digest differs
    let copy = dir.path().join("data.h5ad");
    std::fs::copy(fx, &copy).unwrap();
    let (c1, c2) = (dir.path().join("c1.h5ad"), dir.path().join("c2.h5ad"));
    let cs = copy.to_str().unwrap();
    shard(cs, "42", "1/2", c1.to_str().unwrap());
    rewrite_obs(&copy);
    shard(cs, "42", "2/2", c2.to_str().unwrap());
    refused(
        &[&c1, &c2],
        &["c2.h5ad", "uns/cellsentence/input_sha256", "different runs"],
    );
    // a shard past the input's cells
    let r = run(&[
        "embed", "--model", &model, "--input", fx, "--shard", "3/2", "--out", os,
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("1..=2"));
    // an HVG list naming a gene the input lacks: the file, line and gene are named
    let bad = dir.path().join("bad_hvg.txt");
    let first = std::fs::read_to_string(&h)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&bad, format!("{first}\nNOT_A_GENE\n")).unwrap();
    let r = run(&[
        "sentences",
        "--input",
        fx,
        "--genes",
        "hvg",
        "--hvg-list",
        bad.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success()
            && err.contains("bad_hvg.txt")
            && err.contains("line 2")
            && err.contains("NOT_A_GENE"),
        "{err}"
    );
}

/// Runs `workflow/Snakefile` (2 shards, 2 cores) in `work` on `fx` with `model`.
fn snakemake(work: &Path, fx: &str, model: &str, config: &[&str]) {
    let r = std::process::Command::new("snakemake")
        .args([
            "-s",
            concat!(env!("CARGO_MANIFEST_DIR"), "/workflow/Snakefile"),
        ])
        .args(["--cores", "2", "--directory"])
        .arg(work)
        .arg("--config")
        .arg(format!("input={fx}"))
        .arg(format!("model={model}"))
        .arg("shards=2")
        .args(config)
        .arg(format!("cellsentence={}", bin().display()))
        .output()
        .expect("snakemake (installed into the project venv by scripts/test.sh) on PATH");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

/// Rewrites `path` through Python anndata with one obs column more: the same cells, new bytes.
fn rewrite_obs(path: &Path) {
    let r = std::process::Command::new("python")
        .arg("-c")
        .arg("import sys, anndata; a = anndata.read_h5ad(sys.argv[1]); a.obs['x'] = 1; a.write_h5ad(sys.argv[1])")
        .arg(path)
        .output()
        .expect("python (the project venv) on PATH");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}
