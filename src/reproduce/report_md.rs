//! `REPORT.md`: the paper's tables and figures beside ours, built from the tables the runners and
//! the compute stage returned (never by reading their files back).
use std::path::{Path, PathBuf};

use super::compute::{ComputeTables, DatasetCompute};
use super::report_answer::answer_section;
use super::{ExperimentRun, ReproduceOptions};
use crate::error::Result;
use crate::experiment::outputs::names;
use crate::experiment::sweep::{ALL_GENES, DEVIATION, RANDOM};
use crate::experiment::{self, Experiment, Task};
use crate::lm;
use crate::paper::Reported;
use crate::report::{self, f4, Table};
use crate::sentence::GeneSet;

use super::report_quality::quality_section;
use crate::report::relative as rel;

/// Writes `REPORT.md` into the results root.
pub(super) fn write_report(
    opts: &ReproduceOptions,
    runs: &[ExperimentRun],
    recs: &[DatasetCompute],
    tables: &ComputeTables,
    reported: &Reported,
) -> Result<PathBuf> {
    let out = &opts.out;
    let find = |task: Task| runs.iter().find(|r| r.experiment.task == task);
    let mut md = preamble(opts, runs, reported);
    md.push_str(&figure_i(recs, tables));
    if let Some(r) = find(Task::Reconstruction) {
        md.push_str(&reconstruction_sections(out, r, reported)?);
    }
    if let Some(r) = find(Task::Annotation) {
        md.push_str(&figure_viii(&r.experiment));
    }
    md.push_str(&annotation_sections(out, runs)?);
    md.push_str(&answer_section(out, reported)?);
    if let Some(r) = find(Task::Annotation) {
        md.push_str(&lm_section(&r.experiment)?);
    }
    if let Some(r) = find(Task::Annotation) {
        md.push_str(&quality_section(out, r)?);
    }
    if let Some(r) = find(Task::HvgSweep) {
        md.push_str(&sweep_section(out, r)?);
    }
    md.push_str(&compute_section(out, recs, tables));
    md.push_str(&experiments_run(out, runs));
    let path = out.join("REPORT.md");
    report::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// Title, provenance and what stands in for the paper's data and model.
fn preamble(opts: &ReproduceOptions, runs: &[ExperimentRun], reported: &Reported) -> String {
    let mut md = String::new();
    md.push_str("# Reproduction report\n\n");
    md.push_str(&format!(
        "Paper: *{}*. Every number below is read from the tables next to this file, which `cellsentence reproduce` regenerated (stage cache: `{}`). Each section shows ours beside the paper's, with `diff` = ours − paper.\n\n",
        reported.paper,
        opts.cache.display()
    ));
    md.push_str("## What is the paper's and what is a substitute\n\n");
    md.push_str("| paper | here | role |\n|---|---|---|\n");
    md.push_str("| Pancreas (CellFM curation, 12,906 cells, 4 batches) | `baron_human` (Baron et al. 2016, 2,142 cells, 4 donors; bundled via the `came` wheel) | substitute: same tissue, raw counts, 4 batches |\n");
    md.push_str("| Liver, Skin, Heart (CellFM curation) | — | not downloadable here; their rows stay the paper's |\n");
    md.push_str("| — | `pbmc68k_reduced` (scanpy wheel, 700 cells, log-normalized, 765 genes) and every `../shared/data` dataset found | extra datasets, no counterpart |\n");
    match &opts.model {
        Some(m) => md.push_str(&format!(
            "| C2S-Pythia-410M | `{}` | the model given with `--model` |\n",
            m.display()
        )),
        None => md.push_str(&lm_substitute(runs)),
    }
    md.push('\n');
    md
}

/// Figure I: example sentences and sentence lengths.
fn figure_i(recs: &[DatasetCompute], tables: &ComputeTables) -> String {
    let mut md = String::new();
    md.push_str("## Figure I — cell sentences and HVG cell sentences\n\n");
    md.push_str("Genes of a cell ranked by decreasing expression (Cell2Sentence's tie rules); the HVG sentence keeps only the 2,000 highly variable genes. The first cell's first 12 genes:\n\n");
    for r in recs {
        for m in &r.modes {
            md.push_str(&format!("- `{}` {}: {}\n", r.dataset, m.mode, m.example));
        }
    }
    md.push_str(&format!(
        "\n{}\n[sentence lengths](sentences/sentence_lengths.md)\n\n",
        tables
            .lengths
            .select(&[
                ("dataset", "dataset"),
                ("cells_kept", "cells"),
                ("mean_genes_all", "genes / full sentence"),
                ("mean_genes_hvg", "genes / HVG sentence"),
                ("hvg_to_all_ratio", "HVG / full"),
            ])
            .to_markdown()
    ));
    md
}

/// Table I and Figures II–VII from the reconstruction run's tables.
fn reconstruction_sections(out: &Path, r: &ExperimentRun, reported: &Reported) -> Result<String> {
    let mut md = String::new();
    let dir = &r.summary.out;
    let link = rel(out, dir);
    md.push_str("## Table I — mean reconstruction quality, full vs HVG sentences\n\n");
    md.push_str(
        &r.summary
            .table(names::TABLE_I)?
            .select(&[
                ("mode", "mode"),
                ("model", "model"),
                ("datasets", "datasets"),
                ("r2", "R²"),
                ("pearson", "Pearson"),
                ("spearman", "Spearman"),
                ("paper_r2", "paper R²"),
                ("paper_pearson", "paper Pearson"),
                ("paper_spearman", "paper Spearman"),
                ("diff_r2", "diff R²"),
            ])
            .to_markdown(),
    );
    let (table_i, per_dataset, figure) = (
        names::md(names::TABLE_I),
        names::md(names::RECONSTRUCTION),
        names::html(names::TABLE_I),
    );
    md.push_str(&format!("\nOurs: mean over our datasets; the paper: mean over Liver, Skin, Pancreas. Details: [{link}/{table_i}]({link}/{table_i}), [per dataset]({link}/{per_dataset}), [figure]({link}/{figure}).\n\n"));
    md.push_str(&figures_ii_vii(&link, r, reported)?);
    Ok(md)
}

/// Figures II–VII: the paper's per-dataset reconstruction beside the dataset standing in for it.
fn figures_ii_vii(link: &str, r: &ExperimentRun, reported: &Reported) -> Result<String> {
    let mut md = String::from("## Figures II–VII — reconstruction per dataset\n\n");
    md.push_str("| figure | paper dataset, sentences | paper R² / Pearson / Spearman | ours | our R² / Pearson / Spearman | figure |\n|---|---|---|---|---|---|\n");
    let t = r.summary.table(names::RECONSTRUCTION)?;
    let col = |r: &Vec<String>, c: &str| t.cell(r, c).to_string();
    let figs = [
        ("II", "Liver", GeneSet::All),
        ("III", "Liver", GeneSet::Hvg),
        ("IV", "Skin", GeneSet::All),
        ("V", "Skin", GeneSet::Hvg),
        ("VI", "Pancreas", GeneSet::All),
        ("VII", "Pancreas", GeneSet::Hvg),
    ];
    for (fig, pd, gene_set) in figs {
        let mode = experiment::mode_label(gene_set);
        let pv =
            reported
                .reconstruction
                .iter()
                .find(|(d, _)| d == pd)
                .map(|(_, p)| match gene_set {
                    GeneSet::All => &p.full,
                    GeneSet::Hvg => &p.hvg,
                });
        let pv_s = pv.map_or(String::new(), |m| {
            format!("{:.2} / {:.2} / {:.2}", m.r2, m.pearson, m.spearman)
        });
        // the first of our datasets standing in for the paper's (in the file's order)
        let ours = t.rows.iter().find(|r| {
            col(r, "paper_dataset") == pd && col(r, "mode") == mode && col(r, "model") == "c2s"
        });
        let (ds, vals, fig_link) = match ours {
            Some(r) => {
                let ds = col(r, "dataset");
                (
                    format!("`{ds}`"),
                    format!(
                        "{} / {} / {}",
                        col(r, "r2"),
                        col(r, "pearson"),
                        col(r, "spearman")
                    ),
                    format!(
                        "[scatter]({link}/{})",
                        names::html(&names::reconstruction_figure(&ds, gene_set))
                    ),
                )
            }
            None => (
                "— (no substitute here)".into(),
                String::new(),
                String::new(),
            ),
        };
        md.push_str(&format!(
            "| {fig} | {pd}, {mode} | {pv_s} | {ds} | {vals} | {fig_link} |\n"
        ));
    }
    md.push_str(&format!(
        "\nEvery dataset's scatter (full and HVG): [{link}/{index}]({link}/{index}).\n\n",
        index = names::INDEX
    ));
    Ok(md)
}

/// Figure VIII: the annotation model as configured.
fn figure_viii(e: &Experiment) -> String {
    let mut md = String::new();
    let a = &e.annotation;
    md.push_str("## Figure VIII — the annotation model\n\n");
    md.push_str(&format!(
        "Cell embedding = mean of the LM's last hidden states over the prompt (top-{} genes) → MLP: Linear {} → BatchNorm → GELU → Dropout {} → Linear {} → BatchNorm → GELU → Dropout {} → Linear n_classes; cross-entropy, Adam lr {}, batches of {}, ≤ {} epochs, early stopping after {} epochs without validation improvement (best weights restored), inputs standardised with training statistics.\n\n",
        a.max_genes,
        a.mlp.hidden.first().copied().unwrap_or(512),
        a.mlp.dropout,
        a.mlp.hidden.get(1).copied().unwrap_or(256),
        a.mlp.dropout,
        a.mlp.lr,
        a.mlp.batch_size,
        a.mlp.max_epochs,
        a.mlp.patience
    ));
    md
}

/// Figures IX–XI from the annotation runs' tables.
fn annotation_sections(out: &Path, runs: &[ExperimentRun]) -> Result<String> {
    use experiment::annotation::SplitKind;
    let find = |split: SplitKind| {
        runs.iter().find(|r| {
            r.experiment.task == Task::Annotation && r.experiment.annotation.split == split
        })
    };
    let mut md = String::new();
    let ann_cols: [(&str, &str); 10] = [
        ("dataset", "dataset"),
        ("method", "ours"),
        ("paper_row", "paper row"),
        ("accuracy", "accuracy"),
        ("macro_f1", "macro-F1"),
        ("paper_accuracy", "paper accuracy"),
        ("paper_macro_f1", "paper macro-F1"),
        ("diff_accuracy", "diff acc."),
        ("diff_macro_f1", "diff F1"),
        ("role", "role"),
    ];
    for (split, title) in [
        (
            SplitKind::Kfold,
            "## Figure IX — intra-dataset annotation (stratified 5-fold)\n\n",
        ),
        (
            SplitKind::Batch,
            "## Figures X and XI — inter-dataset annotation (leave one batch out)\n\n",
        ),
    ] {
        let Some(r) = find(split) else {
            continue;
        };
        let dir = &r.summary.out;
        let link = rel(out, dir);
        md.push_str(title);
        let t = r.summary.table(names::ANNOTATION)?;
        md.push_str(&t.select(&ann_cols).to_markdown());
        md.push_str(&deviation_rows_reading(t));
        md.push_str(&format!(
            "\nMean over folds (sd in [{link}/annotation.md]({link}/annotation.md)); the paper's other models: [{link}/reported.md]({link}/reported.md).\n\n"
        ));
        let mut ids: Vec<&str> = t.rows.iter().map(|r| t.cell(r, "dataset")).collect();
        ids.dedup();
        for id in ids {
            md.push_str(&format!(
                "- `{id}`: [bar chart]({link}/{}), [per-class F1]({link}/{}), [confusion matrix]({link}/{})\n",
                names::html(&names::annotation_figure(id)),
                names::md(&names::per_class(id)),
                names::html(&names::confusion_figure(id))
            ));
        }
        md.push('\n');
    }
    Ok(md)
}

/// "HVG helps" or "re-ordering helps"? Per dataset with deviation rows: each reader's macro-F1
/// on full, HVG and deviation sentences (the same genes as full, reordered without labels).
fn deviation_rows_reading(t: &Table) -> String {
    let f1 = |ds: &str, method: &str| {
        t.rows
            .iter()
            .find(|r| t.cell(r, "dataset") == ds && t.cell(r, "method") == method)
            .map(|r| t.cell(r, "macro_f1").to_string())
    };
    let mut ids: Vec<&str> = t.rows.iter().map(|r| t.cell(r, "dataset")).collect();
    ids.dedup();
    let mut out = String::new();
    for id in ids {
        for (reader, fmt) in [
            ("pretrained LM", "pretrained LM {} sentences + MLP"),
            ("sentence SVM", "SVM ({} sentences)"),
        ] {
            let get = |m: &str| f1(id, &fmt.replace("{}", m));
            if let (Some(full), Some(hvg), Some(dev)) = (get("full"), get("hvg"), get("deviation"))
            {
                out.push_str(&format!("- `{id}`, {reader}: macro-F1 {full} (full sentences), {hvg} (HVG), {dev} (deviation: all genes reordered by how far above the mean profile, no labels).\n"));
            }
        }
    }
    if out.is_empty() {
        return out;
    }
    format!("\nDoes HVG selection help, or the re-ordering it implies?\n\n{out}")
}

/// What the deviation sentence says, from the sweep table: the same genes as the full sentence,
/// reordered without labels, against the full sentence and the best HVG point.
fn deviation_reading(t: &Table) -> String {
    let find = |flavor: &str| t.rows.iter().find(|r| r[1] == flavor);
    let (Some(dev), Some(full)) = (find(DEVIATION), find(ALL_GENES)) else {
        return String::new();
    };
    let f1 = |r: &Vec<String>| r[5].parse::<f64>().unwrap_or(f64::NAN);
    let best = t
        .rows
        .iter()
        .filter(|r| ![DEVIATION, ALL_GENES].contains(&r[1].as_str()) && !r[1].starts_with(RANDOM))
        .max_by(|a, b| f1(a).total_cmp(&f1(b)));
    let mut s = format!(
        "\n`{DEVIATION}`: every expressed gene, ranked by how far above the mean profile (label-free; the SVM's folds use their training cells' profile): R² {} and macro-F1 {} against the full sentence's {} and {}",
        dev[4], dev[5], full[4], full[5]
    );
    if let Some(b) = best {
        let verdict = if f1(dev) + 0.01 < f1(b) {
            "so re-ordering alone does not recover what HVG selection gains"
        } else {
            "so re-ordering recovers what HVG selection gains"
        };
        s.push_str(&format!(
            "; the best HVG point ({} {}) reaches {}, {verdict}",
            b[1], b[2], b[5]
        ));
    }
    s.push_str(".\n");
    s
}

/// The sweep table with the random-gene controls (one row per seed) folded into one row per
/// dataset and `n_top`: "mean [min–max]" over the seeds in the numeric columns.
fn controls_summarised(t: &Table) -> Table {
    let mut out = Table::new(t.columns.clone());
    let mut groups: Vec<(String, String)> = Vec::new();
    for row in &t.rows {
        if row[1] != RANDOM {
            out.rows.push(row.clone());
        } else if !groups.contains(&(row[0].clone(), row[2].clone())) {
            groups.push((row[0].clone(), row[2].clone()));
        }
    }
    groups.sort_by_key(|(d, k)| (d.clone(), k.parse::<usize>().unwrap_or(0)));
    for (dataset, n_top) in groups {
        let sel: Vec<&Vec<String>> = t
            .rows
            .iter()
            .filter(|r| r[1] == RANDOM && r[0] == dataset && r[2] == n_top)
            .collect();
        let mut row = vec![
            dataset.clone(),
            format!("{RANDOM} ({} seeds)", sel.len()),
            n_top.clone(),
        ];
        for c in 3..t.columns.len() {
            let v: Vec<f64> = sel.iter().filter_map(|r| r[c].parse().ok()).collect();
            let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                });
            row.push(format!("{} [{}–{}]", f4(mean), f4(lo), f4(hi)));
        }
        out.rows.push(row);
    }
    out
}

/// The HVG sweep's table and figures.
fn sweep_section(out: &Path, r: &ExperimentRun) -> Result<String> {
    let mut md = String::new();
    let dir = &r.summary.out;
    let link = rel(out, dir);
    md.push_str("## Beyond the paper — HVG count and flavor sweep\n\n");
    let t = r.summary.table(names::SWEEP)?.select(&[
        ("dataset", "dataset"),
        ("flavor", "flavor"),
        ("n_top", "n_top"),
        ("mean_length", "genes / sentence"),
        ("r2", "reconstruction R²"),
        ("macro_f1", "macro-F1 (SVM on sentence)"),
        ("avg_bio", "AvgBIO (PCA of the genes)"),
    ]);
    md.push_str(&controls_summarised(&t).to_markdown());
    md.push_str(&format!("\n`{RANDOM}`: gene sets of the same size drawn at random, one per seed; each cell is the mean over seeds [min–max].\n"));
    md.push_str(&deviation_reading(&t));
    md.push_str(&format!(
        "\nFigure: {}; method: [{link}/sweep.md]({link}/sweep.md).\n\n",
        {
            let mut v: Vec<String> = r
                .summary
                .specs
                .keys()
                .map(|s| format!("[{s}]({link}/{})", names::html(s)))
                .collect();
            v.sort();
            v.join(", ")
        }
    ));
    for s in r.summary.specs.keys() {
        md.push_str(&format!("![{s}]({link}/{})\n\n", names::svg(s)));
    }
    Ok(md)
}

/// The compute table, token ratios and links to the committed benchmarks.
fn compute_section(out: &Path, recs: &[DatasetCompute], tables: &ComputeTables) -> String {
    let mut md = String::new();
    md.push_str("## Beyond the paper — compute of full vs HVG sentences\n\n");
    md.push_str(
        &tables
            .compute
            .select(&[
                ("dataset", "dataset"),
                ("mode", "sentences"),
                ("genes_per_cell", "genes / cell"),
                ("tokens_per_cell", "tokens / cell"),
                ("tokens_per_cell_top200", "tokens / cell (200-gene budget)"),
                ("cells_per_s", "cells/s"),
                ("cells_per_s_top200", "cells/s (budget)"),
                ("seconds_dataset", "s / dataset"),
                ("seconds_dataset_top200", "s / dataset (budget)"),
            ])
            .to_markdown(),
    );
    md.push('\n');
    for r in recs {
        let (a, h) = (&r.modes[0], &r.modes[1]);
        if let (Some(ta), Some(th), Some(ta2), Some(th2)) =
            (a.tokens, h.tokens, a.tokens_200, h.tokens_200)
        {
            md.push_str(&format!(
                "- `{}`: HVG / full tokens per cell = {} untruncated, {} at the 200-gene budget.\n",
                r.dataset,
                f4(th / ta),
                f4(th2 / ta2)
            ));
        }
    }
    md.push_str("\nHow it was timed: [compute/compute.md](compute/compute.md).\n\n");
    let benches: Vec<&str> = ["preprocess", "embed_cpu", "embed_cuda", "annotation"]
        .into_iter()
        .filter(|b| out.join(format!("benchmarks/{b}.md")).is_file())
        .collect();
    if !benches.is_empty() {
        md.push_str("## Benchmarks against the reference tools\n\n");
        for b in benches {
            md.push_str(&format!("- [benchmarks/{b}.md](benchmarks/{b}.md)\n"));
        }
        md.push('\n');
    }
    md
}

/// Links to every experiment's folder.
fn experiments_run(out: &Path, runs: &[ExperimentRun]) -> String {
    let mut md = String::new();
    md.push_str("## Experiments run\n\n");
    for r in runs {
        md.push_str(&format!(
            "- `{}` → [{dir}/{index}]({dir}/{index}){}\n",
            r.file.display(),
            ran_on(&r.experiment),
            dir = rel(out, &r.summary.out),
            index = names::INDEX
        ));
    }
    md
}

/// Where an experiment's libtorch stages ran (the LM, its training, the MLP): the device its
/// `annotation.device` resolves to in this process, in float32 (the runner's only precision).
fn ran_on(e: &Experiment) -> String {
    if !matches!(e.task, Task::Annotation | Task::LmScaling) {
        return String::new();
    }
    let device = match e.annotation.device.resolve() {
        Ok(lm::Device::Cuda(i)) => format!("CUDA device {i}"),
        Ok(_) => "CPU".to_string(),
        Err(_) => return String::new(),
    };
    format!(" (libtorch stages — LM, its training, the MLP — on {device}, float32)")
}

/// The report's line on what stands in for C2S-Pythia-410M, from the annotation experiments' settings.
fn lm_substitute(runs: &[ExperimentRun]) -> String {
    use experiment::lm_protocol::LmProtocol;
    let Some(a) = runs
        .iter()
        .find(|r| r.experiment.task == Task::Annotation)
        .map(|r| &r.experiment.annotation)
    else {
        return String::new();
    };
    match a.lm_protocol {
        LmProtocol::Pretrained => {
            let (p, c) = (&a.pretrain, &a.pretrain.lm);
            format!(
                "| C2S-Pythia-410M (cell-type prediction checkpoint) | one GPT-NeoX cell-sentence LM pretrained here ({} layers, hidden {}, {} steps of {} sentences) on every reachable dataset except the evaluated ones{} | substitute: ~30× smaller and trained on ~16k cells; its rows are held out from pretraining; pass `--model DIR` with the real checkpoint |\n",
                c.layers,
                c.hidden,
                c.steps,
                c.batch_size,
                p.checkpoint
                    .as_ref()
                    .map_or(String::new(), |d| format!(" (`{}`, with its `corpus.json`)", d.display()))
            )
        }
        LmProtocol::PerMode => format!(
            "| C2S-Pythia-410M (cell-type prediction checkpoint) | a small GPT-NeoX cell-sentence LM trained here per dataset and sentence mode ({} layers, hidden {}, {} steps) | substitute: far weaker embeddings; pass `--model DIR` with the real checkpoint |\n",
            a.lm.layers, a.lm.hidden, a.lm.steps
        ),
    }
}

/// The report's paragraph on the pretrained model: its corpus and held-out sets from its
/// `corpus.json`, and where the scaling sweep, layer sweep and attribution live.
fn lm_section(e: &Experiment) -> Result<String> {
    use experiment::lm_protocol::LmProtocol;
    let a = &e.annotation;
    let Some(dir) = a
        .pretrain
        .checkpoint
        .as_ref()
        .filter(|_| a.lm_protocol == LmProtocol::Pretrained && a.model.is_none())
    else {
        return Ok(String::new());
    };
    let Some(c) = lm::Corpus::read(dir)? else {
        return Ok(String::new());
    };
    let mut md = String::from("## The language model — pretrained, held out, fine-tuned\n\n");
    md.push_str(&format!(
        "The LM rows above come from `{}`: one GPT-NeoX cell-sentence model ({} layers, hidden {}, vocabulary {} upper-case gene symbols) pretrained for {} steps ({} tokens, {:.0} s) on {} cells of {} datasets: {}. Held out: {}. `pretrained` and `untrained` rows never saw the evaluated cells; `fine-tuned` rows did (their unlabelled sentences, {} steps per mode).\n\n",
        dir.display(),
        a.pretrain.lm.layers,
        a.pretrain.lm.hidden,
        c.vocab_size,
        c.steps,
        c.tokens_seen,
        c.wall_seconds,
        c.datasets.iter().map(|d| d.cells).sum::<usize>(),
        c.datasets.len(),
        c.datasets
            .iter()
            .map(|d| format!("`{}` ({})", d.id, d.cells))
            .collect::<Vec<_>>()
            .join(", "),
        c.held_out
            .iter()
            .map(|(k, v)| format!("`{k}` ({v})"))
            .collect::<Vec<_>>()
            .join(", "),
        a.pretrain.finetune.as_ref().map_or(0, |f| f.steps)
    ));
    md.push_str("Beyond the default run (committed, regenerated by their own commands): the scaling sweep over checkpoints of this run and the layer sweep in `results/lm_scaling/` (`cellsentence run experiments/extra/lm_scaling.yaml`), the same model trained 3× longer (3000 steps) in `results/lm_scaling_3000/` (`experiments/extra/lm_scaling_3000.yaml`), the same model pretrained on Cell2Sentence's cell-type-prediction task (corpus labels; no better) in `results/lm_cell_type_task/` (`experiments/extra/lm_cell_type_task.yaml`), gene-token attribution in `results/attribution/` (`scripts/lm-attribution.sh`), and why a briefly trained model reads cells worse than its initialisation in `results/lm_diagnosis/`.\n\n");
    Ok(md)
}
