//! The paper's reported numbers (`experiments/paper/reported.yaml`), typed, in the paper's order.
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default location of the transcription, relative to the project root.
pub const REPORTED: &str = "experiments/paper/reported.yaml";

/// The transcription this binary ships (`experiments/paper/reported.yaml` at build time), so an
/// installed binary runs experiments from any folder.
pub const BUILTIN: &str = include_str!("../experiments/paper/reported.yaml");

/// The default transcription file of this checkout.
pub fn default_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(REPORTED)
}

/// The transcription in `path`, or the built-in one.
pub fn load_or_builtin(path: Option<&Path>) -> Result<Reported> {
    match path {
        Some(p) => load(p),
        None => parse(BUILTIN, Path::new(REPORTED)),
    }
}

/// R², Pearson and Spearman as printed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecMetrics {
    /// Coefficient of determination.
    pub r2: f64,
    /// Pearson correlation.
    pub pearson: f64,
    /// Spearman correlation.
    pub spearman: f64,
}

/// Full- and HVG-sentence metrics of one dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecPair {
    /// All expressed genes.
    pub full: RecMetrics,
    /// HVG-only sentences.
    pub hvg: RecMetrics,
}

/// Accuracy and macro-F1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccF1 {
    /// Accuracy.
    pub accuracy: f64,
    /// Macro-averaged F1.
    pub macro_f1: f64,
}

/// A dataset as the paper describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperDataset {
    /// Cells.
    pub cells: usize,
    /// Genes.
    pub genes: usize,
    /// Cell types.
    pub cell_types: usize,
    /// Batches (None = not stated).
    pub batches: Option<usize>,
}

/// Ordered `name → value` pairs (YAML mapping order kept).
pub type Ordered<T> = Vec<(String, T)>;

/// Everything the paper reports, in the order it prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reported {
    /// Paper title.
    pub paper: String,
    /// The paper's datasets.
    pub datasets: Ordered<PaperDataset>,
    /// Figures II–VII captions, per dataset.
    pub reconstruction: Ordered<RecPair>,
    /// Table I (means of the captions).
    pub table_i: RecPair,
    /// Cell2Sentence's own PBMC numbers quoted by the paper (R², Spearman).
    pub c2s_original_pbmc: (f64, f64),
    /// Figure IX, per model.
    pub annotation_intra: Ordered<AccF1>,
    /// Figure X, per model, per dataset.
    pub inter_accuracy: Ordered<Ordered<f64>>,
    /// Figure XI, per model, per dataset.
    pub inter_macro_f1: Ordered<Ordered<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    paper: String,
    datasets: serde_norway::Mapping,
    #[allow(dead_code)]
    protocol: serde_norway::Value,
    reconstruction: RawRec,
    annotation_intra: serde_norway::Mapping,
    annotation_inter: RawInter,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRec {
    per_dataset: serde_norway::Mapping,
    #[serde(rename = "table_I_mean")]
    table_i_mean: RecPair,
    cell2sentence_original_pbmc: C2sOrig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct C2sOrig {
    r2: f64,
    spearman: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInter {
    accuracy: serde_norway::Mapping,
    macro_f1: serde_norway::Mapping,
}

fn ordered<T: DeserializeOwned>(
    path: &Path,
    field: &str,
    m: serde_norway::Mapping,
) -> Result<Ordered<T>> {
    m.into_iter()
        .map(|(k, v)| {
            let name = k.as_str().map(str::to_string).ok_or_else(|| {
                Error::bad_value(path, field, "a key is not a string", "quote the key")
            })?;
            let val = serde_norway::from_value(v).map_err(|e| {
                Error::bad_value(
                    path,
                    format!("{field}.{name}"),
                    e.to_string(),
                    "fix the value's shape to match the other entries",
                )
            })?;
            Ok((name, val))
        })
        .collect()
}

/// Reads and checks a transcription file.
pub fn load(path: &Path) -> Result<Reported> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path)
}

/// Parses a transcription; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Reported> {
    let raw: Raw = serde_norway::from_str(text).map_err(|e| {
        Error::format(
            path,
            format!("not a valid transcription: {e}"),
            "compare with ../shared/paper/reported.yaml",
        )
    })?;
    let inter_model = |f: &str, m: serde_norway::Mapping| -> Result<Ordered<Ordered<f64>>> {
        ordered::<serde_norway::Mapping>(path, f, m)?
            .into_iter()
            .map(|(k, v)| Ok((k.clone(), ordered::<f64>(path, &format!("{f}.{k}"), v)?)))
            .collect()
    };
    Ok(Reported {
        paper: raw.paper,
        datasets: ordered(path, "datasets", raw.datasets)?,
        reconstruction: ordered(
            path,
            "reconstruction.per_dataset",
            raw.reconstruction.per_dataset,
        )?,
        table_i: raw.reconstruction.table_i_mean,
        c2s_original_pbmc: (
            raw.reconstruction.cell2sentence_original_pbmc.r2,
            raw.reconstruction.cell2sentence_original_pbmc.spearman,
        ),
        annotation_intra: ordered(path, "annotation_intra", raw.annotation_intra)?,
        inter_accuracy: inter_model("annotation_inter.accuracy", raw.annotation_inter.accuracy)?,
        inter_macro_f1: inter_model("annotation_inter.macro_f1", raw.annotation_inter.macro_f1)?,
    })
}

impl Reported {
    /// The paper's reconstruction numbers for a paper dataset name.
    pub fn reconstruction_of(&self, dataset: &str) -> Option<&RecPair> {
        self.reconstruction
            .iter()
            .find(|(k, _)| k == dataset)
            .map(|(_, v)| v)
    }
    /// Whether the paper has a dataset of this name.
    pub fn has_dataset(&self, name: &str) -> bool {
        self.datasets.iter().any(|(k, _)| k == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcription_loads_and_table_i_is_the_mean_of_the_captions() {
        let r = load(&default_path()).unwrap();
        assert_eq!(r.reconstruction.len(), 3);
        let mean =
            |f: fn(&RecPair) -> f64| r.reconstruction.iter().map(|(_, p)| f(p)).sum::<f64>() / 3.0;
        assert!((mean(|p| p.full.r2) - r.table_i.full.r2).abs() < 1e-3);
        assert!((mean(|p| p.hvg.spearman) - r.table_i.hvg.spearman).abs() < 1e-3);
        assert_eq!(r.annotation_intra[0].0, "scGPT");
        assert_eq!(r.inter_accuracy.len(), 13);
    }
}
