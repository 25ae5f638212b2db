//! Cell sentences as Cell2Sentence builds them: for each cell, its non-zero genes in decreasing
//! order of (normalized) expression, upper-cased gene names joined by a single space.
//!
//! Ties are broken the way Cell2Sentence does: numpy's legacy `RandomState` seeded once (42) and
//! consumed continuously across cells; per cell the stored entries are Fisher–Yates shuffled
//! (`sklearn.utils.shuffle`) and then stably sorted by decreasing value.
use rand_mt::Mt;
use serde::{Deserialize, Serialize};

use crate::csr::Csr;
use crate::error::{Error, Result};

/// Which genes enter the sentences.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum GeneSet {
    /// All expressed genes.
    All,
    /// Only the highly variable genes (ranks computed within the HVG set).
    Hvg,
}

/// Parameters of [`cell_sentences`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentenceParams {
    /// Seed of the tie-breaking shuffle (Cell2Sentence uses 42; `tie_seed` wherever sentences are
    /// configured: experiment files, `--tie-seed`).
    #[serde(alias = "seed")]
    pub tie_seed: u32,
    /// Keep only the first N genes of each sentence (`None` = all; the model uses 200).
    pub max_genes: Option<usize>,
}

/// Cell2Sentence's seed of the tie-breaking shuffle (numpy `RandomState(42)`).
pub const C2S_TIE_SEED: u32 = 42;

impl Default for SentenceParams {
    fn default() -> Self {
        Self {
            tie_seed: C2S_TIE_SEED,
            max_genes: None,
        }
    }
}

/// numpy's legacy `RandomState` integer stream (MT19937, `init_genrand` seeding).
pub struct NumpyLegacyRng(Mt);

impl NumpyLegacyRng {
    /// `np.random.seed(seed)`.
    pub fn new(seed: u32) -> Self {
        Self(Mt::new(seed))
    }
    /// numpy's `random_interval(max)`: uniform integer in `0..=max` by masked rejection.
    pub fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        loop {
            let v = self.0.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }
    /// `RandomState.shuffle` of a 1-D array (Fisher–Yates from the end).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.interval(i as u32) as usize;
            v.swap(i, j);
        }
    }
}

/// Ranked gene indices (columns of `x`) for every cell: decreasing value, Cell2Sentence tie order.
/// Zero entries are skipped. The shuffle stream runs over all cells in order, so the result for a
/// cell depends on the cells before it, exactly as in Cell2Sentence.
pub fn rank_genes(x: &Csr, seed: u32) -> Vec<Vec<u32>> {
    let mut out = Vec::with_capacity(x.n_rows);
    for_each_ranked(x, seed, |_, ranked| out.push(ranked.to_vec()));
    out
}

/// Streams [`rank_genes`] cell by cell without holding all rankings.
pub fn for_each_ranked(x: &Csr, seed: u32, mut f: impl FnMut(usize, &[u32])) {
    for_each_ranked_map(x, seed, |r| r.to_vec(), |i, r: Vec<u32>| f(i, &r));
}

/// Streams rankings through `map` (run in parallel) and hands the results to `f` in cell order.
///
/// The shuffle stream is sequential over cells, so the random swap targets of a window of cells
/// are drawn first, in order; shuffling, sorting and `map` then run in parallel.
pub fn for_each_ranked_map<T: Send>(
    x: &Csr,
    seed: u32,
    map: impl Fn(&[u32]) -> T + Sync,
    f: impl FnMut(usize, T),
) {
    let mut rng = NumpyLegacyRng::new(seed);
    let pb = crate::progress::Progress::bar(x.n_rows > 20_000, x.n_rows as u64, "cell sentences");
    ranked_map_with(x, &mut rng, Some(&pb), map, f);
    pb.finish();
}

/// [`for_each_ranked_map`] drawing from `rng`, which carries the shuffle stream on to the next
/// call (a matrix arriving in row chunks).
fn ranked_map_with<T: Send>(
    x: &Csr,
    rng: &mut NumpyLegacyRng,
    pb: Option<&crate::progress::Progress>,
    map: impl Fn(&[u32]) -> T + Sync,
    mut f: impl FnMut(usize, T),
) {
    use rayon::prelude::*;
    const WINDOW: usize = 1024;
    let mut start = 0;
    while start < x.n_rows {
        let end = (start + WINDOW).min(x.n_rows);
        let swaps: Vec<Vec<u32>> = (start..end)
            .map(|r| {
                let n = x.row(r).1.iter().filter(|v| **v != 0.0).count();
                (1..n).rev().map(|i| rng.interval(i as u32)).collect()
            })
            .collect();
        let out: Vec<T> = (start..end)
            .into_par_iter()
            .zip(swaps.par_iter())
            .map(|(r, js)| map(&rank_row(x, r, js)))
            .collect();
        for (k, t) in out.into_iter().enumerate() {
            f(start + k, t);
        }
        if let Some(pb) = pb {
            pb.inc((end - start) as u64);
        }
        start = end;
    }
}

/// Sentences of a matrix that arrives in row chunks: the tie-shuffle stream runs on from one
/// chunk to the next, so the sentences equal [`cell_sentences`] of the stacked chunks.
pub struct SentenceStream {
    rng: NumpyLegacyRng,
    words: Vec<String>,
    max_genes: Option<usize>,
}

impl SentenceStream {
    /// A stream over matrices whose columns are `genes`.
    pub fn new(genes: &[String], p: &SentenceParams) -> Result<Self> {
        crate::validate::Validate::validate(p)?;
        Ok(SentenceStream {
            rng: NumpyLegacyRng::new(p.tie_seed),
            words: gene_words(genes)?,
            max_genes: p.max_genes,
        })
    }

    /// Hands the words of the next chunk's sentences to `f` (row index within the chunk).
    pub fn feed(&mut self, x: &Csr, f: impl FnMut(usize, &[&str])) -> Result<()> {
        if self.words.len() != x.n_cols {
            return Err(Error::param(
                "genes",
                format!("{} names for {} columns", self.words.len(), x.n_cols),
            ));
        }
        let (words, max_genes) = (&self.words, self.max_genes);
        let mut f = f;
        let keep = |ranked: &[u32]| ranked[..budget(ranked.len(), max_genes)].to_vec();
        ranked_map_with(x, &mut self.rng, None, keep, |r, ranked: Vec<u32>| {
            let w: Vec<&str> = ranked.iter().map(|&j| words[j as usize].as_str()).collect();
            f(r, &w)
        });
        Ok(())
    }
}

/// How many genes of a ranking of `n` a sentence keeps.
fn budget(n: usize, max_genes: Option<usize>) -> usize {
    max_genes.unwrap_or(usize::MAX).min(n)
}

/// The first `max_genes` words of a ranking, space-separated.
fn sentence_text(words: &[String], ranked: &[u32], max_genes: Option<usize>) -> String {
    let take = budget(ranked.len(), max_genes);
    let mut s = String::with_capacity(take * 8);
    for (k, &j) in ranked[..take].iter().enumerate() {
        if k > 0 {
            s.push(' ');
        }
        s.push_str(&words[j as usize]);
    }
    s
}

/// Cell sentences as ranked gene ids over one vocabulary of gene words: each cell's genes in
/// decreasing order of expression (Cell2Sentence's tie order), cut at the sentence budget. Words
/// and text are rendered from it where they are needed (prompts, files), never parsed back.
#[derive(Debug, Clone, PartialEq)]
pub struct Sentences {
    vocabulary: Vec<String>,
    ranked: Vec<Vec<u32>>,
}

impl Sentences {
    /// Number of cells.
    pub fn len(&self) -> usize {
        self.ranked.len()
    }

    /// Whether there are no cells.
    pub fn is_empty(&self) -> bool {
        self.ranked.is_empty()
    }

    /// The gene words (upper-cased gene names) the ids index.
    pub fn vocabulary(&self) -> &[String] {
        &self.vocabulary
    }

    /// Cell `i`'s gene ids, most expressed first.
    pub fn ranked(&self, i: usize) -> &[u32] {
        &self.ranked[i]
    }

    /// Cell `i`'s words, most expressed first.
    pub fn words(&self, i: usize) -> Vec<&str> {
        let v = &self.vocabulary;
        self.ranked[i]
            .iter()
            .map(|&j| v[j as usize].as_str())
            .collect()
    }

    /// Every cell's words, borrowed.
    pub fn word_lists(&self) -> Vec<Vec<&str>> {
        (0..self.len()).map(|i| self.words(i)).collect()
    }

    /// Every cell's words, owned (what the LM trainers and embedders take).
    pub fn to_words(&self) -> Vec<Vec<String>> {
        (0..self.len())
            .map(|i| self.words(i).into_iter().map(String::from).collect())
            .collect()
    }

    /// Cell `i`'s sentence as Cell2Sentence writes it: its words joined by single spaces.
    pub fn text(&self, i: usize) -> String {
        sentence_text(&self.vocabulary, &self.ranked[i], None)
    }

    /// Every cell's sentence text.
    pub fn texts(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.text(i)).collect()
    }

    /// Number of genes in each cell's sentence.
    pub fn lengths(&self) -> Vec<usize> {
        self.ranked.iter().map(Vec::len).collect()
    }

    /// Mean number of genes per sentence (0 without cells).
    pub fn mean_length(&self) -> f64 {
        let n: usize = self.ranked.iter().map(Vec::len).sum();
        n as f64 / self.len().max(1) as f64
    }

    /// The first `n` genes of each sentence.
    pub fn truncated(&self, n: usize) -> Sentences {
        Sentences {
            vocabulary: self.vocabulary.clone(),
            ranked: self
                .ranked
                .iter()
                .map(|r| r[..budget(r.len(), Some(n))].to_vec())
                .collect(),
        }
    }
}

/// Key whose unsigned order is the total order of f32 values.
#[inline]
fn ord_key(v: f32) -> u32 {
    let b = v.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// One cell: Fisher–Yates with the given swap targets (i = n-1 … 1), then a stable sort by
/// decreasing value (an unstable sort on (−value, position) keys gives the same order).
fn rank_row(x: &Csr, r: usize, js: &[u32]) -> Vec<u32> {
    let (c, v) = x.row(r);
    let mut pairs: Vec<(u32, f32)> = c
        .iter()
        .copied()
        .zip(v.iter().copied())
        .filter(|p| p.1 != 0.0)
        .collect();
    let n = pairs.len();
    for (k, i) in (1..n).rev().enumerate() {
        pairs.swap(i, js[k] as usize);
    }
    let mut keys: Vec<u64> = pairs
        .iter()
        .enumerate()
        .map(|(pos, p)| ((!ord_key(p.1) as u64) << 32) | pos as u64)
        .collect();
    keys.sort_unstable();
    keys.into_iter()
        .map(|k| pairs[(k & 0xFFFF_FFFF) as usize].0)
        .collect()
}

/// Upper-cased gene words; errors if two genes collide after upper-casing (Cell2Sentence would
/// silently map later genes to wrong names in that case).
pub fn gene_words(genes: &[String]) -> Result<Vec<String>> {
    let words: Vec<String> = genes.iter().map(|g| g.to_uppercase()).collect();
    let mut seen = std::collections::HashMap::new();
    for (j, w) in words.iter().enumerate() {
        if let Some(prev) = seen.insert(w.clone(), j) {
            return Err(Error::param(
                "genes",
                format!("gene names `{}` and `{}` are the same word after upper-casing ({w}); rename one of them (e.g. with a suffix)", genes[prev], genes[j]),
            ));
        }
        if w.is_empty() || w.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::param("genes", format!("gene name {:?} (gene {} of {}) is empty or contains whitespace or a control character; cell sentences need one word per gene: rename it in var", genes[j], j + 1, genes.len())));
        }
    }
    Ok(words)
}

/// Builds one sentence per cell from `x` (cells × genes, normalized expression), as text.
pub fn cell_sentences(x: &Csr, genes: &[String], p: &SentenceParams) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(x.n_rows);
    for_each_sentence(x, genes, p, |_, s| out.push(s.to_string()))?;
    Ok(out)
}

/// Builds the [`Sentences`] of `x` (cells × genes, normalized expression): the ranked gene ids
/// [`cell_sentences`] writes as words.
pub fn sentences(x: &Csr, genes: &[String], p: &SentenceParams) -> Result<Sentences> {
    crate::validate::Validate::validate(p)?;
    check_columns(genes, x)?;
    let vocabulary = gene_words(genes)?;
    let mut ranked = Vec::with_capacity(x.n_rows);
    let keep = |r: &[u32]| r[..budget(r.len(), p.max_genes)].to_vec();
    for_each_ranked_map(x, p.tie_seed, keep, |_, r: Vec<u32>| ranked.push(r));
    Ok(Sentences { vocabulary, ranked })
}

/// One gene name per column of `x`.
fn check_columns(genes: &[String], x: &Csr) -> Result<()> {
    if genes.len() != x.n_cols {
        return Err(Error::param(
            "genes",
            format!("{} names for {} columns", genes.len(), x.n_cols),
        ));
    }
    Ok(())
}

/// Streams the sentences cell by cell (for large datasets: nothing is held but one sentence).
pub fn for_each_sentence(
    x: &Csr,
    genes: &[String],
    p: &SentenceParams,
    mut f: impl FnMut(usize, &str),
) -> Result<()> {
    crate::validate::Validate::validate(p)?;
    check_columns(genes, x)?;
    let words = gene_words(genes)?;
    let build = |ranked: &[u32]| sentence_text(&words, ranked, p.max_genes);
    for_each_ranked_map(x, p.tie_seed, build, |r, s: String| f(r, &s));
    Ok(())
}

/// The inverse map: a sentence back to a rank vector over `genes` (rank 0 = first word;
/// genes absent from the sentence get `None`). Unknown words are an error.
pub fn sentence_to_ranks(sentence: &str, genes: &[String]) -> Result<Vec<Option<usize>>> {
    let words = gene_words(genes)?;
    let index: std::collections::HashMap<&str, usize> = words
        .iter()
        .enumerate()
        .map(|(j, w)| (w.as_str(), j))
        .collect();
    let mut ranks = vec![None; genes.len()];
    for (k, w) in sentence.split(' ').filter(|w| !w.is_empty()).enumerate() {
        let j = *index.get(w.to_uppercase().as_str()).ok_or_else(|| {
            Error::param(
                "sentence",
                format!("word `{w}` (position {k}) is not a gene of this dataset"),
            )
        })?;
        if ranks[j].is_none() {
            ranks[j] = Some(k);
        }
    }
    Ok(ranks)
}

impl crate::validate::Validate for SentenceParams {
    fn validate(&self) -> crate::Result<()> {
        if let Some(m) = self.max_genes {
            crate::validate::positive("max_genes", m, "200, or no limit")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_numpy_seed_42() {
        // np.random.seed(42); np.random.randint(0, 2**32, dtype=np.uint64) uses the raw stream;
        // first raw outputs of MT19937 seeded with init_genrand(42):
        let mut rng = rand_mt::Mt::new(42);
        assert_eq!(rng.next_u32(), 1_608_637_542);
    }

    #[test]
    fn sentences_sort_by_value_and_roundtrip() {
        let x = Csr::from_dense(2, 4, &[0.0, 2.0, 1.0, 3.0, 1.0, 0.0, 0.0, 0.0]);
        let genes: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let s = cell_sentences(&x, &genes, &SentenceParams::default()).unwrap();
        assert_eq!(s, vec!["D B C".to_string(), "A".to_string()]);
        let r = sentence_to_ranks(&s[0], &genes).unwrap();
        assert_eq!(r, vec![None, Some(1), Some(2), Some(0)]);
        let t = cell_sentences(
            &x,
            &genes,
            &SentenceParams {
                tie_seed: 42,
                max_genes: Some(2),
            },
        )
        .unwrap();
        assert_eq!(t[0], "D B");
    }

    #[test]
    fn sentences_render_the_text_of_cell_sentences() {
        let x = Csr::from_dense(
            3,
            4,
            &[0.0, 2.0, 1.0, 3.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
        );
        let genes: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        for max_genes in [None, Some(2)] {
            let p = SentenceParams {
                max_genes,
                ..Default::default()
            };
            let s = sentences(&x, &genes, &p).unwrap();
            assert_eq!(s.texts(), cell_sentences(&x, &genes, &p).unwrap());
            assert_eq!(s.words(0), s.text(0).split(' ').collect::<Vec<_>>());
        }
        let s = sentences(&x, &genes, &SentenceParams::default()).unwrap();
        assert_eq!(s.lengths(), vec![3, 1, 4]);
        assert_eq!(s.mean_length(), 8.0 / 3.0);
        assert_eq!(
            s.truncated(2).texts(),
            vec!["D B", "A", s.words(2)[..2].join(" ").as_str()]
        );
    }

    #[test]
    fn case_collisions_are_rejected() {
        let genes: Vec<String> = ["Abc", "ABC"].iter().map(|s| s.to_string()).collect();
        assert!(gene_words(&genes).is_err());
    }
}
