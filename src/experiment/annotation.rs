//! The annotation experiments: Figure IX (intra-dataset, stratified k-fold) and Figures X–XI
//! (inter-dataset, leave one batch out).
//!
//! Per dataset: QC + normalize + log + HVG (lazily, only when a stage is not cached), then per method
//! a cached evaluation (every fold's metrics and test predictions). The language-model rows train a
//! small cell-sentence LM per sentence mode (cached as a model directory) unless the file names a
//! checkpoint (e.g. C2S-Pythia-410M), embed the top-`max_genes` prompts (cached .npy) and train the
//! paper's MLP on the embeddings.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lm_protocol::{self, LmProtocol, LmSource, PretrainSection};
use super::{mode_label, Experiment, RunDataset, RunSummary};
use crate::cache::Cache;
use crate::classify::{
    self, metrics, Classifier, Evaluation, Fold, MlpConfig, ScmapConfig, SvmConfig,
};
use crate::error::{Error, Result};
use crate::figure;
use crate::lm::{self, EmbedOptions, TrainConfig};
use crate::npy::Matrix;
use crate::paper::Reported;
use crate::pipeline::{self, Prepared};
use crate::report::{self, Col};
use crate::sentence::{GeneSet, SentenceParams};

/// How cells are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    /// Stratified k-fold within the dataset (Figure IX).
    Kfold,
    /// Leave one batch out (Figures X, XI).
    Batch,
}

/// A row of the annotation table: features + classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Cell-sentence LM embeddings (one per sentence mode) → MLP: the paper's C2S rows.
    Lm,
    /// Linear SVM on log-normalized HVG expression: the paper's SVM row.
    HvgSvm,
    /// MLP on PCA(50) of HVG expression.
    Pca,
    /// MLP on log-normalized HVG expression.
    HvgMlp,
    /// scmap-cluster on log-normalized expression of all genes (its own 500-gene selection).
    Scmap,
}

/// Annotation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnotationSection {
    pub split: SplitKind,
    /// Folds of the k-fold split.
    pub folds: usize,
    /// Stratified share of each training part used for early stopping.
    pub val_fraction: f64,
    /// obs column with cell types (default: the dataset's known one, else `cell_type`).
    pub label_key: Option<String>,
    /// obs column with batches for `split: batch` (default: the dataset's known one).
    pub batch_key: Option<String>,
    pub methods: Vec<Method>,
    /// A Hugging Face GPT-NeoX checkpoint to embed with (e.g. C2S-Pythia-410M) instead of training
    /// the small LM.
    pub model: Option<PathBuf>,
    /// Genes per prompt.
    pub max_genes: usize,
    /// The small LM (trained per dataset and sentence mode when `model` is not given).
    pub lm: TrainConfig,
    pub mlp: MlpConfig,
    pub svm: SvmConfig,
    pub scmap: ScmapConfig,
    pub pca_components: usize,
    /// Evaluate datasets that are in the pretraining corpus (`corpus.json`) of `model`; their rows
    /// are marked "seen in pretraining". Default: such a dataset is an error.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_seen: bool,
    /// Where the LM rows' models come from when `model` is not given: `per_mode` (a small LM per
    /// dataset and mode, trained on the evaluated cells) or `pretrained` (the paper's protocol).
    #[serde(skip_serializing_if = "LmProtocol::is_default")]
    pub lm_protocol: LmProtocol,
    /// The `pretrained` protocol's corpus, model, fine-tunes and control.
    #[serde(skip_serializing_if = "PretrainSection::is_default")]
    pub pretrain: PretrainSection,
    /// Where the LM and the MLP run: `auto` (CUDA when libtorch sees a GPU), `cpu` or `cuda`.
    /// Byte-identical reruns are promised on CPU.
    #[serde(skip_serializing_if = "DeviceChoice::is_auto")]
    pub device: DeviceChoice,
}

/// Device setting of the annotation experiments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl DeviceChoice {
    fn is_auto(&self) -> bool {
        *self == DeviceChoice::Auto
    }

    /// The libtorch device; `cuda` without a visible GPU is an error.
    pub fn resolve(self) -> Result<tch::Device> {
        match self {
            DeviceChoice::Auto => Ok(tch::Device::cuda_if_available()),
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(tch::Device::Cuda(0)),
            DeviceChoice::Cuda => Err(Error::param(
                "annotation.device",
                "cuda was asked for but libtorch sees no GPU (`cellsentence env`); use auto or cpu",
            )),
        }
    }
}

impl Default for AnnotationSection {
    fn default() -> Self {
        Self {
            split: SplitKind::Kfold,
            folds: 5,
            val_fraction: 0.1,
            label_key: None,
            batch_key: None,
            methods: vec![Method::Lm, Method::HvgSvm, Method::Pca, Method::Scmap],
            model: None,
            max_genes: 200,
            lm: TrainConfig::default(),
            mlp: MlpConfig::default(),
            svm: SvmConfig::default(),
            scmap: ScmapConfig::default(),
            pca_components: 50,
            allow_seen: false,
            lm_protocol: LmProtocol::PerMode,
            pretrain: PretrainSection::default(),
            device: DeviceChoice::Auto,
        }
    }
}

/// One evaluated row.
#[derive(Debug, Clone)]
struct Row {
    dataset: String,
    paper: Option<String>,
    method: Method,
    mode: Option<GeneSet>,
    /// The model behind an LM row.
    source: LmSource,
    eval: Evaluation,
    /// The small LM behind an LM row (its training log feeds the loss figure).
    lm_dir: Option<PathBuf>,
    /// The dataset is in the pretraining corpus of the row's model (`allow_seen`).
    seen: bool,
}

fn method_label(m: Method, mode: Option<GeneSet>, source: LmSource) -> String {
    match (m, mode) {
        (Method::Lm, Some(g)) => format!("{} {} sentences + MLP", source.prefix(), mode_label(g)),
        (Method::Lm, None) => format!("{} + MLP", source.prefix()),
        (Method::HvgSvm, _) => "SVM (HVG expression)".into(),
        (Method::Pca, _) => "MLP (PCA of HVG)".into(),
        (Method::HvgMlp, _) => "MLP (HVG expression)".into(),
        (Method::Scmap, _) => "scmap-cluster".into(),
    }
}

/// The paper's row this one reproduces.
fn paper_row(m: Method, mode: Option<GeneSet>, source: LmSource) -> Option<&'static str> {
    let paper_protocol = matches!(source, LmSource::Own | LmSource::Pretrained);
    match (m, mode) {
        (Method::Lm, Some(GeneSet::All)) if paper_protocol => Some("C2S Pythia-410M"),
        (Method::Lm, Some(GeneSet::Hvg)) if paper_protocol => Some("HVG C2S Pythia-410M"),
        (Method::Lm, _) => None,
        (Method::HvgSvm, _) => Some("SVM"),
        (Method::Scmap, _) => Some("scmap"),
        _ => None,
    }
}

/// Dense HVG expression rows.
pub fn hvg_dense(p: &Prepared, hvg: &[usize]) -> Matrix {
    let pos: BTreeMap<usize, usize> = hvg.iter().enumerate().map(|(k, &j)| (j, k)).collect();
    let n = p.data.n_cells();
    let mut data = vec![0f32; n * hvg.len()];
    for i in 0..n {
        let (cols, vals) = p.data.x.row(i);
        for (&j, &v) in cols.iter().zip(vals) {
            if let Some(&k) = pos.get(&(j as usize)) {
                data[i * hvg.len() + k] = v;
            }
        }
    }
    Matrix {
        rows: n,
        cols: hvg.len(),
        data,
    }
}

/// Dense expression rows of every gene.
pub fn all_dense(p: &Prepared) -> Matrix {
    let (n, d) = (p.data.n_cells(), p.data.genes.len());
    let mut data = vec![0f32; n * d];
    for i in 0..n {
        let (cols, vals) = p.data.x.row(i);
        for (&j, &v) in cols.iter().zip(vals) {
            data[i * d + j as usize] = v;
        }
    }
    Matrix {
        rows: n,
        cols: d,
        data,
    }
}

struct Ctx<'a> {
    e: &'a Experiment,
    a: &'a AnnotationSection,
    d: &'a RunDataset,
    cache: &'a Cache,
    quiet: bool,
    prepared: Option<(Prepared, Vec<usize>)>,
    /// LM directories already resolved in this run (each stage is counted once).
    lm_dirs: Vec<(LmSource, GeneSet, PathBuf)>,
    /// Every dataset this run evaluates (held out of a pretraining corpus).
    evaluated: &'a [String],
    data_dir: Option<&'a Path>,
}

impl Ctx<'_> {
    fn prepared(&mut self) -> Result<&(Prepared, Vec<usize>)> {
        if self.prepared.is_none() {
            if !self.quiet {
                eprintln!("[run] reading {}", self.d.entry.path.display());
            }
            let ds = self.d.entry.load(!self.quiet)?;
            let p =
                pipeline::prepare(ds, self.d.entry.counts.then_some(&self.e.preprocess), false)?;
            let h = pipeline::select_hvg(&p, &self.e.hvg.params(), self.e.hvg.on, None)?;
            self.prepared = Some((p, h.indices()));
        }
        Ok(self.prepared.as_ref().expect("prepared above"))
    }

    fn label_key(&self) -> String {
        self.a
            .label_key
            .clone()
            .or_else(|| self.d.entry.label_key.clone())
            .unwrap_or_else(|| "cell_type".into())
    }

    /// Labels and folds of the QC-kept cells.
    fn folds(&mut self) -> Result<(Vec<String>, Vec<Fold>)> {
        let (split, k, vf, seed) = (self.a.split, self.a.folds, self.a.val_fraction, self.e.seed);
        let lk = self.label_key();
        let bk = self
            .a
            .batch_key
            .clone()
            .or_else(|| self.d.entry.batch_key.clone());
        let (p, _) = self.prepared()?;
        let labels = p.data.obs_labels(
            &lk,
            "remove the unlabelled cells from the file, or choose another annotation.label_key",
        )?;
        let folds = match split {
            SplitKind::Kfold => classify::stratified_kfold(&labels, k, vf, seed)?,
            SplitKind::Batch => {
                let bk = bk.ok_or_else(|| {
                    Error::param(
                        "annotation.batch_key",
                        "the dataset has no known batch column; set annotation.batch_key",
                    )
                })?;
                let batches = p.data.obs_labels(
                    &bk,
                    "give every cell a batch, or use annotation.split: kfold",
                )?;
                classify::leave_one_batch_out(&labels, &batches, vf, seed)?
            }
        };
        Ok((labels, folds))
    }

    /// The model behind an LM row: the file's checkpoint, the small LM of this dataset and mode,
    /// or the pretrained / fine-tuned / untrained model (cached stages, trained when missing).
    fn lm_model(&mut self, mode: GeneSet, source: LmSource) -> Result<PathBuf> {
        let (e, a, id) = (self.e, self.a, self.d.entry.id.clone());
        if let Some(m) = &a.model {
            return Ok(m.clone());
        }
        let key_mode = if matches!(source, LmSource::Pretrained | LmSource::Untrained) {
            GeneSet::All // one model for both modes
        } else {
            mode
        };
        if let Some((.., dir)) = self
            .lm_dirs
            .iter()
            .find(|(s, g, _)| *s == source && *g == key_mode)
        {
            return Ok(dir.clone());
        }
        let device = a.device.resolve()?;
        let pretrained = |cx: &Self, untrained: bool| {
            lm_protocol::pretrained_model(
                e,
                &a.pretrain,
                cx.evaluated,
                cx.data_dir,
                cx.cache,
                untrained,
                device,
                cx.quiet,
            )
        };
        let digest = self.cache.file_digest(&self.d.entry.path)?;
        let (dir, _) = match source {
            LmSource::Own => self.cache.dir_artifact(
                "lm",
                &format!("{id} {}", mode_label(mode)),
                &(&lm_inputs(&digest, e, mode), &a.lm),
                |out| {
                    let words = self.sentences(mode, a.lm.max_genes)?;
                    lm::train(&words, &a.lm, None, out, device, !self.quiet)?;
                    Ok(())
                },
            )?,
            LmSource::Pretrained => pretrained(self, false)?,
            LmSource::Untrained => pretrained(self, true)?,
            LmSource::FineTuned => {
                let base = self.lm_model(mode, LmSource::Pretrained)?;
                let c = a.pretrain.finetune.clone().unwrap_or_default();
                let label = format!("{id} {} (from the pretrained model)", mode_label(mode));
                let inputs = lm_inputs(&digest, e, mode);
                let quiet = self.quiet;
                lm_protocol::finetuned_model(
                    &base,
                    &c,
                    &inputs,
                    &label,
                    self.cache,
                    || self.sentences(mode, c.max_genes),
                    device,
                    quiet,
                )?
            }
        };
        self.lm_dirs.push((source, key_mode, dir.clone()));
        Ok(dir)
    }

    fn lm_features(&mut self, mode: GeneSet, source: LmSource) -> Result<Matrix> {
        let (e, a, id) = (self.e, self.a, self.d.entry.id.clone());
        let digest = self.cache.file_digest(&self.d.entry.path)?;
        let base = lm_inputs(&digest, e, mode);
        let model = self.lm_model(mode, source)?;
        let style = lm::prompt_style(&model)?;
        let model_digest = self.cache.file_digest(&model)?;
        let (m, _) = self.cache.npy(
            "embeddings",
            &format!("{id} {}", mode_label(mode)),
            &(&base, &model_digest, &style, a.max_genes),
            || {
                let words = self.sentences(mode, a.max_genes)?;
                let ck = lm::load(&model, a.device.resolve()?, tch::Kind::Float)?;
                lm::embed_sentences(
                    &ck,
                    &words,
                    &style,
                    a.max_genes,
                    &EmbedOptions {
                        progress: !self.quiet,
                        ..Default::default()
                    },
                )
            },
        )?;
        Ok(m)
    }

    fn sentences(&mut self, mode: GeneSet, max_genes: usize) -> Result<Vec<Vec<String>>> {
        let tie = self.e.sentences.tie_seed;
        let (p, hvg) = self.prepared()?;
        let h = (mode == GeneSet::Hvg).then(|| hvg.clone());
        let x = match &h {
            Some(idx) => p.data.x.select_cols(idx),
            None => p.data.x.clone(),
        };
        let names: Vec<String> = match &h {
            Some(idx) => idx.iter().map(|&j| p.data.genes[j].clone()).collect(),
            None => p.data.genes.clone(),
        };
        let s = crate::sentence::cell_sentences(
            &x,
            &names,
            &SentenceParams {
                seed: tie,
                max_genes: Some(max_genes),
            },
        )?;
        Ok(s.iter()
            .map(|l| {
                l.split(' ')
                    .filter(|w| !w.is_empty())
                    .map(String::from)
                    .collect()
            })
            .collect())
    }
}

/// What the small LM of a dataset and mode depends on (besides its training settings).
fn lm_inputs<'a>(
    digest: &'a str,
    e: &'a Experiment,
    mode: GeneSet,
) -> (
    &'a str,
    crate::preprocess::PreprocessParams,
    &'a super::HvgSection,
    u32,
    GeneSet,
) {
    (
        digest,
        e.preprocess.clone(),
        &e.hvg,
        e.sentences.tie_seed,
        mode,
    )
}

fn dataset_rows(
    e: &Experiment,
    a: &AnnotationSection,
    d: &RunDataset,
    cache: &Cache,
    quiet: bool,
    (evaluated, data_dir): (&[String], Option<&Path>),
) -> Result<Vec<Row>> {
    let mut cx = Ctx {
        e,
        a,
        d,
        cache,
        quiet,
        prepared: None,
        lm_dirs: Vec::new(),
        evaluated,
        data_dir,
    };
    let digest = cache.file_digest(&d.entry.path)?;
    let mut rows = Vec::new();
    let mut units: Vec<(Method, Option<GeneSet>, LmSource)> = Vec::new();
    for &m in &a.methods {
        if m == Method::Lm {
            for s in LmSource::all(a.lm_protocol, &a.pretrain, a.model.as_deref()) {
                units.extend(e.modes.iter().map(|&g| (m, Some(g), s)));
            }
        } else {
            units.push((m, None, LmSource::Own));
        }
    }
    for (m, mode, source) in units {
        let classifier = match m {
            Method::HvgSvm => Classifier::Svm(a.svm.clone()),
            Method::Scmap => Classifier::Scmap(a.scmap.clone()),
            _ => Classifier::Mlp(a.mlp.clone()),
        };
        let lm_part = (m == Method::Lm).then_some((&a.lm, &a.model, a.max_genes));
        let inputs = (
            &digest,
            e.preprocess.clone(),
            &e.hvg,
            e.sentences.tie_seed,
            e.seed,
            a.split,
            a.folds,
            a.val_fraction,
            cx.label_key(),
            &a.batch_key,
            m,
            mode,
            &classifier,
            lm_part,
            a.pca_components,
        );
        let label = format!("{} {}", d.entry.id, method_label(m, mode, source));
        // an LM is a stage of its own (its training log feeds the loss figure): deleting it
        // retrains it, and only it
        let lm_dir = match (m, mode) {
            (Method::Lm, Some(g)) => Some(cx.lm_model(g, source)?),
            _ => None,
        };
        // checked on every run, cached or not: a model's corpus must not hold the dataset (a
        // fine-tune is checked through its base, the pretrained model)
        let seen = match (&lm_dir, mode) {
            (Some(dir), Some(g)) => {
                let corpus_of = match source {
                    LmSource::FineTuned => cx.lm_model(g, LmSource::Pretrained)?,
                    _ => dir.clone(),
                };
                lm::check_held_out(&corpus_of, &d.entry.id, &digest, a.allow_seen)?
            }
            _ => false,
        };
        let model_digest = match (&lm_dir, source) {
            (Some(dir), LmSource::FineTuned | LmSource::Pretrained | LmSource::Untrained) => {
                Some(cache.file_digest(dir)?)
            }
            _ => None,
        };
        // rows of the first protocol keep their keys; the others add the model's digest
        let key = match &model_digest {
            None => StageKey::Legacy(&inputs),
            Some(md) => StageKey::Extended(&inputs, (source, md.as_str())),
        };
        let (ev, _) = cache.json("annotation", &label, &key, || {
            let (labels, folds) = cx.folds()?;
            let x = match m {
                Method::Lm => cx.lm_features(mode.expect("LM rows have a mode"), source)?,
                Method::HvgSvm | Method::HvgMlp => {
                    let (p, h) = cx.prepared()?;
                    hvg_dense(p, h)
                }
                Method::Scmap => all_dense(&cx.prepared()?.0),
                Method::Pca => {
                    let (p, h) = cx.prepared()?;
                    let x = hvg_dense(p, h);
                    let all: Vec<usize> = (0..x.rows).collect();
                    classify::pca(&x, &all, a.pca_components)
                }
            };
            classify::evaluate(&x, &labels, &folds, &classifier, a.device.resolve()?)
        })?;
        rows.push(Row {
            dataset: d.entry.id.clone(),
            paper: d.paper.clone(),
            method: m,
            mode,
            source,
            eval: ev,
            lm_dir: lm_dir.filter(|_| a.model.is_none()),
            seen,
        });
    }
    Ok(rows)
}

/// One LM row of a dataset, typed, for other runners (the scaling sweep).
pub struct LmEvaluation {
    pub mode: GeneSet,
    pub source: LmSource,
    pub eval: Evaluation,
    /// The model behind the row.
    pub model: Option<PathBuf>,
}

/// The LM rows of one dataset under `e.annotation` (cached stages, as `run` computes them).
pub fn lm_evaluations(
    e: &Experiment,
    d: &RunDataset,
    cache: &Cache,
    quiet: bool,
    evaluated: &[String],
    data_dir: Option<&Path>,
) -> Result<Vec<LmEvaluation>> {
    let a = AnnotationSection {
        methods: vec![Method::Lm],
        ..e.annotation.clone()
    };
    let rows = dataset_rows(e, &a, d, cache, quiet, (evaluated, data_dir))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(LmEvaluation {
                mode: r.mode?,
                source: r.source,
                model: r.lm_dir,
                eval: r.eval,
            })
        })
        .collect())
}

/// Every hidden state (0 = token embeddings … last = final output) of `model` on the dataset's
/// `mode` sentences, each scored with the experiment's split and MLP (one cached stage).
pub fn layer_evaluations(
    e: &Experiment,
    d: &RunDataset,
    cache: &Cache,
    model: &Path,
    mode: GeneSet,
    quiet: bool,
) -> Result<Vec<Evaluation>> {
    let a = &e.annotation;
    let mut cx = Ctx {
        e,
        a,
        d,
        cache,
        quiet,
        prepared: None,
        lm_dirs: Vec::new(),
        evaluated: &[],
        data_dir: None,
    };
    let digest = cache.file_digest(&d.entry.path)?;
    let model_digest = cache.file_digest(model)?;
    let inputs = (
        lm_inputs(&digest, e, mode),
        &model_digest,
        a.max_genes,
        (
            e.seed,
            a.split,
            a.folds,
            a.val_fraction,
            cx.label_key(),
            &a.mlp,
        ),
    );
    let label = format!("{} {} sentences, every layer", d.entry.id, mode_label(mode));
    let (evs, _) = cache.json("layer_sweep", &label, &inputs, || {
        let (labels, folds) = cx.folds()?;
        let words = cx.sentences(mode, a.max_genes)?;
        let device = a.device.resolve()?;
        let ck = lm::load(model, device, tch::Kind::Float)?;
        let style = lm::prompt_style(model)?;
        let ids =
            ck.tokenizer
                .encode_batch(&lm::sentence_texts(&ck, &words, &style, a.max_genes)?)?;
        let layers: Vec<i64> = (0..=ck.model.cfg.num_hidden_layers).collect();
        let opts = EmbedOptions {
            progress: !quiet,
            ..Default::default()
        };
        lm::embed::embed_layers(&ck.model, &ids, &opts, &layers)?
            .iter()
            .map(|x| {
                classify::evaluate(x, &labels, &folds, &Classifier::Mlp(a.mlp.clone()), device)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(evs)
}

/// A stage's inputs, optionally extended without changing the keys of the unextended ones.
#[derive(Serialize)]
#[serde(untagged)]
enum StageKey<A: Serialize, B: Serialize> {
    Legacy(A),
    Extended(A, B),
}

/// The paper's (accuracy, macro-F1) for a row.
fn paper_values(
    reported: &Reported,
    split: SplitKind,
    paper_ds: Option<&str>,
    row: &str,
) -> (Option<f64>, Option<f64>) {
    let find = |v: &[(String, f64)], k: &str| v.iter().find(|(d, _)| d == k).map(|x| x.1);
    match split {
        SplitKind::Kfold => {
            if paper_ds != Some("Pancreas") {
                return (None, None);
            }
            reported
                .annotation_intra
                .iter()
                .find(|(m, _)| m == row)
                .map_or((None, None), |(_, v)| (Some(v.accuracy), Some(v.macro_f1)))
        }
        SplitKind::Batch => {
            let Some(pd) = paper_ds else {
                return (None, None);
            };
            let acc = reported
                .inter_accuracy
                .iter()
                .find(|(m, _)| m == row)
                .and_then(|(_, v)| find(v, pd));
            let f1 = reported
                .inter_macro_f1
                .iter()
                .find(|(m, _)| m == row)
                .and_then(|(_, v)| find(v, pd));
            (acc, f1)
        }
    }
}

/// Runs an annotation experiment and writes its tables and figures to `out`.
pub fn run(
    e: &Experiment,
    datasets: &[RunDataset],
    reported: &Reported,
    cache: &Cache,
    out: &Path,
    quiet: bool,
    data_dir: Option<&Path>,
) -> Result<RunSummary> {
    let a = &e.annotation;
    let mut rows: Vec<Row> = Vec::new();
    let mut skipped = Vec::new();
    let evaluated: Vec<String> = datasets.iter().map(|d| d.entry.id.clone()).collect();
    for d in datasets {
        match dataset_rows(e, a, d, cache, quiet, (&evaluated, data_dir)) {
            Ok(r) => rows.extend(r),
            Err(err)
                if e.datasets.iter().any(|x| x == "available")
                    && !e.datasets.contains(&d.entry.id) =>
            {
                eprintln!("[run] skipping {}: {err}", d.entry.id);
                skipped.push(format!("{}: {err}", d.entry.id));
            }
            Err(err) => {
                return Err(Error::InExperiment {
                    file: e.file.clone(),
                    dataset: d.entry.id.clone(),
                    source: Box::new(err),
                });
            }
        }
    }
    let mut files = Vec::new();
    let mut specs = BTreeMap::new();
    let split_name = match a.split {
        SplitKind::Kfold => format!("stratified {}-fold", a.folds),
        SplitKind::Batch => "leave one batch out".to_string(),
    };
    let pv: Vec<(Option<f64>, Option<f64>)> = rows
        .iter()
        .map(|r| {
            paper_row(r.method, r.mode, r.source).map_or((None, None), |pr| {
                paper_values(reported, a.split, r.paper.as_deref(), pr)
            })
        })
        .collect();
    let f = |g: fn(&Row) -> f64| Col::F64(rows.iter().map(|r| Some(g(r))).collect());
    let df = report::frame(vec![
        (
            "dataset",
            Col::Str(rows.iter().map(|r| Some(r.dataset.clone())).collect()),
        ),
        (
            "paper_dataset",
            Col::Str(rows.iter().map(|r| r.paper.clone()).collect()),
        ),
        (
            "method",
            Col::Str(
                rows.iter()
                    .map(|r| Some(method_label(r.method, r.mode, r.source)))
                    .collect(),
            ),
        ),
        (
            "paper_row",
            Col::Str(
                rows.iter()
                    .map(|r| paper_row(r.method, r.mode, r.source).map(String::from))
                    .collect(),
            ),
        ),
        (
            "folds",
            Col::I64(rows.iter().map(|r| r.eval.folds.len() as i64).collect()),
        ),
        ("accuracy", f(|r| r.eval.accuracy_mean)),
        ("accuracy_sd", f(|r| r.eval.accuracy_sd)),
        ("macro_f1", f(|r| r.eval.macro_f1_mean)),
        ("macro_f1_sd", f(|r| r.eval.macro_f1_sd)),
        ("paper_accuracy", Col::F64(pv.iter().map(|p| p.0).collect())),
        ("paper_macro_f1", Col::F64(pv.iter().map(|p| p.1).collect())),
        (
            "diff_accuracy",
            Col::F64(
                rows.iter()
                    .zip(&pv)
                    .map(|(r, p)| p.0.map(|v| r.eval.accuracy_mean - v))
                    .collect(),
            ),
        ),
        (
            "diff_macro_f1",
            Col::F64(
                rows.iter()
                    .zip(&pv)
                    .map(|(r, p)| p.1.map(|v| r.eval.macro_f1_mean - v))
                    .collect(),
            ),
        ),
        (
            "unseen_test_labels",
            Col::Str(
                rows.iter()
                    .map(|r| {
                        let mut u: Vec<String> = r
                            .eval
                            .folds
                            .iter()
                            .flat_map(|f| f.unseen_labels.iter().map(|l| format!("{}:{l}", f.fold)))
                            .collect();
                        u.dedup();
                        Some(u.join("; "))
                    })
                    .collect(),
            ),
        ),
        (
            "role",
            Col::Str(
                rows.iter()
                    .map(|r| {
                        let role = match &r.paper {
                            Some(p) => format!("substitute for the paper's {p}"),
                            None => "no counterpart in the paper".to_string(),
                        };
                        Some(match (r.source, r.seen) {
                            (_, true) => format!("{role}; seen in pretraining"),
                            (LmSource::Pretrained | LmSource::Untrained, false) => {
                                format!("{role}; held out from pretraining")
                            }
                            (LmSource::FineTuned, _) => format!(
                                "{role}; fine-tuned on this dataset's unlabelled sentences (transductive)"
                            ),
                            (LmSource::Own, _) => role,
                        })
                    })
                    .collect(),
            ),
        ),
    ])?;
    let lm_what = match (&a.model, a.lm_protocol) {
        (Some(m), _) => format!("embeddings of {}", m.display()),
        (None, LmProtocol::Pretrained) => {
            let p = &a.pretrain;
            let ft = p.finetune.as_ref().map_or(String::new(), |f| format!("; fine-tuned rows: that model fine-tuned ({} steps, language-model objective) on the dataset's unlabelled sentences of the row's mode, so they saw the evaluated cells (transductive) while the pretrained rows did not", f.steps));
            let un = if p.untrained_control { "; untrained rows: the same shape and vocabulary at random initialisation (a control)" } else { "" };
            format!("embeddings of one cell-sentence LM pretrained here ({} layers, hidden {}, {} steps of {} sentences) on every reachable dataset except the evaluated ones and files sharing their cells (held out; listed in the model's corpus.json), reading both sentence modes as the paper's C2S-Pythia-410M did{ft}{un}", p.lm.layers, p.lm.hidden, p.lm.steps, p.lm.batch_size)
        }
        (None, LmProtocol::PerMode) => format!("embeddings of a small cell-sentence LM trained here per dataset and mode ({} layers, hidden {}, {} steps), standing in for C2S-Pythia-410M", a.lm.layers, a.lm.hidden, a.lm.steps),
    };
    let mlp_shape = a
        .mlp
        .hidden
        .iter()
        .map(|h| format!("{h}-BN-GELU-Drop{}", a.mlp.dropout))
        .collect::<Vec<_>>()
        .join(", ");
    report::write_frame(&df, out, "annotation", &format!(
        "# {} — cell-type annotation, {split_name}\n\nMean ± sd over folds. LM rows: {lm_what}, mean-pooled over the top-{} gene prompt, then the paper's MLP ({mlp_shape}, Adam {:e}, ≤ {} epochs, patience {}). SVM: linear, one-vs-rest, C = {} (LinearSVC's problem) on log-normalized HVG expression. scmap-cluster: {} genes by scmap's dropout model, median centroids, cosine/Pearson/Spearman vote, threshold {} (unassigned = wrong). Paper values are the paper's (CellFM datasets); `diff` = ours − paper.",
        e.name, a.max_genes, a.mlp.lr, a.mlp.max_epochs, a.mlp.patience, a.svm.c, a.scmap.n_features, a.scmap.threshold
    ))?;
    files.extend(["annotation.csv".to_string(), "annotation.md".to_string()]);

    // the paper's quoted rows
    let (names, accs, f1s): (Vec<String>, Vec<Option<f64>>, Vec<Option<f64>>) = match a.split {
        SplitKind::Kfold => reported
            .annotation_intra
            .iter()
            .map(|(m, v)| (m.clone(), Some(v.accuracy), Some(v.macro_f1)))
            .fold((vec![], vec![], vec![]), |mut acc, x| {
                acc.0.push(x.0);
                acc.1.push(x.1);
                acc.2.push(x.2);
                acc
            }),
        SplitKind::Batch => (vec![], vec![], vec![]),
    };
    if a.split == SplitKind::Kfold {
        let df = report::frame(vec![
            (
                "model",
                Col::Str(names.iter().map(|n| Some(n.clone())).collect()),
            ),
            ("accuracy", Col::F64(accs.clone())),
            ("macro_f1", Col::F64(f1s.clone())),
            (
                "source",
                Col::Str(names.iter().map(|_| Some("reported".to_string())).collect()),
            ),
        ])?;
        report::write_frame(
            &df,
            out,
            "reported",
            "# The paper's Figure IX (Pancreas, intra-dataset), as reported",
        )?;
    } else {
        let ds: Vec<String> = reported.datasets.iter().map(|(k, _)| k.clone()).collect();
        let mut cols: Vec<(&str, Col)> = vec![(
            "model",
            Col::Str(
                reported
                    .inter_accuracy
                    .iter()
                    .map(|(m, _)| Some(m.clone()))
                    .collect(),
            ),
        )];
        let acc_names: Vec<String> = ds.iter().map(|d| format!("accuracy_{d}")).collect();
        let f1_names: Vec<String> = ds.iter().map(|d| format!("macro_f1_{d}")).collect();
        for (i, d) in ds.iter().enumerate() {
            cols.push((
                acc_names[i].as_str(),
                Col::F64(
                    reported
                        .inter_accuracy
                        .iter()
                        .map(|(_, v)| v.iter().find(|(k, _)| k == d).map(|x| x.1))
                        .collect(),
                ),
            ));
        }
        for (i, d) in ds.iter().enumerate() {
            cols.push((
                f1_names[i].as_str(),
                Col::F64(
                    reported
                        .inter_macro_f1
                        .iter()
                        .map(|(_, v)| v.iter().find(|(k, _)| k == d).map(|x| x.1))
                        .collect(),
                ),
            ));
        }
        let df = report::frame(cols)?;
        report::write_frame(&df, out, "reported", "# The paper's Figures X (accuracy) and XI (macro-F1), leave one batch out, as reported")?;
    }
    files.extend(["reported.csv".to_string(), "reported.md".to_string()]);

    // per dataset: per-class F1 table, bar chart, confusion matrix of the first row
    let mut ids: Vec<String> = rows.iter().map(|r| r.dataset.clone()).collect();
    ids.dedup();
    for id in &ids {
        let rs: Vec<&Row> = rows.iter().filter(|r| &r.dataset == id).collect();
        let mut labels: Vec<String> = rs
            .iter()
            .flat_map(|r| r.eval.per_class.iter().map(|c| c.label.clone()))
            .collect();
        labels.sort();
        labels.dedup();
        let support: Vec<i64> = labels
            .iter()
            .map(|l| {
                rs[0]
                    .eval
                    .per_class
                    .iter()
                    .find(|c| &c.label == l)
                    .map_or(0, |c| c.support as i64)
            })
            .collect();
        let col_names: Vec<String> = rs
            .iter()
            .map(|r| format!("f1 {}", method_label(r.method, r.mode, r.source)))
            .collect();
        let mut cols = vec![
            (
                "label",
                Col::Str(labels.iter().map(|l| Some(l.clone())).collect()),
            ),
            ("support", Col::I64(support)),
        ];
        for (r, name) in rs.iter().zip(&col_names) {
            cols.push((
                name.as_str(),
                Col::F64(
                    labels
                        .iter()
                        .map(|l| {
                            r.eval
                                .per_class
                                .iter()
                                .find(|c| &c.label == l)
                                .map(|c| c.f1)
                        })
                        .collect(),
                ),
            ));
        }
        let df = report::frame(cols)?;
        let stem = format!("per_class_{id}");
        report::write_frame(&df, out, &stem, &format!("# Per-class F1 on {id} (all test predictions pooled), by method\n\nThe paper attributes the HVG sentences' lower macro-F1 to minority classes: compare the rows with small support."))?;
        files.extend([format!("{stem}.csv"), format!("{stem}.md")]);

        let cats: Vec<String> = rs
            .iter()
            .map(|r| method_label(r.method, r.mode, r.source))
            .collect();
        let mut series = vec![
            (
                "accuracy (ours)".to_string(),
                rs.iter()
                    .map(|r| Some(r.eval.accuracy_mean))
                    .collect::<Vec<_>>(),
            ),
            (
                "macro-F1 (ours)".to_string(),
                rs.iter().map(|r| Some(r.eval.macro_f1_mean)).collect(),
            ),
        ];
        let pvals: Vec<(Option<f64>, Option<f64>)> = rs
            .iter()
            .map(|r| {
                paper_row(r.method, r.mode, r.source).map_or((None, None), |pr| {
                    paper_values(reported, a.split, r.paper.as_deref(), pr)
                })
            })
            .collect();
        if pvals.iter().any(|p| p.0.is_some()) {
            series.push((
                "accuracy (paper)".to_string(),
                pvals.iter().map(|p| p.0).collect(),
            ));
            series.push((
                "macro-F1 (paper)".to_string(),
                pvals.iter().map(|p| p.1).collect(),
            ));
        }
        let fig_name = match a.split {
            SplitKind::Kfold => "Figure IX",
            SplitKind::Batch => "Figures X–XI",
        };
        let plot = figure::grouped_bars(
            &format!("{fig_name} equivalent — {id}, {split_name}"),
            "score",
            &cats,
            &series,
        );
        let stem = format!("annotation_{id}");
        specs.insert(
            stem.clone(),
            figure::write(&plot, &out.join("figures"), &stem, &stem)?,
        );
        files.push(format!("figures/{stem}.html"));

        let r0 = rs[0];
        let truth: Vec<String> = r0
            .eval
            .predictions
            .iter()
            .map(|p| p.truth.clone())
            .collect();
        let pred: Vec<String> = r0.eval.predictions.iter().map(|p| p.pred.clone()).collect();
        let mut cl: Vec<String> = truth.iter().chain(&pred).cloned().collect();
        cl.sort();
        cl.dedup();
        let m = metrics::confusion(&truth, &pred, &cl);
        let plot = figure::confusion(
            &format!(
                "Confusion — {id}, {}",
                method_label(r0.method, r0.mode, r0.source)
            ),
            &cl,
            &m,
        );
        let stem = format!("confusion_{id}");
        specs.insert(
            stem.clone(),
            figure::write(&plot, &out.join("figures"), &stem, &stem)?,
        );
        files.push(format!("figures/{stem}.html"));
    }
    // loss curves of the LMs trained in this run (each model once)
    let mut drawn: Vec<&PathBuf> = Vec::new();
    for r in &rows {
        let (Some(dir), Some(mode)) = (&r.lm_dir, r.mode) else {
            continue;
        };
        if r.source == LmSource::Untrained || drawn.contains(&dir) {
            continue;
        }
        drawn.push(dir);
        let Ok(log) = lm::train::LogRow::read(dir) else {
            continue;
        };
        if log.is_empty() {
            continue;
        }
        let steps: Vec<f64> = log.iter().map(|l| l.step as f64).collect();
        let train: Vec<f64> = log.iter().map(|l| l.train_loss).collect();
        let val: Vec<(f64, f64)> = log
            .iter()
            .filter_map(|l| l.val_loss.map(|v| (l.step as f64, v)))
            .collect();
        let (stem, what) = match r.source {
            LmSource::Own => (
                format!("lm_loss_{}_{}", r.dataset, mode_label(mode)),
                format!("{}, {} sentences", r.dataset, mode_label(mode)),
            ),
            LmSource::FineTuned => (
                format!("lm_loss_{}_{}_fine_tuned", r.dataset, mode_label(mode)),
                format!("fine-tune on {}, {} sentences", r.dataset, mode_label(mode)),
            ),
            _ => (
                "lm_loss_pretrained".to_string(),
                "pretraining corpus (evaluated datasets held out)".to_string(),
            ),
        };
        let plot = figure::loss_curve(
            &format!("Cell-sentence LM training — {what}"),
            &steps,
            &train,
            &val,
        );
        specs.insert(
            stem.clone(),
            figure::write(&plot, &out.join("figures"), &stem, &stem)?,
        );
        files.push(format!("figures/{stem}.html"));
    }
    let mut index = format!("# {}\n\n{}\n\n- [annotation](annotation.md) — ours beside the paper\n- [reported](reported.md) — the paper's quoted rows\n", e.name, e.description);
    for id in &ids {
        index.push_str(&format!("- {id}: [per-class F1](per_class_{id}.md), [bar chart](figures/annotation_{id}.html), [confusion](figures/confusion_{id}.html)\n"));
    }
    if !skipped.is_empty() {
        index.push_str("\nSkipped:\n");
        for s in &skipped {
            index.push_str(&format!("- {s}\n"));
        }
    }
    report::write_atomic(out.join("index.md"), index.as_bytes())?;
    files.push("index.md".into());
    Ok(RunSummary {
        out: out.into(),
        files,
        hits: 0, // filled in from the cache by `experiment::run`
        computed: 0,
        skipped,
        specs,
    })
}
