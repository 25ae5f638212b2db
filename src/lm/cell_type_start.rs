//! Where a cell-type fine-tune starts: a new model over the training genes, or a base model with
//! the task's tokens added (its embedding grown as transformers' `resize_token_embeddings` does).
use super::model::GptNeox;
use super::model_dir::ModelMeta;
use super::prompt::{answer_style, PromptStyle};
use super::tokenizer::{gene_tokenizer, Tok};
use super::train::TrainConfig;
use super::NeoxConfig;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Device, Kind};
use tokenizers::AddedToken;

/// The model to fine-tune: a new one over the training genes, or `base` with the task's tokens
/// added (its embedding grown when they do not fit).
pub(super) struct Start {
    pub(super) vs: nn::VarStore,
    pub(super) model: GptNeox,
    pub(super) cfg: NeoxConfig,
    pub(super) tok: Tok,
    pub(super) style: PromptStyle,
    pub(super) upper: bool,
}

pub(super) fn start(
    base: Option<&Path>,
    train_sents: &[Vec<String>],
    task_tokens: &[String],
    c: &TrainConfig,
    device: Device,
) -> Result<Start> {
    let Some(dir) = base else {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for s in train_sents {
            for w in s.iter().take(c.max_genes) {
                *counts.entry(w.as_str()).or_default() += 1;
            }
        }
        let mut words: Vec<(&str, usize)> = counts.into_iter().collect();
        words.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut vocab: Vec<String> = words.into_iter().map(|(w, _)| w.to_string()).collect();
        vocab.extend(task_tokens.iter().cloned());
        let tok = Tok {
            path: "tokenizer.json".into(),
            inner: gene_tokenizer(&vocab)?,
        };
        let cfg = NeoxConfig {
            bos_token_id: Some(0),
            eos_token_id: Some(0),
            ..c.neox_config(
                (tok.vocab_size() as i64 + 63) / 64 * 64,
                (c.max_genes + 3).next_power_of_two() as i64,
            )
        };
        let (vs, model) = super::model::init_on(c.seed, device, false, |r| GptNeox::new(r, &cfg))
            .map_err(|e| Error::param("device", format!("{e}")))?;
        return Ok(Start {
            vs,
            model,
            cfg,
            tok,
            style: answer_style(&PromptStyle::Sentence),
            upper: false,
        });
    };
    let ck = super::load(dir, device, Kind::Float)?;
    let upper = ModelMeta::read(dir)?.is_some_and(|m| m.upper_case_genes);
    let style = answer_style(&super::prompt_style(dir)?);
    let mut tok = Tok {
        path: "tokenizer.json".into(),
        inner: ck.tokenizer.inner.clone(),
    };
    let missing: Vec<AddedToken> = task_tokens
        .iter()
        .filter(|t| tok.id(t).is_none())
        .map(|t| AddedToken::from(t.clone(), true).single_word(true))
        .collect();
    tok.inner
        .add_tokens(missing)
        .map_err(|e| Error::param("vocabulary", e.to_string()))?;
    let need = tok.vocab_size() as i64;
    let (vs, model, cfg) = if need > ck.model.cfg.vocab_size {
        grow_vocab(&ck.vs, &ck.model.cfg, (need + 63) / 64 * 64, device, c.seed)?
    } else {
        let cfg = ck.model.cfg.clone();
        (ck.vs, ck.model, cfg)
    };
    Ok(Start {
        vs,
        model,
        cfg,
        tok,
        style,
        upper,
    })
}

/// A copy of a model with `rows` vocabulary rows: the old rows kept, the new ones the mean of the
/// old (transformers' `resize_token_embeddings` with mean resizing).
fn grow_vocab(
    old: &nn::VarStore,
    cfg: &NeoxConfig,
    rows: i64,
    device: Device,
    seed: u64,
) -> Result<(nn::VarStore, GptNeox, NeoxConfig)> {
    let cfg = NeoxConfig {
        vocab_size: rows,
        ..cfg.clone()
    };
    let (vs, model) = super::model::init_on(seed, device, false, |r| GptNeox::new(r, &cfg))
        .map_err(|e| Error::param("device", format!("{e}")))?;
    let old_vars = old.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, mut v) in vs.variables() {
            let src = old_vars.get(&name).ok_or_else(|| {
                Error::param("base", format!("the base model has no variable {name}"))
            })?;
            if src.size() == v.size() {
                v.copy_(src);
            } else {
                let n = src.size()[0];
                v.narrow(0, 0, n).copy_(src);
                let mean = src.mean_dim(0, true, Kind::Float);
                let rest = v.size()[0] - n;
                v.narrow(0, n, rest).copy_(&mean.expand([rest, -1], false));
            }
        }
        Ok(())
    })?;
    Ok((vs, model, cfg))
}
