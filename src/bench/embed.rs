//! `bench embed`: GPT-NeoX embedding throughput against transformers on the same prompts, in the
//! same run on the same device.
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::lm::{self, EmbedOptions};
use crate::report::write_atomic;

/// What `bench embed` times: the prompts, the model, and how transformers runs beside us.
#[derive(Debug, Clone)]
pub struct EmbedBench {
    /// Model directory (config.json, weights, tokenizer.json).
    pub model: PathBuf,
    /// Python with torch + transformers.
    pub python: PathBuf,
    /// The prompts, rendered.
    pub texts: Vec<String>,
    /// Where the prompts come from, for the table (a dataset id).
    pub source: String,
    /// Transformers attention implementations to time.
    pub attn: Vec<String>,
    /// Batch size of the transformers runs (Cell2Sentence: 8).
    pub hf_batch: usize,
    /// Run on the first CUDA device.
    pub cuda: bool,
    /// Parameter precision.
    pub dtype: lm::Precision,
    /// Most tokens per forward pass (ours).
    pub batch_tokens: usize,
    /// Output folder (embed_cpu.* or embed_cuda.*).
    pub out: PathBuf,
}

/// Times our embedding and each transformers run on the same prompts; writes the tables and
/// returns the Markdown one.
pub fn embed_bench(a: &EmbedBench) -> Result<String> {
    if !a.model.join("config.json").is_file() {
        return Err(Error::NotFound {
            path: a.model.join("config.json"),
            hint: " (create the random Pythia-410M checkpoint with scripts/bench-embed.sh)".into(),
        });
    }
    let work = PathBuf::from(".cache/bench");
    let prompts = work.join("embed_prompts.jsonl");
    let lines: Vec<String> = a
        .texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    write_atomic(&prompts, (lines.join("\n") + "\n").as_bytes())?;

    let (device, kind) = lm::device_and_kind(a.cuda, a.dtype)?;
    let threads = tch::get_num_threads();
    let ck = lm::load(&a.model, device, kind)?;
    let ids = ck.tokenizer.encode_batch(&a.texts)?;
    let tokens: usize = ids.iter().map(Vec::len).sum();
    let opts = EmbedOptions {
        batch_tokens: a.batch_tokens,
        progress: false,
        ..EmbedOptions::default()
    };
    // warm-up on a few prompts, then the timed run
    lm::embed_ids(&ck.model, &ids[..ids.len().min(2)], &opts)?;
    if a.cuda {
        tch::Cuda::synchronize(0);
    }
    let t0 = std::time::Instant::now();
    let ours = lm::embed_ids(&ck.model, &ids, &opts)?;
    if a.cuda {
        tch::Cuda::synchronize(0);
    }
    let ours_s = t0.elapsed().as_secs_f64();
    drop(ck);
    let mut rows = vec![serde_json::json!({
        "tool": "cellsentence (tch, sdpa, length-sorted packing, masked mean)",
        "seconds": ours_s, "tokens": tokens, "tokens_per_s": tokens as f64 / ours_s,
    })];
    for attn in &a.attn {
        rows.push(transformers_run(a, &prompts, attn, threads)?);
    }
    let device_s = if a.cuda {
        format!("CUDA ({})", a.dtype)
    } else {
        format!("CPU, {threads} threads")
    };
    let (md, csv) = bench_embed_tables(a, &rows, (a.texts.len(), tokens, ours_s), &device_s);
    drop(ours);
    let stem = if a.cuda { "embed_cuda" } else { "embed_cpu" };
    write_atomic(a.out.join(format!("{stem}.md")), md.as_bytes())?;
    write_atomic(a.out.join(format!("{stem}.csv")), csv.as_bytes())?;
    write_atomic(
        a.out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&rows)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(md)
}

/// One transformers embedding run of the benchmark (Cell2Sentence's way), as the JSON it prints.
fn transformers_run(
    a: &EmbedBench,
    prompts: &Path,
    attn: &str,
    threads: i32,
) -> Result<serde_json::Value> {
    let script = crate::project_file("tests/fixtures/bench_embed.py");
    let out = std::process::Command::new(&a.python)
        .arg(&script)
        .args(["--model"])
        .arg(&a.model)
        .args(["--prompts"])
        .arg(prompts)
        .args(["--attn", attn, "--batch", &a.hf_batch.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(if a.cuda {
            vec![
                "--cuda".to_string(),
                "--dtype".to_string(),
                a.dtype.to_string(),
            ]
        } else {
            vec![]
        })
        .output()
        .map_err(|e| Error::io(&a.python, e))?;
    if !out.status.success() {
        return Err(Error::param(
            "bench",
            format!(
                "{} {} failed: {}",
                a.python.display(),
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::param("bench", format!("transformers run printed no JSON: {e}")))?;
    Ok(v)
}

/// The benchmark's Markdown and CSV tables (`n`: prompts, `tokens`, `ours_s`: our seconds).
fn bench_embed_tables(
    a: &EmbedBench,
    rows: &[serde_json::Value],
    (n, tokens, ours_s): (usize, usize, f64),
    device_s: &str,
) -> (String, String) {
    let mut md = format!(
        "# Embedding throughput: cellsentence vs transformers\n\nModel: random-weight checkpoint of the \
         Pythia-410M config ({}), {} Cell2Sentence cell-type prompts (template 0, top-200 genes of {}), {} tokens; \
         {device_s}. transformers runs as Cell2Sentence does (batches of {}, left padding, \
         `output_hidden_states`, logits computed); cellsentence sorts prompts by length, packs batches under \
         {} tokens and skips the LM head.\n\n| tool | seconds | tokens/s | speed-up vs this row |\n|---|---|---|---|\n",
        a.model.display(),
        n,
        a.source,
        tokens,
        a.hf_batch,
        a.batch_tokens
    );
    let mut csv = String::from("tool,seconds,tokens,tokens_per_s,ours_speedup\n");
    for r in rows {
        let s = r["seconds"].as_f64().unwrap_or(f64::NAN);
        let tool = r["tool"].as_str().unwrap_or("?");
        let ratio = s / ours_s;
        md.push_str(&format!(
            "| {tool} | {s:.2} | {:.0} | {ratio:.2}× |\n",
            tokens as f64 / s
        ));
        csv.push_str(&format!(
            "\"{tool}\",{s:.3},{tokens},{:.1},{ratio:.3}\n",
            tokens as f64 / s
        ));
    }
    if a.cuda {
        // forward FLOPs: 2 × non-embedding parameters per token + attention (4·T·h per layer-token)
        md.push_str(&format!(
            "\nAchieved throughput (ours): {:.1} TFLOP/s (forward, 2·N_params·tokens + attention).\n",
            rows[0]["tokens_per_s"].as_f64().unwrap_or(0.0) * 2.0 * 302e6 / 1e12
        ));
    }
    (md, csv)
}
