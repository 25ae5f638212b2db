//! Language-model stage against Hugging Face references (tests/fixtures/make_lm_fixtures.py):
//! transformers hidden states and logits of tiny GPT-NeoX checkpoints, Python `tokenizers` ids of the
//! Pythia tokenizer, loader errors, batch-invariant embeddings, and seeded training.
use cellsentence::lm::{self, load, EmbedOptions, TrainConfig};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/lm").join(name)
}
fn shared_tokenizer() -> PathBuf {
    root().join("../shared/tokenizers/gpt-neox-20b")
}

fn reference(dir: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("reference.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

#[test]
fn forward_matches_transformers_every_layer_and_logits() {
    for name in [
        "neox_par25",
        "neox_seq100",
        "neox_par100",
        "neox_seq25",
        "neox_legacy",
        "neox_sharded",
    ] {
        let dir = fixture(name);
        let (model, _vs) = load::load_model(&dir, Device::Cpu).unwrap();
        let r = reference(&dir);
        let ids = &r["input_ids"];
        let mask = &r["attention_mask"];
        let lengths: Vec<i64> =
            Vec::<i64>::try_from(mask.sum_dim_intlist(1, false, Kind::Int64)).unwrap();
        let (last, states) = tch::no_grad(|| model.hidden(ids, true)).unwrap();
        let logits = tch::no_grad(|| model.logits(&last));
        assert_eq!(states.len() as i64, model.cfg.num_hidden_layers + 1);
        let mut worst = 0f64;
        for (row, &n) in lengths.iter().enumerate() {
            let real = |t: &Tensor| t.get(row as i64).narrow(0, 0, n);
            for (i, s) in states.iter().enumerate() {
                let e = max_abs(&real(s), &real(&r[&format!("hidden.{i}")]));
                assert!(e <= 1e-4, "{name} row {row} hidden {i}: max abs error {e}");
                worst = worst.max(e);
            }
            let e = max_abs(&real(&logits), &real(&r["logits"]));
            assert!(e <= 1e-4, "{name} row {row} logits: max abs error {e}");
            worst = worst.max(e);
            // unbatched (no padding) equals batched
            let alone = ids.get(row as i64).narrow(0, 0, n).unsqueeze(0);
            let (l1, _) = tch::no_grad(|| model.hidden(&alone, false)).unwrap();
            let e = max_abs(&l1.get(0), &real(&last));
            assert!(
                e <= 1e-5,
                "{name} row {row}: unbatched differs from batched by {e}"
            );
        }
        let off = max_abs(&states[1], &r["hidden.2"]);
        assert!(off > 1e-3, "{name}: layers are indistinguishable ({off})");
        eprintln!("{name}: max abs error vs transformers {worst:.2e} (adjacent layers differ by {off:.2})");
    }
}

#[test]
fn embeddings_are_masked_means_and_batch_invariant() {
    let dir = fixture("neox_par25");
    let (model, _vs) = load::load_model(&dir, Device::Cpu).unwrap();
    let r = reference(&dir);
    let mask = &r["attention_mask"];
    let lengths: Vec<i64> =
        Vec::<i64>::try_from(mask.sum_dim_intlist(1, false, Kind::Int64)).unwrap();
    let seqs: Vec<Vec<i64>> = lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| Vec::<i64>::try_from(r["input_ids"].get(i as i64).narrow(0, 0, n)).unwrap())
        .collect();
    let one = EmbedOptions {
        batch_tokens: 1,
        max_batch: 1,
        progress: false,
        ..Default::default()
    };
    let packed = EmbedOptions {
        batch_tokens: 1 << 16,
        max_batch: 64,
        progress: false,
        ..Default::default()
    };
    let a = lm::embed_ids(&model, &seqs, &one).unwrap();
    let b = lm::embed_ids(&model, &seqs, &packed).unwrap();
    assert_eq!((a.rows, a.cols), (4, 32));
    // a token id outside the vocabulary is an error naming the fix, not a libtorch panic
    let e = lm::embed_ids(&model, &[vec![0, model.cfg.vocab_size]], &one)
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside the model's vocabulary"), "{e}");
    let last = &r[&format!("hidden.{}", model.cfg.num_hidden_layers)];
    for (i, &n) in lengths.iter().enumerate() {
        let want: Vec<f32> = Vec::<f32>::try_from(last.get(i as i64).narrow(0, 0, n).mean_dim(
            0,
            false,
            Kind::Float,
        ))
        .unwrap();
        for (j, w) in want.iter().enumerate() {
            assert!(
                (a.row(i)[j] - w).abs() <= 1e-4,
                "cell {i} dim {j}: {} vs transformers mean {w}",
                a.row(i)[j]
            );
            assert!(
                (a.row(i)[j] - b.row(i)[j]).abs() <= 1e-5,
                "cell {i} dim {j}: batch changes the embedding"
            );
        }
    }
    let plan = lm::embed::plan_batches(
        &[5, 9, 1, 9, 3],
        &EmbedOptions {
            batch_tokens: 20,
            max_batch: 8,
            progress: false,
            ..Default::default()
        },
    );
    assert_eq!(plan, vec![vec![1, 3], vec![0, 4, 2]]);
}

/// `embed --layer L --pool P` against transformers' `output_hidden_states`, pooled here over each
/// prompt's real tokens: every layer (positive and negative index), every pooling, packed batches.
#[test]
fn every_layer_and_pooling_matches_transformers_hidden_states() {
    for name in ["neox_par25", "neox_seq100"] {
        let dir = fixture(name);
        let (model, _vs) = load::load_model(&dir, Device::Cpu).unwrap();
        let r = reference(&dir);
        let lengths: Vec<i64> =
            Vec::<i64>::try_from(r["attention_mask"].sum_dim_intlist(1, false, Kind::Int64))
                .unwrap();
        let seqs: Vec<Vec<i64>> = lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                Vec::<i64>::try_from(r["input_ids"].get(i as i64).narrow(0, 0, n)).unwrap()
            })
            .collect();
        let n_states = model.cfg.num_hidden_layers + 1;
        let mut worst = 0f64;
        for layer in 0..n_states {
            let h = &r[&format!("hidden.{layer}")];
            for pool in [lm::Pool::Mean, lm::Pool::Last, lm::Pool::Max] {
                for index in [layer, layer - n_states] {
                    let opts = EmbedOptions {
                        layer: index,
                        pool,
                        progress: false,
                        ..Default::default()
                    };
                    let e = lm::embed_ids(&model, &seqs, &opts).unwrap();
                    for (i, &n) in lengths.iter().enumerate() {
                        let real = h.get(i as i64).narrow(0, 0, n);
                        let want = match pool {
                            lm::Pool::Mean => real.mean_dim(0, false, Kind::Float),
                            lm::Pool::Last => real.get(n - 1),
                            lm::Pool::Max => real.amax(0, false),
                        };
                        let got = Tensor::from_slice(e.row(i));
                        let err = max_abs(&got, &want);
                        assert!(
                            err <= 1e-4,
                            "{name} layer {index} pool {pool} prompt {i}: max abs error {err}"
                        );
                        worst = worst.max(err);
                    }
                }
            }
        }
        eprintln!("{name}: every layer × pooling within {worst:.2e} of transformers");
        let opts = EmbedOptions {
            layer: n_states,
            ..Default::default()
        };
        let err = lm::embed_ids(&model, &seqs, &opts).unwrap_err().to_string();
        assert!(err.contains("outside the model's"), "{err}");
    }
}

#[test]
fn pythia_tokenizer_matches_python_tokenizers() {
    let dir = shared_tokenizer();
    let path = dir.join("tokenizer.json");
    assert!(
        path.is_file(),
        "{} not found: the Pythia tokenizer comes from ../shared (see its README)",
        path.display()
    );
    let tok = lm::tokenizer::Tok::load(&path).unwrap();
    assert_eq!(tok.vocab_size(), 50277);
    let refs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference-encodings.json")).unwrap(),
    )
    .unwrap();
    for case in refs["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap().to_string();
        let want: Vec<i64> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(
            tok.encode_batch(std::slice::from_ref(&text)).unwrap()[0],
            want,
            "{text:?}"
        );
    }
    let mut gz = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(fixture("tokenizer_prompts.json.gz")).unwrap(),
    )
    .read_to_string(&mut gz)
    .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&gz).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1000);
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let got = tok.encode_batch(&texts).unwrap();
    for (i, c) in cases.iter().enumerate() {
        let want: Vec<i64> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(got[i], want, "prompt {i}");
    }
    // the protocol's test vector: template 0, five genes, 77 ids
    let style = lm::PromptStyle::c2s_default();
    let text = style.render(
        &[vec!["RPLP1", "ACTB", "EEF1A1", "HSP90AA1", "TMSB4X"]],
        200,
    );
    let ids = tok.encode_batch(&text).unwrap();
    assert_eq!(ids[0].len(), 77);
    assert_eq!(&ids[0][..4], &[510, 1563, 310, 247]);
    assert_eq!(&ids[0][73..], &[841, 3608, 310, 27]);
}

/// A copy of a fixture checkpoint in a temp dir, with the Pythia tokenizer or none.
fn scratch(name: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, t.path().join(p.file_name().unwrap())).unwrap();
    }
    t
}

fn load_err(dir: &Path) -> String {
    match load(dir, Device::Cpu, Kind::Float) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn loader_errors_name_file_tensor_and_fix() {
    let gene_tok = lm::tokenizer::gene_tokenizer(&["A".into(), "B".into()]).unwrap();
    // missing directory / file
    let e = load_err(Path::new("/nonexistent/model"));
    assert!(
        e.contains("/nonexistent/model") && e.contains("not found"),
        "{e}"
    );
    let t = scratch("neox_par25");
    gene_tok
        .save(t.path().join("tokenizer.json"), false)
        .unwrap();
    std::fs::remove_file(t.path().join("model.safetensors")).unwrap();
    let e = load_err(t.path());
    assert!(
        e.contains("model.safetensors") && e.contains("not found"),
        "{e}"
    );

    // unsupported architecture
    let t = scratch("neox_par25");
    gene_tok
        .save(t.path().join("tokenizer.json"), false)
        .unwrap();
    let cfg = std::fs::read_to_string(t.path().join("config.json"))
        .unwrap()
        .replace("\"gpt_neox\"", "\"llama\"")
        .replace("GPTNeoXForCausalLM", "LlamaForCausalLM");
    std::fs::write(t.path().join("config.json"), cfg).unwrap();
    let e = load_err(t.path());
    assert!(
        e.contains("config.json") && e.contains("unsupported architecture `llama`"),
        "{e}"
    );

    // misshaped tensor: config says a wider MLP than the weights have
    let t = scratch("neox_par25");
    gene_tok
        .save(t.path().join("tokenizer.json"), false)
        .unwrap();
    let cfg = std::fs::read_to_string(t.path().join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 80", "\"intermediate_size\": 96");
    std::fs::write(t.path().join("config.json"), cfg).unwrap();
    let e = load_err(t.path());
    assert!(
        e.contains("model.safetensors")
            && e.contains("mlp.dense_4h_to_h.weight")
            && e.contains("shape [32, 80], expected [32, 96]"),
        "{e}"
    );

    // missing tensor
    let t = scratch("neox_par25");
    gene_tok
        .save(t.path().join("tokenizer.json"), false)
        .unwrap();
    let kept: Vec<(String, Tensor)> = Tensor::read_safetensors(t.path().join("model.safetensors"))
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n != "embed_out.weight")
        .collect();
    Tensor::write_safetensors(&kept, t.path().join("model.safetensors")).unwrap();
    let e = load_err(t.path());
    assert!(
        e.contains("embed_out.weight") && e.contains("lacks this tensor"),
        "{e}"
    );

    // a tokenizer bigger than the embedding (the Pythia tokenizer on a 97-row model)
    let t = scratch("neox_par25");
    std::fs::copy(
        shared_tokenizer().join("tokenizer.json"),
        t.path().join("tokenizer.json"),
    )
    .unwrap();
    let e = load_err(t.path());
    assert!(
        e.contains("tokenizer.json") && e.contains("50277 tokens do not fit") && e.contains("97"),
        "{e}"
    );

    // missing shard named by the index
    let t = scratch("neox_sharded");
    gene_tok
        .save(t.path().join("tokenizer.json"), false)
        .unwrap();
    std::fs::remove_file(t.path().join("model-00003-of-00011.safetensors")).unwrap();
    let e = load_err(t.path());
    assert!(
        e.contains("model-00003-of-00011.safetensors") && e.contains("index"),
        "{e}"
    );
}

fn toy_sentences() -> Vec<Vec<String>> {
    // deterministic pseudo-cells: three "types" with different leading genes
    let genes: Vec<String> = (0..60).map(|i| format!("G{i}")).collect();
    (0..48)
        .map(|c| {
            let t = c % 3;
            (0..20)
                .map(|k| genes[(t * 20 + (k * 7 + c) % 20) % 60].clone())
                .collect()
        })
        .collect()
}

/// A one-layer model for the toy sentences: 12 steps, validation every 4.
fn toy_config() -> TrainConfig {
    TrainConfig {
        layers: 1,
        hidden: 32,
        heads: 4,
        intermediate: 64,
        max_genes: 20,
        steps: 12,
        batch_size: 8,
        eval_every: 4,
        ..TrainConfig::default()
    }
}

#[test]
fn small_lm_training_is_seeded_and_round_trips() {
    let cfg = toy_config();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let s = toy_sentences();
    let ra = lm::train(&s, &cfg, None, &a, Device::Cpu, false).unwrap();
    lm::train(&s, &cfg, None, &b, Device::Cpu, false).unwrap();
    lm::train(
        &s,
        &TrainConfig {
            seed: 1,
            ..cfg.clone()
        },
        None,
        &c,
        Device::Cpu,
        false,
    )
    .unwrap();
    let bytes = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(
        bytes(&a, "model.safetensors"),
        bytes(&b, "model.safetensors"),
        "same seed, different weights"
    );
    assert_eq!(bytes(&a, "tokenizer.json"), bytes(&b, "tokenizer.json"));
    assert_ne!(
        bytes(&a, "model.safetensors"),
        bytes(&c, "model.safetensors")
    );
    let first = ra.log.first().unwrap().train_loss;
    let last = ra.log.last().unwrap().train_loss;
    assert!(last < first, "loss did not fall: {first} -> {last}");
    assert!(ra.log.last().unwrap().val_loss.is_some());

    // read back through the HF loader; embeddings identical across loads
    let ck = load(&a, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(lm::prompt_style(&a).unwrap(), lm::PromptStyle::Sentence);
    let ids = ck
        .tokenizer
        .encode_batch(&["G0 G1 G2".to_string()])
        .unwrap();
    assert_eq!(ids[0][0], 0, "sentences start with <|endoftext|>");
    assert_eq!(ids[0].len(), 4);
    let opts = EmbedOptions {
        progress: false,
        ..Default::default()
    };
    let e1 = lm::embed_sentences(&ck, &s, &lm::PromptStyle::Sentence, 20, &opts).unwrap();
    let ck2 = load(&b, Device::Cpu, Kind::Float).unwrap();
    let e2 = lm::embed_sentences(&ck2, &s, &lm::PromptStyle::Sentence, 20, &opts).unwrap();
    assert_eq!(e1, e2);
    assert_eq!((e1.rows, e1.cols), (48, 32));

    // fine-tuning an existing checkpoint keeps its tokenizer and shape
    let d = dir.path().join("d");
    let short = TrainConfig {
        steps: 2,
        ..cfg.clone()
    };
    let rd = lm::train(&s, &short, Some(&a), &d, Device::Cpu, false).unwrap();
    assert_eq!(bytes(&a, "tokenizer.json"), bytes(&d, "tokenizer.json"));
    assert_eq!(rd.parameters, ra.parameters);
    assert!(
        rd.log[0].train_loss < first,
        "fine-tuning starts from the trained weights"
    );
    load(&d, Device::Cpu, Kind::Float).unwrap();
}

#[test]
fn train_embed_cli_round_trip() {
    use assert_cmd::Command;
    let dir = tempfile::tempdir().unwrap();
    let fx = root().join("tests/fixtures/synthetic.h5ad");
    let model = dir.path().join("m");
    let cfg = r#"{"layers": 1, "hidden": 32, "heads": 4, "intermediate": 64, "steps": 3, "batch_size": 8, "max_genes": 50}"#;
    let out = Command::cargo_bin("cellsentence")
        .unwrap()
        .args(["--quiet", "train-lm", "--input"])
        .arg(&fx)
        .args(["--genes", "hvg", "--config", cfg, "--out"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let js: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(js["parameters"].as_i64().unwrap() > 0);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "cellsentence.json",
        "training_log.csv",
        "training_loss.html",
    ] {
        assert!(model.join(f).is_file(), "{f} missing");
    }
    let e = dir.path().join("E.npy");
    let cache = dir.path().join("cache");
    let embed = |extra: &[&str], out: &std::path::Path| {
        let r = Command::cargo_bin("cellsentence")
            .unwrap()
            .args(["--quiet", "embed", "--model"])
            .arg(&model)
            .args(extra)
            .arg("--out")
            .arg(out)
            .arg("--cache")
            .arg(&cache)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    };
    embed(&["--input", fx.to_str().unwrap(), "--genes", "hvg"], &e);
    let m = cellsentence::npy::read(&e).unwrap();
    let cells = std::fs::read_to_string(dir.path().join("E.cells.txt")).unwrap();
    assert_eq!(cells.lines().count(), m.rows);
    assert_eq!(m.cols, 32);
    assert!(m.rows > 300 && m.rows < 420, "QC-kept cells: {}", m.rows);
    // cached: same bytes again
    let e2 = dir.path().join("E2.npy");
    embed(&["--input", fx.to_str().unwrap(), "--genes", "hvg"], &e2);
    assert_eq!(std::fs::read(&e).unwrap(), std::fs::read(&e2).unwrap());
    // --templates reach a gene-level model too: the bare template gives the same embeddings, one
    // with a word after the sentence gives others (it was once dropped without a word)
    let tpl = |name: &str, t: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, serde_json::to_string(&[t]).unwrap()).unwrap();
        let out = dir.path().join(format!("{name}.npy"));
        let fxs = fx.to_str().unwrap();
        let fs = f.to_str().unwrap();
        embed(&["--input", fxs, "--genes", "hvg", "--templates", fs], &out);
        std::fs::read(out).unwrap()
    };
    assert_eq!(
        tpl("bare.json", "{cell_sentence}"),
        std::fs::read(&e).unwrap()
    );
    assert_ne!(
        tpl("suffix.json", "{cell_sentence} <|endoftext|>"),
        std::fs::read(&e).unwrap()
    );
    // two shards (--cells), stacked, are the unsharded run byte for byte; a shard past the end
    // is refused before anything is written
    let n = m.rows;
    let (s1, s2) = (dir.path().join("S1.npy"), dir.path().join("S2.npy"));
    let fxs = fx.to_str().unwrap();
    embed(&["--input", fxs, "--genes", "hvg", "--cells", "0:100"], &s1);
    embed(
        &[
            "--input",
            fxs,
            "--genes",
            "hvg",
            "--cells",
            &format!("100:{n}"),
        ],
        &s2,
    );
    let (a1, a2) = (
        cellsentence::npy::read(&s1).unwrap(),
        cellsentence::npy::read(&s2).unwrap(),
    );
    assert_eq!((a1.rows, a2.rows), (100, n - 100));
    assert_eq!(
        [a1.data, a2.data].concat(),
        m.data,
        "stacked shards differ from one run"
    );
    let shard_names = std::fs::read_to_string(dir.path().join("S1.cells.txt")).unwrap()
        + &std::fs::read_to_string(dir.path().join("S2.cells.txt")).unwrap();
    assert_eq!(shard_names, cells);
    let r = Command::cargo_bin("cellsentence")
        .unwrap()
        .args(["--quiet", "embed", "--model"])
        .arg(&model)
        .args([
            "--input",
            fxs,
            "--genes",
            "hvg",
            "--cells",
            &format!("0:{}", n + 1),
        ])
        .arg("--out")
        .arg(dir.path().join("S3.npy"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("--cells") && err.contains(&format!("{n} cells")),
        "{err}"
    );
    assert!(!dir.path().join("S3.npy").exists());
    // the same embeddings into AnnData, as Python anndata reads them
    let h = dir.path().join("E.h5ad");
    embed(&["--input", fx.to_str().unwrap(), "--genes", "hvg"], &h);
    assert!(!dir.path().join("E.cells.txt.h5ad").exists());
    python_reads_embeddings(&h, &e, &dir.path().join("E.cells.txt"));
    // prompts as given
    let p = dir.path().join("p.jsonl");
    std::fs::write(&p, "{\"text\": \"G1 G2\"}\n{\"text\": \"MT-CO1\"}\n").unwrap();
    let e3 = dir.path().join("E3.npy");
    embed(&["--prompts", p.to_str().unwrap()], &e3);
    assert_eq!(cellsentence::npy::read(&e3).unwrap().rows, 2);
    // a bad prompts file names the line
    std::fs::write(&p, "{\"text\": \"G1\"}\nnot json\n").unwrap();
    let r = Command::cargo_bin("cellsentence")
        .unwrap()
        .args(["--quiet", "embed", "--model"])
        .arg(&model)
        .arg("--prompts")
        .arg(&p)
        .arg("--out")
        .arg(dir.path().join("E4.npy"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("p.jsonl") && err.contains("line 2"),
        "{err}"
    );
    assert!(!dir.path().join("E4.npy").exists());
}

/// Python `anndata.read_h5ad` reads `h5ad`: its obs index is the cell list of the `.npy` run, its
/// `obsm["X_cell_sentence"]` equals the `.npy` exactly, `uns["cellsentence"]` names the model.
fn python_reads_embeddings(h5ad: &Path, npy: &Path, cells: &Path) {
    let script = r#"
import json, sys
import anndata, numpy as np
a = anndata.read_h5ad(sys.argv[1])
x = a.obsm["X_cell_sentence"]
assert x.dtype == np.float32, x.dtype
assert np.array_equal(x, np.load(sys.argv[2])), "obsm differs from the .npy"
names = open(sys.argv[3]).read().split("\n")[:-1]
assert list(a.obs_names) == names, "obs index differs from the cell list"
about = json.loads(a.uns["cellsentence"])
assert about["layer"] == -1 and about["pool"] == "mean" and about["model"], about
print(a.n_obs, x.shape[1])
"#;
    let out = std::process::Command::new("python")
        .arg("-c")
        .arg(script)
        .arg(h5ad)
        .arg(npy)
        .arg(cells)
        .output()
        .expect("python (the project venv, scripts/env.sh) on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tiny transformers checkpoint in double precision (its var store kept alive beside it) and
/// its reference prompts, unpadded, with their lengths.
fn double_model_and_prompts() -> (lm::GptNeox, tch::nn::VarStore, Vec<Vec<i64>>, Vec<i64>) {
    let dir = fixture("neox_par25");
    let (model, mut vs) = load::load_model(&dir, Device::Cpu).unwrap();
    vs.double();
    let r = reference(&dir);
    let lengths: Vec<i64> =
        Vec::<i64>::try_from(r["attention_mask"].sum_dim_intlist(1, false, Kind::Int64)).unwrap();
    let seqs: Vec<Vec<i64>> = lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| Vec::<i64>::try_from(r["input_ids"].get(i as i64).narrow(0, 0, n)).unwrap())
        .collect();
    (model, vs, seqs, lengths)
}

/// Asserts each token's gradient × input score equals the central difference of `logit` (of
/// embeddings and cell) along that token's embedding; returns the worst error and how many
/// tokens move the logit.
fn check_grad_input(
    model: &lm::GptNeox,
    seqs: &[Vec<i64>],
    scores: &[Vec<f64>],
    logit: impl Fn(&Tensor, usize) -> f64,
) -> (f64, usize) {
    let eps = 1e-6;
    let (mut worst, mut moved) = (0f64, 0usize);
    for (i, s) in seqs.iter().enumerate() {
        let ids = Tensor::from_slice(s).view([1, -1]);
        let e = tch::no_grad(|| model.embed(&ids));
        assert_eq!(scores[i].len(), s.len());
        for t in 0..s.len() as i64 {
            let dir = Tensor::zeros_like(&e);
            dir.narrow(1, t, 1).copy_(&e.narrow(1, t, 1));
            let fd = (logit(&(&e + &dir * eps), i) - logit(&(&e - &dir * eps), i)) / (2.0 * eps);
            let err = (fd - scores[i][t as usize]).abs();
            assert!(
                err <= 1e-6 * (1.0 + fd.abs()),
                "cell {i} token {t}: gradient × input {} vs finite difference {fd}",
                scores[i][t as usize]
            );
            moved += usize::from(fd.abs() > 1e-4);
            worst = worst.max(err);
        }
    }
    (worst, moved)
}

/// Asserts each cell's integrated gradients add up to logit(E) − logit(0) (completeness, within
/// the midpoint rule's error).
fn check_completeness(
    model: &lm::GptNeox,
    seqs: &[Vec<i64>],
    ig: &[Vec<f64>],
    logit: impl Fn(&Tensor, usize) -> f64,
) {
    for (i, s) in seqs.iter().enumerate() {
        let ids = Tensor::from_slice(s).view([1, -1]);
        let e = tch::no_grad(|| model.embed(&ids));
        let want = logit(&e, i) - logit(&(&e * 0.0), i);
        let got: f64 = ig[i].iter().sum();
        assert!(
            (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
            "cell {i}: integrated gradients add to {got}, logit difference {want}"
        );
    }
}

/// Gene-token attribution against finite differences, in double precision, on a tiny transformers
/// checkpoint and a small trained MLP: each token's gradient × input equals the central difference
/// of the class logit along that token's embedding, and integrated gradients add up to
/// logit(E) − logit(0) (completeness).
#[test]
fn attribution_matches_finite_differences() {
    use cellsentence::attribution::{self, Method};
    use cellsentence::classify::{mlp, Fold, MlpConfig};
    let (model, _vs, seqs, lengths) = double_model_and_prompts();
    // an MLP on 32-dim features, 3 classes
    let n = 60;
    let feats =
        cellsentence::torch_seeded(7, || Tensor::randn([n, 32], (Kind::Float, Device::Cpu)));
    let x = cellsentence::npy::Matrix {
        rows: n as usize,
        cols: 32,
        data: Vec::<f32>::try_from(feats.view([-1])).unwrap(),
    };
    let y: Vec<usize> = (0..n as usize).map(|i| i % 3).collect();
    let fold = Fold {
        name: "fold1".into(),
        train: (0..40).collect(),
        val: (40..50).collect(),
        test: (50..60).collect(),
        unseen_labels: vec![],
    };
    let c = MlpConfig {
        hidden: vec![16],
        max_epochs: 3,
        ..Default::default()
    };
    let (mut m, _) = mlp::fit(&x, &y, 3, &fold, &c, Device::Cpu);
    m.vs.double();
    let targets = vec![0usize, 1, 2, 1];
    let scores =
        attribution::token_scores(&model, &m, &seqs, &targets, (Method::GradInput, 0), -1, 2)
            .unwrap();
    let logit = |e: &Tensor, i: usize| {
        tch::no_grad(|| {
            attribution::pooled_logits(&model, &m, e, &[lengths[i]], 3)
                .unwrap()
                .get(0)
                .double_value(&[targets[i] as i64])
        })
    };
    let (worst, _) = check_grad_input(&model, &seqs, &scores, logit);
    // integrated gradients: completeness within the midpoint rule's error
    let ig = attribution::token_scores(
        &model,
        &m,
        &seqs,
        &targets,
        (Method::IntegratedGradients, 64),
        -1,
        4,
    )
    .unwrap();
    check_completeness(&model, &seqs, &ig, logit);
    eprintln!("gradient × input within {worst:.1e} of central differences");
}

/// Attribution through the LM's own answer (issue 29 item 4) against finite differences, in double
/// precision: each prompt token's gradient × input of the answer token's logit at the prompt's
/// end equals the central difference along that token's embedding; integrated gradients add up to
/// logit(E) − logit(0).
#[test]
fn answer_attribution_matches_finite_differences() {
    use cellsentence::attribution::{self, Method, Readout};
    let (model, _vs, seqs, lengths) = double_model_and_prompts();
    // answer tokens: arbitrary vocabulary ids, one per prompt
    let targets: Vec<i64> = (0..seqs.len() as i64).map(|i| 3 + 5 * i).collect();
    let scores = attribution::readout_scores(
        &model,
        Readout::Answer,
        &seqs,
        &targets,
        (Method::GradInput, 0),
        3,
    )
    .unwrap();
    let logit = |e: &Tensor, i: usize| {
        tch::no_grad(|| {
            attribution::answer_logits(&model, e, &[lengths[i]])
                .unwrap()
                .get(0)
                .double_value(&[targets[i]])
        })
    };
    let (worst, moved) = check_grad_input(&model, &seqs, &scores, logit);
    assert!(
        moved > seqs.len(),
        "the answer must depend on the prompt's tokens"
    );
    let ig = attribution::readout_scores(
        &model,
        Readout::Answer,
        &seqs,
        &targets,
        (Method::IntegratedGradients, 64),
        4,
    )
    .unwrap();
    check_completeness(&model, &seqs, &ig, logit);
    eprintln!("answer gradient × input within {worst:.1e} of central differences");
}

/// `train-lm --out` never deletes an unrelated folder: refused before training, left untouched.
#[test]
fn train_refuses_to_replace_a_folder_that_is_not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("notes");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("thesis.txt"), b"precious").unwrap();
    let cfg = TrainConfig {
        layers: 1,
        hidden: 32,
        heads: 4,
        intermediate: 64,
        steps: 2,
        batch_size: 4,
        max_genes: 20,
        ..Default::default()
    };
    let err = lm::train(&toy_sentences(), &cfg, None, &out, Device::Cpu, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a model directory"), "{err}");
    assert_eq!(std::fs::read(out.join("thesis.txt")).unwrap(), b"precious");
}

#[test]
fn adamw_matches_libtorch_adamw() {
    use tch::nn::{self, Module, OptimizerConfig};
    let make = || {
        cellsentence::torch_seeded(3, || {
            let vs = nn::VarStore::new(Device::Cpu);
            let l1 = nn::linear(vs.root() / "a", 6, 8, Default::default());
            let l2 = nn::linear(vs.root() / "b", 8, 3, Default::default());
            (vs, l1, l2)
        })
    };
    let (vs1, a1, b1) = make();
    let (vs2, a2, b2) = make();
    let mut theirs = nn::AdamW {
        beta1: 0.9,
        beta2: 0.95,
        wd: 0.01,
        eps: 1e-8,
        amsgrad: false,
    }
    .build(&vs1, 1e-2)
    .unwrap();
    let mut ours = lm::optim::AdamW::new(&vs2, 0.9, 0.95, 1e-8, 0.01);
    let (x, y) = cellsentence::torch_seeded(4, || {
        (
            Tensor::randn([16, 6], (Kind::Float, Device::Cpu)),
            Tensor::randn([16, 3], (Kind::Float, Device::Cpu)),
        )
    });
    for step in 0..8 {
        let lr = 1e-2 * (1.0 - step as f64 / 10.0);
        let l1 = (b1.forward(&a1.forward(&x).gelu("none")) - &y)
            .square()
            .mean(Kind::Float);
        theirs.set_lr(lr);
        theirs.zero_grad();
        l1.backward();
        theirs.clip_grad_norm(0.5);
        theirs.step();
        let l2 = (b2.forward(&a2.forward(&x).gelu("none")) - &y)
            .square()
            .mean(Kind::Float);
        ours.zero_grad();
        l2.backward();
        ours.clip_grad_norm(0.5);
        ours.step(lr);
    }
    let (v1, v2) = (vs1.variables(), vs2.variables());
    for (n, t) in &v1 {
        let e = max_abs(t, &v2[n]);
        assert!(e < 1e-6, "{n}: max abs difference {e} after 8 steps");
    }
}

#[test]
fn killed_training_resumes_to_the_same_run_and_keeps_snapshots() {
    let cfg = TrainConfig {
        half: true,
        snapshots: vec![0, 8],
        ..toy_config()
    };
    let s = toy_sentences();
    let dir = tempfile::tempdir().unwrap();
    let fit = |resume: Option<&Path>, stop| {
        lm::train::fit(
            &s,
            &cfg,
            lm::train::Init::Scratch { vocab: None },
            Device::Cpu,
            false,
            resume,
            stop,
        )
        .unwrap()
    };
    let whole = fit(None, None);
    let partial = dir.path().join("m.partial");
    // "killed" after 10 steps: the state of step 8 is on disk
    let first = fit(Some(&partial), Some(10));
    assert_eq!(first.log.last().unwrap().step, 10);
    assert!(partial.join("state.json").is_file());
    assert!(partial.join("state-8.safetensors").is_file());
    let resumed = fit(Some(&partial), None);
    // Debug text compares the step-0 row's NaN too, and every float bit for bit
    assert_eq!(
        format!("{:?}", resumed.log),
        format!("{:?}", whole.log),
        "the resumed run differs"
    );
    assert_eq!(resumed.tokens, whole.tokens);
    assert_eq!(
        resumed.snapshots.iter().map(|s| s.step).collect::<Vec<_>>(),
        [0, 8]
    );
    let meta = lm::ModelMeta::new(&cfg, false);
    let (a, b) = (dir.path().join("whole"), dir.path().join("m"));
    lm::train::save(&a, &whole, &meta, &|_, _, _| Vec::new()).unwrap();
    lm::train::save(&b, &resumed, &meta, &|_, _, _| Vec::new()).unwrap();
    assert!(
        !partial.exists(),
        "the partial state outlived the saved model"
    );
    for f in [
        "model.safetensors",
        "step0/model.safetensors",
        "step8/model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs after resuming"
        );
    }
    // float16 storage, read back as float32; the snapshots are complete models
    let st = Tensor::read_safetensors(b.join("model.safetensors")).unwrap();
    assert!(st.iter().all(|(_, t)| t.kind() == Kind::Half));
    for d in [b.clone(), b.join("step0"), b.join("step8")] {
        load(&d, Device::Cpu, Kind::Float).unwrap();
    }
    // the initialisation rebuilt from the saved model's config, tokenizer and seed
    let again = dir.path().join("untrained");
    lm::train::untrained_like(&b, &again, &|_, _, _| Vec::new()).unwrap();
    assert_eq!(
        std::fs::read(again.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("step0/model.safetensors")).unwrap(),
        "untrained_like differs from the run's step-0 snapshot"
    );
    let log8 = lm::train::LogRow::read(&b.join("step8")).unwrap();
    assert_eq!(log8.last().unwrap().step, 8);
    assert_eq!(log8[0].step, 0);
    assert!(
        log8[0].val_loss.is_some(),
        "the initialisation's validation loss"
    );
}

#[test]
fn logit_prior_and_gene_shuffle_change_the_training_objective() {
    let s = toy_sentences();
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, cfg: TrainConfig| {
        let out = dir.path().join(name);
        let r = lm::train(&s, &cfg, None, &out, Device::Cpu, false).unwrap();
        (r, std::fs::read(out.join("model.safetensors")).unwrap())
    };
    let at_init = TrainConfig {
        snapshots: vec![0],
        ..toy_config()
    };
    // at initialisation the logits are near zero: without the prior the loss is that of a uniform
    // guess over the (padded) vocabulary, with it that of the training genes' frequencies
    let (plain, w_plain) = run("plain", at_init.clone());
    let (prior, w_prior) = run(
        "prior",
        TrainConfig {
            logit_prior: true,
            ..at_init.clone()
        },
    );
    let v0 = |r: &lm::TrainReport| r.log[0].val_loss.unwrap();
    assert!((v0(&plain) - 64f64.ln()).abs() < 0.05, "{}", v0(&plain));
    assert!(
        v0(&prior) < v0(&plain) - 0.03,
        "{} vs {}",
        v0(&prior),
        v0(&plain)
    );
    assert_ne!(w_plain, w_prior);
    // shuffled gene order: seeded, and a different run from the rank-ordered one
    let shuf = TrainConfig {
        shuffle_genes: true,
        ..at_init
    };
    let (_, w_a) = run("shuf_a", shuf.clone());
    let (_, w_b) = run("shuf_b", shuf);
    assert_eq!(w_a, w_b, "same seed, different weights");
    assert_ne!(w_a, w_plain);
}

/// `train-lm` killed (SIGKILL) right after it saved its state resumes, on the next run, to the
/// same model and snapshots as an uninterrupted run (the loop it shares with the cell-type
/// fine-tune).
#[test]
fn a_killed_train_lm_resumes_to_the_same_model() {
    let d = tempfile::tempdir().unwrap();
    let fx = root().join("tests/fixtures/synthetic.h5ad");
    let cfg = r#"{"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64, "steps": 12, "batch_size": 8, "max_genes": 40, "eval_every": 4, "snapshots": [4]}"#;
    let run = |out: &str, kill_at: Option<&str>| {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("cellsentence"));
        c.current_dir(d.path()).args([
            "--quiet",
            "train-lm",
            "--input",
            fx.to_str().unwrap(),
            "--config",
            cfg,
            "--out",
            out,
        ]);
        common::run_or_kill_at(&mut c, kill_at);
    };
    run("whole", None);
    run("m", Some("train-state-saved"));
    assert!(d.path().join("m.partial/state.json").is_file());
    assert!(!d.path().join("m").exists());
    run("m", None);
    assert!(!d.path().join("m.partial").exists());
    for f in [
        "model.safetensors",
        "step4/model.safetensors",
        "tokenizer.json",
    ] {
        assert_eq!(
            std::fs::read(d.path().join("whole").join(f)).unwrap(),
            std::fs::read(d.path().join("m").join(f)).unwrap(),
            "{f} differs after resuming"
        );
    }
}
