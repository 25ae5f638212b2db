//! The label-free deviation sentence: each cell's expressed genes ranked by how far its
//! log-normalized expression lies above a reference mean profile (the per-gene mean over
//! reference cells, zeros included; no labels), instead of by the expression itself.
//!
//! The sentence holds the same genes as the full (expression-ordered) sentence, reordered: genes
//! the cell expresses far above the average cell come first, house-keeping genes that every cell
//! expresses highly move back. Ties are broken by the same Cell2Sentence shuffle stream.
//! Reconstruction fits Cell2Sentence's log-rank line to the deviations and adds the reference
//! back ([`reconstruct`](fn@reconstruct)).
use serde::{Deserialize, Serialize};

use crate::csr::Csr;
use crate::error::{Error, Result};
use crate::npy::Matrix;
use crate::reconstruct::{self, RecModel, RecResult};
use crate::sentence::{self, SentenceParams};

/// How a sentence orders a cell's genes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Decreasing normalized expression (Cell2Sentence).
    #[default]
    Expression,
    /// Decreasing deviation above the reference mean profile.
    Deviation,
}

/// Per-gene mean of `x` over `rows` (zeros included): the reference profile.
pub fn reference_profile(x: &Csr, rows: &[usize]) -> Result<Vec<f64>> {
    if rows.is_empty() {
        return Err(Error::param(
            "reference cells",
            "no cells to average; the reference needs at least one cell",
        ));
    }
    let mut sum = vec![0.0f64; x.n_cols];
    for &r in rows {
        let (c, v) = x.row(r);
        for (&j, &val) in c.iter().zip(v) {
            sum[j as usize] += val as f64;
        }
    }
    Ok(sum.into_iter().map(|s| s / rows.len() as f64).collect())
}

/// The expressed entries of `x` with values `v − reference + shift` (`shift` makes every value
/// positive, so the sentence machinery, which ranks non-zero entries by decreasing value, orders
/// them by decreasing deviation).
#[derive(Debug, Clone)]
pub struct Deviations {
    pub x: Csr,
    pub shift: f64,
}

/// The deviations of `x` from `reference` (one value per column).
pub fn deviations(x: &Csr, reference: &[f64]) -> Result<Deviations> {
    if reference.len() != x.n_cols {
        return Err(Error::param(
            "reference",
            format!(
                "{} reference values for {} genes; compute the profile on the same genes",
                reference.len(),
                x.n_cols
            ),
        ));
    }
    if let Some(j) = reference.iter().position(|v| !v.is_finite()) {
        return Err(Error::param(
            "reference",
            format!("gene {j}: the reference value is not finite"),
        ));
    }
    let shift = reference.iter().copied().fold(0.0, f64::max) + 1.0;
    let (mut indptr, mut indices, mut data) = (vec![0usize], Vec::new(), Vec::new());
    for r in 0..x.n_rows {
        let (c, v) = x.row(r);
        for (&j, &val) in c.iter().zip(v) {
            if val > 0.0 {
                indices.push(j);
                data.push((val as f64 - reference[j as usize] + shift) as f32);
            }
        }
        indptr.push(indices.len());
    }
    let x = Csr::from_parts(x.n_rows, x.n_cols, indptr, indices, data)
        .map_err(|e| Error::param("deviations", e))?;
    Ok(Deviations { x, shift })
}

/// Deviation sentences of `x` (log-normalized, cells × genes) against `reference`.
pub fn cell_sentences(
    x: &Csr,
    genes: &[String],
    reference: &[f64],
    p: &SentenceParams,
) -> Result<Vec<String>> {
    sentence::cell_sentences(&deviations(x, reference)?.x, genes, p)
}

/// [`cell_sentences`] as [`sentence::Sentences`] (ranked gene ids, rendered where needed).
pub fn sentences(
    x: &Csr,
    genes: &[String],
    reference: &[f64],
    p: &SentenceParams,
) -> Result<sentence::Sentences> {
    sentence::sentences(&deviations(x, reference)?.x, genes, p)
}

/// What a deviation sentence alone carries, as features: each expressed gene of each cell valued
/// `intercept + slope·log10(1 + rank) + reference` (the log-rank line fitted to deviations, plus
/// the profile; floored at 0), other genes 0.
pub fn sentence_features(
    x: &Csr,
    reference: &[f64],
    tie_seed: u32,
    (slope, intercept): (f64, f64),
) -> Result<Matrix> {
    let dev = deviations(x, reference)?;
    let mut m = Matrix {
        rows: x.n_rows,
        cols: x.n_cols,
        data: vec![0f32; x.n_rows * x.n_cols],
    };
    sentence::for_each_ranked(&dev.x, tie_seed, |i, ranked| {
        for (k, &g) in ranked.iter().enumerate() {
            let v = intercept + slope * ((1 + k) as f64).log10() + reference[g as usize];
            m.data[i * m.cols + g as usize] = v.max(0.0) as f32;
        }
    });
    Ok(m)
}

/// The reconstruction of expression from deviation ranks: the log-rank line (`model`) fitted to
/// the deviations of `cells`, plus the reference; scored against the expression itself.
pub fn reconstruct(
    x: &Csr,
    reference: &[f64],
    cells: &[usize],
    model: RecModel,
    tie_seed: u32,
) -> Result<RecResult> {
    if cells.is_empty() {
        return Err(Error::param("cells", "no cells to reconstruct"));
    }
    let d = deviations(x, reference)?;
    let mut e = reconstruct::rank_entries(&d.x, cells, tie_seed);
    for y in e.y.iter_mut() {
        *y -= d.shift;
    }
    let mut r = reconstruct::fit_predict(&e, model, reconstruct::BASE10_THRESHOLD)?;
    let back = |v: &mut Vec<f64>| {
        for (y, &g) in v.iter_mut().zip(&e.gene) {
            *y += reference[g as usize];
        }
    };
    back(&mut e.y);
    back(&mut r.predicted);
    let (r2, pearson, spearman) = reconstruct::metrics(&e.y, &r.predicted);
    Ok(RecResult {
        r2,
        pearson,
        spearman,
        ..r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Csr, Vec<String>) {
        // gene A is high in every cell (house-keeping), B and C only in some
        let x = Csr::from_parts(
            3,
            3,
            vec![0, 2, 4, 5],
            vec![0, 1, 0, 2, 0],
            vec![3.0, 1.0, 3.0, 2.0, 2.9],
        )
        .unwrap();
        (x, vec!["a".into(), "b".into(), "c".into()])
    }

    #[test]
    fn house_keeping_genes_move_back() {
        let (x, genes) = toy();
        let reference = reference_profile(&x, &[0, 1, 2]).unwrap();
        assert!((reference[0] - 8.9 / 3.0).abs() < 1e-6);
        let p = SentenceParams::default();
        let by_expr = sentence::cell_sentences(&x, &genes, &p).unwrap();
        let by_dev = cell_sentences(&x, &genes, &reference, &p).unwrap();
        assert_eq!(by_expr, ["A B", "A C", "A"]);
        // cell 0: A is 0.03 above its mean, B 0.67 above: B first; same genes
        assert_eq!(by_dev, ["B A", "C A", "A"]);
    }

    #[test]
    fn reconstruction_adds_the_reference_back() {
        let (x, _) = toy();
        let reference = reference_profile(&x, &[0, 1, 2]).unwrap();
        let r = reconstruct(&x, &reference, &[0, 1, 2], RecModel::C2s, 42).unwrap();
        assert_eq!(r.n_entries, 5);
        // predictions are in expression space: near the expressed values
        assert!(
            r.predicted.iter().all(|p| (0.5..4.0).contains(p)),
            "{:?}",
            r.predicted
        );
        assert!(reference_profile(&x, &[]).is_err());
        assert!(deviations(&x, &reference[..2]).is_err());
    }
}
