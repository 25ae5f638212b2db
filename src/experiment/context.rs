//! One dataset of a run ([`DatasetContext`]): read, QC-filtered, normalized and its HVG selected
//! once, lazily (only when a stage is not cached), with the experiment's settings; and the runners'
//! one loop over datasets ([`for_each_dataset`]), which wraps errors and skips unusable datasets.
use super::{Experiment, RunDataset};
use crate::error::{Error, Result};
use crate::pipeline::{self, HvgInput, Prepared};
use crate::sentence::{self, GeneSet, SentenceParams};

/// A dataset of a run, prepared on first use.
pub struct DatasetContext<'a> {
    /// The experiment (preprocessing and HVG settings).
    pub experiment: &'a Experiment,
    /// The dataset.
    pub dataset: &'a RunDataset,
    quiet: bool,
    prepared: Option<Prepared>,
    hvg: Option<Vec<usize>>,
}

impl<'a> DatasetContext<'a> {
    /// Nothing is read until [`Self::prepared`] or [`Self::hvg`] is called.
    pub fn new(experiment: &'a Experiment, dataset: &'a RunDataset, quiet: bool) -> Self {
        Self {
            experiment,
            dataset,
            quiet,
            prepared: None,
            hvg: None,
        }
    }

    /// The dataset id.
    pub fn id(&self) -> &str {
        &self.dataset.entry.id
    }

    /// QC-filtered, normalized, log-transformed data (counts kept when HVG runs on counts); raw
    /// count files are preprocessed with the experiment's settings, log-normalized ones taken as is.
    pub fn prepared(&mut self) -> Result<&Prepared> {
        if self.prepared.is_none() {
            let (e, entry) = (self.experiment, &self.dataset.entry);
            if !self.quiet {
                eprintln!("[run] reading {}", entry.path.display());
            }
            let ds = entry.load(!self.quiet)?;
            // the sweep's count-model flavors (deviance, Pearson residuals) read the counts too
            let keep_counts = e.hvg.on == HvgInput::Counts
                || (e.task == super::Task::HvgSweep
                    && e.sweep.flavors.iter().any(|f| f.models_counts()));
            let p = pipeline::prepare(ds, entry.counts.then_some(&e.preprocess), keep_counts)?;
            self.prepared = Some(p);
        }
        Ok(self.prepared.as_ref().expect("prepared above"))
    }

    /// The prepared data and the experiment's highly variable genes (column indices).
    pub fn hvg(&mut self) -> Result<(&Prepared, &[usize])> {
        if self.hvg.is_none() {
            let e = self.experiment;
            let p = self.prepared()?;
            let h = pipeline::select_hvg(p, &e.hvg.params(), e.hvg.on, None)?;
            self.hvg = Some(h.indices());
        }
        let p = self.prepared.as_ref().expect("prepared with the HVG");
        Ok((p, self.hvg.as_deref().expect("selected above")))
    }
}

impl DatasetContext<'_> {
    /// Every QC-kept cell's sentence (the experiment's tie seed), as words: all expressed genes or
    /// only the HVG, cut to the first `max_genes`.
    pub fn sentences(&mut self, mode: GeneSet, max_genes: usize) -> Result<Vec<Vec<String>>> {
        let tie = self.experiment.sentences.tie_seed;
        let (p, hvg) = self.hvg()?;
        let params = SentenceParams {
            seed: tie,
            max_genes: Some(max_genes),
        };
        let s = match mode {
            GeneSet::All => sentence::cell_sentences(&p.data.x, &p.data.genes, &params)?,
            GeneSet::Hvg => {
                let names: Vec<String> = hvg.iter().map(|&j| p.data.genes[j].clone()).collect();
                sentence::cell_sentences(&p.data.x.select_cols(hvg), &names, &params)?
            }
        };
        Ok(words(&s))
    }
}

/// Sentences split into their words.
fn words(sentences: &[String]) -> Vec<Vec<String>> {
    sentences
        .iter()
        .map(|l| {
            l.split(' ')
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

impl DatasetContext<'_> {
    /// Every QC-kept cell's deviation sentence ([`crate::deviation`]) of the mode's genes, as
    /// words: the reference profile is the mean of every cell of the dataset (no labels).
    pub fn deviation_sentences(
        &mut self,
        mode: GeneSet,
        max_genes: usize,
    ) -> Result<Vec<Vec<String>>> {
        let tie = self.experiment.sentences.tie_seed;
        let (p, hvg) = self.hvg()?;
        let (x, names) = match mode {
            GeneSet::All => (p.data.x.clone(), p.data.genes.clone()),
            GeneSet::Hvg => (
                p.data.x.select_cols(hvg),
                hvg.iter().map(|&j| p.data.genes[j].clone()).collect(),
            ),
        };
        let all: Vec<usize> = (0..x.n_rows).collect();
        let reference = crate::deviation::reference_profile(&x, &all)?;
        let params = SentenceParams {
            seed: tie,
            max_genes: Some(max_genes),
        };
        Ok(words(&crate::deviation::cell_sentences(
            &x, &names, &reference, &params,
        )?))
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
