//! Resumable training state and snapshots of a run: what a killed run needs to continue exactly
//! (weights, AdamW moments, log, snapshots so far) and where it keeps it.
use super::model_dir::{named_cpu, read_json, LogRow, Snapshot};
use super::optim::AdamW;
use super::train_config::TrainConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn, Tensor};

/// The state of an interrupted run, saved every `eval_every` steps into its partial directory:
/// weights, AdamW moments and snapshots in `state-<step>.safetensors`, the rest in `state.json`.
#[derive(Serialize, Deserialize)]
pub(crate) struct ResumeState {
    pub(crate) step: usize,
    pub(crate) config: TrainConfig,
    /// SHA-256 of the training texts: a changed corpus starts afresh.
    pub(crate) data_digest: String,
    pub(crate) log: Vec<LogRow>,
    pub(crate) seconds: f64,
    /// Tokens seen at each snapshot taken so far.
    pub(crate) snapshot_tokens: std::collections::BTreeMap<usize, usize>,
    #[serde(skip)]
    pub(crate) snapshots: Vec<Snapshot>,
}

impl ResumeState {
    pub(crate) fn save(
        &self,
        dir: &Path,
        vs: &nn::VarStore,
        opt: &AdamW,
        snaps: &[Snapshot],
    ) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut named: Vec<(String, Tensor)> = named_cpu(vs)
            .into_iter()
            .map(|(n, t)| (format!("model.{n}"), t))
            .collect();
        named.extend(opt.state());
        for s in snaps {
            named.extend(
                s.weights
                    .iter()
                    .map(|(n, t)| (format!("step{}.{n}", s.step), t.shallow_clone())),
            );
        }
        let file = dir.join(format!("state-{}.safetensors", self.step));
        let tmp = dir.join("state.safetensors.tmp");
        Tensor::write_safetensors(&named, &tmp)
            .map_err(|e| Error::format(&tmp, e.to_string(), "check disk space"))?;
        std::fs::rename(&tmp, &file).map_err(|e| Error::io(&file, e))?;
        let json = serde_json::to_string(self).expect("resume state serializes");
        let (tmp, js) = (dir.join("state.json.tmp"), dir.join("state.json"));
        std::fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &js).map_err(|e| Error::io(&js, e))?;
        for e in std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .flatten()
        {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with("state-") && e.path() != file {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// The saved state of the same run (same settings and data), restored into `vs` and `opt`;
    /// `None` when there is none or it belongs to another run.
    pub(crate) fn load(
        dir: &Path,
        c: &TrainConfig,
        digest: &str,
        vs: &nn::VarStore,
        opt: &mut AdamW,
    ) -> Result<Option<ResumeState>> {
        let fix = "delete the .partial directory to start afresh";
        let Some(mut st) =
            read_json::<ResumeState>(&dir.join("state.json"), "a resume state", fix)?
        else {
            return Ok(None);
        };
        if st.config != *c || st.data_digest != digest || st.step >= c.steps {
            return Ok(None);
        }
        let file = dir.join(format!("state-{}.safetensors", st.step));
        let named = Tensor::read_safetensors(&file)
            .map_err(|e| Error::format(&file, e.to_string(), fix))?;
        let find = |k: &str| named.iter().find(|(n, _)| n == k).map(|(_, t)| t);
        tch::no_grad(|| -> Result<()> {
            for (n, mut v) in vs.variables() {
                let src = find(&format!("model.{n}"))
                    .ok_or_else(|| Error::format(&file, format!("model.{n} is missing"), fix))?;
                v.copy_(&src.to_kind(v.kind()).to_device(v.device()));
            }
            Ok(())
        })?;
        opt.load_state(&named, st.step as i64)
            .map_err(|e| Error::format(&file, e, fix))?;
        // every snapshot taken so far (a run's `snapshots`, or a fine-tune's best step)
        let taken: Vec<usize> = st.snapshot_tokens.keys().copied().collect();
        for k in taken {
            let p = format!("step{k}.");
            let weights: Vec<(String, Tensor)> = named
                .iter()
                .filter_map(|(n, t)| {
                    n.strip_prefix(&p)
                        .map(|n| (n.to_string(), t.shallow_clone()))
                })
                .collect();
            let tokens = st.snapshot_tokens.get(&k).copied().unwrap_or(0);
            st.snapshots.push(Snapshot {
                step: k,
                tokens,
                weights,
            });
        }
        Ok(Some(st))
    }
}
