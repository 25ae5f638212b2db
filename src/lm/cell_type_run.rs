//! A cell-type fine-tune's validation while it runs: its curve and the best snapshot so far, the
//! curve saved beside the resumable state (see [`super::trainer`]).
use super::cell_type_predict::ValPoint;
use super::model_dir::Snapshot;
use super::train;
use crate::{Error, Result};
use std::path::Path;
use tch::{nn, Device};

/// A fine-tune's validation: its curve and the weights of its best step so far (restored from a
/// killed run's partial state, or fresh).
#[derive(Default)]
pub(super) struct Run {
    pub(super) curve: Vec<ValPoint>,
    pub(super) best: Option<Snapshot>,
}

impl Run {
    /// The curve saved in `resume` and the best step's weights among the resumed `snapshots`.
    pub(super) fn resumed(resume: &Path, snapshots: Vec<Snapshot>) -> Result<Run> {
        Ok(Run {
            curve: read_curve(resume)?,
            best: snapshots.into_iter().next(),
        })
    }

    /// Records the validation answer loss and accuracy after `step` and keeps a snapshot of the
    /// weights when the loss is the lowest so far.
    pub(super) fn record_validation(
        &mut self,
        step: usize,
        (loss, accuracy): (f64, f64),
        vs: &nn::VarStore,
        tokens: usize,
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
            self.best = Some(Snapshot::take(step, tokens, vs));
        }
    }

    /// Saves the curve beside the resumable state in `resume`.
    pub(super) fn save_curve(&self, resume: &Path) -> Result<()> {
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
