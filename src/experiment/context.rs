//! One dataset of a run ([`DatasetContext`]): read, QC-filtered, normalized and its HVG selected
//! once, lazily (only when a stage is not cached), with the experiment's settings; and the runners'
//! one loop over datasets ([`for_each_dataset`]), which wraps errors and skips unusable datasets.
use super::{Experiment, RunDataset};
use crate::deviation::Order;
use crate::error::{Error, Result};
use crate::pipeline::{Counts, HvgSource, Pipeline, Prepared};
use crate::sentence::{GeneSet, SentenceParams};

/// A dataset of a run, prepared on first use.
pub struct DatasetContext<'a> {
    /// The experiment (preprocessing and HVG settings).
    pub experiment: &'a Experiment,
    /// The dataset.
    pub dataset: &'a RunDataset,
    quiet: bool,
    pipeline: Option<Pipeline>,
    hvg: Option<Vec<usize>>,
}

impl<'a> DatasetContext<'a> {
    /// Nothing is read until [`Self::prepared`] or [`Self::hvg`] is called.
    pub fn new(experiment: &'a Experiment, dataset: &'a RunDataset, quiet: bool) -> Self {
        Self {
            experiment,
            dataset,
            quiet,
            pipeline: None,
            hvg: None,
        }
    }

    /// The dataset id.
    pub fn id(&self) -> &str {
        &self.dataset.entry.id
    }

    /// The dataset's [`Pipeline`] with the experiment's settings, read and prepared on first use.
    fn pipeline(&mut self) -> Result<&mut Pipeline> {
        if self.pipeline.is_none() {
            let (e, entry) = (self.experiment, &self.dataset.entry);
            if !self.quiet {
                eprintln!("[run] reading {}", entry.path.display());
            }
            let ds = entry.load(!self.quiet)?;
            let hvg = HvgSource::Select {
                params: e.hvg.params(),
                on: e.hvg.on,
                batch_key: None,
            };
            // the sweep's count-model flavors (deviance, Pearson residuals) read the counts too
            let sweep_counts = e.task == super::Task::HvgSweep
                && e.sweep.flavors.iter().any(|f| f.models_counts());
            let counts = if sweep_counts {
                Counts::Keep
            } else {
                Counts::Drop
            };
            let pre = entry.counts.then_some(&e.preprocess);
            self.pipeline = Some(Pipeline::new(ds, pre, hvg, counts)?);
        }
        Ok(self.pipeline.as_mut().expect("made above"))
    }

    /// QC-filtered, normalized, log-transformed data (counts kept when HVG runs on counts); raw
    /// count files are preprocessed with the experiment's settings, log-normalized ones taken as is.
    pub fn prepared(&mut self) -> Result<&Prepared> {
        Ok(self.pipeline()?.prepared())
    }

    /// The prepared data and the experiment's highly variable genes (column indices).
    pub fn hvg(&mut self) -> Result<(&Prepared, &[usize])> {
        if self.hvg.is_none() {
            let indices = self.pipeline()?.with_hvg()?.1.indices();
            self.hvg = Some(indices);
        }
        let p = self
            .pipeline
            .as_ref()
            .expect("prepared with the HVG")
            .prepared();
        Ok((p, self.hvg.as_deref().expect("selected above")))
    }
}

impl DatasetContext<'_> {
    /// Every QC-kept cell's sentence (the experiment's tie seed), as words: all expressed genes or
    /// only the HVG, cut to the first `max_genes`.
    pub fn sentences(&mut self, mode: GeneSet, max_genes: usize) -> Result<Vec<Vec<String>>> {
        self.sentences_in(mode, Order::Expression, max_genes)
    }

    /// Every QC-kept cell's deviation sentence ([`crate::deviation`]) of the mode's genes, as
    /// words: the reference profile is the mean of every cell of the dataset (no labels).
    pub fn deviation_sentences(
        &mut self,
        mode: GeneSet,
        max_genes: usize,
    ) -> Result<Vec<Vec<String>>> {
        self.sentences_in(mode, Order::Deviation, max_genes)
    }

    fn sentences_in(
        &mut self,
        mode: GeneSet,
        order: Order,
        max_genes: usize,
    ) -> Result<Vec<Vec<String>>> {
        let params = SentenceParams {
            tie_seed: self.experiment.sentences.tie_seed,
            max_genes: Some(max_genes),
        };
        Ok(self.pipeline()?.sentences(mode, order, &params)?.to_words())
    }
}

/// What [`for_each_dataset`] returns: each usable dataset with its value, and the skipped ones'
/// reasons.
pub type PerDataset<'d, T> = (Vec<(&'d RunDataset, T)>, Vec<String>);

/// Runs `f` on every dataset of the run, in order. A failure is wrapped with the experiment file
/// and dataset; when the file asked for every `available` dataset and did not name this one, the
/// dataset is skipped instead (a warning, and the reason in the second list).
pub fn for_each_dataset<'d, T>(
    e: &Experiment,
    datasets: &'d [RunDataset],
    mut f: impl FnMut(&'d RunDataset) -> Result<T>,
) -> Result<PerDataset<'d, T>> {
    let mut done = Vec::new();
    let mut skipped = Vec::new();
    for d in datasets {
        let id = &d.entry.id;
        match f(d) {
            Ok(v) => done.push((d, v)),
            Err(err) if e.datasets.iter().any(|x| x == "available") && !e.datasets.contains(id) => {
                eprintln!("[run] skipping {id}: {err}");
                skipped.push(format!("{id}: {err}"));
            }
            Err(err) => {
                return Err(Error::InExperiment {
                    file: e.file.clone(),
                    dataset: id.clone(),
                    source: Box::new(err),
                })
            }
        }
    }
    Ok((done, skipped))
}
