//! The training loop both LM trainers share (next-gene pretraining in [`super::train`], the
//! cell-type fine-tune in [`super::cell_type`]): seeded batches, an AdamW step at the scheduled
//! learning rate, validation every `eval_every` steps and the resumable state saved beside it. A
//! [`Task`] says what a batch is, its loss and its validation; the [`Trainer`] runs the steps.
use super::model::GptNeox;
use super::model_dir::{LogRow, Snapshot};
use super::optim::AdamW;
use super::resume::ResumeState;
use super::train::{finite, lr_at, TrainConfig};
use crate::progress::Progress;
use crate::Result;
use std::path::Path;
use std::time::Instant;
use tch::{nn, Tensor};

/// What one kind of training does at each step; [`Trainer::run`] runs the loop around it.
pub(super) trait Task {
    /// A batch of training sequences.
    type Batch;
    /// The next batch, from the task's seeded generator, and its tokens (drawn for every step,
    /// replayed ones too, so a resumed run sees the same data order).
    fn draw(&mut self, batch_size: usize) -> (Self::Batch, usize);
    /// The training loss of `batch` under `model`.
    fn loss(&self, model: &GptNeox, batch: &Self::Batch) -> Result<Tensor>;
    /// Whether there are validation sequences.
    fn validates(&self) -> bool;
    /// The validation loss after `step` (the weights in `vs`, `tokens` drawn so far).
    fn validate(
        &mut self,
        model: &GptNeox,
        vs: &nn::VarStore,
        step: usize,
        tokens: usize,
    ) -> Result<f64>;
    /// After each step taken (`tokens` drawn so far): snapshots of chosen steps.
    fn after_step(&mut self, _vs: &nn::VarStore, _step: usize, _tokens: usize) {}
    /// The weight snapshots a resumed run needs back.
    fn kept(&self) -> &[Snapshot];
    /// Files of the task's own saved beside the resumable state.
    fn save_extra(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }
}

/// Where a run keeps its resumable state: the partial folder and the digest of its data.
#[derive(Clone, Copy)]
pub(super) struct Resume<'a> {
    pub(super) dir: &'a Path,
    pub(super) data_digest: &'a str,
}

/// A training run: the model, its optimiser and what the run has done so far.
pub(super) struct Trainer<'a> {
    c: &'a TrainConfig,
    model: &'a GptNeox,
    vs: &'a nn::VarStore,
    opt: AdamW,
    resume: Option<Resume<'a>>,
    /// `train` or `finetune`: the name in messages and kill points.
    name: &'static str,
    /// Steps a killed run already took (their draws are replayed, nothing else).
    pub(super) done: usize,
    pub(super) log: Vec<LogRow>,
    /// Training seconds, earlier attempts included.
    pub(super) seconds: f64,
    /// Tokens drawn so far.
    pub(super) tokens: usize,
}

impl<'a> Trainer<'a> {
    /// A run of `model` (its variables `vs`) with AdamW (β 0.9/0.95, ε 1e-8, `c.weight_decay`);
    /// with `resume`, the saved state of the same settings and data is restored, and its
    /// snapshots are returned.
    pub(super) fn start(
        (c, model, vs): (&'a TrainConfig, &'a GptNeox, &'a nn::VarStore),
        resume: Option<Resume<'a>>,
        name: &'static str,
        progress: bool,
    ) -> Result<(Trainer<'a>, Vec<Snapshot>)> {
        let mut opt = AdamW::new(vs, 0.9, 0.95, 1e-8, c.weight_decay);
        let saved = match resume {
            Some(r) => ResumeState::load(r.dir, c, r.data_digest, vs, &mut opt)?,
            None => None,
        };
        let mut t = Trainer {
            c,
            model,
            vs,
            opt,
            resume,
            name,
            done: 0,
            log: Vec::with_capacity(c.steps),
            seconds: 0.0,
            tokens: 0,
        };
        let Some(st) = saved else {
            return Ok((t, Vec::new()));
        };
        if let (Some(r), true) = (resume, progress) {
            eprintln!("[{name}] resuming {} at step {}", r.dir.display(), st.step);
        }
        (t.done, t.log, t.seconds) = (st.step, st.log, st.seconds);
        Ok((t, st.snapshots))
    }

    /// Runs steps `0..stop` of the `c.steps` of the schedule (those a killed run took replay
    /// their draws only), advancing `bar`.
    pub(super) fn run<T: Task>(&mut self, task: &mut T, stop: usize, bar: &Progress) -> Result<()> {
        let start = Instant::now();
        for step in 0..stop {
            let (batch, tokens) = task.draw(self.c.batch_size);
            self.tokens += tokens;
            if step < self.done {
                continue;
            }
            let lr = lr_at(self.c, step, self.c.steps);
            let train_loss = self.optimise(task.loss(self.model, &batch)?, lr, step)?;
            let (last, at_eval) = self.due(step + 1);
            let val_loss = (task.validates() && (last || at_eval))
                .then(|| task.validate(self.model, self.vs, step + 1, self.tokens))
                .transpose()?;
            self.log.push(LogRow {
                step: step + 1,
                lr,
                train_loss,
                val_loss,
            });
            task.after_step(self.vs, step + 1, self.tokens);
            bar.inc(1);
            if at_eval && !last {
                self.save(task, step + 1, self.seconds + start.elapsed().as_secs_f64())?;
            }
        }
        self.seconds += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Whether `step` (1-based) is the last one, and whether validation is due after it.
    fn due(&self, step: usize) -> (bool, bool) {
        (step == self.c.steps, step % self.c.eval_every.max(1) == 0)
    }

    /// One optimiser step on `loss` at learning rate `lr` (gradients clipped to `grad_clip`);
    /// returns the loss, refused when it diverged.
    fn optimise(&mut self, loss: Tensor, lr: f64, step: usize) -> Result<f64> {
        self.opt.zero_grad();
        loss.backward();
        self.opt.clip_grad_norm(self.c.grad_clip);
        self.opt.step(lr);
        finite(loss.double_value(&[]), step)
    }

    /// Saves the resumable state after `step` (`seconds` of training so far), when the run has a
    /// partial folder.
    fn save<T: Task>(&self, task: &T, step: usize, seconds: f64) -> Result<()> {
        let Some(r) = self.resume else {
            return Ok(());
        };
        let st = ResumeState {
            step,
            config: self.c.clone(),
            data_digest: r.data_digest.to_string(),
            log: self.log.clone(),
            seconds,
            snapshot_tokens: task.kept().iter().map(|s| (s.step, s.tokens)).collect(),
            snapshots: Vec::new(),
        };
        st.save(r.dir, self.vs, &self.opt, task.kept())?;
        task.save_extra(r.dir)?;
        crate::output::kill_point(&format!("{}-state-saved", self.name));
        Ok(())
    }
}
