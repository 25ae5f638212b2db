//! Reconstruction metrics against scikit-learn / scipy and Cell2Sentence's own benchmark, on the
//! same cells (tests/fixtures/make_reconstruction_fixture.py).
use std::path::PathBuf;

use cellsentence::data::{self, ReadOptions};
use cellsentence::hvg::HvgParams;
use cellsentence::pipeline::{self, HvgInput};
use cellsentence::preprocess::PreprocessParams;
use cellsentence::reconstruct::{self, RecModel};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn metrics_equal_sklearn_scipy_and_cell2sentence() {
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/reference/reconstruction.json"))
            .unwrap(),
    )
    .unwrap();
    let mut ran = 0;
    for (id, file) in [
        ("synthetic", "tests/fixtures/synthetic.h5ad"),
        ("baron_human", "data/baron_human.h5ad"),
    ] {
        let path = root().join(file);
        if !path.exists() || r.get(id).is_none() {
            eprintln!(
                "SKIP {id}: {} not found (run scripts/fetch-data.sh)",
                path.display()
            );
            continue;
        }
        let ds = data::read(&path, &ReadOptions::default()).unwrap();
        let p = pipeline::prepare(
            ds,
            Some(&PreprocessParams::default()),
            pipeline::Counts::Drop,
        )
        .unwrap();
        let h = pipeline::select_hvg(&p, &HvgParams::default(), HvgInput::Log, None).unwrap();
        let sample: Vec<usize> = r[id]["sample"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let rows: Vec<usize> = (0..p.data.n_cells()).collect();
        for (mode, x) in [
            ("all", p.data.x.clone()),
            ("hvg", p.data.x.select(&rows, Some(&h.indices()))),
        ] {
            for (model, key) in [(RecModel::C2s, "c2s"), (RecModel::PerGene, "per-gene")] {
                let got = reconstruct::reconstruct(&x, &sample, model, 42).unwrap();
                let want = &r[id][mode][key];
                assert_eq!(
                    got.n_entries as u64,
                    want["n_entries"].as_u64().unwrap(),
                    "{id} {mode} {key}"
                );
                for (m, v) in [
                    ("r2", got.r2),
                    ("pearson", got.pearson),
                    ("spearman", got.spearman),
                ] {
                    let w = want[m].as_f64().unwrap();
                    assert!(
                        (v - w).abs() < 1e-6,
                        "{id} {mode} {key} {m}: {v} vs scikit-learn/scipy {w}"
                    );
                }
                if model == RecModel::C2s {
                    // Cell2Sentence ranks with its own shuffle stream: equal up to tie order
                    let c = &r[id][mode]["cell2sentence"];
                    for (m, v) in [
                        ("r2", got.r2),
                        ("pearson", got.pearson),
                        ("spearman", got.spearman),
                    ] {
                        let w = c[m].as_f64().unwrap();
                        assert!(
                            (v - w).abs() < 0.02,
                            "{id} {mode} {m}: {v} vs Cell2Sentence {w}"
                        );
                    }
                    eprintln!("{id} {mode}: r2 {:.4} pearson {:.4} spearman {:.4} (Cell2Sentence {:.4} {:.4} {:.4})", got.r2, got.pearson, got.spearman, c["r2"], c["pearson"], c["spearman"]);
                }
            }
        }
        ran += 1;
    }
    assert!(ran >= 1);
}
