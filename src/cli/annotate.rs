//! `cellsentence annotate`: cell-type classification from an embedding matrix.
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::{load, print_out, DataDirArgs, InputArgs};
use crate::classify::{self, Classifier, Evaluation, MlpConfig, SvmConfig};
use crate::error::{Error, Result};
use crate::report::{write_atomic, Table};

/// Classifier choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassifierArg {
    /// The paper's MLP head (tch).
    Mlp,
    /// Linear SVM, one-vs-rest, C = 1 (scikit-learn LinearSVC's problem).
    Svm,
}

/// `annotate` options.
#[derive(Debug, Args)]
pub struct AnnotateArgs {
    /// Features, cells × dimensions: .npy (float32/float64; rows are the file's cells in order, or
    /// the cells listed in <embeddings>.cells.txt, written by `embed`), or an .h5ad from `embed`
    /// or `merge` (obsm["X_cell_sentence"], rows named by its obs index).
    #[arg(long)]
    pub embeddings: PathBuf,
    /// The dataset the rows belong to (labels and batches are read from its obs).
    #[arg(long, short)]
    pub input: String,
    #[command(flatten)]
    pub dirs: DataDirArgs,
    /// obs column with the cell types.
    #[arg(long)]
    pub label_key: String,
    /// obs column with batches: leave-one-batch-out (inter-dataset).
    #[arg(long, conflicts_with = "folds")]
    pub batch_key: Option<String>,
    /// Stratified k-fold (intra-dataset) when no batch key is given.
    #[arg(long, default_value_t = 5, value_parser = super::domain::folds())]
    pub folds: usize,
    #[arg(long, value_enum, default_value = "mlp")]
    pub classifier: ClassifierArg,
    /// Seed of the splits (and of the SVM's coordinate order).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seed of the MLP's initialisation, dropout and batches (the paper's code: 1234).
    #[arg(long, default_value_t = 1234)]
    pub mlp_seed: u64,
    /// Fraction of each training part held out (stratified) for early stopping.
    #[arg(long, default_value_t = 0.1, value_parser = super::domain::fraction())]
    pub val_fraction: f64,
    /// Leave out cells whose label (or batch) is missing, with a warning; without it they are an error.
    #[arg(long)]
    pub drop_missing: bool,
    /// Train the MLP on the first CUDA device.
    #[arg(long)]
    pub cuda: bool,
    /// Output folder: predictions.csv, metrics.csv, per_class.csv, summary.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// Cell names, labels and batches of the feature rows.
pub(super) struct Rows {
    /// Rows the embedding must have.
    pub total: usize,
    /// Embedding rows kept (cells with a label and, where asked, a batch).
    pub rows: Vec<usize>,
    pub cells: Vec<String>,
    pub labels: Vec<String>,
    pub batches: Option<Vec<String>>,
}

/// Where the rows of an embedding get their labels: `annotate`'s and `metrics`' options.
pub(super) struct RowSource<'a> {
    pub embeddings: &'a Path,
    pub input: &'a str,
    pub dirs: &'a DataDirArgs,
    pub label_key: &'a str,
    pub batch_key: Option<&'a str>,
    pub drop_missing: bool,
}

impl AnnotateArgs {
    fn row_source(&self) -> RowSource<'_> {
        RowSource {
            embeddings: &self.embeddings,
            input: &self.input,
            dirs: &self.dirs,
            label_key: &self.label_key,
            batch_key: self.batch_key.as_deref(),
            drop_missing: self.drop_missing,
        }
    }
}

/// Reads the labels (and batches) of the rows of `embeddings`; `listed`: the rows' cell names
/// (from `<embeddings>.cells.txt` or the `.h5ad`'s obs index) and where they come from.
fn row_annotations(a: &RowSource<'_>, listed: Option<(&Path, &[String])>) -> Result<Rows> {
    let (entry, ds) = load(&InputArgs {
        input: a.input.to_string(),
        layer: None,
        raw: false,
        dirs: a.dirs.clone(),
    })?;
    let labels = ds.obs_optional(a.label_key)?;
    let batches = a.batch_key.map(|k| ds.obs_optional(k)).transpose()?;
    let rows: Vec<usize> = if let Some((listed, names)) = listed {
        let pos: std::collections::HashMap<&str, usize> = ds
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        names
            .iter()
            .map(|c| {
                pos.get(c.as_str()).copied().ok_or_else(|| {
                    Error::bad_value(
                        listed,
                        "cell",
                        format!("`{c}` is not a cell of {}", entry.path.display()),
                        "embed and annotate the same file",
                    )
                })
            })
            .collect::<Result<_>>()?
    } else {
        (0..ds.n_cells()).collect()
    };
    // rows (embedding row, dataset cell) with a label and, where asked, a batch
    let unusable = |&(_, i): &(usize, usize)| {
        labels[i].is_none() || batches.as_ref().is_some_and(|b| b[i].is_none())
    };
    let pairs: Vec<(usize, usize)> = rows.into_iter().enumerate().collect();
    let total = pairs.len();
    let dropped = pairs.iter().filter(|p| unusable(p)).count();
    if dropped > 0 {
        let first = &ds.cells[pairs.iter().find(|p| unusable(p)).map_or(0, |p| p.1)];
        let what =
            format!(
            "{dropped} of {} cells have no value in obs/{}{} (missing/NaN), the first is `{first}`",
            pairs.len(),
            a.label_key,
            a.batch_key.map(|b| format!(" or obs/{b}")).unwrap_or_default()
        );
        if !a.drop_missing {
            return Err(Error::bad_value(
                &entry.path,
                format!("obs/{}", a.label_key),
                format!("{what}; a missing label is not a class"),
                "pass --drop-missing to leave those cells out (with a warning), or label them",
            ));
        }
        eprintln!("warning: {what}; --drop-missing leaves them out");
    }
    let kept: Vec<(usize, usize)> = pairs.into_iter().filter(|p| !unusable(p)).collect();
    let known = |v: &[Option<String>]| {
        kept.iter()
            .map(|&(_, i)| v[i].clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    Ok(Rows {
        total,
        rows: kept.iter().map(|&(r, _)| r).collect(),
        cells: kept.iter().map(|&(_, i)| ds.cells[i].clone()).collect(),
        labels: known(&labels),
        batches: batches.as_ref().map(|b| known(b)),
    })
}

/// The embedding's rows that have a label (and a batch), with their annotations.
pub(super) fn labelled_rows(a: &RowSource<'_>) -> Result<(crate::npy::Matrix, Rows)> {
    let (x, names) = if a.embeddings.extension().is_some_and(|e| e == "h5ad") {
        let e = crate::data::h5ad_out::read_embeddings(a.embeddings)?;
        (e.m, Some((a.embeddings.to_path_buf(), e.cells)))
    } else {
        let listed = a.embeddings.with_extension("cells.txt");
        let names = if listed.is_file() {
            let text = std::fs::read_to_string(&listed).map_err(|e| Error::io(&listed, e))?;
            Some((listed, text.lines().map(String::from).collect()))
        } else {
            None
        };
        (crate::npy::read(a.embeddings)?, names)
    };
    let r = row_annotations(a, names.as_ref().map(|(p, n)| (p.as_path(), n.as_slice())))?;
    if x.rows != r.total {
        let (what, fix) = match &names {
            Some((listed, _)) => (
                format!("{} rows but {} lists {} cells", x.rows, listed.display(), r.total),
                "the embeddings and their cell list must come from one `embed` run; embed again (it writes both)",
            ),
            None => (
                format!("{} rows but {} has {} cells", x.rows, a.input, r.total),
                "embed the same file (rows = its cells in order), or keep the .cells.txt list `embed` writes",
            ),
        };
        return Err(Error::bad_value(a.embeddings, "rows", what, fix));
    }
    if r.rows.len() == r.total {
        return Ok((x, r));
    }
    let data = r
        .rows
        .iter()
        .flat_map(|&i| x.row(i).iter().copied())
        .collect();
    let x = crate::npy::Matrix {
        rows: r.rows.len(),
        cols: x.cols,
        data,
    };
    Ok((x, r))
}

/// Writes predictions.csv, metrics.csv, per_class.csv and summary.json.
pub fn write_evaluation(dir: &Path, cells: &[String], ev: &Evaluation) -> Result<()> {
    let mut p = Table::new(["cell", "fold", "truth", "pred"]);
    for r in &ev.predictions {
        p.push([
            cells[r.cell].clone(),
            r.fold.clone(),
            r.truth.clone(),
            r.pred.clone(),
        ]);
    }
    write_atomic(dir.join("predictions.csv"), p.to_csv().as_bytes())?;
    let mut m = Table::new([
        "fold",
        "n_train",
        "n_val",
        "n_test",
        "accuracy",
        "macro_f1",
        "epochs",
        "unseen_labels",
    ]);
    for f in &ev.folds {
        m.push([
            f.fold.clone(),
            f.n_train.to_string(),
            f.n_val.to_string(),
            f.n_test.to_string(),
            format!("{:.6}", f.accuracy),
            format!("{:.6}", f.macro_f1),
            f.epochs.to_string(),
            f.unseen_labels.join(";"),
        ]);
    }
    write_atomic(dir.join("metrics.csv"), m.to_csv().as_bytes())?;
    let mut c = Table::new(["label", "support", "precision", "recall", "f1"]);
    for s in &ev.per_class {
        c.push([
            s.label.clone(),
            s.support.to_string(),
            format!("{:.6}", s.precision),
            format!("{:.6}", s.recall),
            format!("{:.6}", s.f1),
        ]);
    }
    write_atomic(dir.join("per_class.csv"), c.to_csv().as_bytes())?;
    let summary = serde_json::json!({
        "accuracy_mean": ev.accuracy_mean, "accuracy_sd": ev.accuracy_sd,
        "macro_f1_mean": ev.macro_f1_mean, "macro_f1_sd": ev.macro_f1_sd,
        "n_folds": ev.folds.len(), "classifier": ev.classifier,
    });
    write_atomic(
        dir.join("summary.json"),
        (serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n").as_bytes(),
    )
}

/// `cellsentence annotate`.
pub fn cmd_annotate(a: &AnnotateArgs) -> Result<()> {
    // an `embed` killed mid-commit is finished first, so the rows and the names belong together
    let dir = a.embeddings.parent().filter(|d| !d.as_os_str().is_empty());
    crate::output::recover(dir.unwrap_or(Path::new(".")))?;
    crate::output::check_out(
        "--out",
        &a.out,
        &[a.embeddings.as_path(), Path::new(&a.input)],
        crate::output::OutKind::Folder {
            marker: "summary.json",
        },
    )?;
    let (
        x,
        Rows {
            cells,
            labels,
            batches,
            ..
        },
    ) = labelled_rows(&a.row_source())?;
    classify::check_features(&x, &labels, &a.embeddings.display().to_string())?;
    let folds = match &batches {
        Some(b) => classify::leave_one_batch_out(&labels, b, a.val_fraction, a.seed)?,
        None => classify::stratified_kfold(&labels, a.folds, a.val_fraction, a.seed)?,
    };
    let k = batches.is_none().then_some(a.folds);
    for w in classify::split_warnings(&labels, &folds, k) {
        eprintln!("warning: {w}");
    }
    let classifier = match a.classifier {
        ClassifierArg::Mlp => Classifier::Mlp(MlpConfig {
            seed: a.mlp_seed,
            ..MlpConfig::default()
        }),
        ClassifierArg::Svm => Classifier::Svm(SvmConfig {
            seed: a.seed,
            ..SvmConfig::default()
        }),
    };
    let (device, _) = crate::lm::device_and_kind(a.cuda, crate::lm::Precision::F32)?;
    let ev = classify::evaluate(&x, &labels, &folds, &classifier, device)?;
    let staged = crate::output::StagedDir::new(&a.out)?;
    write_evaluation(staged.path(), &cells, &ev)?;
    let summary = std::fs::read_to_string(staged.path().join("summary.json")).unwrap_or_default();
    staged.commit("annotate")?;
    print_out(&format!("{}\n", summary.trim()))
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

/// `cellsentence bench annotate`: MLP seconds per epoch vs PyTorch (same features and folds) and
/// linear-SVM fit time vs scikit-learn `LinearSVC` (same rows), in one run.
pub fn cmd_bench_annotate(a: &BenchAnnotateArgs) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fx = root.join("tests/fixtures/annotation");
    let work = PathBuf::from(".cache/bench");
    let (ours_epoch, correct) = bench_mlp(&fx)?;
    let (ours_svm, svm_acc) = bench_svm(a, &work)?;
    let r = bench_reference(a, &root, &fx, &work)?;
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
    print_out(&md)
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
fn bench_svm(a: &BenchAnnotateArgs, work: &Path) -> Result<(f64, f64)> {
    // SVM on log-normalized HVG expression of baron_human, first stratified fold
    let (_, ds) = load(&InputArgs {
        input: "baron_human".into(),
        layer: None,
        raw: false,
        dirs: a.dirs.clone(),
    })?;
    let p = crate::pipeline::prepare(
        ds,
        Some(&crate::preprocess::PreprocessParams::default()),
        false,
    )?;
    let h = crate::pipeline::select_hvg(
        &p,
        &crate::hvg::HvgParams::default(),
        crate::pipeline::HvgInput::Log,
        None,
    )?;
    let hx = crate::experiment::annotation::hvg_dense(&p, &h.indices());
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
fn bench_reference(
    a: &BenchAnnotateArgs,
    root: &Path,
    fx: &Path,
    work: &Path,
) -> Result<serde_json::Value> {
    let script = root.join("tests/fixtures/bench_annotation.py");
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
