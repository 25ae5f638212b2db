//! Multi-file outputs commit as a unit: a kill -9 injected at every rename of `run`, `embed` and
//! `train-lm` (`CELLSENTENCE_KILL_AT`, see `cellsentence::output::kill_point`) leaves the old
//! complete output or the new complete one, and the next start cleans the leftovers.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cellsentence")
}

/// Every file under `dir` (relative name → bytes).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(dir, dir, &mut m);
    m
}

/// Runs the CLI; with `kill_at`, expects it to die by SIGKILL there.
fn cli(args: &[&str], cwd: &Path, kill_at: Option<&str>) {
    let mut c = Command::new(bin());
    c.current_dir(cwd).arg("--quiet").args(args);
    if let Some(k) = kill_at {
        c.env("CELLSENTENCE_KILL_AT", k);
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    match kill_at {
        None => assert!(out.status.success(), "{args:?}: {err}"),
        Some(k) => {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                out.status.signal(),
                Some(9),
                "{args:?} not killed at {k}: {err}"
            );
        }
    }
}

/// Names in `dir` (not recursive) that are temporaries or journals.
fn debris(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".cellsentence-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kill_at_every_rename_of_run_leaves_old_or_new_results() {
    if !root().join("data/pbmc68k_reduced.h5ad").is_file() {
        eprintln!("skipped: data/pbmc68k_reduced.h5ad missing (run scripts/fetch-data.sh)");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let exp = |cells: usize| {
        let f = d.path().join(format!("exp{cells}.yaml"));
        std::fs::write(
            &f,
            format!("name: t\ntask: reconstruction\ndatasets: [pbmc68k_reduced]\nreconstruction: {{cells: {cells}, figure_points: 50}}\n"),
        )
        .unwrap();
        f.display().to_string()
    };
    let (old_f, new_f) = (exp(128), exp(96));
    let run = |f: &str, out: &str, kill: Option<&str>| {
        cli(
            &["run", f, "--out", out, "--cache", "cache"],
            d.path(),
            kill,
        )
    };
    run(&new_f, "expected", None);
    let new = tree(&d.path().join("expected/t"));
    run(&old_f, "results", None);
    let old = tree(&d.path().join("results/t"));
    assert_ne!(old, new);
    std::fs::write(d.path().join("results/t/README.md"), "notes").unwrap();
    for at in ["results:t:before", "results:t:swapped"] {
        run(&new_f, "results", Some(at));
        let mut now = tree(&d.path().join("results/t"));
        assert_eq!(
            now.remove("README.md").as_deref(),
            Some(&b"notes"[..]),
            "{at}"
        );
        assert!(
            now == old || now == new,
            "mixed results after a kill at {at}"
        );
        // the next start cleans what the kill left and commits whole
        run(&old_f, "results", None);
        let mut now = tree(&d.path().join("results/t"));
        now.remove("README.md");
        assert!(now == old, "rerun after a kill at {at}");
        assert!(
            debris(&d.path().join("results")).is_empty(),
            "{at}: {:?}",
            debris(&d.path().join("results"))
        );
    }
}

#[test]
fn kill_at_every_rename_of_embed_and_train_lm_leaves_old_or_new_output() {
    let d = tempfile::tempdir().unwrap();
    let fx = root().join("tests/fixtures/synthetic.h5ad");
    let fx = fx.to_str().unwrap();
    let train = |out: &str, steps: usize, kill: Option<&str>| {
        let cfg = format!(
            r#"{{"layers": 1, "hidden": 32, "heads": 4, "intermediate": 64, "steps": {steps}, "batch_size": 8, "max_genes": 50}}"#
        );
        cli(
            &[
                "train-lm", "--input", fx, "--genes", "hvg", "--config", &cfg, "--out", out,
            ],
            d.path(),
            kill,
        )
    };
    train("new", 3, None);
    let new = tree(&d.path().join("new"));
    train("m", 2, None);
    let old = tree(&d.path().join("m"));
    let same = |a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>| {
        // the log records wall time; the weights and the rest must be equal
        a.len() == b.len()
            && a.iter()
                .all(|(k, v)| k.ends_with(".csv") || k.ends_with(".html") || b.get(k) == Some(v))
    };
    for at in ["model:before", "model:swapped"] {
        train("m", 3, Some(at));
        let now = tree(&d.path().join("m"));
        assert!(
            same(&now, &old) || same(&now, &new),
            "mixed model after a kill at {at}"
        );
        train("m", 2, None);
        assert!(same(&tree(&d.path().join("m")), &old));
        assert!(debris(d.path()).is_empty(), "{at}: {:?}", debris(d.path()));
    }
    // embed: three prompts (old) then four (new)
    let prompts = |n: usize| {
        let p = d.path().join(format!("p{n}.jsonl"));
        let lines: Vec<String> = (0..n)
            .map(|i| format!("{{\"text\": \"G{i} G{}\"}}", i + 1))
            .collect();
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p.display().to_string()
    };
    let (p_old, p_new) = (prompts(3), prompts(4));
    let embed = |p: &str, kill: Option<&str>| {
        cli(
            &[
                "embed",
                "--model",
                "m",
                "--prompts",
                p,
                "--out",
                "E.npy",
                "--cache",
                "cache",
            ],
            d.path(),
            kill,
        )
    };
    let pair = || {
        (
            std::fs::read(d.path().join("E.npy")).unwrap(),
            std::fs::read_to_string(d.path().join("E.cells.txt")).unwrap(),
        )
    };
    embed(&p_new, None);
    let new_pair = pair();
    embed(&p_old, None);
    let old_pair = pair();
    for at in [
        "embed:before",
        "embed:journal",
        "embed:renamed0",
        "embed:renamed1",
    ] {
        embed(&p_new, Some(at));
        // what any next start does first (embed, annotate): finish or drop the interrupted commit
        cellsentence::output::clean_leftovers(d.path()).unwrap();
        let now = pair();
        assert!(
            now == old_pair || now == new_pair,
            "mixed embeddings after a kill at {at}"
        );
        let rows = cellsentence::npy::read(&d.path().join("E.npy"))
            .unwrap()
            .rows;
        assert_eq!(rows, now.1.lines().count(), "{at}");
        assert!(debris(d.path()).is_empty(), "{at}: {:?}", debris(d.path()));
        embed(&p_old, None);
    }
}

/// Names in `dir` (not recursive), sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Streamed outputs after kill -9 (issue 32 family 5): `sentences --chunk-cells --out X.parquet`
/// killed with its full-size temporary written, and `embed --chunk-cells --out X.npy` killed with
/// its rows spilled, leave debris; the rerun removes it, and the folder holds exactly the outputs.
#[test]
fn killed_streamed_outputs_leave_exactly_the_outputs_after_a_rerun() {
    let d = tempfile::tempdir().unwrap();
    let fx = root().join("tests/fixtures/synthetic.h5ad");
    let fx = fx.to_str().unwrap();
    let sentences = |kill: Option<&str>| {
        cli(
            &[
                "sentences",
                "--input",
                fx,
                "--chunk-cells",
                "50",
                "--out",
                "s/S.parquet",
            ],
            d.path(),
            kill,
        )
    };
    sentences(Some("sentences-parquet-written"));
    assert!(
        !debris(&d.path().join("s")).is_empty(),
        "the kill left nothing to clean"
    );
    sentences(None);
    assert_eq!(names(&d.path().join("s")), ["S.parquet"]);

    let cfg = r#"{"layers": 1, "hidden": 32, "heads": 4, "intermediate": 64, "steps": 2, "batch_size": 8, "max_genes": 50}"#;
    cli(
        &[
            "train-lm", "--input", fx, "--genes", "hvg", "--config", cfg, "--out", "m",
        ],
        d.path(),
        None,
    );
    let embed = |kill: Option<&str>| {
        cli(
            &[
                "embed",
                "--model",
                "m",
                "--input",
                fx,
                "--genes",
                "hvg",
                "--chunk-cells",
                "50",
                "--cache",
                "cache",
                "--out",
                "e/E.npy",
            ],
            d.path(),
            kill,
        )
    };
    embed(Some("embed-rows-spilled"));
    assert!(
        !debris(&d.path().join("e")).is_empty(),
        "the kill left nothing to clean"
    );
    embed(None);
    assert_eq!(names(&d.path().join("e")), ["E.cells.txt", "E.npy"]);
}
