//! REPORT.md's sections read back from the committed tables of the extra LM experiments (the LM
//! fine-tuned for annotation, 5-fold and across donors; the frozen model with corpus answers).
use std::path::Path;

use crate::error::{Error, Result};
use crate::paper::Reported;
use crate::report::{f4, Table};

/// A method's fold-mean macro-F1 and its sd in a table of annotation scores.
fn macro_f1(t: &Table, method: &str) -> Option<(f64, f64)> {
    let r = t.rows.iter().find(|r| t.cell(r, "method") == method)?;
    let v = |c: &str| t.cell(r, c).parse::<f64>().ok();
    Some((v("macro_f1")?, v("macro_f1_sd")?))
}

/// Where the LM fine-tuned for annotation writes (`experiments/extra/lm_finetune_annotation.yaml`).
pub(super) const ANSWER_DIR: &str = "lm_finetune_annotation";
/// The columns (and headers) of the fine-tuned-for-annotation tables: method and fold scores.
const SCORE_COLUMNS: [(&str, &str); 5] = [
    ("method", "method"),
    ("accuracy", "accuracy"),
    ("accuracy_sd", "sd"),
    ("macro_f1", "macro-F1"),
    ("macro_f1_sd", "sd"),
];
/// The same, leave one donor out (`experiments/extra/lm_finetune_annotation_lobo.yaml`).
pub(super) const ANSWER_LOBO_DIR: &str = "lm_finetune_annotation_lobo";
/// The same, random start, with batches drawn ∝ √(cells of a type) and 600 steps
/// (`experiments/extra/lm_finetune_annotation_sqrt.yaml`).
pub(super) const ANSWER_SQRT_DIR: &str = "lm_finetune_annotation_sqrt";
/// The frozen held-out model with the answer-only stage on the corpus labels
/// (`experiments/extra/lm_answer_pretrain.yaml`).
pub(super) const ANSWER_PRETRAIN_DIR: &str = "lm_answer_pretrain";

/// The LM fine-tuned for annotation: the committed table of its extra experiment (not rerun by
/// `reproduce`; the one section read back from a file), when the results root holds it, beside
/// the paper's C2S and fine-tuned foundation models, and whether pretraining helps.
pub(super) fn answer_section(out: &Path, reported: &Reported) -> Result<String> {
    let path = out.join(ANSWER_DIR).join("annotation.csv");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(String::new());
    };
    let fix = "rerun `cellsentence run experiments/extra/lm_finetune_annotation.yaml`";
    let t = Table::from_csv(&text).map_err(|e| Error::format(&path, e, fix))?;
    let mut md = String::from(
        "## Beyond the paper — the LM fine-tuned for annotation (Cell2Sentence's own task)\n\n",
    );
    md.push_str("The paper's C2S-Pythia-410M was fine-tuned on cell-type prediction (prompt → the cell type, loss on the answer alone) before its frozen embedding fed the MLP. The same recipe here, per fold of the 5-fold split: the small LM is fine-tuned on the training part's labelled sentences only (class-balanced batches; the fold's validation part picks the kept step by its answer loss), then **answers** the test part's cell types (restricted to the trained labels), or its embedding feeds the paper's MLP. Three starts: random weights; the pretrained model held out from Baron (does pretraining help?); and that model after an answer-only stage on the corpus datasets' own labels, as the paper's model had learnt cell types on labelled atlases before it was evaluated.\n\n");
    let cols = [SCORE_COLUMNS.as_slice(), &[("role", "role")]].concat();
    md.push_str(&t.select(&cols).to_markdown());
    let paper: Vec<String> = [
        "C2S Pythia-410M",
        "HVG C2S Pythia-410M",
        "scGPT",
        "CellFM(80M)",
    ]
    .iter()
    .filter_map(|m| {
        let (_, v) = reported.annotation_intra.iter().find(|(n, _)| n == m)?;
        Some(format!("{m} {} / {}", f4(v.accuracy), f4(v.macro_f1)))
    })
    .collect();
    md.push_str(&format!(
        "\nThe paper on Pancreas (accuracy / macro-F1): {}.\n\n",
        paper.join(", ")
    ));
    let f1 = |method: String| macro_f1(&t, &method);
    let starts = [
        ("the pretrained LM", "pretraining"),
        (
            "the pretrained LM + corpus answers",
            "pretraining with corpus answers",
        ),
    ];
    for mode in ["full", "hvg"] {
        let name = |start: &str| {
            format!("LM fine-tuned for annotation {start}, {mode} sentences (answer)")
        };
        let Some((r, rs)) = f1(name("from random weights")) else {
            continue;
        };
        for (start, what) in starts {
            let Some((p, ps)) = f1(name(&format!("from {start}"))) else {
                continue;
            };
            let verdict = if (p - r).abs() <= rs.max(ps) {
                "no clear difference: within one fold sd".to_string()
            } else if p > r {
                format!("{what} helps")
            } else {
                format!("{what} hurts")
            };
            md.push_str(&format!("- {mode} sentences, answers: macro-F1 {} ± {} from random weights, {} ± {} from {start} ({:+.4}): {verdict}.\n", f4(r), f4(rs), f4(p), f4(ps), p - r));
        }
    }
    md.push_str(&format!(
        "\nFolds, per-class F1 and confusion matrices: [{ANSWER_DIR}/index.md]({ANSWER_DIR}/index.md) (`cellsentence run experiments/extra/lm_finetune_annotation.yaml`).\n\n"
    ));
    md.push_str(&answer_sqrt_section(out, &t)?);
    md.push_str(&answer_lobo_section(out, reported)?);
    md.push_str(&answer_pretrain_section(out)?);
    md.push_str(&answer_attribution_section(out)?);
    Ok(md)
}

/// Where the attribution through the fine-tuned LM's answer writes (`scripts/lm-attribution.sh`),
/// and the frozen model's MLP attribution beside it.
pub(super) const ATTRIBUTION_ANSWER_DIR: &str = "attribution_answer";
const ATTRIBUTION_MLP_DIR: &str = "attribution";

/// The per-type summary of an `attribute` folder's `top_genes.md`: type → (attributed cells,
/// cells, known markers in the top genes, markers listed).
fn attribution_summary(dir: &Path) -> Option<Vec<[String; 5]>> {
    let text = std::fs::read_to_string(dir.join("top_genes.md")).ok()?;
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with("| cell_type | attributed cells"))
        .skip(2);
    let mut out = Vec::new();
    for l in lines.by_ref().take_while(|l| l.starts_with('|')) {
        let f: Vec<String> = l
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        out.push(f.try_into().ok()?);
    }
    (!out.is_empty()).then_some(out)
}

/// Which known markers the fine-tuned LM's answer attends to, type by type, beside the frozen
/// model's MLP (empty when the attribution is not committed).
fn answer_attribution_section(out: &Path) -> Result<String> {
    let Some(answer) = attribution_summary(&out.join(ATTRIBUTION_ANSWER_DIR)) else {
        return Ok(String::new());
    };
    let mlp = attribution_summary(&out.join(ATTRIBUTION_MLP_DIR)).unwrap_or_default();
    let mut md = String::from("**Which genes the answer reads** (issue 29 item 4; `scripts/lm-attribution.sh answer`): gradient × input of the LM's own answer — the logit of the cell type's answer token at the prompt's end — through its token embeddings (checked against central finite differences in `tests/lm.rs`), for the LM fine-tuned on all of Baron's cells (full sentences, random start, the `lm_answer` settings; in-sample: it shows what the trained model reads, its held-out accuracy is the table above). Known pancreas markers (`experiments/markers/pancreas.csv`) among each type's 20 highest-scoring genes, beside the same count through the frozen pretrained model's MLP (`results/attribution/`):\n\n");
    let mut t = Table::new([
        "cell type",
        "cells answered right / all",
        "markers found through the answer",
        "markers found through the frozen MLP",
        "markers listed",
    ]);
    let (mut types, mut found) = ([0usize; 2], [0usize; 2]);
    for [ty, ok, all, markers, listed] in &answer {
        let frozen = mlp
            .iter()
            .find(|r| &r[0] == ty)
            .map_or(String::new(), |r| r[3].clone());
        for (k, m) in [markers, &frozen].iter().enumerate() {
            let n = m.split_whitespace().count();
            found[k] += n;
            types[k] += usize::from(n > 0);
        }
        t.push([
            ty.clone(),
            format!("{ok} / {all}"),
            markers.clone(),
            frozen,
            listed.clone(),
        ]);
    }
    md.push_str(&t.to_markdown());
    md.push_str(&format!(
        "\nThrough the answer, {} known markers rank in their type's top 20, in {} of the {} types; through the frozen model's MLP, {} markers in {} types. Top genes and heat map: [{ATTRIBUTION_ANSWER_DIR}/top_genes.md]({ATTRIBUTION_ANSWER_DIR}/top_genes.md).\n\n",
        found[0],
        types[0],
        answer.len(),
        found[1],
        types[1]
    ));
    Ok(md)
}

/// The fine-tune with the sampling chosen on validation cells, beside the class-balanced rows of
/// `balanced` and against the target (empty when that extra experiment's results are not
/// committed).
fn answer_sqrt_section(out: &Path, balanced: &Table) -> Result<String> {
    let path = out.join(ANSWER_SQRT_DIR).join("annotation.csv");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(String::new());
    };
    let fix = "rerun `cellsentence run experiments/extra/lm_finetune_annotation_sqrt.yaml`";
    let t = Table::from_csv(&text).map_err(|e| Error::format(&path, e, fix))?;
    let mut md = String::from("**The sampling chosen on validation cells** (`experiments/extra/lm_finetune_annotation_sqrt.yaml`): the same fine-tune from random weights on full and HVG sentences, but each batch draws a type with probability ∝ √(its cells) — between the class-balanced draws above and the reference's natural order — for up to 600 steps (the kept step again the fold's lowest validation answer loss). The sampling was chosen by the validation answer loss of a fine-tune on a 10 % split of Baron's cells (the file's header gives the numbers), never by a test fold:\n\n");
    md.push_str(&t.select(&SCORE_COLUMNS).to_markdown());
    md.push('\n');
    let acc = |t: &Table, method: &str| {
        let r = t.rows.iter().find(|r| t.cell(r, "method") == method)?;
        t.cell(r, "accuracy").parse::<f64>().ok()
    };
    let floor = macro_f1(balanced, "MLP (PCA of HVG)").map(|(f, _)| f);
    for (mode, kind) in [
        ("full", "answer"),
        ("full", "embedding + MLP"),
        ("hvg", "answer"),
        ("hvg", "embedding + MLP"),
    ] {
        let method =
            format!("LM fine-tuned for annotation from random weights, {mode} sentences ({kind})");
        let (Some(a), Some((f, _))) = (acc(&t, &method), macro_f1(&t, &method)) else {
            continue;
        };
        let before = match (acc(balanced, &method), macro_f1(balanced, &method)) {
            (Some(ba), Some((bf, _))) => {
                format!("; class-balanced, 400 steps: {} / {}", f4(ba), f4(bf))
            }
            _ => String::new(),
        };
        md.push_str(&format!(
            "- {mode} sentences, {kind}: accuracy / macro-F1 {} / {}{before}: {}.\n",
            f4(a),
            f4(f),
            sqrt_verdict(mode, a, f, floor)
        ));
    }
    md.push_str(&format!(
        "\nFolds and per-class F1: [{ANSWER_SQRT_DIR}/index.md]({ANSWER_SQRT_DIR}/index.md).\n\n"
    ));
    Ok(md)
}

/// How a row of the √-sampling run stands: against the target (set on full sentences) and the
/// floor (PCA → MLP).
fn sqrt_verdict(mode: &str, a: f64, f: f64, floor: Option<f64>) -> String {
    let target = "the target (accuracy ≥ 0.98 and macro-F1 ≥ 0.90, about the paper's C2S)";
    let floor_s = |floor: f64| {
        let side = if f > floor { "above" } else { "below" };
        format!("{side} the floor (PCA → MLP, macro-F1 {})", f4(floor))
    };
    match (mode, floor) {
        ("full", _) if a >= 0.98 && f >= 0.90 => format!("{target} is met"),
        ("full", Some(fl)) => format!("{}; {target} not met", floor_s(fl)),
        ("full", None) => format!("{target} not met"),
        (_, Some(fl)) if a >= 0.98 && f >= 0.90 => {
            format!(
                "{}; at the target's level (set on full sentences)",
                floor_s(fl)
            )
        }
        (_, Some(fl)) => floor_s(fl),
        _ => String::new(),
    }
}

/// The frozen held-out model by the same recipe: next-gene only, next-gene + the answer-only stage
/// on the corpus labels, and the untrained control (empty when that extra experiment's results are
/// not committed).
fn answer_pretrain_section(out: &Path) -> Result<String> {
    let path = out.join(ANSWER_PRETRAIN_DIR).join("annotation.csv");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(String::new());
    };
    let fix = "rerun `cellsentence run experiments/extra/lm_answer_pretrain.yaml`";
    let t = Table::from_csv(&text).map_err(|e| Error::format(&path, e, fix))?;
    let mut md = String::from("**The frozen held-out model by the same recipe** (issue 29 item 3): the committed pretrained LM (next-gene objective, Baron held out) given an answer-only stage on the corpus datasets' own labels (the kept step chosen by the corpus validation split; `corpus.json` records the label keys and vocabulary), its frozen mean-pooled embedding fed to the paper's MLP beside the next-gene model and the untrained control (Baron 5-fold):\n\n");
    md.push_str(&t.select(&SCORE_COLUMNS).to_markdown());
    let f1 = |method: &str| macro_f1(&t, method);
    md.push('\n');
    for mode in ["full", "hvg"] {
        let row = |prefix: &str| f1(&format!("{prefix} {mode} sentences + MLP"));
        if let (Some((n, _)), Some((a, asd)), Some((u, usd))) = (
            row("pretrained LM"),
            row("pretrained LM + corpus answers"),
            row("untrained LM"),
        ) {
            let verdict = if a + asd.max(usd) < u {
                "still below the untrained control"
            } else if a < u {
                "below the untrained control by less than one fold sd"
            } else {
                "not below the untrained control"
            };
            md.push_str(&format!("- {mode} sentences: macro-F1 next-gene {}, + corpus answers {} ± {}, untrained {} ± {}: {verdict}.\n", f4(n), f4(a), f4(asd), f4(u), f4(usd)));
        }
    }
    md.push_str(&default_selection(out)?);
    md.push_str(&format!(
        "\nFolds and per-class F1: [{ANSWER_PRETRAIN_DIR}/index.md]({ANSWER_PRETRAIN_DIR}/index.md) (`cellsentence run experiments/extra/lm_answer_pretrain.yaml`).\n\n"
    ));
    Ok(md)
}

/// Which of the two is the held-out default, chosen on a corpus dataset (`pretrain.select_on`;
/// empty when the committed results have no selection).
fn default_selection(out: &Path) -> Result<String> {
    let stem = crate::experiment::outputs::names::DEFAULT_SELECTION;
    let path = out.join(ANSWER_PRETRAIN_DIR).join(format!("{stem}.csv"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(String::new());
    };
    let fix = "rerun `cellsentence run experiments/extra/lm_answer_pretrain.yaml`";
    let t = Table::from_csv(&text).map_err(|e| Error::format(&path, e, fix))?;
    let first = t
        .rows
        .first()
        .ok_or_else(|| Error::format(&path, "no rows", fix))?;
    let chosen = t
        .rows
        .iter()
        .find(|r| t.cell(r, "role") == "chosen")
        .ok_or_else(|| Error::format(&path, "no row has the role `chosen`", fix))?;
    let (id, cells, labels, folds) = (
        t.cell(first, "dataset"),
        t.cell(first, "cells"),
        t.cell(first, "labels"),
        t.cell(first, "folds"),
    );
    let cols = [
        ("model", "model"),
        ("role", "role"),
        ("accuracy", "accuracy"),
        ("accuracy_sd", "sd"),
        ("macro_f1", "macro-F1"),
        ("macro_f1_sd", "sd"),
    ];
    let model = t.cell(chosen, "model");
    let default_model = if model == "pretrained LM" {
        "the default `reproduce` embeds with it (`models/pretrained`)".to_string()
    } else {
        format!("the default `reproduce` still embeds with the next-gene model (`models/pretrained`); the Baron rows of `{model}` are those above")
    };
    let f1 = |r: &[String]| t.cell(r, "macro_f1").parse::<f64>().ok();
    let control = t.rows.iter().find(|r| t.cell(r, "role") == "control");
    let beaten = match (control.and_then(|r| f1(r)), f1(chosen)) {
        (Some(c), Some(k)) if c > k => format!(
            " The untrained control scores above both (macro-F1 {} against {}): on a tissue whose labels it never read, the trained model's frozen embedding keeps less cell identity than a random projection of the same sentence, as on Baron above.",
            f4(c),
            f4(k)
        ),
        _ => String::new(),
    };
    Ok(format!(
        "\n**Which is the default, chosen without Baron** (`select_on: {id}`): the answer stage run again with {id}'s labels kept out, then both candidates scored on {id} ({cells} cells, {labels} types; its sentences were in the next-gene corpus, its labels in neither model) by the use the default serves — the frozen mean-pooled embedding of full sentences → the paper's MLP, stratified {folds}-fold — with the untrained model as control:\n\n{}\nChosen: **{model}**; {default_model}.{beaten}\n",
        t.select(&cols).to_markdown()
    ))
}

/// The committed leave-one-donor-out table of the fine-tuned-for-annotation rows (empty when that
/// extra experiment's results are not committed).
fn answer_lobo_section(out: &Path, reported: &Reported) -> Result<String> {
    let path = out.join(ANSWER_LOBO_DIR).join("annotation.csv");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(String::new());
    };
    let fix = "rerun `cellsentence run experiments/extra/lm_finetune_annotation_lobo.yaml`";
    let t = Table::from_csv(&text).map_err(|e| Error::format(&path, e, fix))?;
    let mut md = String::from("**Across donors** (leave one of Baron's donors out; random start; the held-out donor is never read before it is answered):\n\n");
    md.push_str(&t.select(&SCORE_COLUMNS).to_markdown());
    if let Some(unseen) = t
        .rows
        .first()
        .map(|r| t.cell(r, "unseen_test_labels"))
        .filter(|u| !u.is_empty())
    {
        md.push_str(&format!("\nClasses a held-out donor has and the other donors lack can only be missed: {unseen} (every row).\n"));
    }
    let paper: Vec<String> = ["C2S Pythia-410M", "HVG C2S Pythia-410M", "SVM"]
        .iter()
        .filter_map(|m| {
            let get = |t: &crate::paper::Ordered<crate::paper::Ordered<f64>>| {
                let (_, per) = t.iter().find(|(n, _)| n == m)?;
                per.iter().find(|(d, _)| d == "Pancreas").map(|(_, v)| *v)
            };
            let (acc, f1) = (
                get(&reported.inter_accuracy)?,
                get(&reported.inter_macro_f1)?,
            );
            Some(format!("{m} {} / {}", f4(acc), f4(f1)))
        })
        .collect();
    if !paper.is_empty() {
        md.push_str(&format!(
            "\nThe paper on Pancreas across batches (Figures X–XI, accuracy / macro-F1): {}.\n",
            paper.join(", ")
        ));
    }
    md.push_str(&format!(
        "\nFolds, per-class F1 and confusion matrices: [{ANSWER_LOBO_DIR}/index.md]({ANSWER_LOBO_DIR}/index.md) (`cellsentence run experiments/extra/lm_finetune_annotation_lobo.yaml`).\n\n"
    ));
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed REPORT.md holds the fine-tuned-for-annotation section exactly as it is built
    /// from the committed table of `experiments/extra/lm_finetune_annotation.yaml`.
    #[test]
    fn committed_report_holds_the_answer_section() {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let reported = crate::paper::load_or_builtin(None).unwrap();
        let section = answer_section(&results, &reported).unwrap();
        if section.is_empty() {
            return; // the extra experiment's results are not committed
        }
        let report = std::fs::read_to_string(results.join("REPORT.md")).unwrap();
        assert!(
            report.contains(&section),
            "results/REPORT.md lacks the section, as built:\n{section}"
        );
    }
}
