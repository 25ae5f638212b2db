//! [`DataKey`]: the one prefix of every stage key downstream of a dataset's sentences.
use serde::Serialize;

use super::{Experiment, RunDataset};
use crate::cache::Cache;
use crate::error::Result;

/// What a dataset's sentences depend on, hashed once: the input file's digest and the matrix read
/// from it, the preprocessing applied to raw counts, the HVG selection and the sentences' tie
/// seed. Every stage downstream of the sentences starts its key with it (never with the parts),
/// so a change to any of them reaches every such stage, as reconstruction chains its keys from
/// the selection stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DataKey(String);

impl DataKey {
    /// The key as stage inputs hold it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl RunDataset {
    /// This dataset's [`DataKey`] under the experiment's preprocessing, HVG and sentence settings.
    pub fn data_key(&self, e: &Experiment, cache: &Cache) -> Result<DataKey> {
        self.data_key_with(e, cache, &e.hvg)
    }

    /// [`Self::data_key`] with another HVG selection (a sweep point's `hvg`; `None`: all genes).
    pub fn data_key_with(
        &self,
        e: &Experiment,
        cache: &Cache,
        hvg: &impl Serialize,
    ) -> Result<DataKey> {
        let inputs = (
            self.digest(cache)?,
            format!("{:?}", self.entry.matrix),
            self.entry.counts.then_some(&e.preprocess),
            hvg,
            e.sentences.tie_seed,
        );
        Ok(DataKey(Cache::key("data", &inputs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_changes_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"), false);
        let file = dir.path().join("x.h5ad");
        std::fs::write(&file, b"cells").unwrap();
        let d = RunDataset {
            entry: crate::data::DatasetEntry {
                id: "x".into(),
                path: file.clone(),
                label_key: None,
                batch_key: None,
                matrix: crate::data::MatrixSource::X,
                counts: true,
            },
            paper: None,
            declared_log_normalized: false,
        };
        let text = "name: t\ntask: reconstruction\ndatasets: [x]\n";
        let e = Experiment::parse(std::path::Path::new("t.yaml"), text).unwrap();
        let key = d.data_key(&e, &cache).unwrap();
        assert_eq!(key, d.data_key(&e, &cache).unwrap());
        let mut tie = e.clone();
        tie.sentences.tie_seed += 1;
        assert_ne!(key, d.data_key(&tie, &cache).unwrap());
        let mut hvg = e.clone();
        hvg.hvg.n_top_genes += 1;
        assert_ne!(key, d.data_key(&hvg, &cache).unwrap());
        let marked = RunDataset {
            declared_log_normalized: true,
            ..d.clone()
        };
        assert_ne!(key, marked.data_key(&e, &cache).unwrap());
        let raw = RunDataset {
            entry: crate::data::DatasetEntry {
                matrix: crate::data::MatrixSource::Raw,
                ..d.entry.clone()
            },
            ..d.clone()
        };
        assert_ne!(key, raw.data_key(&e, &cache).unwrap());
        std::fs::write(&file, b"other cells").unwrap();
        assert_ne!(key, d.data_key(&e, &cache).unwrap());
    }
}
