//! The embedding-quality panel ([`crate::quality`]) of every embedding an annotation experiment
//! makes: each LM row's embeddings, and PCA of HVG, of all genes and of random gene sets of the
//! HVG count (the controls of feature-selection benchmarks). One cached stage per embedding.
use serde::{Deserialize, Serialize};

use crate::classify;
use crate::error::Result;
use crate::experiment::lm_protocol::LmSource;
use crate::experiment::mode_label;
use crate::npy::Matrix;
use crate::quality::{self, Panel};
use crate::sentence::GeneSet;

use super::config::Method;
use super::ctx::{Ctx, Unit};
use crate::deviation::Order;
use crate::pipeline::{all_dense, hvg_dense};

/// An embedding the panel scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Embedding {
    /// An LM row's embeddings of `mode` sentences.
    Lm(GeneSet, LmSource),
    /// An LM row's embeddings of deviation sentences (all genes).
    LmDeviation(LmSource),
    /// PCA of log-normalized HVG expression.
    HvgPca,
    /// PCA of log-normalized expression of every QC-kept gene (randomized SVD).
    #[serde(rename = "AllPcaRandomized")]
    AllPca,
    /// PCA of a random gene set as large as the HVG set (seeded).
    RandomPca(u64),
}

impl Embedding {
    /// How tables name it.
    pub fn label(&self, pcs: usize) -> String {
        match self {
            Embedding::Lm(g, s) => format!("{} {} sentences", s.prefix(), mode_label(*g)),
            Embedding::LmDeviation(s) => format!("{} deviation sentences", s.prefix()),
            Embedding::HvgPca => format!("PCA({pcs}) of HVG expression"),
            Embedding::AllPca => format!("PCA({pcs}) of all genes"),
            Embedding::RandomPca(seed) => format!("PCA({pcs}) of random genes (seed {seed})"),
        }
    }
}

/// One embedding's panel and 2-D map.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualityRow {
    pub dataset: String,
    pub embedding: String,
    pub panel: Panel,
    /// UMAP coordinates of each cell (empty without a map).
    pub map: Vec<[f32; 2]>,
    /// Cell types and batches the map is coloured by.
    pub labels: Vec<String>,
    pub batches: Option<Vec<String>>,
}

/// The embeddings of an experiment's rows: LM rows, then the PCA baselines and controls.
pub(super) fn embeddings(units: &[Unit]) -> Vec<Embedding> {
    let mut v: Vec<Embedding> = units
        .iter()
        .filter(|u| u.0 == Method::Lm)
        .map(|&(_, g, s, o)| match o {
            Order::Expression => Embedding::Lm(g.unwrap_or(GeneSet::All), s),
            Order::Deviation => Embedding::LmDeviation(s),
        })
        .collect();
    v.extend([
        Embedding::HvgPca,
        Embedding::AllPca,
        Embedding::RandomPca(0),
    ]);
    v
}

impl Ctx<'_> {
    fn embedding(&mut self, emb: Embedding) -> Result<Matrix> {
        let k = self.a.pca_components;
        let pca = |x: Matrix| classify::pca(&x, &(0..x.rows).collect::<Vec<_>>(), k);
        Ok(match emb {
            Embedding::Lm(g, s) => self.features((Method::Lm, Some(g), s, Order::Expression))?,
            Embedding::LmDeviation(s) => {
                self.features((Method::Lm, Some(GeneSet::All), s, Order::Deviation))?
            }
            Embedding::HvgPca => {
                self.features((Method::Pca, None, LmSource::Own, Order::Expression))?
            }
            // every gene: randomized SVD (the exact one is slow on ~15,000 columns)
            Embedding::AllPca => {
                classify::pca_randomized(&all_dense(self.prepared()?.0), k, self.e.seed)
            }
            Embedding::RandomPca(seed) => {
                let (p, h) = self.prepared()?;
                let genes =
                    crate::experiment::sweep::random_genes(p.data.genes.len(), h.len(), seed);
                pca(hvg_dense(p, &genes))
            }
        })
    }

    /// The panel of one embedding (cached); the batch column is the experiment's or the
    /// dataset's known one, left out where the dataset has a single batch.
    pub(super) fn quality_row(&mut self, emb: Embedding) -> Result<QualityRow> {
        let Some(params) = self.a.quality.clone() else {
            unreachable!("quality rows are only asked for with a quality section")
        };
        let (lk, bk) = (self.label_key(), self.batch_key());
        let model_digest = match emb {
            Embedding::Lm(g, s) => Some(self.cache.file_digest(&self.lm_model(g, s)?)?),
            Embedding::LmDeviation(s) => {
                Some(self.cache.file_digest(&self.lm_model(GeneSet::All, s)?)?)
            }
            _ => None,
        };
        // embeddings of the same sentences share their stage
        let key_emb = match emb {
            Embedding::Lm(g, s) => Embedding::Lm(self.sentence_set(g)?, s),
            other => other,
        };
        let inputs = (
            self.data_key()?,
            (
                &lk,
                &bk,
                key_emb,
                model_digest,
                self.a.max_genes,
                self.a.pca_components,
            ),
            &params,
        );
        let embedding = emb.label(self.a.pca_components);
        let label = format!("{} {embedding}", self.d.entry.id);
        let id = self.d.entry.id.clone();
        let cache = self.cache;
        let inputs = super::ctx::on_device(self.a, inputs);
        let (mut row, _) = cache.json("quality", &label, &inputs, || {
            let x = self.embedding(emb)?;
            let (p, _) = self.prepared()?;
            let labels = p.data.obs_labels(
                &lk,
                "label every cell, or choose another annotation.label_key",
            )?;
            let batches = match &bk {
                Some(b) => Some(
                    p.data
                        .obs_labels(b, "give every cell a batch, or set annotation.batch_key")?,
                ),
                None => None,
            };
            let batches = batches.filter(|b| quality::encode(b).1.len() > 1);
            let q = quality::evaluate(&x, &labels, batches.as_deref(), &params)?;
            let map = match params.umap_epochs {
                0 => Vec::new(),
                _ => quality::map(&x, &q, &params)
                    .iter()
                    .map(|p| [p[0] as f32, p[1] as f32])
                    .collect(),
            };
            Ok(QualityRow {
                dataset: id,
                embedding: embedding.clone(),
                panel: q.panel,
                map,
                labels,
                batches,
            })
        })?;
        // a shared stage may have been computed under the other mode's name
        row.embedding = embedding;
        Ok(row)
    }
}
