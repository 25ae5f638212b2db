//! Annotation stage: scikit-learn metric parity, split properties, the MLP against PyTorch on the same
//! features and folds, the SVM, and the `annotate` command with its errors.
use assert_cmd::Command;
use cellsentence::classify::{self, metrics, Classifier, MlpConfig, SvmConfig};
use cellsentence::npy::{self, Matrix};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn metrics_match_scikit_learn() {
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/reference/annotation_metrics.json"))
            .unwrap(),
    )
    .unwrap();
    for (k, c) in doc["cases"].as_array().unwrap().iter().enumerate() {
        let (t, p) = (strings(&c["truth"]), strings(&c["pred"]));
        let acc = metrics::accuracy(&t, &p);
        let f1 = metrics::macro_f1(&t, &p);
        assert!(
            (acc - c["accuracy"].as_f64().unwrap()).abs() <= 1e-12,
            "case {k} accuracy"
        );
        assert!(
            (f1 - c["macro_f1"].as_f64().unwrap()).abs() <= 1e-12,
            "case {k} macro-F1 {f1}"
        );
        let per = metrics::per_class(&t, &p);
        assert_eq!(
            per.iter().map(|s| s.label.clone()).collect::<Vec<_>>(),
            strings(&c["labels"])
        );
        for (i, s) in per.iter().enumerate() {
            assert!(
                (s.f1 - c["f1"][i].as_f64().unwrap()).abs() <= 1e-12,
                "case {k} class {}",
                s.label
            );
            assert!((s.precision - c["precision"][i].as_f64().unwrap()).abs() <= 1e-12);
            assert!((s.recall - c["recall"][i].as_f64().unwrap()).abs() <= 1e-12);
            assert_eq!(s.support as i64, c["support"][i].as_i64().unwrap());
        }
    }
}

fn toy_labels() -> (Vec<String>, Vec<String>) {
    // 4 classes of unequal sizes over 3 batches; class "rare" only in batch b3
    let mut labels = Vec::new();
    let mut batches = Vec::new();
    for i in 0..233 {
        let l = match i % 10 {
            0..=4 => "big",
            5..=7 => "mid",
            8 => "small",
            _ => "tiny",
        };
        labels.push(l.to_string());
        batches.push(format!("b{}", i % 3 + 1));
    }
    for _ in 0..5 {
        labels.push("rare".into());
        batches.push("b3".into());
    }
    (labels, batches)
}

#[test]
fn stratified_folds_partition_cells_with_ideal_proportions() {
    let (labels, _) = toy_labels();
    let folds = classify::stratified_kfold(&labels, 5, 0.1, 7).unwrap();
    assert_eq!(folds.len(), 5);
    let mut seen = vec![0usize; labels.len()];
    for f in &folds {
        for &i in &f.test {
            seen[i] += 1;
        }
        // train, val and test are disjoint and cover every cell
        let mut all: Vec<usize> = f
            .train
            .iter()
            .chain(&f.val)
            .chain(&f.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..labels.len()).collect::<Vec<_>>(), "{}", f.name);
        // per class, within one cell of the ideal share
        let mut by: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (i, l) in labels.iter().enumerate() {
            by.entry(l).or_default().0 += 1;
            if f.test.contains(&i) {
                by.entry(l).or_default().1 += 1;
            }
        }
        for (l, (n, k)) in by {
            let ideal = n as f64 / 5.0;
            assert!(
                (k as f64 - ideal).abs() < 1.0 + 1e-9,
                "{}: class {l} has {k} test cells, ideal {ideal}",
                f.name
            );
        }
        // validation is ~10 % of the training part, stratified
        let rest = f.train.len() + f.val.len();
        assert!(
            (f.val.len() as f64 - 0.1 * rest as f64).abs() <= 4.0,
            "{}: {} val of {rest}",
            f.name,
            f.val.len()
        );
    }
    assert!(
        seen.iter().all(|&s| s == 1),
        "every cell is in exactly one test fold"
    );
    assert_eq!(
        classify::stratified_kfold(&labels, 5, 0.1, 7).unwrap(),
        folds,
        "seeded"
    );
    assert_ne!(
        classify::stratified_kfold(&labels, 5, 0.1, 8).unwrap(),
        folds
    );
}

#[test]
fn leave_one_batch_out_tests_each_batch() {
    let (labels, batches) = toy_labels();
    let folds = classify::leave_one_batch_out(&labels, &batches, 0.1, 0).unwrap();
    assert_eq!(
        folds.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["b1", "b2", "b3"]
    );
    for f in &folds {
        let want: Vec<usize> = (0..labels.len())
            .filter(|&i| batches[i] == f.name)
            .collect();
        assert_eq!(f.test, want, "test set of {} is the batch", f.name);
        assert!(f.train.iter().chain(&f.val).all(|&i| batches[i] != f.name));
    }
    assert_eq!(
        folds[2].unseen_labels,
        vec!["rare".to_string()],
        "test-only class is reported"
    );
    assert!(folds[0].unseen_labels.is_empty());
    // errors: one class, one batch
    let one = vec!["a".to_string(); 10];
    let e = classify::stratified_kfold(&one, 5, 0.1, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("1 distinct label") && e.contains("at least 2"),
        "{e}"
    );
    let e = classify::leave_one_batch_out(&labels, &vec!["x".to_string(); labels.len()], 0.1, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 batch") && e.contains("at least 2"), "{e}");
}

/// Features and folds of the PyTorch comparison (tests/fixtures/annotation/, made by
/// `make_mlp_fixture` below and read by make_annotation_fixtures.py --mlp).
fn mlp_fixture() -> (Matrix, Vec<String>, Vec<classify::Fold>) {
    let dir = root().join("tests/fixtures/annotation");
    let x = npy::read(&dir.join("features.npy")).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("folds.json")).unwrap()).unwrap();
    let labels = strings(&meta["labels"]);
    let idx = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as usize)
            .collect::<Vec<_>>()
    };
    let folds = meta["folds"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(k, f)| classify::Fold {
            name: format!("fold{}", k + 1),
            train: idx(&f["train"]),
            val: idx(&f["val"]),
            test: idx(&f["test"]),
            unseen_labels: vec![],
        })
        .collect();
    (x, labels, folds)
}

#[test]
#[ignore = "regenerates tests/fixtures/annotation (then run make_annotation_fixtures.py --mlp)"]
fn make_mlp_fixture() {
    use cellsentence::data::{self, ReadOptions};
    use cellsentence::hvg::HvgParams;
    use cellsentence::pipeline;
    use cellsentence::preprocess::PreprocessParams;
    let e = data::resolve("baron_human", &data::default_data_dirs(None)).unwrap();
    let ds = data::read(&e.path, &ReadOptions::default()).unwrap();
    let p = pipeline::prepare(
        ds,
        Some(&PreprocessParams::default()),
        pipeline::Counts::Drop,
    )
    .unwrap();
    let h = pipeline::select_hvg(&p, &HvgParams::default(), pipeline::HvgInput::Log, None).unwrap();
    let idx = h.indices();
    let n = p.data.n_cells();
    let mut dense = vec![0f32; n * idx.len()];
    let pos: BTreeMap<usize, usize> = idx.iter().enumerate().map(|(k, &j)| (j, k)).collect();
    for i in 0..n {
        let (cols, vals) = p.data.x.row(i);
        for (&j, &v) in cols.iter().zip(vals) {
            if let Some(&k) = pos.get(&(j as usize)) {
                dense[i * idx.len() + k] = v;
            }
        }
    }
    let x = Matrix {
        rows: n,
        cols: idx.len(),
        data: dense,
    };
    let z = classify::pca(&x, &(0..n).collect::<Vec<_>>(), 50);
    let labels = p.data.obs_column("cell_type1").unwrap();
    let folds = classify::stratified_kfold(&labels, 5, 0.1, 0).unwrap();
    let dir = root().join("tests/fixtures/annotation");
    npy::write(&dir.join("features.npy"), &z).unwrap();
    let folds_js: Vec<_> = folds
        .iter()
        .map(|f| serde_json::json!({"train": f.train, "val": f.val, "test": f.test}))
        .collect();
    std::fs::write(
        dir.join("folds.json"),
        serde_json::to_string(&serde_json::json!({"dataset": "baron_human", "features": "PCA(50) of log10-normalized seurat_v3 HVG expression", "labels": labels, "folds": folds_js})).unwrap(),
    )
    .unwrap();
}

#[test]
fn mlp_matches_pytorch_within_one_percent() {
    let (x, labels, folds) = mlp_fixture();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/reference/annotation_mlp.json"))
            .unwrap(),
    )
    .unwrap();
    let ev = classify::evaluate(
        &x,
        &labels,
        &folds,
        &Classifier::Mlp(MlpConfig::default()),
        tch::Device::Cpu,
    )
    .unwrap();
    let want = reference["accuracy_mean"].as_f64().unwrap();
    eprintln!(
        "MLP mean accuracy: ours {:.4}, PyTorch {want:.4}; macro-F1 {:.4}; epochs {:?}",
        ev.accuracy_mean,
        ev.macro_f1_mean,
        ev.folds.iter().map(|f| f.epochs).collect::<Vec<_>>()
    );
    assert!(
        (ev.accuracy_mean - want).abs() <= 0.01,
        "ours {} vs PyTorch {want}",
        ev.accuracy_mean
    );
    // seeded: identical predictions on a rerun
    let again = classify::evaluate(
        &x,
        &labels,
        &folds[..1],
        &Classifier::Mlp(MlpConfig::default()),
        tch::Device::Cpu,
    )
    .unwrap();
    let strip = |f: &classify::FoldMetrics| classify::FoldMetrics {
        seconds: 0.0,
        ..f.clone()
    };
    assert_eq!(strip(&again.folds[0]), strip(&ev.folds[0]));
    assert_eq!(
        again.predictions[..],
        ev.predictions[..again.predictions.len()]
    );
    // the SVM baseline is sane on the same features
    let svm = classify::evaluate(
        &x,
        &labels,
        &folds,
        &Classifier::Svm(SvmConfig::default()),
        tch::Device::Cpu,
    )
    .unwrap();
    eprintln!(
        "SVM mean accuracy {:.4}, macro-F1 {:.4}",
        svm.accuracy_mean, svm.macro_f1_mean
    );
    assert!(svm.accuracy_mean > 0.85, "{}", svm.accuracy_mean);
}

fn bin() -> Command {
    Command::cargo_bin("cellsentence").unwrap()
}

#[test]
fn annotate_command_writes_outputs_and_rejects_bad_inputs() {
    let fx = root().join("tests/fixtures/synthetic.h5ad");
    let info = bin().args(["info", "--input"]).arg(&fx).output().unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    let n: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("shape: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // features: the cell type one-hot plus noise, so the classifier has something to learn
    let ds = cellsentence::data::read(&fx, &Default::default()).unwrap();
    let types = ds.obs_column("cell_type").unwrap();
    let mut names = types.clone();
    names.sort();
    names.dedup();
    let mut data = Vec::new();
    for (i, t) in types.iter().enumerate() {
        for (k, nme) in names.iter().enumerate() {
            data.push(if nme == t { 1.0 } else { 0.0 } + ((i * 31 + k * 17) % 13) as f32 * 0.05);
        }
    }
    let e = dir.path().join("E.npy");
    npy::write(
        &e,
        &Matrix {
            rows: n,
            cols: names.len(),
            data: data.clone(),
        },
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = bin()
        .args(["--quiet", "annotate", "--embeddings"])
        .arg(&e)
        .arg("--input")
        .arg(&fx)
        .args(["--label-key", "cell_type", "--batch-key", "batch", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["classifier"], "mlp");
    assert_eq!(s["n_folds"], 3);
    assert!(s["accuracy_mean"].as_f64().unwrap() > 0.9, "{s}");
    let preds = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert!(preds.starts_with("cell,fold,truth,pred\n"));
    assert_eq!(preds.lines().count(), n + 1);
    assert!(
        std::fs::read_to_string(out.join("metrics.csv"))
            .unwrap()
            .lines()
            .count()
            == 4
    );

    let svm_out = dir.path().join("svm");
    let run = bin()
        .args(["--quiet", "annotate", "--embeddings"])
        .arg(&e)
        .arg("--input")
        .arg(&fx)
        .args([
            "--label-key",
            "cell_type",
            "--folds",
            "5",
            "--classifier",
            "svm",
            "--out",
        ])
        .arg(&svm_out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(std::fs::read_to_string(svm_out.join("summary.json"))
        .unwrap()
        .contains("\"svm\""));

    // bad inputs
    let fail = |args: &[&str], emb: &std::path::Path, needles: &[&str]| {
        let r = bin()
            .args(["--quiet", "annotate", "--embeddings"])
            .arg(emb)
            .arg("--input")
            .arg(&fx)
            .args(args)
            .arg("--out")
            .arg(dir.path().join("x"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr).to_string();
        assert!(!r.status.success(), "{args:?} succeeded");
        for n in needles {
            assert!(err.contains(n), "{args:?}: `{n}` not in {err}");
        }
    };
    fail(&["--label-key", "nope"], &e, &["nope"]);
    let short = dir.path().join("short.npy");
    npy::write(
        &short,
        &Matrix {
            rows: n - 1,
            cols: names.len(),
            data: data[..(n - 1) * names.len()].to_vec(),
        },
    )
    .unwrap();
    fail(
        &["--label-key", "cell_type"],
        &short,
        &[
            "short.npy",
            &format!("{} rows", n - 1),
            &format!("{n} cells"),
        ],
    );
    let mut bad = data.clone();
    bad[7] = f32::NAN;
    let nan = dir.path().join("nan.npy");
    npy::write(
        &nan,
        &Matrix {
            rows: n,
            cols: names.len(),
            data: bad,
        },
    )
    .unwrap();
    fail(
        &["--label-key", "cell_type"],
        &nan,
        &["nan.npy", "non-finite", "row 1"],
    );
    fail(
        &["--label-key", "cell_type", "--batch-key", "nobatch"],
        &e,
        &["nobatch"],
    );
    assert!(!dir.path().join("x").exists(), "no partial output on error");
}

#[test]
fn annotation_experiment_runs_from_cache_and_is_deterministic() {
    let text = std::fs::read_to_string(root().join("experiments/annotation_intra.yaml"))
        .unwrap()
        .replace("datasets: [baron_human, pbmc68k_reduced]", "datasets: [pbmc68k_reduced]")
        .replace(
            "lm: {layers: 4, hidden: 256, heads: 4, intermediate: 1024, max_genes: 200, steps: 120,",
            "lm: {layers: 1, hidden: 32, heads: 4, intermediate: 64, max_genes: 200, steps: 4,",
        )
        .replace("lm_protocol: pretrained", "lm_protocol: per_mode")
        .replace("max_epochs: 150", "max_epochs: 8");
    let dir = tempfile::tempdir().unwrap();
    let file = root().join("experiments").join(".test-annotation.yaml");
    let file = dir.path().join(file.file_name().unwrap());
    // the same experiment writing its LM embeddings as .h5ad files too, for scanpy
    let emb = dir.path().join("emb");
    let file_emb = dir.path().join(".test-annotation-emb.yaml");
    std::fs::write(
        &file_emb,
        text.replace(
            "  folds: 5\n",
            &format!("  folds: 5\n  embeddings_dir: {}\n", emb.display()),
        ),
    )
    .unwrap();
    std::fs::write(&file, text).unwrap();
    let run_file = |file: &Path, out: &str, cache: &str| {
        let r = bin()
            .args(["--quiet", "run"])
            .arg(file)
            .arg("--out")
            .arg(dir.path().join(out))
            .arg("--cache")
            .arg(dir.path().join(cache))
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stderr).to_string()
    };
    let run = |out: &str, cache: &str| run_file(&file, out, cache);
    let log = run("a", "c1");
    // a fresh cache: every gene of pbmc68k_reduced is highly variable, so its HVG sentences are
    // its full sentences and the HVG rows (LM, sentence SVM) and the HVG LM's quality panel reuse
    // the full ones' stages (3 hits); the quality panel re-reads the LM embedding (1)
    assert!(log.contains(": 4 stage(s) from cache"), "{log}");
    let name = "annotation_intra";
    let a = dir.path().join("a").join(name);
    for f in [
        "annotation.csv",
        "annotation.md",
        "reported.csv",
        "per_class_pbmc68k_reduced.csv",
        "figures/annotation_pbmc68k_reduced.html",
        "figures/confusion_pbmc68k_reduced.html",
        "figures/lm_loss_pbmc68k_reduced_full.html",
        "index.md",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    let table = std::fs::read_to_string(a.join("annotation.csv")).unwrap();
    // LM full/hvg, SVM, PCA, scmap, and the sentence SVM on full/hvg/deviation sentences
    assert_eq!(table.lines().count(), 9, "{table}");
    assert!(table.contains("LM full sentences + MLP") && table.contains("SVM (HVG expression)"));
    assert!(table.contains("SVM (deviation sentences)"), "{table}");
    let reported = std::fs::read_to_string(a.join("reported.csv")).unwrap();
    assert!(
        reported.contains("C2S Pythia-410M,0.9810,0.8980,reported"),
        "{reported}"
    );
    // warm rerun with embeddings_dir: everything from the cache, same bytes, and the LM
    // embeddings written as .h5ad (from their cached stages)
    let log = run_file(&file_emb, "b", "c1");
    for mode in ["full", "hvg"] {
        let f = emb.join(format!("pbmc68k_reduced/LM_{mode}.h5ad"));
        let r = std::process::Command::new("python")
            .arg("-c")
            .arg("import sys, anndata; a = anndata.read_h5ad(sys.argv[1]); print(a.n_obs, a.obsm['X_cell_sentence'].shape[1], a.obs_names[0])")
            .arg(&f)
            .output()
            .expect("python (the project venv) on PATH");
        let out = String::from_utf8_lossy(&r.stdout);
        assert!(
            r.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&r.stderr)
        );
        assert_eq!(out.trim(), "700 32 AAAGCCTGGCTAAC-1", "{}", f.display());
    }
    assert!(log.contains(" 0 computed"), "{log}");
    // fresh cache, same seed: same tables
    run("c", "c2");
    for f in ["annotation.csv", "per_class_pbmc68k_reduced.csv"] {
        let x = std::fs::read(a.join(f)).unwrap();
        assert_eq!(
            x,
            std::fs::read(dir.path().join("b").join(name).join(f)).unwrap(),
            "{f} (cached)"
        );
        assert_eq!(
            x,
            std::fs::read(dir.path().join("c").join(name).join(f)).unwrap(),
            "{f} (recomputed)"
        );
    }
}

/// Rows and columns of a CSV whose values do not pass through libtorch (the SVM and scmap rows),
/// for snapshots that hold on any x86-64 machine; the torch rows are covered by the byte-identical
/// rerun checks on one machine.
fn torch_free(csv: &str, key_col: &str) -> String {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let torch = |name: &str| name.contains("MLP");
    let out_cols: Vec<usize> = (0..header.len()).filter(|&j| !torch(header[j])).collect();
    let key = header.iter().position(|h| *h == key_col);
    let mut out = vec![out_cols
        .iter()
        .map(|&j| header[j])
        .collect::<Vec<_>>()
        .join(",")];
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        if key.is_some_and(|k| torch(f[k])) {
            continue;
        }
        out.push(out_cols.iter().map(|&j| f[j]).collect::<Vec<_>>().join(","));
    }
    out.join("\n")
}

/// Leave one batch out (Figures X–XI) on the generated counts (3 donors): every output, the folds
/// equal the batches, reruns with a fresh cache are byte-identical, snapshots of the torch-free rows.
#[test]
fn annotation_inter_on_generated_counts_with_three_batches() {
    let text = std::fs::read_to_string(root().join("experiments/annotation_inter.yaml"))
        .unwrap()
        .replace("datasets: [baron_human]", "datasets: [synthetic]")
        .replace(
            "lm: {layers: 4, hidden: 256, heads: 4, intermediate: 1024, max_genes: 200, steps: 120,",
            "lm: {layers: 1, hidden: 32, heads: 4, intermediate: 64, max_genes: 200, steps: 4,",
        )
        .replace("lm_protocol: pretrained", "lm_protocol: per_mode")
        .replace("max_epochs: 150", "max_epochs: 8");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inter.yaml");
    std::fs::write(&file, text).unwrap();
    let run = |out: &str, cache: &str| {
        let r = bin()
            .args(["--quiet", "run"])
            .arg(&file)
            .arg("--data-dir")
            .arg(root().join("tests/fixtures"))
            .arg("--out")
            .arg(dir.path().join(out))
            .arg("--cache")
            .arg(dir.path().join(cache))
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    };
    run("a", "c1");
    run("b", "c2");
    let (a, b) = (
        dir.path().join("a/annotation_inter"),
        dir.path().join("b/annotation_inter"),
    );
    for f in [
        "annotation.csv",
        "annotation.md",
        "reported.csv",
        "per_class_synthetic.csv",
        "figures/annotation_synthetic.html",
        "figures/confusion_synthetic.html",
        "index.md",
    ] {
        let x = std::fs::read(a.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(x, std::fs::read(b.join(f)).unwrap(), "{f} differs on rerun");
    }
    let table = std::fs::read_to_string(a.join("annotation.csv")).unwrap();
    // 2 LM rows + SVM + PCA-MLP + scmap, each over the 3 held-out donors
    assert_eq!(table.lines().count(), 6, "{table}");
    for l in table.lines().skip(1) {
        assert!(l.contains(",3,"), "3 folds expected: {l}");
    }
    insta::assert_snapshot!("inter_synthetic_annotation", torch_free(&table, "method"));
    let per_class = std::fs::read_to_string(a.join("per_class_synthetic.csv")).unwrap();
    insta::assert_snapshot!("inter_synthetic_per_class", torch_free(&per_class, "label"));
}

/// Snapshots of every table and figure spec of both annotation experiments on the bundled Baron
/// pancreas, with the torch-free methods (linear SVM, scmap-cluster) so they hold across machines.
#[test]
fn annotation_snapshots_on_baron() {
    if !root().join("data/baron_human.h5ad").is_file() {
        eprintln!("skipped: bundled data missing (run scripts/fetch-data.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["annotation_intra", "annotation_inter"] {
        let text = std::fs::read_to_string(root().join(format!("experiments/{name}.yaml")))
            .unwrap()
            .replace(
                "methods: [lm, hvg_svm, pca, scmap, sentence_svm]",
                "methods: [hvg_svm, scmap, sentence_svm]",
            )
            .replace(
                "methods: [lm, hvg_svm, pca, scmap]",
                "methods: [hvg_svm, scmap]",
            )
            .replace(
                "quality: {n_neighbors: 15, knn_k: 15, seed: 0, umap_epochs: 500}",
                "quality: null",
            );
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
        let e = cellsentence::experiment::Experiment::load(&file).unwrap();
        let opts = cellsentence::experiment::RunOptions {
            out: dir.path().join("results"),
            cache: dir.path().join("cache"),
            datasets: Some(vec!["baron_human".into()]),
            quiet: true,
            ..Default::default()
        };
        let s = cellsentence::experiment::run(&e, &opts).unwrap();
        let out = dir.path().join("results").join(name);
        for t in ["annotation", "per_class_baron_human", "reported"] {
            let csv = std::fs::read_to_string(out.join(format!("{t}.csv"))).unwrap();
            insta::assert_snapshot!(format!("{name}_{t}"), csv);
        }
        assert_eq!(s.specs.len(), 2, "bar chart and confusion matrix");
        for (fig, spec) in &s.specs {
            insta::assert_json_snapshot!(format!("{name}_figure_{fig}"), spec);
        }
    }
}

/// `pretrain-lm` writes a manifest of its corpus; the annotation runner refuses to evaluate a
/// dataset of that corpus with the model (clear error), unless `allow_seen: true`, which marks the
/// rows "seen in pretraining".
#[test]
fn pretrained_model_refuses_datasets_in_its_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let fixtures = root().join("tests/fixtures");
    let pretrain = |exclude: &str| {
        bin()
            .args(["--quiet", "pretrain-lm", "--datasets", "synthetic"])
            .args(["--exclude", exclude])
            .arg("--data-dir")
            .arg(&fixtures)
            .arg("--out")
            .arg(&model)
            .arg("--cache")
            .arg(dir.path().join("cache"))
            .args([
                "--config",
                r#"{"layers": 1, "hidden": 32, "heads": 4, "intermediate": 64, "steps": 3}"#,
            ])
            .output()
            .unwrap()
    };
    // holding out the only dataset leaves nothing to train on
    let r = pretrain("synthetic");
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("no dataset left"), "{err}");
    assert!(!model.exists(), "no model on failure");

    let r = pretrain("baron_human");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let corpus = cellsentence::lm::Corpus::read(&model).unwrap().unwrap();
    assert_eq!(corpus.datasets.len(), 1);
    let d = &corpus.datasets[0];
    assert_eq!(d.id, "synthetic");
    let bytes = std::fs::read(fixtures.join("synthetic.h5ad")).unwrap();
    assert_eq!(d.sha256, cellsentence::cache::sha256_hex(&bytes));
    assert!(d.cells > 0);
    assert_eq!(corpus.steps, 3);
    assert!(corpus.tokens_seen > 0 && corpus.command.contains("pretrain-lm"));
    assert_eq!(
        corpus.held_out.get("baron_human").map(String::as_str),
        Some("evaluated with this model")
    );
    assert!(
        corpus.held_out.contains_key("pancreas_cider"),
        "shares Baron's cells"
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "cellsentence.json",
    ] {
        assert!(model.join(f).is_file(), "{f}");
    }

    let text = std::fs::read_to_string(root().join("experiments/annotation_inter.yaml"))
        .unwrap()
        .replace("datasets: [baron_human]", "datasets: [synthetic]")
        .replace("max_epochs: 150", "max_epochs: 4")
        .replace(
            "  pca_components: 50",
            &format!("  pca_components: 50\n  model: {}", model.display()),
        );
    let run = |text: &str, out: &str| {
        let file = dir.path().join(format!("{out}.yaml"));
        std::fs::write(&file, text).unwrap();
        bin()
            .args(["--quiet", "run"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&fixtures)
            .arg("--out")
            .arg(dir.path().join(out))
            .arg("--cache")
            .arg(dir.path().join("cache"))
            .output()
            .unwrap()
    };
    let r = run(&text, "refused");
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("`synthetic` is in the pretraining corpus") && err.contains("corpus.json"),
        "{err}"
    );
    assert!(err.contains("allow_seen: true"), "the fix is named: {err}");
    assert!(!dir.path().join("refused/annotation_inter").exists());

    let allowed = text.replace(
        "  pca_components: 50\n",
        "  pca_components: 50\n  allow_seen: true\n",
    );
    let r = run(&allowed, "allowed");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let table = std::fs::read_to_string(dir.path().join("allowed/annotation_inter/annotation.csv"))
        .unwrap();
    let lm_rows: Vec<&str> = table.lines().filter(|l| l.contains("LM ")).collect();
    assert_eq!(lm_rows.len(), 2, "{table}");
    for l in lm_rows {
        assert!(l.contains("seen in pretraining"), "{l}");
    }
    assert!(!table
        .lines()
        .filter(|l| l.contains("SVM"))
        .any(|l| l.contains("seen in pretraining")));
}

/// The paper's one-model protocol on the generated counts: a model pretrained on another dataset
/// (pbmc68k_reduced, bundled) reads both sentence modes, beside its per-mode fine-tunes and the
/// untrained control; then the scaling sweep over two budgets with its layer sweep.
#[test]
fn pretrained_protocol_and_scaling_sweep_on_generated_counts() {
    if !root().join("data/pbmc68k_reduced.h5ad").is_file() {
        eprintln!("skipped: bundled data missing (run scripts/fetch-data.sh)");
        return;
    }
    let tiny = "{layers: 1, hidden: 32, heads: 4, intermediate: 64, max_genes: 200, steps: 3, batch_size: 8, lr: 0.001, snapshots: [0, 2], seed: 0}";
    let text = std::fs::read_to_string(root().join("experiments/extra/annotation_pretrained.yaml"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("checkpoint:") && !l.contains("exclude:"))
        .collect::<Vec<_>>()
        .join("\n");
    let lm_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("lm: {"))
        .unwrap()
        .to_string();
    let ft_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("finetune:"))
        .unwrap()
        .to_string();
    let text = text
        .replace("datasets: [baron_human]", "datasets: [synthetic]")
        .replace(
            &lm_line,
            &format!("    lm: {tiny}\n    datasets: [pbmc68k_reduced]"),
        )
        .replace(
            &ft_line,
            "    finetune: {max_genes: 200, steps: 2, batch_size: 8, lr: 0.0003, seed: 0}",
        )
        .replace("max_epochs: 150", "max_epochs: 4");
    let dir = tempfile::tempdir().unwrap();
    let run = |text: &str, name: &str| {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
        let r = bin()
            .args(["--quiet", "run"])
            .arg(&file)
            .arg("--data-dir")
            .arg(root().join("tests/fixtures"))
            .arg("--out")
            .arg(dir.path().join("results"))
            .arg("--cache")
            .arg(dir.path().join("cache"))
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    };
    run(&text, "protocol");
    let table = std::fs::read_to_string(
        dir.path()
            .join("results/annotation_pretrained/annotation.csv"),
    )
    .unwrap();
    for m in [
        "pretrained LM full sentences + MLP",
        "pretrained LM hvg sentences + MLP",
        "fine-tuned LM full sentences + MLP",
        "fine-tuned LM hvg sentences + MLP",
        "untrained LM full sentences + MLP",
        "untrained LM hvg sentences + MLP",
    ] {
        assert!(table.contains(m), "{m} missing:\n{table}");
    }
    let md = std::fs::read_to_string(
        dir.path()
            .join("results/annotation_pretrained/annotation.md"),
    )
    .unwrap();
    assert!(md.contains("transductive"), "{md}");
    // the pretrained model's manifest: the evaluated dataset held out, the corpus as asked
    let pre: Vec<_> = std::fs::read_dir(dir.path().join("cache/pretrain"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        pre.len(),
        1,
        "one pretraining run; the untrained control is its step-0 snapshot"
    );
    assert!(pre[0].join("step0/config.json").is_file());
    assert!(pre[0].join("step2/model.safetensors").is_file());
    for p in [&pre[0], &pre[0].join("step0")] {
        let c = cellsentence::lm::Corpus::read(p).unwrap().unwrap();
        assert_eq!(c.datasets.len(), 1);
        assert_eq!(c.datasets[0].id, "pbmc68k_reduced");
        assert!(c.held_out.contains_key("synthetic"));
    }

    let scaling = text
        .replace("task: annotation", "task: lm_scaling")
        .replace("name: annotation_pretrained", "name: lm_scaling")
        + "\nlm_scaling: {budgets: [0, 2, 3], layer_sweep: true}\n";
    run(&scaling, "scaling");
    let out = dir.path().join("results/lm_scaling");
    let s = std::fs::read_to_string(out.join("scaling.csv")).unwrap();
    assert_eq!(
        s.lines().count(),
        7,
        "3 budgets (checkpoints of one run) × 2 modes:\n{s}"
    );
    assert!(s.lines().nth(1).unwrap().starts_with("0,"), "{s}");
    let l = std::fs::read_to_string(out.join("layers.csv")).unwrap();
    assert_eq!(
        l.lines().count(),
        3,
        "token embeddings + 1 block output:\n{l}"
    );
    assert!(out.join("figures/scaling_synthetic.html").is_file());
}

/// The held-out default is chosen on a corpus dataset, never on an evaluated one (issue 29 item
/// 3): with `select_on`, the answer stage runs again without that dataset's labels, and the
/// next-gene model and that model are scored on it (the untrained model as control) in
/// `default_selection.csv`; `select_on` without `answer`, or naming the evaluated dataset, is
/// refused by name.
#[test]
fn the_default_is_chosen_on_a_corpus_dataset_not_the_evaluated_one() {
    let shared = root().join("../shared/data/pbmc3k.h5ad");
    if !root().join("data/pbmc68k_reduced.h5ad").is_file() || !shared.is_file() {
        eprintln!("skipped: bundled or shared data missing (run scripts/fetch-data.sh)");
        return;
    }
    let tiny = "{layers: 1, hidden: 32, heads: 4, intermediate: 64, max_genes: 200, steps: 3, batch_size: 8, lr: 0.001, seed: 0}";
    let answer = "{max_genes: 200, steps: 3, batch_size: 8, lr: 0.001, eval_every: 2, seed: 0}";
    let text = std::fs::read_to_string(root().join("experiments/extra/annotation_pretrained.yaml"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("checkpoint:") && !l.contains("exclude:"))
        .filter(|l| !l.trim_start().starts_with("finetune:"))
        .map(|l| match l.trim_start() {
            t if t.starts_with("lm: {") => format!(
                "    lm: {tiny}\n    datasets: [pbmc68k_reduced, pbmc3k]\n    answer: {answer}\n    select_on: pbmc68k_reduced"
            ),
            t if t.starts_with("methods:") => "  methods: [lm]".to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("datasets: [baron_human]", "datasets: [synthetic]")
        .replace("max_epochs: 150", "max_epochs: 4");
    let dir = tempfile::tempdir().unwrap();
    let run = |text: &str| {
        let file = dir.path().join("select.yaml");
        std::fs::write(&file, text).unwrap();
        bin()
            .args(["--quiet", "run"])
            .arg(&file)
            .arg("--data-dir")
            .arg(root().join("tests/fixtures"))
            .arg("--out")
            .arg(dir.path().join("results"))
            .arg("--cache")
            .arg(dir.path().join("cache"))
            .output()
            .unwrap()
    };
    let r = run(&text);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out = dir.path().join("results/annotation_pretrained");
    let sel = std::fs::read_to_string(out.join("default_selection.csv")).unwrap();
    let rows: Vec<&str> = sel.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{sel}");
    assert!(
        rows.iter().all(|r| r.starts_with("pbmc68k_reduced,")),
        "{sel}"
    );
    assert_eq!(
        rows.iter().filter(|r| r.contains(",chosen,")).count(),
        1,
        "{sel}"
    );
    assert!(
        rows.iter().any(|r| r.contains("untrained LM,control,")),
        "{sel}"
    );
    let index = std::fs::read_to_string(out.join("index.md")).unwrap();
    assert!(index.contains("default_selection.md"), "{index}");
    // two answer stages: the row's (every corpus label) and the selection's (pbmc68k_reduced's
    // labels kept aside); neither read the evaluated dataset's
    let mut keys: Vec<Vec<String>> = std::fs::read_dir(dir.path().join("cache/pretrain_answer"))
        .unwrap()
        .map(|e| {
            let c = cellsentence::lm::Corpus::read(&e.unwrap().path())
                .unwrap()
                .unwrap();
            c.label_keys.keys().cloned().collect()
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            vec!["pbmc3k".to_string()],
            vec!["pbmc3k".into(), "pbmc68k_reduced".into()]
        ]
    );
    // refused by name: the evaluated dataset, and select_on without an answer stage
    let evaluated = text.replace("select_on: pbmc68k_reduced", "select_on: synthetic");
    let e = String::from_utf8_lossy(&run(&evaluated).stderr).to_string();
    assert!(e.contains("select_on") && e.contains("synthetic"), "{e}");
    let no_answer = text.replace(&format!("    answer: {answer}\n"), "");
    let r = run(&no_answer);
    let e = String::from_utf8_lossy(&r.stderr).to_string();
    assert!(!r.status.success() && e.contains("pretrain.answer"), "{e}");
}

/// The committed pretrained model (`models/pretrained`) comes from this code: its corpus is rebuilt
/// from the same files (digests checked against `corpus.json`), and its first training steps'
/// losses, as logged in `training_log.csv`, come out the same (to a CPU kernel's rounding).
#[test]
fn committed_pretrained_model_reproduces_its_first_steps() {
    use cellsentence::experiment::pretrain::{self, CorpusSpec};
    use cellsentence::lm::{self, train};
    let dir = root().join("models/pretrained");
    let corpus = lm::Corpus::read(&dir)
        .unwrap()
        .expect("models/pretrained/corpus.json");
    let meta = lm::ModelMeta::read(&dir)
        .unwrap()
        .expect("cellsentence.json");
    let e = cellsentence::experiment::Experiment::load(
        &root().join("experiments/annotation_intra.yaml"),
    )
    .unwrap();
    assert_eq!(
        e.annotation.pretrain.lm, meta.training,
        "the default experiment's settings"
    );
    assert_eq!(
        e.annotation.pretrain.cell_type_task,
        corpus.task.is_some(),
        "the default experiment's pretraining task"
    );
    let spec = CorpusSpec {
        datasets: Some(corpus.datasets.iter().map(|d| d.id.clone()).collect()),
        exclude: Vec::new(),
        preprocess: e.preprocess.clone(),
        tie_seed: e.sentences.tie_seed,
        cell_type_task: corpus.task.is_some(),
    };
    let (entries, _) = pretrain::plan(&spec, &cellsentence::data::corpus_data_dirs(None));
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let want: Vec<&str> = corpus.datasets.iter().map(|d| d.id.as_str()).collect();
    let missing: Vec<&&str> = want.iter().filter(|w| !ids.contains(w)).collect();
    if !missing.is_empty() {
        eprintln!("skipped: corpus files missing here: {missing:?} (scripts/fetch-data.sh, ../shared/data)");
        return;
    }
    assert_eq!(ids, want, "corpus datasets");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cellsentence::cache::Cache::new(cache_dir.path(), false).quiet(true);
    let parts: Vec<lm::CorpusPart> = entries
        .iter()
        .map(|en| pretrain::part(en, &spec, meta.training.max_genes, &cache, false).unwrap())
        .collect();
    for (p, d) in parts.iter().zip(&corpus.datasets) {
        assert_eq!(
            p.dataset, *d,
            "{}: file or cells differ from the manifest",
            d.id
        );
    }
    let (vocab, sentences) = lm::corpus::training_inputs(&parts);
    let steps = 3;
    let f = train::fit(
        &sentences,
        &lm::corpus::fit_config(&parts, &meta.training),
        train::Init::Scratch {
            vocab: Some(&vocab),
        },
        tch::Device::Cpu,
        false,
        None,
        Some(steps),
    )
    .unwrap();
    assert_eq!(f.vocab, corpus.vocab_size);
    // the same steps and learning rates, the same losses to the log's last digits: libtorch's CPU
    // kernels differ between processors by a rounding (seen: 9.986641 against 9.986643), while
    // any other data, vocabulary, seed or setting moves the first losses by far more
    let committed = train::LogRow::read(&dir).unwrap();
    assert!(f.log.len() >= steps && committed.len() > steps);
    let near = |a: f64, b: f64| (a.is_nan() && b.is_nan()) || (a - b).abs() < 2e-5;
    for (o, c) in f.log.iter().zip(&committed) {
        assert!(
            o.step == c.step
                && (o.lr - c.lr).abs() <= 1e-6 * c.lr
                && near(o.train_loss, c.train_loss)
                && near(
                    o.val_loss.unwrap_or(f64::NAN),
                    c.val_loss.unwrap_or(f64::NAN)
                ),
            "first steps (step 0 = the initialisation): {o:?} against the committed {c:?}"
        );
    }
}

/// The committed LM results (issue 12) under insta, and tied to the committed model: the scaling
/// table's validation losses are the ones `models/pretrained` (and its snapshots) logged, and the
/// attribution table ranks 20 genes per cell type; the cell-type-task sweep's tables under insta.
#[test]
fn committed_lm_results_are_guarded_and_match_the_model() {
    let read = |p: &str| std::fs::read_to_string(root().join(p)).unwrap();
    let scaling = read("results/lm_scaling/scaling.csv");
    insta::assert_snapshot!("committed_lm_scaling", scaling);
    insta::assert_snapshot!("committed_lm_layers", read("results/lm_scaling/layers.csv"));
    let top = read("results/attribution/top_genes.csv");
    insta::assert_snapshot!("committed_attribution_top_genes", top);
    // attribution through the answer of the LM fine-tuned for annotation (scripts/lm-attribution.sh)
    insta::assert_snapshot!(
        "committed_attribution_answer_top_genes",
        read("results/attribution_answer/top_genes.csv")
    );
    // the pretraining on Cell2Sentence's cell-type task (experiments/extra/lm_cell_type_task.yaml)
    for t in ["scaling", "layers"] {
        insta::assert_snapshot!(
            format!("committed_lm_cell_type_task_{t}"),
            read(&format!("results/lm_cell_type_task/{t}.csv"))
        );
    }

    // the LM fine-tuned for annotation (experiments/extra/lm_finetune_annotation.yaml)
    insta::assert_snapshot!(
        "committed_lm_finetune_annotation",
        read("results/lm_finetune_annotation/annotation.csv")
    );
    // the same with the sampling chosen on validation cells
    // (experiments/extra/lm_finetune_annotation_sqrt.yaml)
    insta::assert_snapshot!(
        "committed_lm_finetune_annotation_sqrt",
        read("results/lm_finetune_annotation_sqrt/annotation.csv")
    );
    // the same, leave one donor out (experiments/extra/lm_finetune_annotation_lobo.yaml)
    insta::assert_snapshot!(
        "committed_lm_finetune_annotation_lobo",
        read("results/lm_finetune_annotation_lobo/annotation.csv")
    );
    // the held-out model with the answer-only stage on the corpus labels
    // (experiments/extra/lm_answer_pretrain.yaml)
    insta::assert_snapshot!(
        "committed_lm_answer_pretrain",
        read("results/lm_answer_pretrain/annotation.csv")
    );
    // which of the two is the held-out default, chosen on a corpus dataset (select_on)
    insta::assert_snapshot!(
        "committed_lm_default_selection",
        read("results/lm_answer_pretrain/default_selection.csv")
    );

    let log = cellsentence::lm::train::LogRow::read(&root().join("models/pretrained")).unwrap();
    let val_at = |step: usize| {
        log.iter()
            .rev()
            .filter(|r| r.step <= step)
            .find_map(|r| r.val_loss)
            .unwrap()
    };
    let header: Vec<&str> = scaling.lines().next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let mut budgets = Vec::new();
    for l in scaling.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        let b: usize = f[col("budget_steps")].parse().unwrap();
        let v: f64 = f[col("val_loss")].parse().unwrap();
        assert!(
            (v - val_at(b)).abs() < 1e-4,
            "budget {b}: {v} vs the model's log {}",
            val_at(b)
        );
        budgets.push(b);
    }
    budgets.dedup();
    assert_eq!(budgets, [0, 250, 500, 1000]);

    let header: Vec<&str> = top.lines().next().unwrap().split(',').collect();
    assert_eq!(
        &header[..5],
        ["dataset", "cell_type", "rank", "gene", "score"]
    );
    let mut per_type: BTreeMap<String, usize> = BTreeMap::new();
    for l in top.lines().skip(1) {
        *per_type
            .entry(l.split(',').nth(1).unwrap().to_string())
            .or_default() += 1;
    }
    assert!(per_type.len() >= 5, "{per_type:?}");
    assert!(per_type.values().all(|&n| n <= 20), "{per_type:?}");
}
