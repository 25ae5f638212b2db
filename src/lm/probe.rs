//! What a model's token states encode: the share of their variance explained by the token's
//! position in the sentence (next-token statistics of a rank-ordered sentence) and by the cell's
//! type (cell identity), per hidden state.
use super::model::GptNeox;
use crate::{Error, Result};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Variance shares of one hidden state's token vectors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenShares {
    /// Between-position share (η² of the position index).
    pub position: f64,
    /// Between-cell-type share (η² of the cell's label, every token of a cell labelled alike).
    pub cell_type: f64,
}

/// η² of position and of cell type for every hidden state (0 = token embeddings … last = final
/// output), over sequences of one common length (`seqs` of equal length, no padding).
pub fn token_variance_shares(
    model: &GptNeox,
    seqs: &[Vec<i64>],
    labels: &[String],
) -> Result<Vec<TokenShares>> {
    let n = seqs.len();
    if n < 2 || labels.len() != n {
        return Err(Error::param(
            "probe",
            "need at least 2 sequences, one label each",
        ));
    }
    let t = seqs[0].len();
    if seqs.iter().any(|s| s.len() != t) {
        return Err(Error::param("probe", "sequences must share one length"));
    }
    let flat: Vec<i64> = seqs.iter().flatten().copied().collect();
    let ids = Tensor::from_slice(&flat)
        .view([n as i64, t as i64])
        .to_device(model.device());
    let mut groups: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        groups.entry(l.as_str()).or_default().push(i as i64);
    }
    let (_, states) = tch::no_grad(|| model.hidden(&ids, true))?;
    let mut out = Vec::with_capacity(states.len());
    for s in &states {
        let s = s.to_kind(Kind::Double).to_device(tch::Device::Cpu);
        let mean = s.mean_dim(&[0i64, 1][..], false, Kind::Double);
        let total = (&s - &mean).square().sum(Kind::Double).double_value(&[]);
        let pos_means = s.mean_dim(0, false, Kind::Double); // [T, H]
        let position = (pos_means - &mean)
            .square()
            .sum(Kind::Double)
            .double_value(&[])
            * n as f64
            / total;
        let mut between = 0.0;
        for rows in groups.values() {
            let idx = Tensor::from_slice(rows);
            let m = s
                .index_select(0, &idx)
                .mean_dim(&[0i64, 1][..], false, Kind::Double);
            between +=
                (m - &mean).square().sum(Kind::Double).double_value(&[]) * (rows.len() * t) as f64;
        }
        out.push(TokenShares {
            position,
            cell_type: between / total,
        });
    }
    Ok(out)
}
