//! Wires the stages for one dataset: read → (QC, normalize, log) → HVG → sentences.
use serde::{Deserialize, Serialize};

use crate::csr::Csr;
use crate::data::{Dataset, XState};
use crate::error::{Error, Result};
use crate::hvg::{self, Flavor, HvgParams, HvgResult};
use crate::preprocess::{self, PreprocessParams, QcReport};
use crate::sentence::{self, GeneSet, SentenceParams};

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

/// Preprocesses raw counts, or takes `ds` as already log-normalized when `preprocess` is false.
pub fn prepare(
    ds: Dataset,
    preprocess: Option<&PreprocessParams>,
    keep_counts: bool,
) -> Result<Prepared> {
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
) -> Result<Vec<String>> {
    let (x, names) = sentence_genes(p, genes, hvg)?;
    sentence::cell_sentences(&x, &names, params)
}

/// The expression and names of the genes a sentence mode draws from (HVG: their columns only).
pub fn sentence_genes(
    p: &Prepared,
    genes: GeneSet,
    hvg: Option<&HvgResult>,
) -> Result<(Csr, Vec<String>)> {
    match genes {
        GeneSet::All => Ok((p.data.x.clone(), p.data.genes.clone())),
        GeneSet::Hvg => {
            let h =
                hvg.ok_or_else(|| Error::param("genes", "hvg sentences need an HVG selection"))?;
            let idx = h.indices();
            let names: Vec<String> = idx.iter().map(|&j| p.data.genes[j].clone()).collect();
            Ok((p.data.x.select_cols(&idx), names))
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
) -> Result<Vec<String>> {
    let (x, names) = sentence_genes(p, genes, hvg)?;
    let all: Vec<usize> = (0..x.n_rows).collect();
    let reference = crate::deviation::reference_profile(&x, &all)?;
    crate::deviation::cell_sentences(&x, &names, &reference, params)
}
