//! Wires the stages for one dataset: read → (QC, normalize, log) → HVG → sentences, in memory
//! ([`Pipeline`]) or streamed in row chunks (`backend`: which of the two, and [`each_sentence`],
//! the one entry point that makes a file's sentences either way).
mod backend;

pub use backend::{
    each_sentence, open_backed, read, streamed_chunk, why_not_streamed, Backend, SentenceRecipe,
    SentenceRun, AUTO_CHUNK,
};
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::csr::Csr;
use crate::data::{Dataset, XState};
use crate::error::{Error, Result};
use crate::hvg::{self, Flavor, HvgParams, HvgResult};
use crate::npy::Matrix;
use crate::preprocess::{self, PreprocessParams, QcReport};
use crate::sentence::{self, GeneSet, SentenceParams, Sentences};

/// Which matrix HVG selection runs on.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum HvgInput {
    /// The log-normalized matrix (the paper ran seurat_v3 on it; textbook for seurat/cell_ranger).
    Log,
    /// The QC-filtered raw counts (textbook for seurat_v3).
    Counts,
}

/// A dataset after preprocessing, ready for HVG and sentences.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Log-normalized expression.
    pub data: Dataset,
    /// QC-filtered counts, when kept.
    pub counts: Option<Csr>,
    /// QC report (None when preprocessing was skipped).
    pub report: Option<QcReport>,
}

/// Whether [`prepare`] keeps the QC-filtered raw counts beside the log-normalized data (for the
/// HVG flavors that model counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// Keep them ([`Prepared::counts`]).
    Keep,
    /// Drop them once normalized.
    Drop,
}

/// Preprocesses raw counts with `preprocess`, or takes `ds` as already log-normalized when it is
/// `None`.
pub fn prepare(
    ds: Dataset,
    preprocess: Option<&PreprocessParams>,
    counts: Counts,
) -> Result<Prepared> {
    let keep_counts = counts == Counts::Keep;
    match preprocess {
        Some(p) => {
            let out = preprocess::preprocess_owned(ds, p, keep_counts)?;
            Ok(Prepared {
                data: out.data,
                counts: out.counts,
                report: Some(out.report),
            })
        }
        None => {
            let mut data = ds;
            data.check_log_normalized()?;
            if !matches!(data.state, XState::LogNormalized { .. }) {
                // scanpy convention: no uns["log1p"] record means natural log
                data.state = XState::LogNormalized { base: None };
            }
            data.x.eliminate_zeros();
            Ok(Prepared {
                data,
                counts: None,
                report: None,
            })
        }
    }
}

/// The log base recorded for the data (scanpy `uns["log1p"]["base"]`).
pub fn log_base(ds: &Dataset) -> Option<f64> {
    match ds.state {
        XState::LogNormalized { base } => base,
        _ => None,
    }
}

/// Runs HVG selection on the prepared data.
pub fn select_hvg(
    p: &Prepared,
    params: &HvgParams,
    on: HvgInput,
    batch_key: Option<&str>,
) -> Result<HvgResult> {
    let batches = batch_key
        .map(|k| {
            p.data
                .obs_labels(k, "give every cell a batch, or leave batch_key unset")
        })
        .transpose()?;
    let counts_only = params.flavor.models_counts();
    let x = match on {
        HvgInput::Log if counts_only => {
            return Err(Error::param(
                "hvg_on",
                format!(
                "flavor {} models raw counts; use --on counts (experiment files: hvg.on: counts)",
                params.flavor
            ),
            ))
        }
        HvgInput::Log => &p.data.x,
        HvgInput::Counts => {
            if !counts_only && params.flavor != Flavor::SeuratV3 {
                return Err(Error::param("hvg_on", "counts input is only meaningful for flavors seurat_v3, deviance and pearson_residuals; seurat and cell_ranger expect log data"));
            }
            p.counts.as_ref().ok_or_else(|| {
                let fix = if counts_only {
                    format!("flavor {} models raw counts: give the counts file without --no-preprocess, or choose a flavor that reads log data (seurat, cell_ranger, seurat_v3)", params.flavor)
                } else {
                    "use --on log (experiment files: hvg.on: log)".to_string()
                };
                Error::param("hvg_on", format!("raw counts are not available (the input was declared log-normalized, not preprocessed from counts); {fix}"))
            })?
        }
    };
    hvg::highly_variable_genes(
        x,
        &p.data.genes,
        params,
        log_base(&p.data),
        batches.as_deref(),
    )
}

/// Builds sentences from all genes or from the HVG subset.
pub fn sentences(
    p: &Prepared,
    genes: GeneSet,
    hvg: Option<&HvgResult>,
    params: &SentenceParams,
) -> Result<Sentences> {
    let (x, names) = sentence_genes(p, genes, hvg)?;
    sentence::sentences(&x, &names, params)
}

/// The expression and names of the genes a sentence mode draws from (HVG: their columns only;
/// all genes: the prepared matrix itself, not a copy).
pub fn sentence_genes<'a>(
    p: &'a Prepared,
    genes: GeneSet,
    hvg: Option<&HvgResult>,
) -> Result<(Cow<'a, Csr>, Cow<'a, [String]>)> {
    match genes {
        GeneSet::All => Ok((Cow::Borrowed(&p.data.x), Cow::Borrowed(&p.data.genes[..]))),
        GeneSet::Hvg => {
            let h =
                hvg.ok_or_else(|| Error::param("genes", "hvg sentences need an HVG selection"))?;
            let idx = h.indices();
            let names: Vec<String> = idx.iter().map(|&j| p.data.genes[j].clone()).collect();
            Ok((Cow::Owned(p.data.x.select_cols(&idx)), Cow::Owned(names)))
        }
    }
}

/// Deviation sentences ([`crate::deviation`]) of the mode's genes, against the mean profile of
/// every cell of `p` (label-free).
pub fn deviation_sentences(
    p: &Prepared,
    genes: GeneSet,
    hvg: Option<&HvgResult>,
    params: &SentenceParams,
) -> Result<Sentences> {
    let (x, names) = sentence_genes(p, genes, hvg)?;
    let all: Vec<usize> = (0..x.n_rows).collect();
    let reference = crate::deviation::reference_profile(&x, &all)?;
    crate::deviation::sentences(&x, &names, &reference, params)
}

/// Dense expression rows (cells × `hvg`, in `hvg`'s order) of the log-normalized data: what the
/// HVG → PCA and HVG → MLP baselines read.
pub fn hvg_dense(p: &Prepared, hvg: &[usize]) -> Matrix {
    let pos: std::collections::BTreeMap<usize, usize> =
        hvg.iter().enumerate().map(|(k, &j)| (j, k)).collect();
    let n = p.data.n_cells();
    let mut data = vec![0f32; n * hvg.len()];
    for i in 0..n {
        let (cols, vals) = p.data.x.row(i);
        for (&j, &v) in cols.iter().zip(vals) {
            if let Some(&k) = pos.get(&(j as usize)) {
                data[i * hvg.len() + k] = v;
            }
        }
    }
    Matrix {
        rows: n,
        cols: hvg.len(),
        data,
    }
}

/// Dense expression rows of every gene of the log-normalized data.
pub fn all_dense(p: &Prepared) -> Matrix {
    let (n, d) = (p.data.n_cells(), p.data.genes.len());
    let mut data = vec![0f32; n * d];
    for i in 0..n {
        let (cols, vals) = p.data.x.row(i);
        for (&j, &v) in cols.iter().zip(vals) {
            data[i * d + j as usize] = v;
        }
    }
    Matrix {
        rows: n,
        cols: d,
        data,
    }
}

/// Where a run's highly variable genes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum HvgSource {
    /// Selected from the data ([`select_hvg`]).
    Select {
        /// Flavor and its settings.
        params: HvgParams,
        /// The matrix the flavor reads.
        on: HvgInput,
        /// obs column of batches (`batch_key` of scanpy), if any.
        batch_key: Option<String>,
    },
    /// Named by a gene list, one gene a line (`--hvg-list`).
    List(std::path::PathBuf),
}

/// prepare → HVG → sentences for one dataset, each step run once, on first use: the one wiring
/// the command line, the experiment runners, `reproduce` and the notebooks share.
#[derive(Debug, Clone)]
pub struct Pipeline {
    prepared: Prepared,
    source: HvgSource,
    hvg: Option<HvgResult>,
}

impl Pipeline {
    /// Prepares `ds` (QC, normalize, log with `preprocess`; `None`: X is log-normalized already),
    /// keeping the QC-filtered counts when the HVG flavor reads them or `counts` asks.
    pub fn new(
        ds: Dataset,
        preprocess: Option<&PreprocessParams>,
        hvg: HvgSource,
        counts: Counts,
    ) -> Result<Self> {
        let on_counts = matches!(
            hvg,
            HvgSource::Select {
                on: HvgInput::Counts,
                ..
            }
        );
        let counts = if on_counts { Counts::Keep } else { counts };
        Ok(Pipeline {
            prepared: prepare(ds, preprocess, counts)?,
            source: hvg,
            hvg: None,
        })
    }

    /// The prepared data.
    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// The prepared data, the pipeline done with.
    pub fn into_prepared(self) -> Prepared {
        self.prepared
    }

    /// The prepared data and its HVG selection (selected, or read from the list, on first use).
    /// Asking for at least as many genes as QC kept is warned about: every gene is then highly
    /// variable.
    pub fn with_hvg(&mut self) -> Result<(&Prepared, &HvgResult)> {
        if self.hvg.is_none() {
            let p = &self.prepared;
            let h = match &self.source {
                HvgSource::List(list) => {
                    let text = std::fs::read_to_string(list).map_err(|e| Error::io(list, e))?;
                    HvgResult::from_list(&p.data.genes, list, &text)?
                }
                HvgSource::Select {
                    params,
                    on,
                    batch_key,
                } => {
                    let genes = p.data.genes.len();
                    if params.n_top_genes >= genes {
                        eprintln!(
                            "warning: n_top_genes {} is not below the {genes} genes kept after QC: every gene is highly variable, so HVG sentences are the full sentences; lower n_top_genes (--n-top; experiment files: hvg.n_top_genes)",
                            params.n_top_genes
                        );
                    }
                    select_hvg(p, params, *on, batch_key.as_deref())?
                }
            };
            self.hvg = Some(h);
        }
        Ok((&self.prepared, self.hvg.as_ref().expect("selected above")))
    }

    /// The sentences of `genes` (all expressed genes, or the HVG only) in `order`.
    pub fn sentences(
        &mut self,
        genes: GeneSet,
        order: crate::deviation::Order,
        params: &SentenceParams,
    ) -> Result<Sentences> {
        if genes == GeneSet::Hvg {
            self.with_hvg()?;
        }
        let (p, hvg) = (&self.prepared, self.hvg.as_ref());
        match order {
            crate::deviation::Order::Expression => sentences(p, genes, hvg, params),
            crate::deviation::Order::Deviation => deviation_sentences(p, genes, hvg, params),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deviation::Order;

    fn synthetic() -> Dataset {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthetic.h5ad");
        crate::data::read(std::path::Path::new(path), &Default::default()).unwrap()
    }

    /// The pipeline's sentences are those its steps build one by one, and it selects the HVG
    /// once.
    #[test]
    fn the_pipeline_builds_what_its_steps_build() {
        let pre = PreprocessParams::default();
        let params = HvgParams {
            flavor: Flavor::Seurat,
            n_top_genes: 200,
            ..Default::default()
        };
        let source = HvgSource::Select {
            params: params.clone(),
            on: HvgInput::Log,
            batch_key: None,
        };
        let mut pl = Pipeline::new(synthetic(), Some(&pre), source, Counts::Drop).unwrap();
        let sp = SentenceParams::default();
        let got = pl.sentences(GeneSet::Hvg, Order::Expression, &sp).unwrap();
        let p = prepare(synthetic(), Some(&pre), Counts::Drop).unwrap();
        let h = select_hvg(&p, &params, HvgInput::Log, None).unwrap();
        assert_eq!(got, sentences(&p, GeneSet::Hvg, Some(&h), &sp).unwrap());
        assert_eq!(pl.with_hvg().unwrap().1.indices(), h.indices());
        let all = pl.sentences(GeneSet::All, Order::Expression, &sp).unwrap();
        assert!(all.mean_length() > got.mean_length() && !got.is_empty());
    }

    /// What cannot stream is refused by the pipeline, with the reason; the rest streams.
    #[test]
    fn the_pipeline_says_why_it_cannot_stream() {
        let select = |flavor, on| HvgSource::Select {
            params: HvgParams {
                flavor,
                ..Default::default()
            },
            on,
            batch_key: None,
        };
        let counts = select(Flavor::Deviance, HvgInput::Counts);
        let why = why_not_streamed(Order::Expression, GeneSet::Hvg, &counts).unwrap();
        assert!(why.contains("seurat_v3, seurat, cell_ranger"), "{why}");
        assert!(why_not_streamed(Order::Expression, GeneSet::All, &counts).is_none());
        let list = HvgSource::List("genes.txt".into());
        assert!(why_not_streamed(Order::Expression, GeneSet::Hvg, &list).is_none());
        let v3_counts = select(Flavor::SeuratV3, HvgInput::Counts);
        assert!(why_not_streamed(Order::Expression, GeneSet::Hvg, &v3_counts).is_some());
        let v3_log = select(Flavor::SeuratV3, HvgInput::Log);
        assert!(why_not_streamed(Order::Expression, GeneSet::Hvg, &v3_log).is_none());
        assert!(why_not_streamed(Order::Deviation, GeneSet::All, &v3_log).is_some());
        // an explicit chunk size for what cannot stream is refused, naming the option
        let err = streamed_chunk(std::path::Path::new("x"), Some(10), 0, Some("no".into()));
        assert!(err.unwrap_err().to_string().contains("--chunk-cells"));
    }
}
