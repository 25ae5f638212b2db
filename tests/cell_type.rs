//! The LM at Cell2Sentence's own task (`finetune-lm --task cell_type`): a killed fine-tune resumes
//! to the same model, a pretrained start keeps its weights and grows its vocabulary, and answers
//! are restricted to the trained labels.
use cellsentence::lm::{self, cell_type, Device, Kind, TrainConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cellsentence")
}

/// The model files of a directory that must not depend on wall time.
fn weights(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    [
        "model.safetensors",
        "tokenizer.json",
        "config.json",
        "cell_type.json",
    ]
    .iter()
    .map(|n| (n.to_string(), std::fs::read(dir.join(n)).unwrap()))
    .collect()
}

fn finetune(cwd: &Path, out: &str, kill_at: Option<&str>) -> String {
    let fx = root().join("tests/fixtures/synthetic.h5ad");
    let cfg = r#"{"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64, "steps": 12, "batch_size": 8, "max_genes": 40, "eval_every": 4}"#;
    let mut c = Command::new(bin());
    c.current_dir(cwd).args([
        "--quiet",
        "finetune-lm",
        "--task",
        "cell_type",
        "--input",
        fx.to_str().unwrap(),
        "--label-key",
        "cell_type",
        "--config",
        cfg,
        "--out",
        out,
    ]);
    common::run_or_kill_at(&mut c, kill_at)
}

#[test]
fn a_killed_cell_type_finetune_resumes_to_the_same_model() {
    let d = tempfile::tempdir().unwrap();
    finetune(d.path(), "whole", None);
    finetune(d.path(), "m", Some("finetune-state-saved"));
    assert!(d.path().join("m.partial/state.json").is_file());
    assert!(!d.path().join("m").exists());
    let out = finetune(d.path(), "m", None);
    assert!(out.contains("\"best_step\""), "{out}");
    assert_eq!(
        weights(&d.path().join("whole")),
        weights(&d.path().join("m"))
    );
    assert!(!d.path().join("m.partial").exists());
    let head = cell_type::CellTypeHead::read(&d.path().join("m")).unwrap();
    assert_eq!(head.curve.len(), 3);
    let best = head
        .curve
        .iter()
        .min_by(|a, b| a.loss.total_cmp(&b.loss))
        .unwrap();
    assert_eq!(head.best_step, best.step);
}

/// The smallest model shape the tests train (1 layer, hidden 32).
fn tiny() -> TrainConfig {
    TrainConfig {
        layers: 1,
        hidden: 32,
        heads: 2,
        intermediate: 64,
        ..TrainConfig::default()
    }
}

/// A tiny model trained one step on [`toy`] sentences with the plain next-gene objective (not
/// fine-tuned for cell types), in `dir/plain`.
fn plain_model(dir: &Path) -> (Vec<Vec<String>>, PathBuf) {
    let (words, _) = toy(12);
    let c = TrainConfig {
        max_genes: 12,
        steps: 1,
        batch_size: 4,
        ..tiny()
    };
    let m = dir.join("plain");
    lm::train(&words, &c, None, &m, Device::Cpu, false).unwrap();
    (words, m)
}

fn toy(n: usize) -> (Vec<Vec<String>>, Vec<String>) {
    let types = ["alpha", "beta cell", "delta"];
    let mut words = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let k = i % 3;
        let mut s: Vec<String> = (0..4).map(|j| format!("M{k}_{j}")).collect();
        s.extend((0..8).map(|j| format!("HK{}", (i + j) % 50)));
        words.push(s);
        labels.push(types[k].to_string());
    }
    (words, labels)
}

#[test]
fn a_pretrained_start_keeps_its_weights_and_grows_its_vocabulary() {
    let d = tempfile::tempdir().unwrap();
    let (words, labels) = toy(60);
    // a base whose padded vocabulary (64 rows) has no room for the task's 4 tokens
    let base_cfg = TrainConfig {
        max_genes: 12,
        steps: 3,
        batch_size: 8,
        ..tiny()
    };
    let base = d.path().join("base");
    lm::train(&words, &base_cfg, None, &base, Device::Cpu, false).unwrap();
    let base_ck = lm::load(&base, Device::Cpu, Kind::Float).unwrap();
    let v0 = base_ck.tokenizer.vocab_size();
    assert!(v0 + 4 > 64, "the toy vocabulary must not fit: {v0}");
    let c = TrainConfig {
        steps: 0,
        ..base_cfg.clone()
    };
    let out = d.path().join("ft0");
    let part = cell_type::Labelled {
        sentences: &words,
        labels: &labels,
    };
    cell_type::finetune(part, part, &c, Some(&base), &out, &[], Device::Cpu, false).unwrap();
    let ck = lm::load(&out, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(ck.model.cfg.vocab_size, 128);
    let name = "gpt_neox.embed_in.weight";
    let old = &base_ck.vs.variables()[name];
    let new = &ck.vs.variables()[name];
    assert_eq!(
        (new.narrow(0, 0, old.size()[0]) - old)
            .abs()
            .max()
            .double_value(&[]),
        0.0,
        "the base's rows changed"
    );
    // trained briefly, it answers with its labels only, scores summing to one
    let c = TrainConfig {
        steps: 100,
        lr: 3e-3,
        eval_every: 20,
        ..base_cfg
    };
    let out = d.path().join("ft");
    let r =
        cell_type::finetune(part, part, &c, Some(&base), &out, &[], Device::Cpu, false).unwrap();
    assert_eq!(r.head.labels, vec!["alpha", "beta cell", "delta"]);
    assert_eq!(r.head.tokens[1], "CELL_TYPE:BETA_CELL");
    let ck = lm::load(&out, Device::Cpu, Kind::Float).unwrap();
    let ans = cell_type::predict(&ck, &words, false).unwrap();
    for i in 0..ans.scores.rows {
        let s: f32 = ans.scores.row(i).iter().sum();
        assert!((s - 1.0).abs() < 1e-4);
    }
    let right = ans
        .predicted
        .iter()
        .zip(&labels)
        .filter(|(p, t)| p == t)
        .count();
    assert!(
        right * 10 >= labels.len() * 9,
        "{right} of {} right",
        labels.len()
    );
}

/// A model that was not fine-tuned for the task is refused by name, with the fix.
#[test]
fn predicting_with_a_plain_lm_names_the_fix() {
    let d = tempfile::tempdir().unwrap();
    let (words, m) = plain_model(d.path());
    let ck = lm::load(&m, Device::Cpu, Kind::Float).unwrap();
    let e = cell_type::predict(&ck, &words, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cell_type.json") && e.contains("finetune-lm"),
        "{e}"
    );
}

/// The held-out default's answer-only stage (issue 29 item 3) reads the labels of the corpus
/// datasets alone: with a copy of the data named as the evaluated dataset in the same folder, the
/// evaluated copy is never planned, its labels never enter the manifest, and holding out every
/// labelled dataset is refused by name. The manifest records the label keys and vocabulary.
#[test]
fn the_answer_stage_reads_corpus_labels_only() {
    use cellsentence::experiment::pretrain::{self, CorpusSpec};
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let fx = root().join("tests/fixtures/synthetic.h5ad");
    for id in ["synthetic", "evaluated"] {
        std::fs::copy(&fx, data.join(format!("{id}.h5ad"))).unwrap();
    }
    let dirs = vec![data.clone()];
    let cache = cellsentence::cache::Cache::new(d.path().join("cache"), false).quiet(true);
    let spec = CorpusSpec {
        exclude: vec!["evaluated".into()],
        ..CorpusSpec::default()
    };
    let c = TrainConfig {
        max_genes: 30,
        steps: 4,
        batch_size: 4,
        eval_every: 2,
        ..tiny()
    };
    let base = d.path().join("base");
    pretrain::pretrain(&spec, &c, &dirs, &cache, "test", &base, Device::Cpu, false).unwrap();
    let out = d.path().join("answer");
    // room for the separator and the answer within the base's positions
    let c = TrainConfig { max_genes: 24, ..c };
    let r = pretrain::answer_stage(
        &spec,
        &[],
        &c,
        &base,
        &dirs,
        &cache,
        "test",
        &out,
        Device::Cpu,
        false,
    )
    .unwrap();
    let corpus = lm::Corpus::read(&out).unwrap().unwrap();
    assert_eq!(corpus.task.as_deref(), Some(lm::corpus::ANSWER_TASK));
    let keys: Vec<(&str, &str)> = corpus
        .label_keys
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(keys, [("synthetic", "cell_type")]);
    assert_eq!(corpus.label_vocabulary, r.head.labels);
    assert!(corpus.held_out.contains_key("evaluated"));
    // the manifest names the corpus files by digest: a byte-identical copy is caught as seen
    let digest = cache.file_digest(&data.join("evaluated.h5ad")).unwrap();
    assert!(lm::check_held_out(&out, "evaluated", &digest, false).is_err());
    // holding out every labelled dataset leaves the stage nothing to read
    let none = CorpusSpec {
        datasets: Some(vec!["synthetic".into()]),
        exclude: vec!["synthetic".into()],
        ..CorpusSpec::default()
    };
    let e = pretrain::answer_stage(
        &none,
        &[],
        &c,
        &base,
        &dirs,
        &cache,
        "test",
        &d.path().join("x"),
        Device::Cpu,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no labelled corpus dataset is left"), "{e}");
    assert!(!d.path().join("x").exists());
    // a dataset kept aside to choose the default on gives the stage none of its labels: keeping
    // the only labelled one aside is refused by name, before any training
    let e = pretrain::answer_stage(
        &spec,
        &["synthetic".to_string()],
        &c,
        &base,
        &dirs,
        &cache,
        "test",
        &d.path().join("y"),
        Device::Cpu,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("select_on") && e.contains("synthetic"), "{e}");
    assert!(!d.path().join("y").exists());
}

/// NaN in a checkpoint's f32 weights is named as such (issue 32 family 6): not blamed on reduced
/// precision, which the model does not use.
#[test]
fn nan_weights_are_named_not_blamed_on_precision() {
    let d = tempfile::tempdir().unwrap();
    let (words, m) = plain_model(d.path());
    let ck = lm::load(&m, Device::Cpu, Kind::Float).unwrap();
    let texts = vec![words[0].join(" ")];
    let opts = lm::EmbedOptions::default();
    assert!(lm::embed_texts(&ck, &texts, &opts).is_ok());
    tch::no_grad(|| {
        let mut vars = ck.vs.variables();
        let (_, w) = vars
            .iter_mut()
            .find(|(n, _)| n.contains("dense_h_to_4h.weight"))
            .expect("an MLP weight");
        let _ = w.fill_(f64::NAN);
    });
    let e = lm::embed_texts(&ck, &texts, &opts).unwrap_err().to_string();
    assert!(e.contains("weights hold NaN"), "{e}");
    assert!(!e.contains("reduced precision"), "{e}");
}

/// `attribute` on a model fine-tuned for cell types explains its own answer (issue 29 item 4):
/// the table says so, ranks genes only (never the task token), and the MLP's options are refused.
#[test]
fn attribute_reads_a_fine_tuned_model_through_its_answer() {
    let d = tempfile::tempdir().unwrap();
    finetune(d.path(), "m", None);
    let fx = root().join("tests/fixtures/synthetic.h5ad");
    let run = |extra: &[&str]| {
        let mut c = Command::new(bin());
        c.current_dir(d.path()).args([
            "--quiet",
            "attribute",
            "--model",
            "m",
            "--input",
            fx.to_str().unwrap(),
            "--label-key",
            "cell_type",
        ]);
        c.args(extra).output().unwrap()
    };
    // an option the chosen method does not use is refused, before any work
    let o = run(&["--ig-steps", "8", "--out", "attr"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--ig-steps") && err.contains("integrated_gradients"),
        "{err}"
    );
    let o = run(&["--folds", "3", "--out", "attr"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--folds") && err.contains("own answer"),
        "{err}"
    );
    assert!(!d.path().join("attr").exists());
    let o = run(&["--out", "attr"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(d.path().join("attr/top_genes.md")).unwrap();
    assert!(md.contains("the LM's own answer"), "{md}");
    let csv = std::fs::read_to_string(d.path().join("attr/top_genes.csv")).unwrap();
    assert!(csv.lines().count() > 1, "{csv}");
    assert!(!csv.contains("<|CELL_TYPE|>"), "{csv}");
    // markers: an unknown cell type is refused by name, an unknown gene warned about by name
    let first = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .to_string();
    let m = d.path().join("markers.csv");
    std::fs::write(&m, "cell_type,gene\nghost_type,INS\n").unwrap();
    let o = run(&["--markers", m.to_str().unwrap(), "--out", "attr2"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ghost_type") && err.contains(&first), "{err}");
    std::fs::write(&m, format!("cell_type,gene\n{first},NOTAGENE1\n")).unwrap();
    let o = run(&["--markers", m.to_str().unwrap(), "--out", "attr2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("NOTAGENE1") && err.contains("vocabulary"),
        "{err}"
    );
}
