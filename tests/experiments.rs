//! Experiment files and the runner: bad files give clear errors, results are cached, atomic and
//! byte-identical on rerun, and every table and figure of the reconstruction experiment on the
//! bundled data is snapshot-tested.
use std::path::{Path, PathBuf};

mod common;

use assert_cmd::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bundled(id: &str) -> bool {
    root().join("data").join(format!("{id}.h5ad")).exists()
}

/// Runs `cellsentence run` on `text` written to `dir/exp.yaml`; returns (code, stderr).
fn run_text(dir: &Path, text: &str, extra: &[&str]) -> (i32, String) {
    let f = dir.join("exp.yaml");
    std::fs::write(&f, text).unwrap();
    let out = Command::cargo_bin("cellsentence")
        .unwrap()
        .arg("run")
        .arg(&f)
        .arg("--out")
        .arg(dir.join("results"))
        .arg("--cache")
        .arg(dir.join("cache"))
        .args(extra)
        .arg("--quiet")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const HEAD: &str = "name: t\ntask: reconstruction\n";

fn expect_error(body: &str, must: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_text(dir.path(), body, &[]);
    assert_ne!(code, 0, "succeeded on:\n{body}\nstderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(
        err.contains("exp.yaml"),
        "error does not name the file: {err}"
    );
    for m in must {
        assert!(err.contains(m), "stderr lacks {m:?}:\n{err}");
    }
    assert!(err.contains("fix"), "no fix in: {err}");
    assert!(
        !dir.path().join("results/t").exists(),
        "a failed run wrote results"
    );
}

#[test]
fn bad_experiment_files() {
    expect_error("", &["empty"]);
    expect_error(
        "name: t\ndatasets: [baron_human]\n",
        &["missing field `task`"],
    );
    expect_error(
        &format!("{HEAD}datasets: [baron_human]\nsed: 1\n"),
        &["unknown field `sed`", "line 4"],
    );
    expect_error(
        &format!("{HEAD}datasets: [baron_human]\nhvg: {{flavour: seurat}}\n"),
        &["unknown field `flavour`", "line 4"],
    );
    expect_error(
        &format!("{HEAD}datasets: [baron_human]\nseed: abc\n"),
        &["seed", "line 4"],
    );
    expect_error(
        &format!("{HEAD}datasets: [baron_human]\nmodes: [all, top]\n"),
        &["unknown variant `top`", "line 4"],
    );
    expect_error(
        &format!("{HEAD}datasets: [baron_human]\nreconstruction: {{cells: -5}}\n"),
        &["positive", "line 4"],
    );
    expect_error(
        &format!("{HEAD}datasets: [baron_human]\nreconstruction: {{cells: many}}\n"),
        &["`many`", "line 4"],
    );
    expect_error(
        "name: t\ntask: clustering\ndatasets: [baron_human]\n",
        &["unknown variant `clustering`", "line 2"],
    );
    expect_error(
        &format!("{HEAD}datasets: [no_such_dataset_xyz]\n"),
        &["datasets (line 3)", "no_such_dataset_xyz", "not found"],
    );
    let bad = root().join("tests/fixtures/bad/not_hdf5.h5ad");
    expect_error(
        &format!("{HEAD}datasets: [{}]\n", bad.display()),
        &["not_hdf5.h5ad"],
    );
    expect_error(
        "name: ../up\ntask: reconstruction\ndatasets: [baron_human]\n",
        &["name (line 1)", "folder name"],
    );
    expect_error(
        &format!("{HEAD}datasets: []\n"),
        &["datasets", "no datasets"],
    );
    expect_error(
        &format!("{HEAD}datasets: [baron_human]\nmodes: [hvg, hvg]\n"),
        &["listed twice"],
    );
    expect_error(
        &format!("{HEAD}datasets: [baron_human]\nhvg: {{n_top_genes: 0}}\n"),
        &["n_top_genes", "positive"],
    );
    expect_error(
        &format!("{HEAD}datasets: [baron_human]\npaper_datasets: {{baron_human: Kidney}}\n"),
        &["Kidney", "Pancreas"],
    );
    expect_error(&format!("{HEAD}datasets: [baron_human\n"), &["exp.yaml"]);
    // numbers outside their domain, named with the section and the line, before any work
    expect_error(
        &format!("{HEAD}datasets: [baron_human]\npreprocess:\n  target_sum: 0\n"),
        &["preprocess.target_sum", "line 5", "above 0"],
    );
    expect_error(
        &format!("{HEAD}datasets: [baron_human]\nannotation:\n  val_fraction: 1.5\n"),
        &["annotation.val_fraction", "line 5", "outside [0, 1)"],
    );
    expect_error(
        &format!("{HEAD}datasets: [baron_human]\nannotation:\n  folds: 1\n"),
        &["annotation.folds", "at least 2 folds"],
    );
}

#[test]
fn missing_experiment_file() {
    let out = Command::cargo_bin("cellsentence")
        .unwrap()
        .args(["run", "/nonexistent/e.yaml", "--quiet"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("/nonexistent/e.yaml") && err.contains("not found"),
        "{err}"
    );
}

fn small_experiment() -> String {
    format!("{HEAD}datasets: [baron_human]\nreconstruction: {{cells: 256, figure_points: 200}}\n")
}

fn read_tables(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn rerun_is_cached_and_identical_and_force_recomputes() {
    if !bundled("baron_human") {
        eprintln!("skipped: data/baron_human.h5ad missing (run scripts/fetch-data.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_text(dir.path(), &small_experiment(), &[]);
    assert_eq!(code, 0, "{err}");
    let first = read_tables(&dir.path().join("results/t"));
    assert!(first.iter().any(|(n, _)| n == "table_I.csv"));
    let (code, err) = run_text(dir.path(), &small_experiment(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 computed"), "second run recomputed: {err}");
    assert_eq!(read_tables(&dir.path().join("results/t")), first);
    // a fresh cache (a different machine or a cleaned checkout) gives the same bytes
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
    let (code, err) = run_text(dir.path(), &small_experiment(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read_tables(&dir.path().join("results/t")), first);
    let (code, err) = run_text(dir.path(), &small_experiment(), &["--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(" 0 stage(s) from cache"),
        "--force read the cache: {err}"
    );
    assert_eq!(read_tables(&dir.path().join("results/t")), first);
}

#[test]
fn kill_9_leaves_no_partial_result_and_rerun_completes() {
    if !bundled("baron_human") {
        eprintln!("skipped: data/baron_human.h5ad missing (run scripts/fetch-data.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("exp.yaml");
    std::fs::write(&f, small_experiment()).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("cellsentence");
    let out = dir.path().join("results");
    let cache = dir.path().join("cache");
    // kill at several points of the run; whatever exists afterwards must be whole
    for delay_ms in [50u64, 300, 800] {
        common::kill_after(
            std::process::Command::new(&bin)
                .arg("run")
                .arg(&f)
                .arg("--out")
                .arg(&out)
                .arg("--cache")
                .arg(&cache)
                .arg("--force")
                .arg("--quiet"),
            delay_ms,
        );
        for dir in [out.join("t"), cache.join("reconstruction")] {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(".cellsentence-tmp-") || e.path().is_dir() {
                    continue; // debris the next run sweeps; never read as a result
                }
                let bytes = std::fs::read(e.path()).unwrap();
                if name.ends_with(".json") {
                    assert!(
                        serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
                        "partial cache entry {name}"
                    );
                }
                if name.ends_with(".csv") {
                    assert!(bytes.ends_with(b"\n"), "partial table {name}");
                }
            }
        }
    }
    let (code, err) = run_text(dir.path(), &small_experiment(), &[]);
    assert_eq!(code, 0, "{err}");
    let tables = read_tables(&out.join("t"));
    assert!(
        tables
            .iter()
            .all(|(n, _)| !n.starts_with(".cellsentence-tmp-")),
        "temporary files left behind"
    );
    assert!(tables.iter().any(|(n, _)| n == "reconstruction.csv"));
}

/// Snapshot of every table and figure spec of experiments/reconstruction.yaml on the bundled data.
#[test]
fn reconstruction_snapshots_on_bundled_data() {
    let ids = ["baron_human", "pbmc68k_reduced"];
    if !ids.iter().all(|id| bundled(id)) {
        eprintln!("skipped: bundled data missing (run scripts/fetch-data.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let e =
        cellsentence::experiment::Experiment::load(&root().join("experiments/reconstruction.yaml"))
            .unwrap();
    let opts = cellsentence::experiment::RunOptions {
        out: dir.path().join("results"),
        cache: dir.path().join("cache"),
        datasets: Some(ids.iter().map(|s| s.to_string()).collect()),
        quiet: true,
        ..Default::default()
    };
    let s = cellsentence::experiment::run(&e, &opts).unwrap();
    let out = dir.path().join("results/reconstruction");
    for t in ["table_I", "reconstruction", "datasets"] {
        let csv = std::fs::read_to_string(out.join(format!("{t}.csv"))).unwrap();
        insta::assert_snapshot!(format!("reconstruction_{t}"), csv);
    }
    for (name, spec) in &s.specs {
        insta::assert_json_snapshot!(format!("figure_{name}"), spec);
        let html = std::fs::metadata(out.join("figures").join(format!("{name}.html"))).unwrap();
        assert!(
            html.len() < 2_000_000,
            "{name}.html is {} bytes",
            html.len()
        );
    }
    assert_eq!(s.specs.len(), 5);
}

/// The transcription of the paper's numbers, so any edit to them shows in review.
#[test]
fn paper_transcription_snapshot() {
    let r = cellsentence::paper::load(&root().join("experiments/paper/reported.yaml")).unwrap();
    insta::assert_json_snapshot!("paper_reported", r);
}

/// A user's own experiment file runs from their own folder, as an installed tool would: the paper's
/// numbers ship in the binary, results and the cache go under the current folder.
#[test]
fn run_works_from_any_folder() {
    if !bundled("pbmc68k_reduced") {
        eprintln!("skipped: data/pbmc68k_reduced.h5ad missing (run scripts/fetch-data.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("my.yaml"),
        "name: mine\ntask: reconstruction\ndatasets: [pbmc68k_reduced]\npaper_datasets: {pbmc68k_reduced: Pancreas}\nreconstruction: {cells: 64, figure_points: 50}\n",
    )
    .unwrap();
    let out = Command::cargo_bin("cellsentence")
        .unwrap()
        .current_dir(dir.path())
        .args(["--quiet", "run", "my.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = std::fs::read_to_string(dir.path().join("results/mine/table_I.csv")).unwrap();
    // the paper's Table I mean, read from the built-in transcription
    assert!(t.contains(",0.8030,0.9200,0.8630,"), "{t}");
    assert!(dir.path().join(".cache/stages").is_dir());
    // reproduce needs the repository's experiment files: the error says so and names the fix
    let out = Command::cargo_bin("cellsentence")
        .unwrap()
        .current_dir(dir.path())
        .args(["--quiet", "reproduce"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("repository root") && err.contains("--experiments"),
        "{err}"
    );
}

/// Every committed experiment file passes the load-time checks (the ones `run` applies before any
/// work), so a stricter check cannot leave one unrunnable.
#[test]
fn every_committed_experiment_file_loads() {
    let dir = root().join("experiments");
    let mut n = 0;
    for d in [dir.clone(), dir.join("extra")] {
        for f in std::fs::read_dir(&d).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                cellsentence::experiment::Experiment::load(&p)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
    }
    assert!(n >= 14, "{n} experiment files");
}
