//! The `annotation:` section of an experiment file.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::classify::{MlpConfig, ScmapConfig, SvmConfig};
use crate::deviation::Order;
use crate::experiment::lm_protocol::{LmProtocol, PretrainSection};
use crate::lm::TrainConfig;
use crate::quality::QualityParams;

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
    /// Linear SVM on what a sentence alone carries: each of its genes valued by Cell2Sentence's
    /// log-rank line (one row per sentence mode and order; deviation: the line plus the fold's
    /// training-cell profile).
    SentenceSvm,
    /// The LM fine-tuned for annotation: per fold, Cell2Sentence's cell-type task (answer-only
    /// loss) on the training part's labelled sentences; the test part's cells are answered.
    LmAnswer,
    /// The same per-fold fine-tunes' embeddings (mean over the prompt) → the paper's MLP.
    LmAnswerMlp,
}

/// Where each fold's cell-type fine-tune starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerStart {
    /// New weights of `answer.lm`'s shape, vocabulary from the fold's training sentences.
    Random,
    /// The experiment's pretrained model (`annotation.pretrain`, held out from the evaluated
    /// datasets), its vocabulary grown by the task's tokens.
    Pretrained,
    /// The pretrained model after its answer-only stage on the corpus labels
    /// (`annotation.pretrain.answer`): it already answers the corpus datasets' cell types.
    PretrainedAnswers,
}

/// Settings of the `lm_answer` / `lm_answer_mlp` rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnswerSection {
    /// The starts to compare (one row each): does pretraining help?
    pub starts: Vec<AnswerStart>,
    /// Shape (random start) and optimisation of each fold's fine-tune; the kept step is the one
    /// of the lowest answer loss on the fold's validation part (`val_fraction`).
    pub lm: TrainConfig,
}

impl Default for AnswerSection {
    fn default() -> Self {
        AnswerSection {
            starts: vec![AnswerStart::Random],
            lm: TrainConfig {
                steps: 400,
                eval_every: 50,
                ..TrainConfig::default()
            },
        }
    }
}

impl AnswerSection {
    /// Whether these are the default settings.
    pub fn is_default(&self) -> bool {
        *self == AnswerSection::default()
    }
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
    /// The embedding-quality panel of every embedding (LM rows, PCA of HVG / all / random
    /// genes); `null` skips it.
    pub quality: Option<QualityParams>,
    /// Gene orders of the sentences: `expression` (Cell2Sentence) and optionally `deviation`
    /// (all genes, ranked by how far above the mean profile; LM rows of the pretrained model or
    /// the given checkpoint, and the sentence SVM).
    #[serde(skip_serializing_if = "is_expression_only")]
    pub orders: Vec<Order>,
    /// Also write every LM embedding the run computes as an `.h5ad` in this folder
    /// (`<dataset>/<model source>_<mode>.h5ad`: the kept cells as the obs index,
    /// `obsm["X_cell_sentence"]`, `uns["cellsentence"]` with the model's manifests), for scanpy;
    /// `null` (default): none. Relative to the working directory; keep it out of `results/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embeddings_dir: Option<PathBuf>,
    /// The LM fine-tuned for annotation (`lm_answer`, `lm_answer_mlp` rows).
    #[serde(skip_serializing_if = "AnswerSection::is_default")]
    pub answer: AnswerSection,
}

fn is_expression_only(v: &[Order]) -> bool {
    v == [Order::Expression]
}

pub use crate::lm::DeviceChoice;

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
            quality: Some(QualityParams::default()),
            orders: vec![Order::Expression],
            embeddings_dir: None,
            answer: AnswerSection::default(),
        }
    }
}

impl crate::validate::Validate for AnnotationSection {
    fn validate(&self) -> crate::Result<()> {
        if self.folds < 2 {
            return Err(crate::Error::param(
                "folds",
                format!(
                    "{} is not allowed, cross-validation needs at least 2 folds; use 5",
                    self.folds
                ),
            ));
        }
        crate::validate::within("val_fraction", self.val_fraction, 0.0, 1.0, false, "0.1")?;
        crate::validate::positive("max_genes", self.max_genes, "200 (the C2S prompt budget)")?;
        crate::validate::positive("pca_components", self.pca_components, "50")?;
        use crate::experiment::annotation::Method;
        let answers = self
            .methods
            .iter()
            .any(|m| matches!(m, Method::LmAnswer | Method::LmAnswerMlp));
        if !self.answer.is_default() && !answers {
            return Err(crate::Error::param(
                "annotation.answer",
                "is set but no method uses it; add lm_answer or lm_answer_mlp to methods, or remove the section",
            ));
        }
        if answers && self.answer.starts.is_empty() {
            return Err(crate::Error::param(
                "annotation.answer.starts",
                "is empty; give random, pretrained or both",
            ));
        }
        if self.pretrain.select_on.is_some() && self.pretrain.answer.is_none() {
            return Err(crate::Error::param(
                "annotation.pretrain.select_on",
                "chooses between the next-gene model and its answer stage, but pretrain.answer is not set; add it, or remove select_on",
            ));
        }
        use crate::validate::under;
        let p = &self.pretrain;
        under("lm", self.lm.validate())?;
        under("pretrain.lm", p.lm.validate())?;
        for (key, c) in [
            ("pretrain.finetune", &p.finetune),
            ("pretrain.answer", &p.answer),
        ] {
            if let Some(c) = c {
                under(key, c.validate())?;
            }
        }
        if answers {
            under("answer.lm", self.answer.lm.validate())?;
        }
        crate::validate::Validate::validate(&self.mlp)?;
        crate::validate::Validate::validate(&self.svm)?;
        crate::validate::Validate::validate(&self.scmap)
    }
}
