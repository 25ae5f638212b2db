//! Answers of a model fine-tuned by `cell_type::finetune`: the answer token's scores at
//! the prompt's end, restricted to the trained labels.
use super::embed::{embed_ids, EmbedOptions, Pool};
use super::model_dir::ModelMeta;
use crate::npy::Matrix;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The file that makes a model directory a cell-type answerer.
pub const HEAD: &str = "cell_type.json";

/// What the task is, as recorded in [`HEAD`].
pub const TASK: &str = "cell type prediction (Cell2Sentence, loss on the answer only): prompt = cell sentence + <|CELL_TYPE|>, answer = the cell type's token";

/// One validation point of a fine-tune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValPoint {
    pub step: usize,
    /// Mean cross-entropy of the answer token (over the whole vocabulary).
    pub loss: f64,
    /// Share of validation cells answered right (answers restricted to the trained labels).
    pub accuracy: f64,
}

/// `cell_type.json`: the labels a fine-tuned model answers with, and how it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellTypeHead {
    pub task: String,
    /// The trained labels, sorted; `tokens[i]` is the answer token of `labels[i]`.
    pub labels: Vec<String>,
    pub tokens: Vec<String>,
    /// Training cells per label.
    pub train_cells: Vec<usize>,
    /// Validation cells (labels outside the trained ones are left out).
    pub val_cells: usize,
    /// `random` or the base model's directory.
    pub start: String,
    /// The step whose weights were kept: the lowest validation answer loss.
    pub best_step: usize,
    pub curve: Vec<ValPoint>,
}

impl CellTypeHead {
    /// The answer token id of each trained label (in `labels` order) in the model's tokenizer; an
    /// error naming the token when the tokenizer lacks it.
    pub fn answer_ids(&self, tok: &super::tokenizer::Tok) -> Result<Vec<i64>> {
        self.tokens
            .iter()
            .map(|t| {
                tok.id(t).ok_or_else(|| {
                    Error::format(
                        &tok.path,
                        format!("the answer token {t} of cell_type.json is missing"),
                        "use the tokenizer.json saved with the fine-tune",
                    )
                })
            })
            .collect()
    }

    /// Reads `dir/cell_type.json`; an error naming the fix when the model is not a fine-tune.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join(HEAD);
        super::train::read_json(&p, "a cell-type head", "re-run `cellsentence finetune-lm`")?
            .ok_or_else(|| {
                Error::format(
                    p,
                    "missing: the model was not fine-tuned for cell-type prediction",
                    "fine-tune it first: `cellsentence finetune-lm --task cell_type`",
                )
            })
    }
}

/// A fine-tuned model's answers.
#[derive(Debug, Clone)]
pub struct Answers {
    /// The trained labels (columns of `scores`).
    pub labels: Vec<String>,
    /// Per cell, the softmax over the trained labels' answer tokens.
    pub scores: Matrix,
    /// Per cell, the best-scoring label.
    pub predicted: Vec<String>,
}

/// Answers the cell type of each sentence with a model fine-tuned by `cell_type::finetune`: the answer
/// token's logits at the prompt's end, restricted to the trained labels.
pub fn predict(
    ck: &super::Checkpoint,
    sentences: &[Vec<String>],
    progress: bool,
) -> Result<Answers> {
    let head = CellTypeHead::read(&ck.dir)?;
    let meta = ModelMeta::read(&ck.dir)?.ok_or_else(|| {
        Error::format(
            ck.dir.join(super::model_dir::META),
            "missing",
            "fine-tune the model with `cellsentence finetune-lm`",
        )
    })?;
    let ids = head.answer_ids(&ck.tokenizer)?;
    let texts = super::sentence_texts(ck, sentences, &meta.prompt, meta.max_genes)?;
    let seqs = ck.tokenizer.encode_batch(&texts)?;
    let opts = EmbedOptions {
        pool: Pool::Last,
        progress,
        ..Default::default()
    };
    let h = embed_ids(&ck.model, &seqs, &opts)?;
    let device = ck.model.device();
    let kind = ck
        .vs
        .variables()
        .values()
        .next()
        .map_or(Kind::Float, |v| v.kind());
    let ht = Tensor::from_slice(&h.data)
        .view([h.rows as i64, h.cols as i64])
        .to_kind(kind)
        .to_device(device);
    let scores = tch::no_grad(|| {
        ck.model
            .logits(&ht)
            .to_kind(Kind::Float)
            .index_select(1, &Tensor::from_slice(&ids).to_device(device))
            .softmax(1, Kind::Float)
            .to_device(Device::Cpu)
    });
    let data: Vec<f32> = Vec::try_from(scores.reshape([-1]))
        .map_err(|e: tch::TchError| Error::param("predict", e.to_string()))?;
    let l = head.labels.len();
    let predicted = data
        .chunks(l)
        .map(|r| {
            let k = (0..l)
                .max_by(|&a, &b| r[a].total_cmp(&r[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            head.labels[k].clone()
        })
        .collect();
    Ok(Answers {
        labels: head.labels,
        scores: Matrix {
            rows: h.rows,
            cols: l,
            data,
        },
        predicted,
    })
}
