//! `bench annotate`: the paper's MLP (seconds per epoch) against PyTorch and the linear SVM (fit
//! time) against scikit-learn, on the same data in the same run.
use std::path::{Path, PathBuf};

use crate::classify::{self, MlpConfig, SvmConfig};
use crate::error::{Error, Result};
use crate::report::write_atomic;

/// What `bench annotate` needs: the reference's Python, where the data are, where tables go.
#[derive(Debug, Clone)]
pub struct AnnotateBench {
    /// Python with torch + scikit-learn.
    pub python: PathBuf,
    /// Folder searched first for baron_human.h5ad.
    pub data_dir: Option<PathBuf>,
    /// Output folder (annotation.md, annotation.csv).
    pub out: PathBuf,
}

/// MLP seconds per epoch vs PyTorch (same features and folds) and linear-SVM fit time vs
/// scikit-learn `LinearSVC` (same rows), in one run; returns the Markdown table it wrote.
pub fn annotate_bench(a: &AnnotateBench) -> Result<String> {
    let fx = crate::project_file("tests/fixtures/annotation");
    let work = PathBuf::from(".cache/bench");
    let (ours_epoch, correct) = bench_mlp(&fx)?;
    let (ours_svm, svm_acc) = bench_svm(a, &work)?;
    let r = bench_reference(a, &fx, &work)?;
    let torch_epoch = r["mlp_seconds_per_epoch"].as_f64().unwrap_or(f64::NAN);
    let sk_svm = r["svm_seconds"].as_f64().unwrap_or(f64::NAN);
    let md = format!(
        "# Annotation benchmarks: cellsentence vs PyTorch / scikit-learn (CPU, {} threads)\n\n\
         | what | data | cellsentence | reference | ratio (reference / ours) |\n|---|---|---|---|---|\n\
         | MLP seconds per epoch (updates + validation loss; median over all epochs of 5 folds) | Baron PCA(50), 5 stratified folds | {ours_epoch:.4} | PyTorch {torch_epoch:.4} | {:.2}× |\n\
         | MLP mean accuracy | same | {:.4} | PyTorch {:.4} | — |\n\
         | linear SVM fit, seconds (C = 1, one-vs-rest, squared hinge, dual CD) | Baron HVG expression (2,000 genes), fold 1 train+val | {ours_svm:.3} | scikit-learn LinearSVC {sk_svm:.3} | {:.2}× |\n\
         | linear SVM fold-1 accuracy | same | {svm_acc:.4} | {:.4} | — |\n",
        tch::get_num_threads(),
        torch_epoch / ours_epoch,
        correct.iter().sum::<f64>() / correct.len().max(1) as f64,
        r["mlp_accuracy_mean"].as_f64().unwrap_or(f64::NAN),
        sk_svm / ours_svm,
        r["svm_accuracy"].as_f64().unwrap_or(f64::NAN),
    );
    let csv = format!(
        "what,ours,reference,ratio\nmlp_seconds_per_epoch,{ours_epoch:.5},{torch_epoch:.5},{:.3}\nsvm_fit_seconds,{ours_svm:.4},{sk_svm:.4},{:.3}\n",
        torch_epoch / ours_epoch,
        sk_svm / ours_svm
    );
    write_atomic(a.out.join("annotation.md"), md.as_bytes())?;
    write_atomic(a.out.join("annotation.csv"), csv.as_bytes())?;
    Ok(md)
}

/// Our MLP on the committed fixture's folds: median seconds per epoch and each fold's accuracy.
fn bench_mlp(fx: &Path) -> Result<(f64, Vec<f64>)> {
    use crate::classify::Fold;
    let x = crate::npy::read(&fx.join("features.npy"))?;
    let meta_path = fx.join("folds.json");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?,
    )
    .map_err(|e| Error::format(&meta_path, e.to_string(), "regenerate the fixture"))?;
    let strs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().map_or(vec![], |a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
    };
    let idx = |v: &serde_json::Value| -> Vec<usize> {
        v.as_array().map_or(vec![], |a| {
            a.iter()
                .filter_map(|i| i.as_u64().map(|i| i as usize))
                .collect()
        })
    };
    let labels = strs(&meta["labels"]);
    let folds: Vec<Fold> = meta["folds"]
        .as_array()
        .map_or(&[][..], |v| v.as_slice())
        .iter()
        .enumerate()
        .map(|(k, f)| Fold {
            name: format!("fold{}", k + 1),
            train: idx(&f["train"]),
            val: idx(&f["val"]),
            test: idx(&f["test"]),
            unseen_labels: vec![],
        })
        .collect();
    // the PyTorch script's measure: every epoch of every fold (updates + validation loss), median
    let (names, y) = classify::encode_labels(&labels);
    let mut per_epoch = Vec::new();
    let mut correct = Vec::new();
    for f in &folds {
        let cfg = MlpConfig::default();
        let (pred, run) =
            classify::mlp::train_predict(&x, &y, names.len(), f, &cfg, tch::Device::Cpu);
        per_epoch.extend(run.epoch_seconds);
        let hits = f
            .test
            .iter()
            .zip(&pred)
            .filter(|&(&i, &p)| y[i] == p)
            .count();
        correct.push(hits as f64 / f.test.len().max(1) as f64);
    }
    per_epoch.sort_by(f64::total_cmp);
    let ours_epoch = per_epoch[per_epoch.len() / 2];

    Ok((ours_epoch, correct))
}

/// Our linear SVM on Baron's HVG expression, fold 1: fit seconds and accuracy (also writes the
/// data and folds the reference script reads into `work`).
fn bench_svm(a: &AnnotateBench, work: &Path) -> Result<(f64, f64)> {
    // SVM on log-normalized HVG expression of baron_human, first stratified fold
    let dirs = crate::data::default_data_dirs(a.data_dir.as_deref());
    let entry = crate::data::resolve("baron_human", &dirs)?;
    let ds = crate::data::read(
        &entry.path,
        &crate::data::ReadOptions {
            matrix: entry.matrix.clone(),
            progress: true,
        },
    )?;
    use crate::pipeline::{Counts, HvgInput, HvgSource, Pipeline};
    let hvg = HvgSource::Select {
        params: crate::hvg::HvgParams::default(),
        on: HvgInput::Log,
        batch_key: None,
    };
    let pre = crate::preprocess::PreprocessParams::default();
    let mut pl = Pipeline::new(ds, Some(&pre), hvg, Counts::Drop)?;
    let (p, h) = pl.with_hvg()?;
    let hx = crate::pipeline::hvg_dense(p, &h.indices());
    let hl = p.data.obs_column("cell_type1")?;
    let hf = classify::stratified_kfold(&hl, 5, 0.1, 0)?;
    crate::npy::write(&work.join("svm_hvg_baron.npy"), &hx)?;
    let folds_js: Vec<_> = hf
        .iter()
        .map(|f| serde_json::json!({"train": f.train, "val": f.val, "test": f.test}))
        .collect();
    write_atomic(
        work.join("svm_folds.json"),
        serde_json::json!({"labels": hl, "folds": folds_js})
            .to_string()
            .as_bytes(),
    )?;
    let f0 = &hf[0];
    let fit: Vec<usize> = f0.train.iter().chain(&f0.val).copied().collect();
    let rows: Vec<&[f32]> = fit.iter().map(|&i| hx.row(i)).collect();
    let (names, codes) = classify::encode_labels(&hl);
    let y: Vec<usize> = fit.iter().map(|&i| codes[i]).collect();
    let t0 = std::time::Instant::now();
    let model = classify::svm::LinearSvm::fit(&rows, &y, &SvmConfig::default());
    let ours_svm = t0.elapsed().as_secs_f64();
    let test: Vec<&[f32]> = f0.test.iter().map(|&i| hx.row(i)).collect();
    let pred = model.predict(&test);
    let svm_acc = f0
        .test
        .iter()
        .zip(&pred)
        .filter(|(&i, &k)| names[k] == hl[i])
        .count() as f64
        / f0.test.len() as f64;

    Ok((ours_svm, svm_acc))
}

/// The PyTorch / scikit-learn reference script's JSON on the same data.
fn bench_reference(a: &AnnotateBench, fx: &Path, work: &Path) -> Result<serde_json::Value> {
    let script = crate::project_file("tests/fixtures/bench_annotation.py");
    let out = std::process::Command::new(&a.python)
        .arg(&script)
        .arg(fx)
        .arg(work.join("svm_hvg_baron.npy"))
        .arg(work.join("svm_folds.json"))
        .output()
        .map_err(|e| Error::io(&a.python, e))?;
    if !out.status.success() {
        return Err(Error::param(
            "bench",
            format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::param("bench", format!("reference printed no JSON: {e}")))
}
