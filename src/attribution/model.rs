//! Attribution of one model directory, as `attribute` runs it: through the model's own answer
//! when it is fine-tuned for cell types (it has [`crate::lm::cell_type::HEAD`]), else through the
//! annotation MLP (k-fold) on its pooled hidden state; and the known markers it is compared with.
use std::path::Path;

use super::{attribute_answers, attribute_cells, Attribution, AttributionOptions, Method};
use crate::error::{Error, Result};
use crate::lm;

/// Integrated-gradients steps when none are given.
pub const IG_STEPS: usize = 16;

/// What to attribute with, as given (`None`: not given; the MLP's `folds` and `layer` do not
/// apply to a model's answer and are refused there).
#[derive(Debug, Clone, Copy)]
pub struct ModelAttribution {
    pub method: Method,
    /// Integrated-gradients steps (default [`IG_STEPS`]; with integrated gradients only).
    pub ig_steps: Option<usize>,
    /// Hidden state the MLP's embedding pools (default -1).
    pub layer: Option<i64>,
    /// Stratified folds of the MLP (default 5).
    pub folds: Option<usize>,
    /// Genes kept per cell type.
    pub top: usize,
}

impl ModelAttribution {
    /// Refuses integrated-gradients steps given for another method.
    pub fn check(&self) -> Result<()> {
        if self.ig_steps.is_some() && self.method != Method::IntegratedGradients {
            return Err(Error::param(
                "--ig-steps",
                format!(
                    "applies to --method integrated_gradients only, and the method is {}; drop --ig-steps or choose that method",
                    self.method
                ),
            ));
        }
        Ok(())
    }

    /// The method in words, for the report.
    fn method_words(&self) -> String {
        match self.method {
            Method::GradInput => "Gradient × input".to_string(),
            Method::IntegratedGradients => format!(
                "Integrated gradients ({} steps, zero baseline)",
                self.ig_steps.unwrap_or(IG_STEPS)
            ),
        }
    }
}

/// Attributes the cells `ids` (with their `labels`) with the model in `model` (loaded as `ck`):
/// through its answer when it is fine-tuned for cell types, else through the MLP. Returns the
/// attribution and the sentence saying how it was made.
pub fn attribute_model(
    model: &Path,
    ck: &lm::Checkpoint,
    ids: &[Vec<i64>],
    labels: &[String],
    o: &ModelAttribution,
) -> Result<(Attribution, String)> {
    o.check()?;
    if model.join(lm::cell_type::HEAD).exists() {
        answer_attribution(model, ck, ids, labels, o)
    } else {
        mlp_attribution(ck, ids, labels, o)
    }
}

/// Attribution through the annotation MLP (k-fold) on the mean-pooled hidden state.
fn mlp_attribution(
    ck: &lm::Checkpoint,
    ids: &[Vec<i64>],
    labels: &[String],
    m: &ModelAttribution,
) -> Result<(Attribution, String)> {
    let o = AttributionOptions {
        method: m.method,
        steps: m.ig_steps.unwrap_or(IG_STEPS),
        layer: m.layer.unwrap_or(-1),
        folds: m.folds.unwrap_or(5),
        top: m.top,
        ..Default::default()
    };
    let r = attribute_cells(&ck.model, &ck.tokenizer, ids, labels, &o)?;
    let how = format!(
        "{} of the MLP's predicted-class logit through the LM's token embeddings (hidden state {}, mean-pooled), {}-fold: each correctly predicted cell is attributed with the MLP of the fold that tests it",
        m.method_words(),
        o.layer,
        o.folds
    );
    Ok((r, how))
}

/// Attribution through the answer of a model fine-tuned for cell types: every correctly answered
/// cell with that one model (the MLP's folds and layer do not apply and are refused).
fn answer_attribution(
    model: &Path,
    ck: &lm::Checkpoint,
    ids: &[Vec<i64>],
    labels: &[String],
    m: &ModelAttribution,
) -> Result<(Attribution, String)> {
    let given = [
        ("--folds", m.folds.is_some()),
        ("--layer", m.layer.is_some()),
    ];
    if let Some(opt) = given.iter().find_map(|(n, given)| given.then_some(*n)) {
        return Err(Error::param(
            opt,
            format!(
                "{} is fine-tuned for cell types: it is attributed through its own answer, which has no MLP folds or pooled layer; drop {opt}",
                model.display()
            ),
        ));
    }
    let head = lm::cell_type::CellTypeHead::read(model)?;
    let answers: Vec<(String, i64)> = head
        .labels
        .iter()
        .cloned()
        .zip(head.answer_ids(&ck.tokenizer)?)
        .collect();
    let skip: Vec<i64> = ck
        .tokenizer
        .id(lm::corpus::CELL_TYPE_SEP)
        .into_iter()
        .collect();
    let o = AttributionOptions {
        method: m.method,
        steps: m.ig_steps.unwrap_or(IG_STEPS),
        top: m.top,
        ..Default::default()
    };
    let r = attribute_answers(&ck.model, &ck.tokenizer, ids, labels, &answers, &skip, &o)?;
    let trained: usize = head.train_cells.iter().sum();
    let how = format!(
        "{} of the LM's own answer (the logit of the cell type's answer token at the prompt's end, Cell2Sentence's cell-type prediction) through its token embeddings: every cell the model answers right (its answer restricted to the {} trained labels) is attributed with this one fine-tuned model ({} training cells; cells it was trained on are included when they are among the input's)",
        m.method_words(),
        head.labels.len(),
        trained
    );
    Ok((r, how))
}

/// Reads `cell_type,gene` lines (genes upper-cased; `#` comments and a header skipped): a cell
/// type the input's `labels` lack is refused by name; a gene the model cannot read (not in
/// `tok`'s vocabulary, so it can never rank) is warned about by name.
pub fn read_markers(
    path: &Path,
    labels: &[String],
    tok: &lm::tokenizer::Tok,
) -> Result<Vec<(String, String)>> {
    let markers = parse_markers(path)?;
    let known: std::collections::BTreeSet<&str> = labels.iter().map(String::as_str).collect();
    let mut unknown: Vec<&str> = markers
        .iter()
        .map(|(t, _)| t.as_str())
        .filter(|t| !known.contains(t))
        .collect();
    unknown.dedup();
    if !unknown.is_empty() {
        let list: Vec<&str> = known.iter().copied().collect();
        return Err(Error::format(
            path,
            format!(
                "cell type(s) {} are not labels of the input (its labels: {})",
                unknown.join(", "),
                list.join(", ")
            ),
            "spell the types as the input's label column does, or remove their lines",
        ));
    }
    let unread: Vec<&str> = markers
        .iter()
        .map(|(_, g)| g.as_str())
        .filter(|g| tok.id(g).is_none())
        .collect();
    if !unread.is_empty() {
        eprintln!(
            "warning: {}: marker gene(s) {} are not in the model's vocabulary: they can never rank among the top genes",
            path.display(),
            unread.join(", ")
        );
    }
    Ok(markers)
}

/// Parses `cell_type,gene` lines (genes upper-cased).
fn parse_markers(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line == "cell_type,gene" {
            continue;
        }
        let Some((t, g)) = line.split_once(',') else {
            return Err(Error::format(
                path,
                format!("line {}: expected cell_type,gene", i + 1),
                "write one cell_type,gene pair per line",
            ));
        };
        out.push((t.trim().to_string(), g.trim().to_uppercase()));
    }
    Ok(out)
}
