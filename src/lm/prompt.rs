//! Cell2Sentence prompt text for cell-type prediction, and the prompt styles the embedder accepts.
use crate::{Error, Result};
use rand_mt::Mt;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Cell2Sentence's first cell-type-prediction template (`{num_genes}`, `{organism}`, `{cell_sentence}`).
pub const C2S_CELL_TYPE: &str = "The following is a list of {num_genes} gene names ordered by descending expression level in a {organism} cell. Your task is to give the cell type which this cell belongs to based on its gene expression.\nCell sentence: {cell_sentence}.\nThe cell type corresponding to these genes is:";

/// How a cell sentence becomes the text a model reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "style")]
pub enum PromptStyle {
    /// The sentence itself (the harness's small gene-level models).
    Sentence,
    /// A Cell2Sentence template. With several templates one is drawn per cell, in cell order, with
    /// Python's `random.choice` seeded by `template_seed` (Cell2Sentence: its 15 templates, seed 42).
    C2s {
        templates: Vec<String>,
        organism: String,
        /// `{num_genes}` is the number of genes in the sentence when set, else the gene budget
        /// (Cell2Sentence always writes 200).
        actual_count: bool,
        template_seed: u32,
    },
}

/// Cell2Sentence's seed of the per-cell template draw (Python `random.seed(42)`).
pub const C2S_TEMPLATE_SEED: u32 = 42;

impl PromptStyle {
    /// Cell2Sentence's default: the first template, `Homo sapiens`, budget as `{num_genes}`.
    pub fn c2s_default() -> Self {
        PromptStyle::C2s {
            templates: vec![C2S_CELL_TYPE.into()],
            organism: "Homo sapiens".into(),
            actual_count: false,
            template_seed: C2S_TEMPLATE_SEED,
        }
    }

    /// Reads templates from a JSON file: a list of strings, or Cell2Sentence's prompt file
    /// (`{"model_input": [...], ...}`).
    pub fn templates_from_file(path: &Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::format(
                path,
                format!("not JSON: {e}"),
                "give a JSON list of templates",
            )
        })?;
        let list = v.get("model_input").unwrap_or(&v);
        let out: Option<Vec<String>> = list
            .as_array()
            .map(|a| a.iter().map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or(None);
        match out {
            Some(t) if !t.is_empty() && t.iter().all(|s| s.contains("{cell_sentence}")) => Ok(t),
            _ => Err(Error::format(
                path,
                "expected a non-empty list of template strings, each containing {cell_sentence}",
                "give a JSON list of strings (or Cell2Sentence's prompt file with `model_input`)",
            )),
        }
    }

    /// Prompt texts for sentences (each a list of gene words, already truncated to `budget`).
    pub fn render(&self, sentences: &[Vec<&str>], budget: usize) -> Vec<String> {
        let mut r = self.renderer(budget);
        sentences.iter().map(|s| r.render(s)).collect()
    }

    /// A renderer of one prompt at a time, its template draw carried from cell to cell: the
    /// prompts of sentences given in chunks equal [`PromptStyle::render`] of all of them.
    pub fn renderer(&self, budget: usize) -> Renderer<'_> {
        let seed = match self {
            PromptStyle::C2s { template_seed, .. } => *template_seed,
            PromptStyle::Sentence => 0,
        };
        Renderer {
            style: self,
            budget,
            rng: PyRandom::new(seed),
        }
    }
}

/// See [`PromptStyle::renderer`].
pub struct Renderer<'a> {
    style: &'a PromptStyle,
    budget: usize,
    rng: PyRandom,
}

impl Renderer<'_> {
    /// The prompt of the next cell's sentence (gene words, truncated to the budget).
    pub fn render(&mut self, s: &[&str]) -> String {
        match self.style {
            PromptStyle::Sentence => s.join(" "),
            PromptStyle::C2s {
                templates,
                organism,
                actual_count,
                ..
            } => {
                let t = if templates.len() == 1 {
                    &templates[0]
                } else {
                    &templates[self.rng.below(templates.len() as u32) as usize]
                };
                let n = if *actual_count { s.len() } else { self.budget };
                t.replace("{num_genes}", &n.to_string())
                    .replace("{organism}", organism)
                    .replace("{cell_sentence}", &s.join(" "))
            }
        }
    }
}

/// Python's `random.Random(seed)` for `choice`: MT19937 seeded by `init_by_array([seed])`, and
/// `_randbelow(n)` by rejection on `getrandbits(n.bit_length())`.
pub struct PyRandom(Mt);

impl PyRandom {
    /// `random.seed(seed)` for a non-negative int below 2^32.
    pub fn new(seed: u32) -> Self {
        PyRandom(Mt::new_with_key([seed]))
    }
    /// `random._randbelow(n)` (n ≥ 1, below 2^32).
    pub fn below(&mut self, n: u32) -> u32 {
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.0.next_u32() >> (32 - k);
            if r < n {
                return r;
            }
        }
    }
}

/// The separator between a cell's sentence and its cell-type answer.
pub const CELL_TYPE_SEP: &str = "<|CELL_TYPE|>";

/// The prompt a fine-tuned model reads: `style`'s text, then ` <|CELL_TYPE|>`.
pub fn answer_style(style: &PromptStyle) -> PromptStyle {
    let (templates, organism, actual_count, template_seed) = match style {
        PromptStyle::Sentence => (
            vec!["{cell_sentence}".to_string()],
            "Homo sapiens".to_string(),
            false,
            C2S_TEMPLATE_SEED,
        ),
        PromptStyle::C2s {
            templates,
            organism,
            actual_count,
            template_seed,
        } => (
            templates.clone(),
            organism.clone(),
            *actual_count,
            *template_seed,
        ),
    };
    let sep = format!(" {CELL_TYPE_SEP}");
    PromptStyle::C2s {
        templates: templates
            .into_iter()
            .map(|t| if t.ends_with(&sep) { t } else { t + &sep })
            .collect(),
        organism,
        actual_count,
        template_seed,
    }
}

/// Reads prompts written one `{"text": ...}` JSON object a line (blank lines skipped); a
/// line that is not such an object, or a file without one, is an error naming the line and the fix.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            Error::format(
                path,
                format!("line {}: not JSON: {e}", i + 1),
                "write one {\"text\": \"...\"} object per line",
            )
        })?;
        match v.get("text").and_then(|t| t.as_str()) {
            Some(t) => out.push(t.to_string()),
            None => {
                return Err(Error::missing(
                    path,
                    format!("line {}: text", i + 1),
                    "write one {\"text\": \"...\"} object per line",
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Empty {
            path: path.into(),
            what: "no prompts".into(),
            fix: "write one {\"text\": \"...\"} object per line".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_random_choice_stream() {
        // python3 -c "import random; random.seed(42); print([random.choice(range(15)) for _ in range(12)])"
        let mut r = PyRandom::new(42);
        let got: Vec<u32> = (0..12).map(|_| r.below(15)).collect();
        assert_eq!(got, vec![10, 1, 0, 11, 4, 3, 3, 2, 11, 1, 10, 11]);
    }

    #[test]
    fn c2s_text() {
        let p = PromptStyle::c2s_default().render(&[vec!["RPLP1", "ACTB"]], 200);
        assert!(p[0].starts_with("The following is a list of 200 gene names"));
        assert!(p[0].contains("Homo sapiens cell."));
        assert!(p[0].contains("\nCell sentence: RPLP1 ACTB.\nThe cell type"));
        assert!(p[0].ends_with("is:"));
    }
}
