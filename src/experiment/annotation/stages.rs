//! The annotation runner's rows: which (method, mode, LM source) units an experiment asks for, each
//! evaluated on a dataset's folds through the context's cached features (`ctx`), and the LM
//! evaluations notebooks and the scaling task reuse.
use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::classify::{self, Classifier, Evaluation};
use crate::deviation::Order;
use crate::error::Result;
use crate::experiment::lm_protocol::LmSource;
use crate::experiment::{mode_label, Experiment, RunDataset};
use crate::lm::{self, EmbedOptions};
use crate::sentence::GeneSet;

use super::config::{AnnotationSection, AnswerStart, Method};
use super::ctx::{lm_inputs, on_device, Ctx, Row, StageKey, Unit};
use super::method_label;
use super::quality::{self, QualityRow};

pub(super) fn dataset_rows(
    e: &Experiment,
    a: &AnnotationSection,
    d: &RunDataset,
    cache: &Cache,
    quiet: bool,
    (evaluated, data_dir): (&[String], Option<&Path>),
) -> Result<Vec<Row>> {
    dataset_outputs(e, a, d, cache, quiet, (evaluated, data_dir), false).map(|o| o.0)
}

/// A dataset's rows and, where the experiment asks for them, the quality panels of its
/// embeddings (one context: the data are prepared once).
pub(super) fn dataset_outputs(
    e: &Experiment,
    a: &AnnotationSection,
    d: &RunDataset,
    cache: &Cache,
    quiet: bool,
    run: (&[String], Option<&Path>),
    with_quality: bool,
) -> Result<(Vec<Row>, Vec<QualityRow>)> {
    let mut cx = Ctx::new((e, a, d), cache, quiet, run);
    let digest = d.digest(cache)?;
    let units = units(e, a);
    let rows = units
        .iter()
        .map(|&u| row(&mut cx, &digest, u))
        .collect::<Result<Vec<_>>>()?;
    let panels = match (&a.quality, with_quality) {
        (Some(_), true) => quality::embeddings(&units)
            .into_iter()
            .map(|emb| cx.quality_row(emb))
            .collect::<Result<Vec<_>>>()?,
        _ => Vec::new(),
    };
    Ok((rows, panels))
}

/// The rows an experiment asks for: every method, LM methods once per model source and mode,
/// sentence SVMs once per mode; with the deviation order, one more row of each over all genes
/// (LM: the pretrained model or the given checkpoint).
pub(super) fn units(e: &Experiment, a: &AnnotationSection) -> Vec<Unit> {
    let deviation = a.orders.contains(&Order::Deviation);
    let x = Order::Expression;
    let mut units: Vec<Unit> = Vec::new();
    for &m in &a.methods {
        match m {
            Method::Lm => {
                for s in LmSource::all(a.lm_protocol, &a.pretrain, a.model.as_deref()) {
                    units.extend(e.modes.iter().map(|&g| (m, Some(g), s, x)));
                    let base = s == LmSource::Pretrained || a.model.is_some();
                    if deviation && base {
                        units.push((m, Some(GeneSet::All), s, Order::Deviation));
                    }
                }
            }
            Method::SentenceSvm => {
                units.extend(e.modes.iter().map(|&g| (m, Some(g), LmSource::Own, x)));
                if deviation {
                    units.push((m, Some(GeneSet::All), LmSource::Own, Order::Deviation));
                }
            }
            Method::LmAnswer | Method::LmAnswerMlp => {
                for &start in &a.answer.starts {
                    let s = match start {
                        AnswerStart::Random => LmSource::Own,
                        AnswerStart::Pretrained => LmSource::Pretrained,
                        AnswerStart::PretrainedAnswers => LmSource::AnswerOnly,
                    };
                    units.extend(e.modes.iter().map(|&g| (m, Some(g), s, x)));
                }
            }
            _ => units.push((m, None, LmSource::Own, x)),
        }
    }
    units
}

/// One row: the cached evaluation of method `m` (LM rows: of `source`'s model reading `mode`).
fn row(cx: &mut Ctx<'_>, digest: &str, u: Unit) -> Result<Row> {
    let (m, mode, source, order) = u;
    if matches!(m, Method::LmAnswer | Method::LmAnswerMlp) {
        return super::answer::row(cx, digest, u);
    }
    let (e, a, d, cache) = (cx.e, cx.a, cx.d, cx.cache);
    let classifier = match m {
        Method::HvgSvm | Method::SentenceSvm => Classifier::Svm(a.svm.clone()),
        Method::Scmap => Classifier::Scmap(a.scmap.clone()),
        _ => Classifier::Mlp(a.mlp.clone()),
    };
    let lm_part = (m == Method::Lm).then_some((&a.lm, &a.model, a.max_genes));
    // rows reading the same sentences share their stage
    let key_mode = match mode {
        Some(g) => Some(cx.sentence_set(g)?),
        None => None,
    };
    let inputs = (
        cx.data_key()?,
        e.seed,
        a.split,
        a.folds,
        a.val_fraction,
        cx.label_key(),
        &a.batch_key,
        m,
        key_mode,
        &classifier,
        lm_part,
        a.pca_components,
    );
    let label = format!("{} {}", d.entry.id, method_label(m, mode, source, order));
    let (lm_dir, seen, model_digest) = row_model(cx, digest, u)?;
    // rows of the first protocol keep their keys; the others add the model's digest
    let key = match &model_digest {
        None => StageKey::Legacy(&inputs),
        Some(md) => StageKey::Extended(&inputs, (source, md.as_str())),
    };
    let compute = |cx: &mut Ctx<'_>| {
        let (labels, folds) = cx.folds()?;
        if (m, order) == (Method::SentenceSvm, Order::Deviation) {
            return cx.deviation_svm(&folds, &labels, &classifier);
        }
        let x = cx.features(u)?;
        classify::evaluate(&x, &labels, &folds, &classifier, a.device.resolve()?)
    };
    // expression rows keep their keys; deviation rows add the order
    let (ev, _) = match order {
        Order::Expression => {
            cache.json("annotation", &label, &on_device(a, &key), || compute(cx))?
        }
        Order::Deviation => {
            let key = on_device(a, (&key, order));
            cache.json("annotation", &label, &key, || compute(cx))?
        }
    };
    // on every run, the row cached or not (the embedding then comes from its own cache)
    if let (Some(dir), Some(g)) = (&a.embeddings_dir, mode.filter(|_| m == Method::Lm)) {
        cx.write_embedding(dir, g, source, order)?;
    }
    Ok(Row {
        dataset: d.entry.id.clone(),
        paper: d.paper.clone(),
        method: m,
        mode,
        source,
        eval: ev,
        lm_dir: lm_dir.filter(|_| a.model.is_none()),
        seen,
        order,
    })
}

/// An LM row's model: its directory, whether its corpus held the dataset (allowed only with
/// `allow_seen`) and, for a pretrained-protocol model, its digest (part of the row's key).
fn row_model(
    cx: &mut Ctx<'_>,
    digest: &str,
    (m, mode, source, _): Unit,
) -> Result<(Option<PathBuf>, bool, Option<String>)> {
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
            lm::check_held_out(&corpus_of, &cx.d.entry.id, digest, cx.a.allow_seen)?
        }
        _ => false,
    };
    let model_digest = match (&lm_dir, source) {
        (
            Some(dir),
            LmSource::FineTuned | LmSource::Pretrained | LmSource::Untrained | LmSource::AnswerOnly,
        ) => Some(cx.cache.file_digest(dir)?),
        _ => None,
    };
    Ok((lm_dir, seen, model_digest))
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
        orders: vec![Order::Expression],
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
    let mut cx = Ctx::new((e, a, d), cache, quiet, (&[], None));
    let model_digest = cache.file_digest(model)?;
    let data_key = d.data_key(e, cache)?;
    let inputs = (
        lm_inputs(&data_key, e, mode),
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
