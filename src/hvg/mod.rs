//! Highly variable genes with scanpy's `highly_variable_genes` semantics (scanpy 1.11):
//! flavors `seurat` and `cell_ranger` (dispersion-based, on log data) and `seurat_v3`
//! (normalized variance with a LOESS fit, meant for counts), each with optional `batch_key`; and
//! `deviance` (binomial deviance on counts, scry's `devianceFeatureSelection`, in `hvg/deviance`)
//! and `pearson_residuals` (scanpy's experimental flavor, on counts, in `hvg/pearson`).
//!
//! The paper ran `seurat_v3` on the log10-normalized matrix; that is [`Flavor::SeuratV3`] applied
//! to the preprocessed data. The textbook choices are `seurat` on log data and `seurat_v3` on counts.
use serde::{Deserialize, Serialize};

use crate::csr::Csr;
use crate::error::{Error, Result};

mod deviance;
mod dispersion;
mod pearson;
mod seurat_v3;

pub use deviance::binomial_deviance;
pub use dispersion::{dispersion_select, DispSums};
pub use pearson::residual_variances;
use seurat_v3::seurat_v3;
pub use seurat_v3::{
    seurat_v3_check_batches, seurat_v3_norm_var, seurat_v3_select, seurat_v3_trend,
};

/// HVG method.
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
pub enum Flavor {
    /// Seurat (v1/v2) dispersion, 20 equal-width mean bins; expects log data.
    Seurat,
    /// Cell Ranger dispersion, percentile bins, median/MAD; expects log data.
    #[strum(to_string = "cell_ranger", serialize = "cell-ranger")]
    #[serde(alias = "cell-ranger")]
    CellRanger,
    /// Seurat v3 normalized variance with LOESS (span 0.3); expects counts.
    #[serde(rename = "seurat_v3", alias = "seurat-v3")]
    #[strum(to_string = "seurat_v3", serialize = "seurat-v3")]
    SeuratV3,
    /// Binomial deviance (scry's `devianceFeatureSelection`, Townes et al. 2019); needs counts.
    Deviance,
    /// Variance of analytic Pearson residuals (scanpy `experimental.pp.highly_variable_genes`,
    /// Lause et al. 2021); needs counts.
    #[strum(to_string = "pearson_residuals", serialize = "pearson-residuals")]
    #[serde(alias = "pearson-residuals")]
    PearsonResiduals,
}

impl Flavor {
    /// Whether the flavor models raw counts (deviance, Pearson residuals): it runs on the
    /// QC-filtered counts, never on log data.
    pub fn models_counts(self) -> bool {
        matches!(self, Flavor::Deviance | Flavor::PearsonResiduals)
    }
}

/// Parameters of [`highly_variable_genes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HvgParams {
    /// Method.
    pub flavor: Flavor,
    /// Number of genes to select.
    pub n_top_genes: usize,
    /// Number of mean bins (`seurat`).
    pub n_bins: usize,
    /// LOESS span (`seurat_v3`).
    pub span: f64,
}

impl Default for HvgParams {
    fn default() -> Self {
        Self {
            flavor: Flavor::SeuratV3,
            n_top_genes: 2000,
            n_bins: 20,
            span: 0.3,
        }
    }
}

/// Per-gene HVG statistics and the selection.
#[derive(Debug, Clone)]
pub struct HvgResult {
    /// Selected genes (mask over the input's genes).
    pub highly_variable: Vec<bool>,
    /// Gene means (log1p of the mean for `seurat`; averaged over batches).
    pub means: Vec<f64>,
    /// Normalized dispersion (`seurat`/`cell_ranger`), normalized variance (`seurat_v3`) or
    /// binomial deviance (`deviance`, summed over batches).
    pub score: Vec<f64>,
    /// Number of batches in which the gene was highly variable (1 batch when no batch key).
    pub n_batches: Vec<usize>,
    /// `seurat_v3` only: the gene's normalized variance ties another gene's inside the top
    /// `n_top_genes` of some batch. scanpy ranks with numpy's unstable (and CPU-dispatched)
    /// argsort, so its order inside such ties is arbitrary; we break ties by gene order.
    pub tie_dependent: Vec<bool>,
}

impl HvgResult {
    /// The selection a gene list names (one gene a line; `list` is its file, for errors), over
    /// `genes`. Only the mask is known: means and scores are NaN, `n_batches` 0.
    pub fn from_list(genes: &[String], list: &std::path::Path, text: &str) -> Result<Self> {
        let pos: std::collections::HashMap<&str, usize> = genes
            .iter()
            .enumerate()
            .map(|(j, g)| (g.as_str(), j))
            .collect();
        let mut mask = vec![false; genes.len()];
        let fix = "make the list with `cellsentence hvg` on the same input and options";
        for (i, g) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let g = g.trim();
            let j = *pos.get(g).ok_or_else(|| {
                Error::bad_value(
                    list,
                    format!("line {}", i + 1),
                    format!("`{g}` is not a gene of the input (after QC)"),
                    fix,
                )
            })?;
            if std::mem::replace(&mut mask[j], true) {
                return Err(Error::bad_value(
                    list,
                    format!("line {}", i + 1),
                    format!("`{g}` is listed twice"),
                    fix,
                ));
            }
        }
        if !mask.contains(&true) {
            return Err(Error::format(list, "lists no gene", fix));
        }
        let n = genes.len();
        Ok(HvgResult {
            highly_variable: mask,
            means: vec![f64::NAN; n],
            score: vec![f64::NAN; n],
            n_batches: vec![0; n],
            tie_dependent: vec![false; n],
        })
    }

    /// Indices of the selected genes, increasing.
    pub fn indices(&self) -> Vec<usize> {
        (0..self.highly_variable.len())
            .filter(|&j| self.highly_variable[j])
            .collect()
    }
}

/// Column means and unbiased variances as scanpy's sparse `_get_mean_var` computes them
/// (f64 sums; each square taken in f32 before accumulation, as scanpy's numba kernel does).
pub fn mean_var(x: &Csr, rows: Option<&[usize]>) -> (Vec<f64>, Vec<f64>) {
    let n = rows.map_or(x.n_rows, |r| r.len());
    let mut s = vec![0f64; x.n_cols];
    let mut sq = vec![0f64; x.n_cols];
    match rows {
        Some(rs) => add_sums(x, rs.iter().copied(), &mut s, &mut sq, None),
        None => add_sums(x, 0..x.n_rows, &mut s, &mut sq, None),
    }
    finish_mean_var(&s, &sq, n)
}

/// Adds the rows' per-gene sums and sums of squares to `s` and `sq` (f64; squares in f32, as
/// [`mean_var`]; with `clip`, each value first clipped to its gene's bound, in f64, as
/// `seurat_v3` does). Row order is the summation order: chunks added in row order give the
/// whole matrix's sums bit for bit.
pub fn add_sums(
    x: &Csr,
    rows: impl Iterator<Item = usize>,
    s: &mut [f64],
    sq: &mut [f64],
    clip: Option<&[f64]>,
) {
    for r in rows {
        let (c, v) = x.row(r);
        for (&cc, &vv) in c.iter().zip(v) {
            let j = cc as usize;
            match clip {
                None => {
                    s[j] += vv as f64;
                    sq[j] += (vv * vv) as f64;
                }
                Some(clip) => {
                    let e = (vv as f64).min(clip[j]);
                    sq[j] += e * e;
                    s[j] += e;
                }
            }
        }
    }
}

/// Means and unbiased variances from the sums of `n` rows ([`add_sums`]).
pub fn finish_mean_var(s: &[f64], sq: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let nf = n as f64;
    let mut mean = vec![0f64; s.len()];
    let mut var = vec![0f64; s.len()];
    for j in 0..s.len() {
        mean[j] = s[j] / nf;
        var[j] = sq[j] / nf - (s[j] / nf).powi(2);
        if n != 1 {
            var[j] *= nf / (nf - 1.0);
        }
    }
    (mean, var)
}

/// Computes highly variable genes of `x` (cells × genes).
///
/// `log_base` is scanpy's `uns["log1p"]["base"]` (`None` = natural log), used by `seurat` to undo
/// the log. `batches`, when given, holds one label per cell (scanpy's `batch_key`).
pub fn highly_variable_genes(
    x: &Csr,
    genes: &[String],
    p: &HvgParams,
    log_base: Option<f64>,
    batches: Option<&[String]>,
) -> Result<HvgResult> {
    crate::validate::Validate::validate(p)?;
    if x.n_rows < 2 {
        return Err(Error::param(
            "cells",
            format!("HVG needs at least 2 cells, got {}", x.n_rows),
        ));
    }
    if let Some(b) = batches {
        if b.len() != x.n_rows {
            return Err(Error::param(
                "batch_key",
                format!("{} labels for {} cells", b.len(), x.n_rows),
            ));
        }
    }
    match p.flavor {
        Flavor::SeuratV3 => seurat_v3(x, p, batches),
        Flavor::Deviance => Ok(deviance::deviance(x, p, batches)),
        Flavor::PearsonResiduals => Ok(pearson::pearson_residuals(x, p, batches)),
        Flavor::Seurat | Flavor::CellRanger => {
            dispersion::dispersion(x, genes, p, log_base, batches)
        }
    }
}

/// The batches' names (sorted, as numpy's `unique`) and each cell's batch as an index into them.
pub fn batch_index(batches: &[String]) -> (Vec<&String>, Vec<usize>) {
    let mut cats: Vec<&String> = batches.iter().collect();
    cats.sort();
    cats.dedup();
    let of = batches
        .iter()
        .map(|b| cats.binary_search(&b).unwrap_or_default())
        .collect();
    (cats, of)
}

/// The batches' names (sorted, as numpy's `unique`) and each one's cells, in cell order.
fn batch_groups(batches: &[String]) -> (Vec<&String>, Vec<Vec<usize>>) {
    let (cats, of) = batch_index(batches);
    let mut groups = vec![Vec::new(); cats.len()];
    for (r, &g) in of.iter().enumerate() {
        groups[g].push(r);
    }
    (cats, groups)
}

/// The cells of each batch (sorted names), or all cells as one group without batches.
fn cell_groups(n_rows: usize, batches: Option<&[String]>) -> Vec<Vec<usize>> {
    batches.map_or_else(|| vec![(0..n_rows).collect()], |b| batch_groups(b).1)
}

impl crate::validate::Validate for HvgParams {
    fn validate(&self) -> crate::Result<()> {
        crate::validate::positive("n_top_genes", self.n_top_genes, "2000")?;
        crate::validate::positive("n_bins", self.n_bins, "20")?;
        crate::validate::within("span", self.span, f64::MIN_POSITIVE, 1.0, true, "0.3")
    }
}

#[cfg(test)]
mod flavor_tests {
    use super::Flavor;

    /// Experiment files take the flavors as the CLI does: scanpy's names and their hyphenated forms.
    #[test]
    fn yaml_takes_hyphenated_flavor_names() {
        for (text, f) in [
            ("cell_ranger", Flavor::CellRanger),
            ("cell-ranger", Flavor::CellRanger),
            ("seurat-v3", Flavor::SeuratV3),
            ("pearson-residuals", Flavor::PearsonResiduals),
        ] {
            let parsed: Flavor = serde_norway::from_str(text).unwrap();
            assert_eq!(parsed, f);
            assert_eq!(text.parse::<Flavor>().unwrap(), f);
        }
        assert_eq!(Flavor::CellRanger.to_string(), "cell_ranger");
        assert!(serde_norway::from_str::<Flavor>("cellranger").is_err());
    }
}
