//! `embed --chunk-cells`: cells embedded chunk by chunk as the streaming pipeline
//! ([`crate::stream`]) makes their sentences; `.npy` rows go to disk as they are computed, an
//! `.h5ad`'s are kept for its one write. Prompts, tie shuffle and template draws run on from
//! chunk to chunk through every cell (`--cells`/`--shard` embed only theirs), and an embedding
//! does not depend on its batch, so the output equals the in-memory `embed` byte for byte.
use std::cell::Cell;
use std::io::Write;
use std::path::Path;

use super::lm::EmbedArgs;
use super::stream::open_backed;
use super::InputArgs;
use crate::error::{Error, Result};
use crate::lm::{self, EmbedOptions};
use crate::sentence::{GeneSet, SentenceParams};

/// Streams `a.input` in chunks of `chunk` cells into `a.out`: an .npy and `<out>.cells.txt`, or
/// an .h5ad (`input_sha256`: the input's digest, recorded in its `uns`).
pub(super) fn stream_embed(
    a: &EmbedArgs,
    chunk: usize,
    budget: usize,
    input_sha256: Option<String>,
) -> Result<()> {
    let start = std::time::Instant::now();
    let s = &a.source;
    let input = InputArgs {
        input: a.input.clone().unwrap_or_default(),
        layer: s.adata_layer.clone(),
        raw: s.raw,
        dirs: s.dirs.clone(),
    };
    let b = open_backed(&input)?;
    let upper = lm::ModelMeta::read(&a.model)?.is_some_and(|m| m.upper_case_genes);
    let style = super::lm::style_for(a)?;
    let mut renderer = style.renderer(budget);
    let (device, kind) = lm::device_and_kind(a.run.cuda, a.run.dtype)?;
    let ck = lm::load(&a.model, device, kind)?;
    let opts = EmbedOptions {
        layer: a.layer,
        pool: a.pool,
        batch_tokens: a.run.batch_tokens,
        ..EmbedOptions::default()
    };
    let sentence = SentenceParams {
        seed: s.tie_seed,
        max_genes: Some(budget),
    };
    let params = super::stream::params(&s.prep, chunk, s.genes == GeneSet::Hvg, sentence);
    let to_h5ad = a.out.extension().is_some_and(|e| e == "h5ad");
    let dir = a
        .out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::output::clean_leftovers(dir)?;
    let rows_tmp = crate::output::write_temp(dir, &[])?;
    let io = |e: std::io::Error| Error::io(&rows_tmp, e);
    let mut rows = std::io::BufWriter::new(std::fs::File::create(&rows_tmp).map_err(io)?);
    let (mut names, mut texts, mut kept) = (Vec::new(), Vec::new(), Vec::<f32>::new());
    let (mut cols, mut k) = (0, 0usize);
    // the QC-kept cells and the range of them to embed, known once QC has counted them
    let (n_cells, range) = (Cell::new(0), Cell::new((0, usize::MAX)));
    // the first chunk's gene sentences are checked against a gene-level vocabulary, as in memory
    let mut vocabulary_checked = !matches!(style, lm::PromptStyle::Sentence);
    let mut flush =
        |texts: &mut Vec<String>, rows: &mut std::io::BufWriter<std::fs::File>| -> Result<()> {
            if texts.is_empty() {
                return Ok(());
            }
            if !vocabulary_checked {
                vocabulary_checked = true;
                super::lm::check_vocabulary(&a.model, texts, a.allow_unknown_genes)?;
            }
            let m = lm::embed_texts(&ck, texts, &opts)?;
            cols = m.cols;
            if to_h5ad {
                kept.extend_from_slice(&m.data);
            } else {
                rows.write_all(bytemuck::cast_slice(&m.data)).map_err(io)?;
            }
            texts.clear();
            Ok(())
        };
    let on_kept = |n: usize| {
        n_cells.set(n);
        range.set(super::lm::shard_range(a, n)?.unwrap_or((0, n)));
        Ok(())
    };
    let streamed = crate::stream::sentences_with(&b, &params, on_kept, |cell, sentence| {
        // every cell draws its template; only the selected ones are embedded
        let words: Vec<String> = sentence
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(|w| {
                if upper {
                    w.to_uppercase()
                } else {
                    w.to_string()
                }
            })
            .collect();
        let text = renderer.render(&words.iter().map(String::as_str).collect::<Vec<_>>());
        k += 1;
        let (lo, hi) = range.get();
        if !(lo < k && k <= hi) {
            return Ok(());
        }
        if cell.is_empty() || cell.chars().any(char::is_control) {
            return Err(Error::bad_value(
                b.path(),
                "obs_names",
                format!("cell name {cell:?} is empty or contains a control character; the .cells.txt lists one cell per line"),
                "rename the cells in obs",
            ));
        }
        names.push(cell.to_string());
        texts.push(text);
        if texts.len() >= chunk {
            flush(&mut texts, &mut rows)?;
        }
        Ok(())
    });
    let done = streamed.and_then(|_| flush(&mut texts, &mut rows));
    let file = rows.into_inner().map_err(|e| io(e.into_error()));
    let committed = done.and(file).and_then(|file| {
        drop(file);
        if to_h5ad {
            let m = crate::npy::Matrix {
                rows: names.len(),
                cols,
                data: std::mem::take(&mut kept),
            };
            let shard = (a.cells.is_some() || a.shard.is_some()).then(|| range.get());
            let about = super::lm::embedding_about(a, shard, n_cells.get(), input_sha256)?;
            return crate::data::h5ad_out::write_embeddings(&a.out, &names, &m, &about);
        }
        crate::output::kill_point("embed-rows-spilled");
        commit_npy(dir, &rows_tmp, &a.out, &names, cols)
    });
    let _ = std::fs::remove_file(&rows_tmp);
    committed?;
    eprintln!(
        "[embed] {} cells × {cols} dims streamed in chunks of {chunk} → {} in {:.1} s",
        names.len(),
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Commits `<out>` (.npy: the header, then the rows spilled to `rows_tmp`) and `<out>.cells.txt`
/// as one unit.
fn commit_npy(
    dir: &Path,
    rows_tmp: &Path,
    out: &Path,
    names: &[String],
    cols: usize,
) -> Result<()> {
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
        &[
            (npy_tmp, out.to_path_buf()),
            (names_tmp, out.with_extension("cells.txt")),
        ],
    )
}
