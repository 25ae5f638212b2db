//! The LM fine-tuned for annotation: per fold, Cell2Sentence's cell-type task trained on the
//! training part's labelled sentences (validation part: the kept step), then the test part
//! answered (`lm_answer`) or embedded for the paper's MLP (`lm_answer_mlp`).
use std::path::{Path, PathBuf};

use crate::classify::{self, Classifier, Fold};
use crate::error::Result;
use crate::experiment::lm_protocol::LmSource;
use crate::lm::{self, cell_type, EmbedOptions, TrainConfig};

use super::config::Method;
use super::ctx::{lm_inputs, Ctx, Row, Unit};
use super::method_label;

/// Fine-tunes one fold's model into `out` on `device`: its training part trains, its validation
/// part picks the kept step; the test part (cells and labels) is never read.
#[allow(clippy::too_many_arguments)]
pub fn finetune_fold(
    words: &[Vec<String>],
    labels: &[String],
    fold: &Fold,
    c: &TrainConfig,
    base: Option<&Path>,
    out: &Path,
    device: lm::Device,
    progress: bool,
) -> Result<()> {
    cell_type::finetune_indices(
        words,
        labels,
        (&fold.train, &fold.val),
        c,
        base,
        out,
        &[],
        device,
        progress,
    )?;
    Ok(())
}

/// One `lm_answer` / `lm_answer_mlp` row (cached; each fold's model is a cached stage of its own,
/// shared by the two rows).
pub(super) fn row(cx: &mut Ctx<'_>, digest: &str, u: Unit) -> Result<Row> {
    let (m, mode, source, order) = u;
    let (e, a, d, cache) = (cx.e, cx.a, cx.d, cx.cache);
    let g = cx.sentence_set(mode.expect("answer rows have a mode"))?;
    let base = match source {
        LmSource::Pretrained | LmSource::AnswerOnly => Some(cx.lm_model(g, source)?),
        _ => None,
    };
    let seen = match &base {
        Some(b) => lm::check_held_out(b, &d.entry.id, digest, a.allow_seen)?,
        None => false,
    };
    let base_digest = base.as_deref().map(|b| cache.file_digest(b)).transpose()?;
    let c = &a.answer.lm;
    let data_key = cx.data_key()?;
    let inputs = (
        lm_inputs(&data_key, e, g),
        (e.seed, a.split, a.folds, a.val_fraction),
        (cx.label_key(), &a.batch_key),
        (c, &base_digest),
    );
    let label = format!("{} {}", d.entry.id, method_label(m, mode, source, order));
    let mlp = Classifier::Mlp(a.mlp.clone());
    // the fold models, their answers and the MLP run where `annotation.device` says (the keys
    // carry it: `lm_inputs`)
    let device = a.device.resolve()?;
    let (ev, _) = cache.json("annotation", &label, &(&inputs, m, &mlp), || {
        let (labels, folds) = cx.folds()?;
        let words = cx.sentences(g, c.max_genes)?;
        let quiet = cx.quiet;
        let model = |f: &Fold| -> Result<PathBuf> {
            let what = format!("{} {label} {}", d.entry.id, f.name);
            let key = (&inputs, &f.name, &f.train, &f.val);
            let (dir, _) = cache.dir_artifact("lm_answer", &what, &key, |out| {
                finetune_fold(&words, &labels, f, c, base.as_deref(), out, device, !quiet)
            })?;
            Ok(dir)
        };
        match m {
            Method::LmAnswer => classify::evaluate_answers("lm answer", &labels, &folds, |f| {
                let ck = lm::load(&model(f)?, device, lm::Kind::Float)?;
                let test: Vec<Vec<String>> = f.test.iter().map(|&i| words[i].clone()).collect();
                Ok(cell_type::predict(&ck, &test, !quiet)?.predicted)
            }),
            _ => classify::evaluate_per_fold(
                |f| {
                    let dir = model(f)?;
                    let ck = lm::load(&dir, device, lm::Kind::Float)?;
                    let style = lm::prompt_style(&dir)?;
                    let opts = EmbedOptions {
                        progress: !quiet,
                        ..Default::default()
                    };
                    lm::embed_sentences(&ck, &words, &style, c.max_genes, &opts)
                },
                &labels,
                &folds,
                &mlp,
                device,
            ),
        }
    })?;
    Ok(Row {
        dataset: d.entry.id.clone(),
        paper: d.paper.clone(),
        method: m,
        mode,
        source,
        eval: ev,
        lm_dir: None,
        seen,
        order,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fold's model knows only its training labels: a label that only the test cells carry
    /// is never in its vocabulary of answers (it would be if the fold read its test part).
    #[test]
    fn a_fold_never_sees_its_test_labels() {
        let genes =
            |k: usize| -> Vec<String> { (0..6).map(|j| format!("G{}", k * 6 + j)).collect() };
        let mut words = Vec::new();
        let mut labels = Vec::new();
        for i in 0..40 {
            let k = i % 3;
            words.push(genes(k));
            labels.push(["alpha", "beta", "ghost"][k].to_string());
        }
        let ghost: Vec<usize> = (0..40).filter(|i| i % 3 == 2).collect();
        let rest: Vec<usize> = (0..40).filter(|i| i % 3 != 2).collect();
        let fold = Fold {
            name: "fold1".into(),
            train: rest[4..].to_vec(),
            val: rest[..4].to_vec(),
            test: ghost.clone(),
            unseen_labels: vec!["ghost".into()],
        };
        let c = TrainConfig {
            layers: 1,
            hidden: 32,
            heads: 2,
            intermediate: 64,
            max_genes: 6,
            steps: 4,
            batch_size: 4,
            eval_every: 2,
            ..TrainConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m");
        finetune_fold(
            &words,
            &labels,
            &fold,
            &c,
            None,
            &out,
            lm::Device::Cpu,
            false,
        )
        .unwrap();
        let head = cell_type::CellTypeHead::read(&out).unwrap();
        assert_eq!(head.labels, vec!["alpha", "beta"]);
        let ck = lm::load(&out, lm::Device::Cpu, lm::Kind::Float).unwrap();
        let test: Vec<Vec<String>> = ghost.iter().map(|&i| words[i].clone()).collect();
        let ans = cell_type::predict(&ck, &test, false).unwrap();
        assert!(ans.predicted.iter().all(|p| p != "ghost"));
        assert_eq!(ans.scores.cols, 2);
    }
}
