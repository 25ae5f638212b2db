//! The state of a cell-type fine-tune while it runs: its log, validation curve, the best
//! snapshot so far, and the resumable state saved beside the output.
use super::cell_type_predict::ValPoint;
use super::model_dir::{LogRow, Snapshot};
use super::optim::AdamW;
use super::resume::ResumeState;
use super::train::{self, TrainConfig};
use crate::{Error, Result};
use std::path::Path;
use tch::{nn, Device};

/// A fine-tune's progress (restored from a killed run's partial state, or fresh).
#[derive(Default)]
pub(super) struct Run {
    /// Steps already taken (by a killed run, when resumed).
    pub(super) done: usize,
    pub(super) log: Vec<LogRow>,
    pub(super) curve: Vec<ValPoint>,
    pub(super) best: Option<Snapshot>,
    /// Training seconds of earlier attempts.
    pub(super) seconds: f64,
    /// Training tokens drawn so far.
    pub(super) seen: usize,
}

impl Run {
    /// The partial state in `resume` for these settings and data, else a fresh run.
    pub(super) fn resume_or_start(
        resume: &Path,
        c: &TrainConfig,
        data_digest: &str,
        vs: &nn::VarStore,
        opt: &mut AdamW,
        progress: bool,
    ) -> Result<Run> {
        let Some(st) = ResumeState::load(resume, c, data_digest, vs, opt)? else {
            return Ok(Run::default());
        };
        if progress {
            eprintln!(
                "[finetune] resuming {} at step {}",
                resume.display(),
                st.step
            );
        }
        Ok(Run {
            done: st.step,
            log: st.log,
            curve: read_curve(resume)?,
            best: st.snapshots.into_iter().next(),
            seconds: st.seconds,
            seen: 0,
        })
    }

    /// Records the validation answer loss and accuracy after `step` and keeps a snapshot of the
    /// weights when the loss is the lowest so far.
    pub(super) fn record_validation(
        &mut self,
        step: usize,
        (loss, accuracy): (f64, f64),
        vs: &nn::VarStore,
    ) {
        self.curve.push(ValPoint {
            step,
            loss,
            accuracy,
        });
        let better = self.best.as_ref().is_none_or(|b| {
            self.curve
                .iter()
                .find(|p| p.step == b.step)
                .is_none_or(|p| loss < p.loss)
        });
        if better {
            self.best = Some(Snapshot::take(step, self.seen, vs));
        }
    }

    /// Saves the resumable state after `step` (with the curve) into `resume`.
    pub(super) fn save(
        &self,
        resume: &Path,
        step: usize,
        (c, data_digest): (&TrainConfig, &str),
        (vs, opt): (&nn::VarStore, &AdamW),
        seconds: f64,
    ) -> Result<()> {
        let st = ResumeState {
            step,
            config: c.clone(),
            data_digest: data_digest.to_string(),
            log: self.log.clone(),
            seconds,
            snapshot_tokens: self.best.iter().map(|b| (b.step, b.tokens)).collect(),
            snapshots: Vec::new(),
        };
        st.save(resume, vs, opt, self.best.as_slice())?;
        write_curve(resume, &self.curve)
    }

    /// Puts the best validation step's weights back into `vs` and returns that step (`steps`, the
    /// last one, when there was no validation).
    pub(super) fn restore_best(&self, vs: &nn::VarStore, device: Device, steps: usize) -> usize {
        let Some(b) = &self.best else {
            return steps;
        };
        tch::no_grad(|| {
            let mut vars = vs.variables();
            for (n, w) in &b.weights {
                if let Some(v) = vars.get_mut(n) {
                    v.copy_(&w.to_device(device));
                }
            }
        });
        b.step
    }
}

const CURVE: &str = "curve.json";

fn write_curve(dir: &Path, curve: &[ValPoint]) -> Result<()> {
    let p = dir.join(CURVE);
    std::fs::write(&p, serde_json::to_string(curve).expect("curve serializes"))
        .map_err(|e| Error::io(&p, e))
}

fn read_curve(dir: &Path) -> Result<Vec<ValPoint>> {
    Ok(train::read_json(
        &dir.join(CURVE),
        "a validation curve",
        "delete the .partial directory to start afresh",
    )?
    .unwrap_or_default())
}
