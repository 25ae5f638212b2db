//! The annotation experiments: Figure IX (intra-dataset, stratified k-fold) and Figures X–XI
//! (inter-dataset, leave one batch out).
//!
//! Per dataset: QC + normalize + log + HVG (lazily, only when a stage is not cached), then per method
//! a cached evaluation (every fold's metrics and test predictions). The language-model rows train a
//! small cell-sentence LM per sentence mode (cached as a model directory) unless the file names a
//! checkpoint (e.g. C2S-Pythia-410M), embed the top-`max_genes` prompts (cached .npy) and train the
//! paper's MLP on the embeddings.
//!
//! `config` holds the file's `annotation:` section, `stages` the cached per-dataset evaluations
//! (features, LM rows, splits), this module the tables and figures.
use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::classify::metrics;
use crate::deviation::Order;
use crate::error::Result;
use crate::experiment::context::for_each_dataset;
use crate::experiment::default_select::{self, SelectionRun};
use crate::experiment::lm_protocol::{LmProtocol, LmSource};
use crate::experiment::outputs::{names, Outputs};
use crate::experiment::{mode_label, Experiment, RunDataset, RunSummary};
use crate::figure;
use crate::lm::{self};
use crate::paper::Reported;
use crate::report::{self, Col};
use crate::sentence::GeneSet;

mod answer;
mod config;
mod ctx;
mod index;
mod quality;
mod stages;

pub use config::{AnnotationSection, AnswerSection, AnswerStart, DeviceChoice, Method, SplitKind};
use ctx::Row;
use index::index_md;
pub use quality::{Embedding, QualityRow};
use stages::dataset_outputs;
pub use stages::{layer_evaluations, lm_evaluations, LmEvaluation};

pub(super) fn method_label(
    m: Method,
    mode: Option<GeneSet>,
    source: LmSource,
    order: Order,
) -> String {
    let sentences = |g: GeneSet| match order {
        Order::Expression => format!("{} sentences", mode_label(g)),
        Order::Deviation => "deviation sentences".to_string(),
    };
    match (m, mode) {
        (Method::Lm, Some(g)) => format!("{} {} + MLP", source.prefix(), sentences(g)),
        (Method::Lm, None) => format!("{} + MLP", source.prefix()),
        (Method::SentenceSvm, g) => format!("SVM ({})", sentences(g.unwrap_or(GeneSet::All))),
        (Method::HvgSvm, _) => "SVM (HVG expression)".into(),
        (Method::Pca, _) => "MLP (PCA of HVG)".into(),
        (Method::HvgMlp, _) => "MLP (HVG expression)".into(),
        (Method::Scmap, _) => "scmap-cluster".into(),
        (Method::LmAnswer | Method::LmAnswerMlp, g) => {
            let start = match source {
                LmSource::Pretrained => "from the pretrained LM",
                LmSource::AnswerOnly => "from the pretrained LM + corpus answers",
                _ => "from random weights",
            };
            let how = match m {
                Method::LmAnswer => "answer",
                _ => "embedding + MLP",
            };
            let g = sentences(g.unwrap_or(GeneSet::All));
            format!("LM fine-tuned for annotation {start}, {g} ({how})")
        }
    }
}

/// The paper's row this one reproduces.
fn paper_row(r: &Row) -> Option<&'static str> {
    let (m, mode, source) = (r.method, r.mode, r.source);
    let paper_protocol = matches!(source, LmSource::Own | LmSource::Pretrained);
    if r.order == Order::Deviation {
        return None;
    }
    match (m, mode) {
        (Method::Lm, Some(GeneSet::All)) if paper_protocol => Some("C2S Pythia-410M"),
        (Method::Lm, Some(GeneSet::Hvg)) if paper_protocol => Some("HVG C2S Pythia-410M"),
        (Method::Lm, _) => None,
        (Method::HvgSvm, _) => Some("SVM"),
        (Method::Scmap, _) => Some("scmap"),
        _ => None,
    }
}

/// The paper's (accuracy, macro-F1) for a row.
fn paper_values(
    reported: &Reported,
    split: SplitKind,
    paper_ds: Option<&str>,
    row: &str,
) -> (Option<f64>, Option<f64>) {
    let find = |v: &[(String, f64)], k: &str| v.iter().find(|(d, _)| d == k).map(|x| x.1);
    match split {
        SplitKind::Kfold => {
            if paper_ds != Some("Pancreas") {
                return (None, None);
            }
            reported
                .annotation_intra
                .iter()
                .find(|(m, _)| m == row)
                .map_or((None, None), |(_, v)| (Some(v.accuracy), Some(v.macro_f1)))
        }
        SplitKind::Batch => {
            let Some(pd) = paper_ds else {
                return (None, None);
            };
            let acc = reported
                .inter_accuracy
                .iter()
                .find(|(m, _)| m == row)
                .and_then(|(_, v)| find(v, pd));
            let f1 = reported
                .inter_macro_f1
                .iter()
                .find(|(m, _)| m == row)
                .and_then(|(_, v)| find(v, pd));
            (acc, f1)
        }
    }
}

/// Runs an annotation experiment and writes its tables and figures to `out`.
pub fn run(
    e: &Experiment,
    datasets: &[RunDataset],
    reported: &Reported,
    cache: &Cache,
    out: &Path,
    quiet: bool,
    data_dir: Option<&Path>,
) -> Result<RunSummary> {
    let a = &e.annotation;
    let evaluated: Vec<String> = datasets.iter().map(|d| d.entry.id.clone()).collect();
    let (done, skipped) = for_each_dataset(e, datasets, |d| {
        dataset_outputs(e, a, d, cache, quiet, (&evaluated, data_dir), true)
    })?;
    let (rows, panels): (Vec<Vec<Row>>, Vec<Vec<QualityRow>>) =
        done.into_iter().map(|(_, r)| r).unzip();
    let rows: Vec<Row> = rows.into_iter().flatten().collect();
    let panels: Vec<QualityRow> = panels.into_iter().flatten().collect();
    let mut o = Outputs::new(out);
    let split_name = match a.split {
        SplitKind::Kfold => format!("stratified {}-fold", a.folds),
        SplitKind::Batch => "leave one batch out".to_string(),
    };
    annotation_table(e, &rows, reported, &split_name, &mut o)?;
    reported_table(a.split, reported, &mut o)?;
    let mut ids: Vec<String> = rows.iter().map(|r| r.dataset.clone()).collect();
    ids.dedup();
    for id in &ids {
        let rs: Vec<&Row> = rows.iter().filter(|r| &r.dataset == id).collect();
        per_class_table(id, &rs, &mut o)?;
        bar_chart(e, id, &rs, reported, &split_name, &mut o)?;
        confusion_figure(id, &rs, &mut o)?;
    }
    loss_curves(&rows, &mut o)?;
    if !panels.is_empty() {
        quality_table(e, &panels, &mut o)?;
        quality_maps(&panels, &mut o)?;
    }
    let selection = match &a.pretrain.select_on {
        Some(_) => {
            let run = SelectionRun {
                e,
                evaluated: &evaluated,
                data_dir,
                cache,
                device: a.device.resolve()?,
                quiet,
            };
            default_select::run_and_write(&run, &mut o)?
        }
        None => None,
    };
    let index = index_md(e, &ids, !panels.is_empty(), selection.as_ref(), &skipped);
    o.text(names::INDEX, &index)?;
    Ok(o.finish(skipped))
}

/// The annotation table: every row beside the paper's values.
fn annotation_table(
    e: &Experiment,
    rows: &[Row],
    reported: &Reported,
    split_name: &str,
    o: &mut Outputs,
) -> Result<()> {
    let a = &e.annotation;
    let pv: Vec<(Option<f64>, Option<f64>)> = rows
        .iter()
        .map(|r| {
            paper_row(r).map_or((None, None), |pr| {
                paper_values(reported, a.split, r.paper.as_deref(), pr)
            })
        })
        .collect();
    let f = |g: fn(&Row) -> f64| Col::F64(rows.iter().map(|r| Some(g(r))).collect());
    let df = report::frame(vec![
        (
            "dataset",
            Col::Str(rows.iter().map(|r| Some(r.dataset.clone())).collect()),
        ),
        (
            "paper_dataset",
            Col::Str(rows.iter().map(|r| r.paper.clone()).collect()),
        ),
        (
            "method",
            Col::Str(rows.iter().map(|r| Some(r.label())).collect()),
        ),
        (
            "paper_row",
            Col::Str(
                rows.iter()
                    .map(|r| paper_row(r).map(String::from))
                    .collect(),
            ),
        ),
        (
            "folds",
            Col::I64(rows.iter().map(|r| r.eval.folds.len() as i64).collect()),
        ),
        ("accuracy", f(|r| r.eval.accuracy_mean)),
        ("accuracy_sd", f(|r| r.eval.accuracy_sd)),
        ("macro_f1", f(|r| r.eval.macro_f1_mean)),
        ("macro_f1_sd", f(|r| r.eval.macro_f1_sd)),
        ("paper_accuracy", Col::F64(pv.iter().map(|p| p.0).collect())),
        ("paper_macro_f1", Col::F64(pv.iter().map(|p| p.1).collect())),
        (
            "diff_accuracy",
            Col::F64(
                rows.iter()
                    .zip(&pv)
                    .map(|(r, p)| p.0.map(|v| r.eval.accuracy_mean - v))
                    .collect(),
            ),
        ),
        (
            "diff_macro_f1",
            Col::F64(
                rows.iter()
                    .zip(&pv)
                    .map(|(r, p)| p.1.map(|v| r.eval.macro_f1_mean - v))
                    .collect(),
            ),
        ),
        (
            "unseen_test_labels",
            Col::Str(rows.iter().map(|r| Some(unseen_labels(r))).collect()),
        ),
        (
            "role",
            Col::Str(rows.iter().map(|r| Some(role(r))).collect()),
        ),
    ])?;
    o.table(&df, names::ANNOTATION, &annotation_heading(e, split_name))?;
    Ok(())
}

/// The embedding-quality panel of every embedding, per dataset.
fn quality_table(e: &Experiment, panels: &[QualityRow], o: &mut Outputs) -> Result<()> {
    let f = |g: fn(&QualityRow) -> f64| Col::F64(panels.iter().map(|r| Some(g(r))).collect());
    let opt = |g: fn(&QualityRow) -> Option<f64>| Col::F64(panels.iter().map(g).collect());
    let int = |g: fn(&QualityRow) -> usize| Col::I64(panels.iter().map(|r| g(r) as i64).collect());
    let df = report::frame(vec![
        (
            "dataset",
            Col::Str(panels.iter().map(|r| Some(r.dataset.clone())).collect()),
        ),
        (
            "embedding",
            Col::Str(panels.iter().map(|r| Some(r.embedding.clone())).collect()),
        ),
        ("dims", int(|r| r.panel.n_dims)),
        ("nmi", f(|r| r.panel.nmi)),
        ("ari", f(|r| r.panel.ari)),
        ("asw_label", f(|r| r.panel.asw_label)),
        ("avg_bio", f(|r| r.panel.avg_bio)),
        ("silhouette_label", f(|r| r.panel.silhouette_label)),
        ("asw_batch", opt(|r| r.panel.asw_batch)),
        ("graph_connectivity", opt(|r| r.panel.graph_connectivity)),
        ("knn_accuracy", opt(|r| r.panel.knn_accuracy)),
        ("resolution", f(|r| r.panel.resolution)),
        ("n_clusters", int(|r| r.panel.n_clusters)),
    ])?;
    let p = e.annotation.quality.clone().unwrap_or_default();
    let heading = format!(
        "# {} — embedding quality\n\nLeiden clusters on the {}-nearest-neighbour graph (exact euclidean, scanpy's UMAP connectivities) at the best-NMI resolution of {:.1}–{:.1} (scIB); NMI and ARI against the cell types (scikit-learn), label silhouette rescaled to [0, 1] (`asw_label`), AvgBIO = mean(NMI, ARI, asw_label). With the dataset's batches: scIB's `asw_batch` (1 = mixed) and `graph_connectivity`, and `knn_accuracy`: each batch's cells labelled by a {}-NN vote among the other batches.",
        e.name,
        p.n_neighbors,
        p.resolutions.first().copied().unwrap_or_default(),
        p.resolutions.last().copied().unwrap_or_default(),
        p.knn_k
    );
    o.table(&df, names::QUALITY, &heading)
}

/// One static UMAP map per embedding, coloured by cell type (and one by batch where the
/// dataset has batches).
fn quality_maps(panels: &[QualityRow], o: &mut Outputs) -> Result<()> {
    for r in panels.iter().filter(|r| !r.map.is_empty()) {
        let colourings = [
            ("cell type", Some(&r.labels)),
            ("batch", r.batches.as_ref()),
        ];
        for (by, values) in colourings {
            let Some(values) = values else { continue };
            let (_, names_) = crate::quality::encode(values);
            let groups: Vec<(String, Vec<f64>, Vec<f64>)> = names_
                .iter()
                .map(|g| {
                    let pts = r.map.iter().zip(values).filter(|(_, v)| *v == g);
                    let (x, y) = pts.map(|(p, _)| (p[0] as f64, p[1] as f64)).unzip();
                    (g.clone(), x, y)
                })
                .collect();
            let title = format!("{} — {} (UMAP), by {by}", r.dataset, r.embedding);
            let plot = figure::scatter_groups(&title, "UMAP 1", "UMAP 2", &groups);
            let stem = names::umap_figure(&r.dataset, &r.embedding, by);
            o.text(
                &names::svg(&stem),
                &figure::svg::render(&figure::spec(&plot))?,
            )?;
        }
    }
    Ok(())
}

/// The annotation table's heading: the split and the settings of every row kind, as used.
fn annotation_heading(e: &Experiment, split_name: &str) -> String {
    let a = &e.annotation;
    let lm_what = match (&a.model, a.lm_protocol) {
        (Some(m), _) => format!("embeddings of {}", m.display()),
        (None, LmProtocol::Pretrained) => {
            let p = &a.pretrain;
            let ft = p.finetune.as_ref().map_or(String::new(), |f| format!("; fine-tuned rows: that model fine-tuned ({} steps, language-model objective) on the dataset's unlabelled sentences of the row's mode, so they saw the evaluated cells (transductive) while the pretrained rows did not", f.steps));
            let un = if p.untrained_control { "; untrained rows: the same shape and vocabulary at random initialisation (a control)" } else { "" };
            format!("embeddings of one cell-sentence LM pretrained here ({} layers, hidden {}, {} steps of {} sentences) on every reachable dataset except the evaluated ones and files sharing their cells (held out; listed in the model's corpus.json), reading both sentence modes as the paper's C2S-Pythia-410M did{ft}{un}", p.lm.layers, p.lm.hidden, p.lm.steps, p.lm.batch_size)
        }
        (None, LmProtocol::PerMode) => format!("embeddings of a small cell-sentence LM trained here per dataset and mode ({} layers, hidden {}, {} steps), standing in for C2S-Pythia-410M", a.lm.layers, a.lm.hidden, a.lm.steps),
    };
    let mlp_shape = a
        .mlp
        .hidden
        .iter()
        .map(|h| format!("{h}-BN-GELU-Drop{}", a.mlp.dropout))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "# {} — cell-type annotation, {split_name}\n\nMean ± sd over folds. LM rows: {lm_what}, mean-pooled over the top-{} gene prompt, then the paper's MLP ({mlp_shape}, Adam {:e}, ≤ {} epochs, patience {}). SVM: linear, one-vs-rest, C = {} (LinearSVC's problem) on log-normalized HVG expression. scmap-cluster: {} genes by scmap's dropout model, median centroids, cosine/Pearson/Spearman vote, threshold {} (unassigned = wrong). SVM (… sentences): the same SVM on what the sentence alone carries (each gene valued by the log-rank line). Deviation sentences: all expressed genes ranked by how far above the mean profile (no labels). Paper values are the paper's (CellFM datasets); `diff` = ours − paper.",
        e.name, a.max_genes, a.mlp.lr, a.mlp.max_epochs, a.mlp.patience, a.svm.c, a.scmap.n_features, a.scmap.threshold
    )
}

/// Test labels absent from a fold's training cells, as `fold:label` pairs.
fn unseen_labels(r: &Row) -> String {
    let mut u: Vec<String> = r
        .eval
        .folds
        .iter()
        .flat_map(|f| f.unseen_labels.iter().map(|l| format!("{}:{l}", f.fold)))
        .collect();
    u.dedup();
    u.join("; ")
}

/// What a row stands for: its dataset's counterpart in the paper, and for LM rows whether the
/// model saw the dataset.
fn role(r: &Row) -> String {
    let role = match &r.paper {
        Some(p) => format!("substitute for the paper's {p}"),
        None => "no counterpart in the paper".to_string(),
    };
    let role = match (r.source, r.seen) {
        (_, true) => format!("{role}; seen in pretraining"),
        (LmSource::Pretrained | LmSource::Untrained, false) if r.method == Method::Lm => {
            format!("{role}; held out from pretraining")
        }
        (LmSource::AnswerOnly, false) if r.method == Method::Lm => format!(
            "{role}; held out from pretraining; the pretrained model then trained to answer the corpus cells' types (answer-only loss, corpus labels only; kept step by the corpus validation split)"
        ),
        (LmSource::FineTuned, _) => {
            format!("{role}; fine-tuned on this dataset's unlabelled sentences (transductive)")
        }
        _ => role,
    };
    let role = match (r.method, r.source) {
        (Method::LmAnswer | Method::LmAnswerMlp, LmSource::Pretrained) => format!(
            "{role}; fine-tuned per fold on the training part's labels only (answer-only loss), from the model pretrained without this dataset"
        ),
        (Method::LmAnswer | Method::LmAnswerMlp, LmSource::AnswerOnly) => format!(
            "{role}; fine-tuned per fold on the training part's labels only (answer-only loss), from the model pretrained without this dataset and then trained to answer the corpus datasets' cell types"
        ),
        (Method::LmAnswer | Method::LmAnswerMlp, _) => format!(
            "{role}; fine-tuned per fold on the training part's labels only (answer-only loss), from random weights"
        ),
        _ => role,
    };
    match (r.order, r.method) {
        (Order::Deviation, Method::Lm) => format!(
            "{role}; deviation profile: every cell of the dataset, unlabelled (transductive)"
        ),
        (Order::Deviation, _) => format!("{role}; deviation profile: each fold's training cells"),
        _ => role,
    }
}

/// The paper's quoted rows for this split.
fn reported_table(split: SplitKind, reported: &Reported, o: &mut Outputs) -> Result<()> {
    let (names, accs, f1s): (Vec<String>, Vec<Option<f64>>, Vec<Option<f64>>) = match split {
        SplitKind::Kfold => reported
            .annotation_intra
            .iter()
            .map(|(m, v)| (m.clone(), Some(v.accuracy), Some(v.macro_f1)))
            .fold((vec![], vec![], vec![]), |mut acc, x| {
                acc.0.push(x.0);
                acc.1.push(x.1);
                acc.2.push(x.2);
                acc
            }),
        SplitKind::Batch => (vec![], vec![], vec![]),
    };
    if split == SplitKind::Kfold {
        let df = report::frame(vec![
            (
                "model",
                Col::Str(names.iter().map(|n| Some(n.clone())).collect()),
            ),
            ("accuracy", Col::F64(accs.clone())),
            ("macro_f1", Col::F64(f1s.clone())),
            (
                "source",
                Col::Str(names.iter().map(|_| Some("reported".to_string())).collect()),
            ),
        ])?;
        o.table(
            &df,
            names::REPORTED,
            "# The paper's Figure IX (Pancreas, intra-dataset), as reported",
        )?;
    } else {
        let ds: Vec<String> = reported.datasets.iter().map(|(k, _)| k.clone()).collect();
        let mut cols: Vec<(&str, Col)> = vec![(
            "model",
            Col::Str(
                reported
                    .inter_accuracy
                    .iter()
                    .map(|(m, _)| Some(m.clone()))
                    .collect(),
            ),
        )];
        let acc_names: Vec<String> = ds.iter().map(|d| format!("accuracy_{d}")).collect();
        let f1_names: Vec<String> = ds.iter().map(|d| format!("macro_f1_{d}")).collect();
        for (i, d) in ds.iter().enumerate() {
            cols.push((
                acc_names[i].as_str(),
                Col::F64(
                    reported
                        .inter_accuracy
                        .iter()
                        .map(|(_, v)| v.iter().find(|(k, _)| k == d).map(|x| x.1))
                        .collect(),
                ),
            ));
        }
        for (i, d) in ds.iter().enumerate() {
            cols.push((
                f1_names[i].as_str(),
                Col::F64(
                    reported
                        .inter_macro_f1
                        .iter()
                        .map(|(_, v)| v.iter().find(|(k, _)| k == d).map(|x| x.1))
                        .collect(),
                ),
            ));
        }
        let df = report::frame(cols)?;
        o.table(&df, names::REPORTED, "# The paper's Figures X (accuracy) and XI (macro-F1), leave one batch out, as reported")?;
    }
    Ok(())
}

/// Per-class F1 of every method on one dataset.
fn per_class_table(id: &str, rs: &[&Row], o: &mut Outputs) -> Result<()> {
    let mut labels: Vec<String> = rs
        .iter()
        .flat_map(|r| r.eval.per_class.iter().map(|c| c.label.clone()))
        .collect();
    labels.sort();
    labels.dedup();
    let support: Vec<i64> = labels
        .iter()
        .map(|l| {
            rs[0]
                .eval
                .per_class
                .iter()
                .find(|c| &c.label == l)
                .map_or(0, |c| c.support as i64)
        })
        .collect();
    let col_names: Vec<String> = rs.iter().map(|r| format!("f1 {}", r.label())).collect();
    let mut cols = vec![
        (
            "label",
            Col::Str(labels.iter().map(|l| Some(l.clone())).collect()),
        ),
        ("support", Col::I64(support)),
    ];
    for (r, name) in rs.iter().zip(&col_names) {
        cols.push((
            name.as_str(),
            Col::F64(
                labels
                    .iter()
                    .map(|l| {
                        r.eval
                            .per_class
                            .iter()
                            .find(|c| &c.label == l)
                            .map(|c| c.f1)
                    })
                    .collect(),
            ),
        ));
    }
    let df = report::frame(cols)?;
    o.table(&df, &names::per_class(id), &format!("# Per-class F1 on {id} (all test predictions pooled), by method\n\nThe paper attributes the HVG sentences' lower macro-F1 to minority classes: compare the rows with small support."))?;
    Ok(())
}

/// Bar chart of one dataset's rows beside the paper's.
fn bar_chart(
    e: &Experiment,
    id: &str,
    rs: &[&Row],
    reported: &Reported,
    split_name: &str,
    o: &mut Outputs,
) -> Result<()> {
    let a = &e.annotation;
    let cats: Vec<String> = rs.iter().map(|r| r.label()).collect();
    let mut series = vec![
        (
            "accuracy (ours)".to_string(),
            rs.iter()
                .map(|r| Some(r.eval.accuracy_mean))
                .collect::<Vec<_>>(),
        ),
        (
            "macro-F1 (ours)".to_string(),
            rs.iter().map(|r| Some(r.eval.macro_f1_mean)).collect(),
        ),
    ];
    let pvals: Vec<(Option<f64>, Option<f64>)> = rs
        .iter()
        .map(|r| {
            paper_row(r).map_or((None, None), |pr| {
                paper_values(reported, a.split, r.paper.as_deref(), pr)
            })
        })
        .collect();
    if pvals.iter().any(|p| p.0.is_some()) {
        series.push((
            "accuracy (paper)".to_string(),
            pvals.iter().map(|p| p.0).collect(),
        ));
        series.push((
            "macro-F1 (paper)".to_string(),
            pvals.iter().map(|p| p.1).collect(),
        ));
    }
    let fig_name = match a.split {
        SplitKind::Kfold => "Figure IX",
        SplitKind::Batch => "Figures X–XI",
    };
    let plot = figure::grouped_bars(
        &format!("{fig_name} equivalent — {id}, {split_name}"),
        "score",
        &cats,
        &series,
    );
    let stem = names::annotation_figure(id);
    o.figure(&plot, &stem, &stem)?;

    Ok(())
}

/// Confusion matrix of one dataset's first row.
fn confusion_figure(id: &str, rs: &[&Row], o: &mut Outputs) -> Result<()> {
    let r0 = rs[0];
    let truth: Vec<String> = r0
        .eval
        .predictions
        .iter()
        .map(|p| p.truth.clone())
        .collect();
    let pred: Vec<String> = r0.eval.predictions.iter().map(|p| p.pred.clone()).collect();
    let mut cl: Vec<String> = truth.iter().chain(&pred).cloned().collect();
    cl.sort();
    cl.dedup();
    let m = metrics::confusion(&truth, &pred, &cl);
    let plot = figure::confusion(&format!("Confusion — {id}, {}", r0.label()), &cl, &m);
    let stem = names::confusion_figure(id);
    o.figure(&plot, &stem, &stem)?;
    Ok(())
}

/// Loss curves of the LMs trained in this run (each model once).
fn loss_curves(rows: &[Row], o: &mut Outputs) -> Result<()> {
    let mut drawn: Vec<&PathBuf> = Vec::new();
    for r in rows {
        let (Some(dir), Some(mode)) = (&r.lm_dir, r.mode) else {
            continue;
        };
        if r.source == LmSource::Untrained || drawn.contains(&dir) {
            continue;
        }
        drawn.push(dir);
        let Ok(log) = lm::train::LogRow::read(dir) else {
            continue;
        };
        if log.is_empty() {
            continue;
        }
        let steps: Vec<f64> = log.iter().map(|l| l.step as f64).collect();
        let train: Vec<f64> = log.iter().map(|l| l.train_loss).collect();
        let val: Vec<(f64, f64)> = log
            .iter()
            .filter_map(|l| l.val_loss.map(|v| (l.step as f64, v)))
            .collect();
        let (stem, what) = match r.source {
            LmSource::Own => (
                format!("lm_loss_{}_{}", r.dataset, mode_label(mode)),
                format!("{}, {} sentences", r.dataset, mode_label(mode)),
            ),
            LmSource::AnswerOnly => (
                "lm_loss_pretrained_answer".to_string(),
                "answer-only stage on the corpus labels".to_string(),
            ),
            LmSource::FineTuned => (
                format!("lm_loss_{}_{}_fine_tuned", r.dataset, mode_label(mode)),
                format!("fine-tune on {}, {} sentences", r.dataset, mode_label(mode)),
            ),
            _ => (
                "lm_loss_pretrained".to_string(),
                "pretraining corpus (evaluated datasets held out)".to_string(),
            ),
        };
        let plot = figure::loss_curve(
            &format!("Cell-sentence LM training — {what}"),
            &steps,
            &train,
            &val,
        );
        o.figure(&plot, &stem, &stem)?;
    }
    Ok(())
}
