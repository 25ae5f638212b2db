//! Cell embeddings to files: the vocabulary and cell-name checks before a model reads the texts,
//! the cached embedding of a list of texts, and the outputs — an `.npy` with its `.cells.txt`, or
//! an `.h5ad` — committed as one unit, written at once ([`write`](fn@write)) or chunk by chunk as a
//! streamed input makes its sentences ([`Sink`]). `embed` (CLI) and `attribute` call these.
pub mod rows;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::lm::{self, EmbedOptions};
use crate::npy::Matrix;

/// Where and how a model runs: CUDA or the CPU, its parameters' precision, and the most tokens
/// (batch × padded length) per forward pass.
#[derive(Debug, Clone, Copy)]
pub struct RunOn {
    pub cuda: bool,
    pub dtype: lm::Precision,
    pub batch_tokens: usize,
}

/// Above this share of unknown genes, a gene-level model's embedding is refused unless allowed.
pub const MAX_UNKNOWN_SHARE: f64 = 0.5;

/// Says how many of the sentences' genes a gene-level model does not know (read as `<unk>`), and
/// refuses when they are most of them unless `allow` (`--allow-unknown-genes`).
pub fn check_vocabulary(model: &Path, texts: &[String], allow: bool) -> Result<()> {
    let tok = lm::tokenizer::Tok::load(&model.join("tokenizer.json"))?;
    let Some((unknown, total)) = tok.unknown_tokens(texts)? else {
        return Ok(());
    };
    if unknown == 0 {
        return Ok(());
    }
    let share = unknown as f64 / total.max(1) as f64;
    let what = format!(
        "{unknown} of the sentences' {total} gene tokens ({:.1} %) are not in {}'s vocabulary and are read as `{}`",
        100.0 * share,
        model.display(),
        lm::tokenizer::UNK
    );
    if share > MAX_UNKNOWN_SHARE && !allow {
        return Err(Error::param(
            "--model",
            format!(
                "{what}: the embedding would describe the unknown token more than the cells; use a model trained on this dataset's genes (same gene names and case), or pass --allow-unknown-genes"
            ),
        ));
    }
    eprintln!("warning: {what}");
    Ok(())
}

/// A cell name that cannot stand on its own line of a .cells.txt (empty, or with a newline, tab or
/// other control character).
pub fn unlistable(cell: &str) -> bool {
    cell.is_empty() || cell.chars().any(char::is_control)
}

/// One name per line: a cell name of `source` that is empty or holds a control character would
/// shift every later row of `names` (the .cells.txt beside the .npy).
pub fn check_cell_names(source: &str, cells: &[String], names: &Path) -> Result<()> {
    if let Some((i, c)) = cells.iter().enumerate().find(|(_, c)| unlistable(c)) {
        return Err(Error::bad_value(
            source,
            "obs_names",
            format!(
                "cell name {c:?} (cell {} of {}) is empty or contains a control character (newline, tab, …); {} lists one cell per line",
                i + 1,
                cells.len(),
                names.display()
            ),
            "rename the cells in obs (e.g. obs_names_make_unique after replacing the characters)",
        ));
    }
    Ok(())
}

/// The digest of a list of prompts: their count, then each one (no two lists share it, not even
/// no prompt and one empty prompt).
fn texts_digest(texts: &[String]) -> String {
    let mut h = format!("{}", texts.len());
    for t in texts {
        h.push('\u{1e}');
        h.push_str(t);
    }
    crate::cache::sha256_hex(h.as_bytes())
}

/// Embeds `texts` with `model`, cached by (model digest, texts digest, precision, device, layer,
/// pooling); `label` names the entry.
pub fn embed_cached(
    cache: &Cache,
    model: &Path,
    texts: &[String],
    run: RunOn,
    (layer, pool): (i64, lm::Pool),
    label: &str,
) -> Result<Matrix> {
    let (device, kind) = lm::device_and_kind(run.cuda, run.dtype)?;
    let model_digest = cache.file_digest(model)?;
    let texts_digest = texts_digest(texts);
    let inputs = (
        &model_digest,
        &texts_digest,
        &run.dtype,
        run.cuda,
        layer,
        pool,
    );
    let (m, _) = cache.npy("embeddings", label, &inputs, || {
        let ck = lm::load(model, device, kind)?;
        let opts = EmbedOptions {
            layer,
            pool,
            batch_tokens: run.batch_tokens,
            ..EmbedOptions::default()
        };
        lm::embed_texts(&ck, texts, &opts)
    })?;
    Ok(m)
}

/// The `.cells.txt` beside an `.npy` output.
pub fn names_file(out: &Path) -> PathBuf {
    out.with_extension("cells.txt")
}

/// Whether `out` is an `.h5ad` (else an `.npy` with its `.cells.txt`).
pub fn is_h5ad(out: &Path) -> bool {
    out.extension().is_some_and(|e| e == "h5ad")
}

/// Writes the embeddings `m` of `cells` to `out`: an `.h5ad` (with `about()` in its `uns`), or
/// the `.npy` and its `.cells.txt` as one unit (a kill leaves the old pair or the new one, never
/// new embeddings beside old names).
pub fn write(
    out: &Path,
    cells: &[String],
    m: &Matrix,
    about: impl FnOnce() -> Result<serde_json::Value>,
) -> Result<()> {
    if is_h5ad(out) {
        return crate::data::h5ad_out::write_embeddings(out, cells, m, &about()?);
    }
    let dir = out_dir(out);
    crate::output::clean_leftovers(dir)?;
    let t_npy = crate::output::write_temp(dir, &crate::npy::to_bytes(m))?;
    let t_names = crate::output::write_temp(dir, (cells.join("\n") + "\n").as_bytes())?;
    crate::output::commit_files(
        dir,
        "embed",
        &[(t_npy, out.to_path_buf()), (t_names, names_file(out))],
    )
}

/// The folder an output file is written in (`.` for a bare file name).
fn out_dir(out: &Path) -> &Path {
    out.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Embeddings written while the cells stream: texts gathered a chunk at a time, embedded, and
/// the rows spilled to a temporary file (`.npy` output) or kept (`.h5ad`, written once at the
/// end). A failed or killed run leaves no output.
pub struct Sink<'a> {
    ck: &'a lm::Checkpoint,
    opts: EmbedOptions,
    out: &'a Path,
    chunk: usize,
    rows_tmp: PathBuf,
    rows: std::io::BufWriter<std::fs::File>,
    names: Vec<String>,
    texts: Vec<String>,
    kept: Vec<f32>,
    cols: usize,
    /// The model and `--allow-unknown-genes`, while the first chunk's texts (bare gene
    /// sentences only) still need the vocabulary check.
    vocabulary: Option<(&'a Path, bool)>,
}

impl<'a> Sink<'a> {
    /// A sink embedding with `ck` (as `opts` says) `chunk` cells at a time into `out`;
    /// `vocabulary` (the model directory, and whether unknown genes are allowed): check the first
    /// chunk's gene sentences against its vocabulary.
    pub fn create(
        ck: &'a lm::Checkpoint,
        opts: EmbedOptions,
        out: &'a Path,
        chunk: usize,
        vocabulary: Option<(&'a Path, bool)>,
    ) -> Result<Self> {
        let dir = out_dir(out);
        crate::output::clean_leftovers(dir)?;
        let rows_tmp = crate::output::write_temp(dir, &[])?;
        let f = std::fs::File::create(&rows_tmp).map_err(|e| Error::io(&rows_tmp, e))?;
        Ok(Sink {
            ck,
            opts,
            out,
            chunk,
            rows_tmp,
            rows: std::io::BufWriter::new(f),
            names: Vec::new(),
            texts: Vec::new(),
            kept: Vec::new(),
            cols: 0,
            vocabulary,
        })
    }

    /// One selected cell's prompt; a full chunk is embedded.
    pub fn push(&mut self, cell: &str, text: String) -> Result<()> {
        self.names.push(cell.to_string());
        self.texts.push(text);
        if self.texts.len() >= self.chunk {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.texts.is_empty() {
            return Ok(());
        }
        if let Some((model, allow)) = self.vocabulary.take() {
            check_vocabulary(model, &self.texts, allow)?;
        }
        let m = lm::embed_texts(self.ck, &self.texts, &self.opts)?;
        self.cols = m.cols;
        if is_h5ad(self.out) {
            self.kept.extend_from_slice(&m.data);
        } else {
            self.rows
                .write_all(bytemuck::cast_slice(&m.data))
                .map_err(|e| Error::io(&self.rows_tmp, e))?;
        }
        self.texts.clear();
        Ok(())
    }

    /// After the stream (`streamed`: whether it went through): embeds the last chunk and commits
    /// the output (`about`: the .h5ad's `uns` record), or leaves nothing when anything failed.
    /// Returns cells × dims.
    pub fn finish(
        mut self,
        streamed: Result<()>,
        about: impl FnOnce() -> Result<serde_json::Value>,
    ) -> Result<(usize, usize)> {
        let done = streamed.and_then(|_| self.flush());
        let rows_tmp = self.rows_tmp.clone();
        let file = self
            .rows
            .into_inner()
            .map_err(|e| Error::io(&rows_tmp, e.into_error()));
        let (names, cols) = (self.names, self.cols);
        let committed = done.and(file).and_then(|file| {
            drop(file);
            if is_h5ad(self.out) {
                let m = Matrix {
                    rows: names.len(),
                    cols,
                    data: self.kept,
                };
                return crate::data::h5ad_out::write_embeddings(self.out, &names, &m, &about()?);
            }
            crate::output::kill_point("embed-rows-spilled");
            commit_npy(&rows_tmp, self.out, &names, cols)
        });
        let _ = std::fs::remove_file(&rows_tmp);
        committed.map(|_| (names.len(), cols))
    }
}

/// Commits `<out>` (.npy: the header, then the rows spilled to `rows_tmp`) and `<out>.cells.txt`
/// as one unit.
fn commit_npy(rows_tmp: &Path, out: &Path, names: &[String], cols: usize) -> Result<()> {
    let dir = out_dir(out);
    let npy_tmp = crate::output::write_temp(dir, &crate::npy::header(names.len(), cols))?;
    let mut npy = std::fs::OpenOptions::new()
        .append(true)
        .open(&npy_tmp)
        .map_err(|e| Error::io(&npy_tmp, e))?;
    let mut src = std::fs::File::open(rows_tmp).map_err(|e| Error::io(rows_tmp, e))?;
    std::io::copy(&mut src, &mut npy).map_err(|e| Error::io(&npy_tmp, e))?;
    let names_tmp = crate::output::write_temp(dir, (names.join("\n") + "\n").as_bytes())?;
    crate::output::commit_files(
        dir,
        "embed",
        &[(npy_tmp, out.to_path_buf()), (names_tmp, names_file(out))],
    )
}

#[cfg(test)]
mod tests {
    /// No prompt and one empty prompt never share an embedding cache entry (issue 32 family 6).
    #[test]
    fn prompt_lists_have_distinct_digests() {
        let d =
            |v: &[&str]| super::texts_digest(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_ne!(d(&[]), d(&[""]));
        assert_ne!(d(&[""]), d(&["", ""]));
        assert_ne!(d(&["a b"]), d(&["a", "b"]));
        assert_eq!(d(&["x"]), d(&["x"]));
    }

    /// A cell name that would break the one-name-a-line .cells.txt is refused by name.
    #[test]
    fn cell_names_that_cannot_be_listed_are_refused() {
        assert!(super::unlistable("") && super::unlistable("a\nb") && super::unlistable("a\tb"));
        assert!(!super::unlistable("AAACATACAACCAC-1"));
        let cells = vec!["ok".to_string(), "bad\nname".to_string()];
        let e = super::check_cell_names("x.h5ad", &cells, std::path::Path::new("e.cells.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cell 2 of 2") && e.contains("obs_names"), "{e}");
    }
}
