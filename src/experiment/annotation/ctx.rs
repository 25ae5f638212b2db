//! The annotation runner's per-dataset context: prepared data, features (HVG expression, PCA, LM
//! embeddings from the protocol's models) and splits, each a cached stage, and the keys stages
//! share. The rows themselves are computed in `stages`, `answer` and `quality`.
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cache::Cache;
use crate::classify::{self, Classifier, Evaluation, Fold};
use crate::deviation::{self, Order};
use crate::error::{Error, Result};
use crate::experiment::context::DatasetContext;
use crate::experiment::lm_protocol::{self, LmSource};
use crate::experiment::outputs::names;
use crate::experiment::sweep::sentence_features;
use crate::experiment::{mode_label, DataKey, Experiment, RunDataset};
use crate::lm::{self, EmbedOptions};
use crate::npy::Matrix;
use crate::pipeline::{all_dense, hvg_dense, Prepared};
use crate::reconstruct::RecModel;
use crate::sentence::GeneSet;

use super::config::{AnnotationSection, DeviceChoice, Method, SplitKind};
use super::method_label;

/// One evaluated row.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) dataset: String,
    pub(super) paper: Option<String>,
    pub(super) method: Method,
    pub(super) mode: Option<GeneSet>,
    /// The model behind an LM row.
    pub(super) source: LmSource,
    pub(super) eval: Evaluation,
    /// The small LM behind an LM row (its training log feeds the loss figure).
    pub(super) lm_dir: Option<PathBuf>,
    /// The dataset is in the pretraining corpus of the row's model (`allow_seen`).
    pub(super) seen: bool,
    /// Gene order of the row's sentences (LM and sentence-SVM rows).
    pub(super) order: Order,
}

impl Row {
    /// The row's method as tables name it.
    pub(super) fn label(&self) -> String {
        method_label(self.method, self.mode, self.source, self.order)
    }
}

/// One row to evaluate: method, sentence mode, model source, gene order.
pub(super) type Unit = (Method, Option<GeneSet>, LmSource, Order);

pub(super) struct Ctx<'a> {
    pub(super) e: &'a Experiment,
    pub(super) a: &'a AnnotationSection,
    pub(super) d: &'a RunDataset,
    pub(super) cache: &'a Cache,
    pub(super) quiet: bool,
    data: DatasetContext<'a>,
    /// LM directories already resolved in this run (each stage is counted once).
    lm_dirs: Vec<(LmSource, GeneSet, PathBuf)>,
    /// Whether the split's warnings (small or unseen classes) were printed.
    split_warned: bool,
    /// Every dataset this run evaluates (held out of a pretraining corpus).
    evaluated: &'a [String],
    data_dir: Option<&'a Path>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(
        (e, a, d): (&'a Experiment, &'a AnnotationSection, &'a RunDataset),
        cache: &'a Cache,
        quiet: bool,
        (evaluated, data_dir): (&'a [String], Option<&'a Path>),
    ) -> Self {
        Ctx {
            e,
            a,
            d,
            cache,
            quiet,
            data: DatasetContext::new(e, d, quiet),
            lm_dirs: Vec::new(),
            split_warned: false,
            evaluated,
            data_dir,
        }
    }

    /// The dataset's [`DataKey`]: the prefix of every stage key of its rows.
    pub(super) fn data_key(&self) -> Result<DataKey> {
        self.d.data_key(self.e, self.cache)
    }
}

impl Ctx<'_> {
    /// The features method `m` classifies (LM rows: `source`'s embeddings of `mode` sentences).
    pub(super) fn features(&mut self, u: Unit) -> Result<Matrix> {
        let (m, mode, source, order) = u;
        let a = self.a;
        Ok(match m {
            Method::Lm => self.lm_features(mode.expect("LM rows have a mode"), source, order)?,
            Method::SentenceSvm => self.sentence_features(mode.unwrap_or(GeneSet::All))?,
            Method::HvgSvm | Method::HvgMlp => {
                let (p, h) = self.prepared()?;
                hvg_dense(p, h)
            }
            Method::Scmap => all_dense(self.prepared()?.0),
            Method::LmAnswer | Method::LmAnswerMlp => {
                return Err(Error::param(
                    "annotation.methods",
                    "the fine-tuned-for-annotation rows have one model per fold, not one feature matrix",
                ))
            }
            Method::Pca => {
                let (p, h) = self.prepared()?;
                let x = hvg_dense(p, h);
                let all: Vec<usize> = (0..x.rows).collect();
                classify::pca(&x, &all, a.pca_components)
            }
        })
    }

    /// The prepared data and its HVG columns.
    pub(super) fn prepared(&mut self) -> Result<(&Prepared, &[usize])> {
        self.data.hvg()
    }

    /// The gene set whose sentences `mode` stands for in stage keys: where every gene is highly
    /// variable (pbmc68k_reduced ships 765 genes, fewer than `n_top_genes`), the HVG sentences are
    /// the full sentences, so their models, embeddings and evaluations are computed once.
    pub(super) fn sentence_set(&mut self, mode: GeneSet) -> Result<GeneSet> {
        if mode == GeneSet::Hvg {
            let (p, h) = self.prepared()?;
            if h.len() == p.data.genes.len() && h.iter().enumerate().all(|(i, &j)| i == j) {
                return Ok(GeneSet::All);
            }
        }
        Ok(mode)
    }

    pub(super) fn label_key(&self) -> String {
        self.a
            .label_key
            .clone()
            .or_else(|| self.d.entry.label_key.clone())
            .unwrap_or_else(|| "cell_type".into())
    }

    /// The batch column: the experiment's, else the dataset's known one.
    pub(super) fn batch_key(&self) -> Option<String> {
        self.a
            .batch_key
            .clone()
            .or_else(|| self.d.entry.batch_key.clone())
    }

    /// Labels and folds of the QC-kept cells.
    pub(super) fn folds(&mut self) -> Result<(Vec<String>, Vec<Fold>)> {
        let (split, k, vf, seed) = (self.a.split, self.a.folds, self.a.val_fraction, self.e.seed);
        let lk = self.label_key();
        let bk = self.batch_key();
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
        if !self.split_warned {
            self.split_warned = true;
            let k = matches!(split, SplitKind::Kfold).then_some(k);
            for w in classify::split_warnings(&labels, &folds, k) {
                eprintln!("[run] warning: {}: {w}", self.d.entry.id);
            }
        }
        Ok((labels, folds))
    }

    /// The model behind an LM row: the file's checkpoint, the small LM of this dataset and mode,
    /// or the pretrained / fine-tuned / untrained model (cached stages, trained when missing).
    pub(super) fn lm_model(&mut self, mode: GeneSet, source: LmSource) -> Result<PathBuf> {
        if let Some(m) = &self.a.model {
            return Ok(m.clone());
        }
        let mode = self.sentence_set(mode)?;
        // one pretrained, untrained or answer-only model serves both modes
        let shared = [
            LmSource::Pretrained,
            LmSource::Untrained,
            LmSource::AnswerOnly,
        ];
        let key_mode = if shared.contains(&source) {
            GeneSet::All
        } else {
            mode
        };
        let known = self
            .lm_dirs
            .iter()
            .find(|(s, g, _)| *s == source && *g == key_mode);
        if let Some((.., dir)) = known {
            return Ok(dir.clone());
        }
        let dir = self.train_lm_model(mode, source)?;
        self.lm_dirs.push((source, key_mode, dir.clone()));
        Ok(dir)
    }

    /// [`Self::lm_model`]'s cached stage of `source`'s model for sentences of `mode`, trained
    /// when missing.
    fn train_lm_model(&mut self, mode: GeneSet, source: LmSource) -> Result<PathBuf> {
        let (e, a, id) = (self.e, self.a, self.d.entry.id.clone());
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
        let data_key = self.data_key()?;
        let (dir, _) = match source {
            LmSource::Own => self.cache.dir_artifact(
                "lm",
                &format!("{id} {}", mode_label(mode)),
                &(&lm_inputs(&data_key, e, mode), &a.lm),
                |out| {
                    let words = self.sentences(mode, a.lm.max_genes)?;
                    lm::train(&words, &a.lm, None, out, device, !self.quiet)?;
                    Ok(())
                },
            )?,
            LmSource::Pretrained => pretrained(self, false)?,
            LmSource::Untrained => pretrained(self, true)?,
            LmSource::AnswerOnly => {
                let base = self.lm_model(mode, LmSource::Pretrained)?;
                lm_protocol::answer_model(
                    e,
                    &a.pretrain,
                    self.evaluated,
                    &[],
                    self.data_dir,
                    self.cache,
                    &base,
                    device,
                    self.quiet,
                )?
            }
            LmSource::FineTuned => {
                let base = self.lm_model(mode, LmSource::Pretrained)?;
                let c = a.pretrain.finetune.clone().unwrap_or_default();
                let label = format!("{id} {} (from the pretrained model)", mode_label(mode));
                let inputs = lm_inputs(&data_key, e, mode);
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
        Ok(dir)
    }

    fn lm_features(&mut self, mode: GeneSet, source: LmSource, order: Order) -> Result<Matrix> {
        let (e, a, id) = (self.e, self.a, self.d.entry.id.clone());
        let mode = self.sentence_set(mode)?;
        let data_key = self.data_key()?;
        let base = lm_inputs(&data_key, e, mode);
        let model = self.lm_model(mode, source)?;
        let style = lm::prompt_style(&model)?;
        let model_digest = self.cache.file_digest(&model)?;
        let compute = |cx: &mut Self| {
            let words = match order {
                Order::Expression => cx.sentences(mode, a.max_genes)?,
                Order::Deviation => cx.data.deviation_sentences(mode, a.max_genes)?,
            };
            let ck = lm::load(&model, a.device.resolve()?, tch::Kind::Float)?;
            let opts = EmbedOptions {
                progress: !cx.quiet,
                ..Default::default()
            };
            lm::embed_sentences(&ck, &words, &style, a.max_genes, &opts)
        };
        let key = (&base, &model_digest, &style, a.max_genes);
        let (m, _) = match order {
            // expression keys are unchanged by the deviation rows
            Order::Expression => self.cache.npy(
                "embeddings",
                &format!("{id} {}", mode_label(mode)),
                &key,
                || compute(self),
            )?,
            Order::Deviation => self.cache.npy(
                "embeddings",
                &format!("{id} {} deviation", mode_label(mode)),
                &(&key, order),
                || compute(self),
            )?,
        };
        Ok(m)
    }

    /// Writes the LM embedding of `mode` sentences in `order` by `source`'s model as
    /// `dir/<dataset>/…h5ad` (`annotation.embeddings_dir`): the kept cells as the obs index, the
    /// embedding in obsm, how it was made in uns.
    pub(super) fn write_embedding(
        &mut self,
        dir: &Path,
        mode: GeneSet,
        source: LmSource,
        order: Order,
    ) -> Result<()> {
        let (e, a) = (self.e, self.a);
        let m = self.lm_features(mode, source, order)?;
        let model = self.lm_model(mode, source)?;
        let about = serde_json::json!({
            "input": self.d.entry.path,
            "input_sha256": self.cache.file_digest(&self.d.entry.path)?,
            "sentences": {
                "genes": mode.to_string(),
                "order": order.to_string(),
                "max_genes": a.max_genes,
                "tie_seed": e.sentences.tie_seed,
            },
            "model": model,
            "model_source": source.prefix(),
            "layer": -1,
            "pool": "mean",
            "model_meta": lm::ModelMeta::read(&model)?,
            "corpus": lm::Corpus::read(&model)?,
            "made_by": format!("cellsentence {} (annotation runner)", env!("CARGO_PKG_VERSION")),
        });
        let path = dir.join(names::embedding_h5ad(&self.d.entry.id, source, mode, order));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let cells = &self.prepared()?.0.data.cells;
        crate::data::h5ad_out::write_embeddings(&path, cells, &m, &about)
    }

    /// What the sentences of `mode` alone carry (the sentence SVM's input): each expressed gene
    /// valued by the log-rank line fitted on the experiment's 1,024-cell reconstruction sample.
    fn sentence_features(&mut self, mode: GeneSet) -> Result<Matrix> {
        let (tie, seed) = (self.e.sentences.tie_seed, self.e.seed);
        let (p, h) = self.prepared()?;
        let x = match mode {
            GeneSet::All => p.data.x.clone(),
            GeneSet::Hvg => p.data.x.select_cols(h),
        };
        let cells = crate::reconstruct::sample_cells(x.n_rows, 1024, seed);
        let rec = crate::reconstruct::reconstruct(&x, &cells, RecModel::C2s, tie)?;
        Ok(sentence_features(&x, tie, rec.slope, rec.intercept))
    }

    /// The sentence SVM on deviation sentences of all genes: the line fitted once (deviations
    /// from every cell's profile, on the reconstruction sample); per fold, the features of the
    /// deviations from its training cells' profile.
    pub(super) fn deviation_svm(
        &mut self,
        folds: &[Fold],
        labels: &[String],
        c: &Classifier,
    ) -> Result<Evaluation> {
        let (tie, seed) = (self.e.sentences.tie_seed, self.e.seed);
        let x = self.prepared()?.0.data.x.clone();
        let device = self.a.device.resolve()?;
        let cells = crate::reconstruct::sample_cells(x.n_rows, 1024, seed);
        let all: Vec<usize> = (0..x.n_rows).collect();
        let whole = deviation::reference_profile(&x, &all)?;
        let rec = deviation::reconstruct(&x, &whole, &cells, RecModel::C2s, tie)?;
        classify::evaluate_per_fold(
            |f| {
                let fit: Vec<usize> = f.train.iter().chain(&f.val).copied().collect();
                let r = deviation::reference_profile(&x, &fit)?;
                deviation::sentence_features(&x, &r, tie, (rec.slope, rec.intercept))
            },
            labels,
            folds,
            c,
            device,
        )
    }

    pub(super) fn sentences(
        &mut self,
        mode: GeneSet,
        max_genes: usize,
    ) -> Result<Vec<Vec<String>>> {
        self.data.sentences(mode, max_genes)
    }
}

/// The inputs a libtorch stage's key is made of, with the device when it is not the CPU.
pub(super) type OnDevice<T> = StageKey<T, &'static str>;

/// `inputs` keyed with the device the annotation section's libtorch work runs on: CPU keys stay as
/// they were; a CUDA run (`device: cuda`, or `auto` on a machine with a GPU) neither reuses nor
/// overwrites a CPU result, as its numbers differ in the last bits.
pub(super) fn on_device<T: Serialize>(a: &AnnotationSection, inputs: T) -> OnDevice<T> {
    let cuda = match a.device {
        DeviceChoice::Cpu => false,
        DeviceChoice::Cuda => true,
        DeviceChoice::Auto => tch::Cuda::is_available(),
    };
    if cuda {
        StageKey::Extended(inputs, "cuda f32")
    } else {
        StageKey::Legacy(inputs)
    }
}

/// What the small LM of a dataset and mode depends on (besides its training settings), and the
/// device every libtorch stage built on it runs on.
pub(super) fn lm_inputs<'a>(
    key: &'a DataKey,
    e: &'a Experiment,
    mode: GeneSet,
) -> OnDevice<(&'a DataKey, GeneSet)> {
    on_device(&e.annotation, (key, mode))
}

/// A stage's inputs, optionally extended without changing the keys of the unextended ones.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum StageKey<A: Serialize, B: Serialize> {
    Legacy(A),
    Extended(A, B),
}

#[cfg(test)]
mod device_key_tests {
    use super::*;

    /// A CPU key is the inputs' own (existing caches stay valid); a CUDA key differs.
    #[test]
    fn cpu_keys_are_unchanged_and_cuda_keys_differ() {
        let inputs = ("digest", 42u32);
        let plain = Cache::key("annotation", &inputs);
        let cpu: OnDevice<_> = StageKey::Legacy(inputs);
        assert_eq!(Cache::key("annotation", &cpu), plain);
        let cuda: OnDevice<_> = StageKey::Extended(inputs, "cuda f32");
        assert_ne!(Cache::key("annotation", &cuda), plain);
        let mut a = AnnotationSection {
            device: DeviceChoice::Cpu,
            ..Default::default()
        };
        assert_eq!(Cache::key("annotation", &on_device(&a, inputs)), plain);
        a.device = DeviceChoice::Cuda;
        assert_ne!(Cache::key("annotation", &on_device(&a, inputs)), plain);
    }
}
