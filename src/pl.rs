//! Plotting verbs in the spirit of scanpy's `sc.pl`: one call from a stage's typed output to a
//! figure that a notebook shows ([`crate::notebook::show_plot`]) or a run writes
//! ([`crate::figure::write`]).
use std::collections::{BTreeMap, HashSet};

use plotly::common::Title;
use plotly::layout::{Axis, BarMode};
use plotly::{Histogram, Layout, Plot};

use crate::classify::{metrics, Evaluation};
use crate::data::Dataset;
use crate::figure;
use crate::hvg::{Flavor, HvgResult};
use crate::npy::Matrix;
use crate::preprocess::QcReport;
use crate::sentence::Sentences;

/// QC scatter (`sc.pl.scatter(adata, "total_counts", "n_genes_by_counts")`): each cell's genes
/// detected against its log10 total counts, the cells QC kept apart from those it removed.
pub fn qc(title: &str, raw: &Dataset, qc: &QcReport) -> Plot {
    let n_genes = raw.x.row_nnz();
    let totals = raw.x.row_sums();
    let kept: HashSet<usize> = qc.kept_cells.iter().copied().collect();
    let mut groups = vec![
        ("kept".to_string(), vec![], vec![]),
        ("removed".to_string(), vec![], vec![]),
    ];
    for i in 0..raw.n_cells() {
        let g = usize::from(!kept.contains(&i));
        groups[g].1.push(totals[i].log10());
        groups[g].2.push(n_genes[i] as f64);
    }
    figure::scatter_groups(title, "log10 total counts", "genes detected", &groups)
}

/// `sc.pl.highly_variable_genes`: each gene's score against its mean, the highly variable genes
/// highlighted; genes without a finite score (e.g. never expressed) are left out. `flavor` (the
/// selection's) names the axes.
pub fn highly_variable_genes(title: &str, h: &HvgResult, flavor: Flavor) -> Plot {
    let mut groups = vec![
        ("highly variable".to_string(), vec![], vec![]),
        ("other".to_string(), vec![], vec![]),
    ];
    for j in 0..h.score.len() {
        if !h.score[j].is_finite() {
            continue;
        }
        let g = usize::from(!h.highly_variable[j]);
        groups[g].1.push(h.means[j]);
        groups[g].2.push(h.score[j]);
    }
    let (x, y) = match flavor {
        Flavor::Seurat => ("mean expression (log1p of mean)", "normalized dispersion"),
        Flavor::CellRanger => ("mean expression", "normalized dispersion"),
        Flavor::SeuratV3 => ("mean expression", "normalized variance"),
        Flavor::Deviance => ("mean expression", "binomial deviance"),
        Flavor::PearsonResiduals => ("mean expression", "residual variance"),
    };
    figure::scatter_groups(title, x, y, &groups)
}

/// `sc.pl.embedding`: the first two columns of `coords` (a PCA, an LM embedding's PCA...), one
/// trace per label in sorted order; `axes` names the two columns (e.g. `["PC1", "PC2"]`).
pub fn embedding(title: &str, coords: &Matrix, labels: &[String], axes: [&str; 2]) -> Plot {
    let mut by_label: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        let e = by_label.entry(l.as_str()).or_default();
        e.0.push(coords.row(i)[0] as f64);
        e.1.push(coords.row(i)[1] as f64);
    }
    let groups: Vec<(String, Vec<f64>, Vec<f64>)> = by_label
        .into_iter()
        .map(|(k, (x, y))| (k.to_string(), x, y))
        .collect();
    figure::scatter_groups(title, axes[0], axes[1], &groups)
}

/// The confusion matrix of an evaluation's test predictions, pooled over its folds (scikit-learn's
/// `ConfusionMatrixDisplay`), rows and columns in the order of `classes`.
pub fn confusion_matrix(title: &str, ev: &Evaluation, classes: &[String]) -> Plot {
    let truth: Vec<String> = ev.predictions.iter().map(|p| p.truth.clone()).collect();
    let pred: Vec<String> = ev.predictions.iter().map(|p| p.pred.clone()).collect();
    figure::confusion(title, classes, &metrics::confusion(&truth, &pred, classes))
}

/// Histogram of the genes per sentence, one overlaid trace per named sentence set (e.g. full and
/// HVG sentences of the same cells).
pub fn sentence_lengths(title: &str, sets: &[(&str, &Sentences)]) -> Plot {
    let mut plot = Plot::new();
    for (name, s) in sets {
        let n: Vec<f64> = s.lengths().into_iter().map(|n| n as f64).collect();
        plot.add_trace(Histogram::new(n).name(*name).opacity(0.6));
    }
    plot.set_layout(
        Layout::new()
            .title(Title::with_text(title))
            .bar_mode(BarMode::Overlay)
            .x_axis(Axis::new().title(Title::with_text("genes per sentence")))
            .y_axis(Axis::new().title(Title::with_text("cells")))
            .width(760)
            .height(480),
    );
    plot
}

/// The loss curves of a language model's training run (`log`: its training log; `what`: the
/// run, in the title), as `train-lm` and `pretrain-lm` draw them.
pub fn training_loss(log: &[crate::lm::LogRow], what: &str) -> plotly::Plot {
    let steps: Vec<f64> = log.iter().map(|l| l.step as f64).collect();
    let train: Vec<f64> = log.iter().map(|l| l.train_loss).collect();
    let val: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|l| l.val_loss.map(|v| (l.step as f64, v)))
        .collect();
    crate::figure::loss_curve(
        &format!("Cell-sentence LM training: {what}"),
        &steps,
        &train,
        &val,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::Csr;
    use crate::sentence::{self, SentenceParams};

    #[test]
    fn the_embedding_map_has_a_trace_per_label_in_sorted_order() {
        let coords = Matrix {
            rows: 3,
            cols: 2,
            data: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        };
        let labels: Vec<String> = ["b", "a", "b"].iter().map(|s| s.to_string()).collect();
        let spec = figure::spec(&embedding("t", &coords, &labels, ["PC1", "PC2"]));
        let data = spec["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data[0]["name"], "a");
        assert_eq!(data[0]["x"], serde_json::json!([2.0]));
        assert_eq!(data[1]["y"], serde_json::json!([1.0, 5.0]));
        assert_eq!(spec["layout"]["xaxis"]["title"]["text"], "PC1");
    }

    #[test]
    fn sentence_lengths_count_each_cells_genes() {
        let x = Csr::from_dense(2, 3, &[1.0, 2.0, 0.0, 0.0, 0.0, 3.0]);
        let genes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let s = sentence::sentences(&x, &genes, &SentenceParams::default()).unwrap();
        let spec = figure::spec(&sentence_lengths("t", &[("full", &s)]));
        assert_eq!(spec["data"][0]["x"], serde_json::json!([2.0, 1.0]));
        assert_eq!(spec["data"][0]["type"], "histogram");
    }

    #[test]
    fn the_confusion_matrix_pools_the_folds() {
        let p = |truth: &str, pred: &str| crate::classify::Prediction {
            cell: 0,
            fold: "f".into(),
            truth: truth.into(),
            pred: pred.into(),
        };
        let ev = Evaluation {
            classifier: "mlp".into(),
            folds: vec![],
            predictions: vec![p("a", "a"), p("a", "b"), p("b", "b")],
            accuracy_mean: 2.0 / 3.0,
            accuracy_sd: 0.0,
            macro_f1_mean: 0.0,
            macro_f1_sd: 0.0,
            per_class: vec![],
        };
        let classes = vec!["a".to_string(), "b".to_string()];
        let spec = figure::spec(&confusion_matrix("t", &ev, &classes));
        assert_eq!(
            spec["data"][0]["z"],
            serde_json::json!([[1.0, 1.0], [0.0, 1.0]])
        );
    }
}
