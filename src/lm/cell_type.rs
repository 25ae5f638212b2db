//! Cell2Sentence's cell-type prediction as a fine-tune (`CSModel.fine_tune`,
//! `loss_on_response_only`): the model reads the prompt (the cell sentence, then `<|CELL_TYPE|>`)
//! and is trained on the answer alone, the cell type's token. Label tokens enter the vocabulary
//! (the embedding grows as transformers' `resize_token_embeddings` does); [`predict`] answers
//! with the trained labels only, each with its score.
pub use super::cell_type_predict::{predict, Answers, CellTypeHead, ValPoint, HEAD, TASK};
use super::cell_type_run::Run;
use super::cell_type_start::start;
use super::corpus::cell_type_token;
use super::model::GptNeox;
use super::model_dir::partial_dir;
use super::model_dir::{save, LogRow, ModelMeta, Snapshot};
pub use super::prompt::answer_style;
use super::prompt::PromptStyle;
use super::prompt::CELL_TYPE_SEP;
use super::tokenizer::Tok;
use super::train::{self, Fitted, TrainConfig};
use super::trainer::{Resume, Task, Trainer};
use crate::progress::Progress;
use crate::{Error, Result};
use rand::distr::Distribution;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// Labelled cell sentences (gene words, most expressed first).
#[derive(Clone, Copy)]
pub struct Labelled<'a> {
    pub sentences: &'a [Vec<String>],
    pub labels: &'a [String],
}

impl<'a> Labelled<'a> {
    fn check(&self, what: &str) -> Result<()> {
        if self.sentences.len() != self.labels.len() {
            return Err(Error::param(
                what,
                format!(
                    "{} sentences but {} labels; give one label per cell",
                    self.sentences.len(),
                    self.labels.len()
                ),
            ));
        }
        Ok(())
    }
}

/// A fine-tune's summary.
#[derive(Debug, Clone)]
pub struct FinetuneReport {
    pub head: CellTypeHead,
    pub seconds: f64,
    pub log: Vec<LogRow>,
}

/// Right-padded ids `[batch, time]` and next-token targets `[batch, time-1]` that keep only the
/// answer: the target of position `j-1` is `s[j]` for `j ≥ prompt_len`, -100 (ignored) before.
pub fn answer_batch(seqs: &[(&[i64], usize)], device: Device) -> (Tensor, Tensor) {
    let t = seqs.iter().map(|s| s.0.len()).max().unwrap_or(2).max(2);
    let b = seqs.len();
    let mut ids = vec![1i64; b * t];
    let mut tgt = vec![-100i64; b * (t - 1)];
    for (r, (s, prompt_len)) in seqs.iter().enumerate() {
        ids[r * t..r * t + s.len()].copy_from_slice(s);
        for j in (*prompt_len).max(1)..s.len() {
            tgt[r * (t - 1) + j - 1] = s[j];
        }
    }
    let shape = |n: usize| [b as i64, n as i64];
    (
        Tensor::from_slice(&ids).view(shape(t)).to_device(device),
        Tensor::from_slice(&tgt)
            .view(shape(t - 1))
            .to_device(device),
    )
}

/// Mean cross-entropy of the kept targets (those not -100): logits are computed at those
/// positions only.
pub fn answer_loss(model: &GptNeox, ids: &Tensor, tgt: &Tensor) -> Result<Tensor> {
    let t = ids.size()[1];
    let (h, _) = model.hidden(ids, false)?;
    let hd = h.size()[2];
    let h = h.narrow(1, 0, t - 1).reshape([-1, hd]);
    let y = tgt.reshape([-1]);
    let keep = y.ne(-100).nonzero().squeeze_dim(1);
    Ok(model
        .logits(&h.index_select(0, &keep))
        .to_kind(Kind::Float)
        .cross_entropy_for_logits(&y.index_select(0, &keep)))
}

/// Sorted distinct labels and each cell's index into them.
fn label_index(labels: &[String]) -> (Vec<String>, Vec<usize>) {
    crate::classify::encode_labels(labels)
}

/// Prompt ids of each sentence (truncated to `max_genes`, upper-cased when the model reads
/// upper-case symbols, rendered with `style`).
fn prompt_ids(
    tok: &Tok,
    style: &PromptStyle,
    sentences: &[Vec<String>],
    max_genes: usize,
    upper: bool,
) -> Result<Vec<Vec<i64>>> {
    tok.encode_batch(&super::render_sentences(sentences, style, max_genes, upper))
}

/// Answer loss and accuracy (argmax over the label tokens) of validation prompts.
fn validate(
    model: &GptNeox,
    prompts: &[&[i64]],
    answers: &[usize],
    label_ids: &Tensor,
    batch: usize,
) -> Result<(f64, f64)> {
    tch::no_grad(|| {
        let (mut loss, mut right) = (0.0, 0usize);
        for (p, a) in prompts.chunks(batch).zip(answers.chunks(batch)) {
            let logits = last_logits(model, p)?;
            let y = label_ids.index_select(0, &Tensor::from_slice(&to_i64(a)));
            let l = logits.cross_entropy_for_logits(&y.to_device(logits.device()));
            loss += l.double_value(&[]) * p.len() as f64;
            let pick = logits.index_select(1, label_ids).argmax(1, false);
            let pick: Vec<i64> = Vec::try_from(pick.to_device(Device::Cpu)).unwrap_or_default();
            right += pick
                .iter()
                .zip(a)
                .filter(|(p, a)| **p as usize == **a)
                .count();
        }
        let n = prompts.len().max(1) as f64;
        Ok((loss / n, right as f64 / n))
    })
}

fn to_i64(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// Full-vocabulary logits at each prompt's last token.
fn last_logits(model: &GptNeox, prompts: &[&[i64]]) -> Result<Tensor> {
    let device = model.device();
    let t = prompts.iter().map(|p| p.len()).max().unwrap_or(1);
    let mut ids = vec![1i64; prompts.len() * t];
    let mut last = Vec::with_capacity(prompts.len());
    for (r, p) in prompts.iter().enumerate() {
        ids[r * t..r * t + p.len()].copy_from_slice(p);
        last.push((r * t + p.len() - 1) as i64);
    }
    let x = Tensor::from_slice(&ids)
        .view([prompts.len() as i64, t as i64])
        .to_device(device);
    let (h, _) = model.hidden(&x, false)?;
    let hd = h.size()[2];
    let h = h
        .reshape([-1, hd])
        .index_select(0, &Tensor::from_slice(&last).to_device(device));
    Ok(model.logits(&h).to_kind(Kind::Float))
}

/// Fine-tunes a model (a new one of `c`'s shape, or `base`) on Cell2Sentence's cell-type task:
/// class-balanced batches of `train`, the loss on the answer token alone (or, with
/// `loss_on_prompt`, on every token), the validation answer
/// loss and accuracy on `val` every `eval_every` steps; the weights of the lowest validation loss
/// are saved to `out` (with [`HEAD`] and the `extra` files, committed with the model as a unit).
/// A killed run resumes from `out`'s partial state.
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    train_part: Labelled<'_>,
    val_part: Labelled<'_>,
    c: &TrainConfig,
    base: Option<&Path>,
    out: &Path,
    extra: &[(&'static str, Vec<u8>)],
    device: Device,
    progress: bool,
) -> Result<FinetuneReport> {
    train::check_out(out)?;
    train::check(c)?;
    train_part.check("training cells")?;
    val_part.check("validation cells")?;
    let (labels, y) = trained_labels(train_part.labels)?;
    let tokens: Vec<String> = labels.iter().map(|l| cell_type_token(l)).collect();
    let task_tokens = [&[CELL_TYPE_SEP.to_string()], tokens.as_slice()].concat();
    let s = start(base, train_part.sentences, &task_tokens, c, device)?;
    let d = AnswerData::encode(&s, (&labels, &y, &tokens), train_part, val_part, c)?;
    let parameters = train::parameter_count(&s.vs);
    let data_digest = d.digest(base, c.max_genes);
    let dir = partial_dir(out);
    let resume = Resume {
        dir: &dir,
        data_digest: &data_digest,
    };
    let (mut t, snapshots) =
        Trainer::start((c, &s.model, &s.vs), Some(resume), "finetune", progress)?;
    let run = if t.done > 0 {
        Run::resumed(&dir, snapshots)?
    } else {
        Run::default()
    };
    let mut task = AnswerTask::new(&d, (&y, labels.len()), c, device, run)?;
    let bar = Progress::bar(progress, c.steps as u64, BAR);
    bar.inc(t.done as u64);
    t.run(&mut task, c.steps, &bar)?;
    bar.finish();
    // the kept weights: the best validation step (the last one without validation cells)
    let best_step = task.run.restore_best(&s.vs, device, c.steps);
    let head = CellTypeHead {
        task: TASK.into(),
        labels,
        tokens,
        train_cells: task.draw.by_class.iter().map(Vec::len).collect(),
        val_cells: task.val_refs.len(),
        start: base.map_or_else(|| "random".into(), |b| b.display().to_string()),
        best_step,
        curve: std::mem::take(&mut task.run.curve),
    };
    let sizes = (d.seqs.len(), task.val_refs.len(), parameters);
    let run = (std::mem::take(&mut t.log), t.tokens, t.seconds);
    write_finetuned(out, (s, c), run, (head, sizes), extra)
}

/// The fine-tune's progress bar.
const BAR: &str = "fine-tune LM for cell types (steps)";

/// Sorted distinct training labels and each cell's index into them; fewer than two is refused.
fn trained_labels(labels: &[String]) -> Result<(Vec<String>, Vec<usize>)> {
    let (labels, y) = label_index(labels);
    if labels.len() < 2 {
        return Err(Error::param(
            "labels",
            format!(
                "the training cells have {} distinct label(s); cell-type prediction needs at least 2",
                labels.len()
            ),
        ));
    }
    Ok((labels, y))
}

/// A fine-tune's token ids: each training prompt and its prompt + answer, and the validation
/// prompts of trained labels with their answers.
struct AnswerData {
    label_ids: Vec<i64>,
    train_prompts: Vec<Vec<i64>>,
    seqs: Vec<Vec<i64>>,
    val_prompts: Vec<Vec<i64>>,
    val_answers: Vec<usize>,
}

impl AnswerData {
    fn encode(
        s: &super::cell_type_start::Start,
        (labels, y, tokens): (&[String], &[usize], &[String]),
        train_part: Labelled<'_>,
        val_part: Labelled<'_>,
        c: &TrainConfig,
    ) -> Result<AnswerData> {
        let ids_of = |t: &str| {
            s.tok
                .id(t)
                .ok_or_else(|| Error::param("vocabulary", format!("token {t} was not added")))
        };
        let label_ids: Vec<i64> = tokens.iter().map(|t| ids_of(t)).collect::<Result<_>>()?;
        let enc = |sents: &[Vec<String>]| prompt_ids(&s.tok, &s.style, sents, c.max_genes, s.upper);
        let train_prompts = enc(train_part.sentences)?;
        let seqs: Vec<Vec<i64>> = train_prompts
            .iter()
            .zip(y)
            .map(|(p, &k)| p.iter().copied().chain([label_ids[k]]).collect())
            .collect();
        train::check_positions(&seqs, &s.cfg, "a prompt with its answer")?;
        // validation cells of trained labels only
        let known: BTreeMap<&str, usize> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i))
            .collect();
        let val_keep: Vec<usize> = (0..val_part.labels.len())
            .filter(|&i| known.contains_key(val_part.labels[i].as_str()))
            .collect();
        let val_sents: Vec<Vec<String>> = val_keep
            .iter()
            .map(|&i| val_part.sentences[i].clone())
            .collect();
        let val_answers = val_keep
            .iter()
            .map(|&i| known[val_part.labels[i].as_str()])
            .collect();
        Ok(AnswerData {
            label_ids,
            train_prompts,
            seqs,
            val_prompts: enc(&val_sents)?,
            val_answers,
        })
    }

    /// The validation prompts as slices.
    fn val_refs(&self) -> Vec<&[i64]> {
        self.val_prompts.iter().map(Vec::as_slice).collect()
    }

    /// SHA-256 of what the run reads (a changed input starts a killed run afresh).
    fn digest(&self, base: Option<&Path>, max_genes: usize) -> String {
        let text = format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            self.seqs, self.val_prompts, self.val_answers, base, max_genes
        );
        crate::cache::sha256_hex(text.as_bytes())
    }
}

/// The seeded draw of training cells: a class (uniformly when balanced, as `answer_sampling`
/// says), then one of its cells.
struct BatchDraw {
    /// Each class's training cells.
    by_class: Vec<Vec<usize>>,
    rng: rand_chacha::ChaCha8Rng,
    sampling: train::Sampling,
    classes: rand::distr::weighted::WeightedIndex<f64>,
}

impl BatchDraw {
    /// Draws among the cells of `y` (class indices below `n_classes`).
    fn new(y: &[usize], n_classes: usize, c: &TrainConfig) -> Result<BatchDraw> {
        let by_class: Vec<Vec<usize>> = (0..n_classes)
            .map(|k| (0..y.len()).filter(|&i| y[i] == k).collect())
            .collect();
        let sizes: Vec<usize> = by_class.iter().map(Vec::len).collect();
        let classes =
            rand::distr::weighted::WeightedIndex::new(c.answer_sampling.class_weights(&sizes))
                .map_err(|e| Error::param("answer_sampling", e.to_string()))?;
        Ok(BatchDraw {
            by_class,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(c.seed),
            sampling: c.answer_sampling,
            classes,
        })
    }

    fn next(&mut self, batch_size: usize) -> Vec<usize> {
        (0..batch_size)
            .map(|_| {
                let k = match self.sampling {
                    train::Sampling::Balanced => self.rng.random_range(0..self.by_class.len()),
                    _ => self.classes.sample(&mut self.rng),
                };
                *self.by_class[k]
                    .choose(&mut self.rng)
                    .expect("every class has cells")
            })
            .collect()
    }
}

/// Cell2Sentence's cell-type task: class-balanced batches of prompts with their answers, the
/// loss on the answer (or, with `loss_on_prompt`, on every token), the validation answer loss and
/// accuracy recorded with the best step's weights.
struct AnswerTask<'a> {
    d: &'a AnswerData,
    c: &'a TrainConfig,
    device: Device,
    draw: BatchDraw,
    val_refs: Vec<&'a [i64]>,
    label_t: Tensor,
    run: Run,
}

impl<'a> AnswerTask<'a> {
    /// The task over `d`, drawing among the training cells' classes `y` (below `n_classes`).
    fn new(
        d: &'a AnswerData,
        (y, n_classes): (&[usize], usize),
        c: &'a TrainConfig,
        device: Device,
        run: Run,
    ) -> Result<Self> {
        Ok(AnswerTask {
            d,
            c,
            device,
            draw: BatchDraw::new(y, n_classes, c)?,
            val_refs: d.val_refs(),
            label_t: Tensor::from_slice(&d.label_ids).to_device(device),
            run,
        })
    }
}

impl Task for AnswerTask<'_> {
    type Batch = Vec<usize>;

    fn draw(&mut self, batch_size: usize) -> (Vec<usize>, usize) {
        let batch = self.draw.next(batch_size);
        let tokens = batch.iter().map(|&i| self.d.seqs[i].len()).sum();
        (batch, tokens)
    }

    /// The targets start at the answer, or (`loss_on_prompt`) at the prompt's second token.
    fn loss(&self, model: &GptNeox, batch: &Vec<usize>) -> Result<Tensor> {
        let items: Vec<(&[i64], usize)> = batch
            .iter()
            .map(|&i| {
                let from = if self.c.loss_on_prompt {
                    1
                } else {
                    self.d.train_prompts[i].len()
                };
                (self.d.seqs[i].as_slice(), from)
            })
            .collect();
        let (x, t) = answer_batch(&items, self.device);
        answer_loss(model, &x, &t)
    }

    fn validates(&self) -> bool {
        !self.val_refs.is_empty()
    }

    fn validate(
        &mut self,
        model: &GptNeox,
        vs: &nn::VarStore,
        step: usize,
        tokens: usize,
    ) -> Result<f64> {
        let v = validate(
            model,
            &self.val_refs,
            &self.d.val_answers,
            &self.label_t,
            64,
        )?;
        self.run.record_validation(step, v, vs, tokens);
        Ok(v.0)
    }

    fn kept(&self) -> &[Snapshot] {
        self.run.best.as_slice()
    }

    fn save_extra(&self, dir: &Path) -> Result<()> {
        self.run.save_curve(dir)
    }
}

/// Saves the fine-tuned model with [`HEAD`] and the `extra` files as one unit; `sizes` are the
/// training and validation cells and the parameters.
fn write_finetuned(
    out: &Path,
    (s, c): (super::cell_type_start::Start, &TrainConfig),
    (log, tokens, seconds): (Vec<LogRow>, usize, f64),
    (head, sizes): (CellTypeHead, (usize, usize, i64)),
    extra: &[(&'static str, Vec<u8>)],
) -> Result<FinetuneReport> {
    let f = Fitted {
        n_train: sizes.0,
        n_val: sizes.1,
        vocab: s.tok.vocab_size(),
        parameters: sizes.2,
        seconds,
        tokens,
        log,
        snapshots: Vec::new(),
        half: c.half,
        vs: s.vs,
        cfg: s.cfg,
        tok: s.tok,
    };
    let meta = ModelMeta {
        prompt: s.style,
        ..ModelMeta::new(c, s.upper)
    };
    let head_json = serde_json::to_string_pretty(&head).expect("head serializes") + "\n";
    save(out, &f, &meta, &|_, _, _| {
        let mut files = vec![(HEAD, head_json.clone().into_bytes())];
        files.extend(extra.iter().cloned());
        files
    })?;
    Ok(FinetuneReport {
        head,
        seconds: f.seconds,
        log: f.log,
    })
}

/// [`finetune`] on the cells `train` and `val` of `words` and `labels` (the others are never read).
#[allow(clippy::too_many_arguments)]
pub fn finetune_indices(
    words: &[Vec<String>],
    labels: &[String],
    (train, val): (&[usize], &[usize]),
    c: &TrainConfig,
    base: Option<&Path>,
    out: &Path,
    extra: &[(&'static str, Vec<u8>)],
    device: Device,
    progress: bool,
) -> Result<FinetuneReport> {
    let part = |idx: &[usize]| -> (Vec<Vec<String>>, Vec<String>) {
        (
            idx.iter().map(|&i| words[i].clone()).collect(),
            idx.iter().map(|&i| labels[i].clone()).collect(),
        )
    };
    let ((ts, tl), (vs, vl)) = (part(train), part(val));
    let labelled = |sentences, labels| Labelled { sentences, labels };
    finetune(
        labelled(&ts, &tl),
        labelled(&vs, &vl),
        c,
        base,
        out,
        extra,
        device,
        progress,
    )
}

/// A seeded stratified split of `labels`' indices into (train, validation): `fraction` of each
/// class (rounded, at least one cell left for training) goes to validation.
pub fn stratified_split(labels: &[String], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut by: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        by.entry(l.as_str()).or_default().push(i);
    }
    let (mut tr, mut va) = (Vec::new(), Vec::new());
    for (_, mut idx) in by {
        idx.shuffle(&mut rng);
        let n = ((idx.len() as f64 * fraction).round() as usize).min(idx.len() - 1);
        va.extend_from_slice(&idx[..n]);
        tr.extend_from_slice(&idx[n..]);
    }
    tr.sort_unstable();
    va.sort_unstable();
    (tr, va)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    /// Class draws: balanced gives every class the same chance, sqrt in proportion to the root of
    /// its cells, natural to its cells; next-gene training refuses the key it would ignore.
    #[test]
    fn answer_sampling_weighs_classes_as_named() {
        use train::Sampling;
        let sizes = [1usize, 4, 16];
        let close = |a: Vec<f64>, b: [f64; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        assert!(close(
            Sampling::Balanced.class_weights(&sizes),
            [1.0 / 3.0; 3]
        ));
        assert!(close(
            Sampling::Sqrt.class_weights(&sizes),
            [1.0 / 7.0, 2.0 / 7.0, 4.0 / 7.0]
        ));
        assert!(close(
            Sampling::Natural.class_weights(&sizes),
            [1.0 / 21.0, 4.0 / 21.0, 16.0 / 21.0]
        ));
        let words: Vec<Vec<String>> = (0..8).map(|i| vec![format!("G{i}"), "G9".into()]).collect();
        let natural = TrainConfig {
            answer_sampling: Sampling::Natural,
            ..TrainConfig::default()
        };
        let on_prompt = TrainConfig {
            loss_on_prompt: true,
            ..TrainConfig::default()
        };
        for (c, key) in [(natural, "answer_sampling"), (on_prompt, "loss_on_prompt")] {
            let init = train::Init::Scratch { vocab: None };
            let e = train::fit(&words, &c, init, Device::Cpu, false, None, None)
                .err()
                .expect("refused");
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn answer_targets_keep_only_the_answer() {
        let s = [5i64, 6, 7, 9];
        let (ids, tgt) = answer_batch(&[(&s, 3)], Device::Cpu);
        assert_eq!(Vec::<i64>::try_from(ids.reshape([-1])).unwrap(), s.to_vec());
        assert_eq!(
            Vec::<i64>::try_from(tgt.reshape([-1])).unwrap(),
            vec![-100, -100, 9]
        );
    }

    /// The objective reads the answer alone: with the input fixed, changing a prompt token's
    /// target leaves the loss unchanged and changing the answer's changes it (the full next-token
    /// loss, by contrast, moves with the prompt target).
    #[test]
    fn the_loss_is_on_the_answer_alone() {
        let c = TrainConfig {
            layers: 1,
            hidden: 32,
            heads: 2,
            intermediate: 64,
            ..TrainConfig::default()
        };
        let cfg = c.neox_config(64, 16);
        let (_vs, model) = crate::torch_seeded(3, || {
            let vs = nn::VarStore::new(Device::Cpu);
            let m = GptNeox::new(&vs.root(), &cfg);
            (vs, m)
        });
        let s = [0i64, 5, 6, 7, 8, 20];
        let loss = |seq: &[i64], prompt_len: usize| {
            let (ids, _) = answer_batch(&[(&s, prompt_len)], Device::Cpu);
            let (_, tgt) = answer_batch(&[(seq, prompt_len)], Device::Cpu);
            answer_loss(&model, &ids, &tgt).unwrap().double_value(&[])
        };
        let base = loss(&s, 5);
        let mut prompt_changed = s;
        prompt_changed[3] = 9;
        let mut answer_changed = s;
        answer_changed[5] = 21;
        assert_eq!(loss(&prompt_changed, 5), base);
        assert_ne!(loss(&answer_changed, 5), base);
        assert_ne!(loss(&prompt_changed, 1), loss(&s, 1));
    }

    #[test]
    fn answer_style_appends_the_separator_once() {
        let st = answer_style(&PromptStyle::Sentence);
        assert_eq!(
            st.render(&[vec!["INS", "GCG"]], 200),
            vec!["INS GCG <|CELL_TYPE|>"]
        );
        assert_eq!(answer_style(&st), st);
    }

    #[test]
    fn stratified_split_keeps_a_training_cell_per_class() {
        let l: Vec<String> = ["a", "a", "a", "a", "a", "a", "a", "a", "a", "a", "b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (tr, va) = stratified_split(&l, 0.2, 0);
        assert_eq!(va.len(), 2);
        assert!(tr.contains(&10));
        assert_eq!(tr.len() + va.len(), l.len());
    }
}
