//! Bad input gives a clear error naming the file and the field, a non-zero exit code, no panic.
use std::path::PathBuf;

use assert_cmd::Command;

fn bad(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bad")
        .join(name)
        .display()
        .to_string()
}

/// Runs the CLI and returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("cellsentence")
        .unwrap()
        .args(args)
        .arg("--quiet")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn expect_error(args: &[&str], must_contain: &[&str]) {
    let (code, _, err) = run(args);
    assert_ne!(code, 0, "{args:?} succeeded; stderr: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for m in must_contain {
        assert!(err.contains(m), "{args:?}: stderr lacks {m:?}:\n{err}");
    }
    assert!(
        err.contains("fix")
            || err.contains("check")
            || err.contains("run ")
            || err.contains("rename")
            || err.contains("use "),
        "{args:?}: no hint how to fix:\n{err}"
    );
}

#[test]
fn missing_file() {
    expect_error(
        &["info", "--input", "/nonexistent/x.h5ad"],
        &["/nonexistent/x.h5ad", "not found"],
    );
}

#[test]
fn unknown_dataset_id() {
    expect_error(
        &["info", "--input", "no_such_dataset_id"],
        &["no_such_dataset_id", "CELLSENTENCE_DATA"],
    );
}

#[test]
fn not_hdf5() {
    expect_error(
        &["info", "--input", &bad("not_hdf5.h5ad")],
        &["not_hdf5.h5ad", "not an HDF5 file"],
    );
}

#[test]
fn truncated_file() {
    expect_error(
        &["info", "--input", &bad("truncated.h5ad")],
        &["truncated.h5ad", "truncated"],
    );
}

#[test]
fn h5ad_without_x() {
    expect_error(
        &["info", "--input", &bad("no_x.h5ad")],
        &["no_x.h5ad", "`X`"],
    );
}

#[test]
fn missing_layer_names_available_ones() {
    expect_error(
        &[
            "info",
            "--input",
            &bad("ok_small.h5ad"),
            "--layer",
            "counts",
        ],
        &["ok_small.h5ad", "layers/counts"],
    );
}

#[test]
fn missing_raw() {
    expect_error(
        &["info", "--input", &bad("ok_small.h5ad"), "--raw"],
        &["ok_small.h5ad", "`raw`"],
    );
}

#[test]
fn missing_obs_column() {
    expect_error(
        &[
            "hvg",
            "--input",
            &bad("ok_small.h5ad"),
            "--no-preprocess",
            "--flavor",
            "seurat",
            "--batch-key",
            "donor",
        ],
        &["ok_small.h5ad", "obs/donor", "cell_type"],
    );
}

#[test]
fn non_finite_values() {
    expect_error(
        &["info", "--input", &bad("nan.h5ad")],
        &["nan.h5ad", "`X`", "non-finite"],
    );
}

#[test]
fn negative_counts() {
    expect_error(
        &["sentences", "--input", &bad("negative.h5ad")],
        &["negative.h5ad", "`X`", "negative count"],
    );
}

#[test]
fn counts_input_without_counts() {
    expect_error(
        &[
            "hvg",
            "--input",
            &bad("ok_small.h5ad"),
            "--on",
            "counts",
            "--no-preprocess",
        ],
        &["hvg_on", "counts"],
    );
}

/// deviance and pearson_residuals read counts by default (as scanpy's do); on data declared
/// log-normalized the message gives a way out, never the other `--on` back (issue 32 family 6).
#[test]
fn count_flavors_read_counts_without_a_fix_loop() {
    for flavor in ["deviance", "pearson_residuals"] {
        let (code, out, err) = run(&[
            "hvg",
            "--input",
            &bad("ok_small.h5ad"),
            "--flavor",
            flavor,
            "--n-top",
            "10",
        ]);
        assert_eq!(code, 0, "{flavor}: {err}");
        assert!(out.lines().count() >= 10, "{flavor}: {out}");
        let (code, _, err) = run(&[
            "hvg",
            "--input",
            &bad("ok_small.h5ad"),
            "--flavor",
            flavor,
            "--no-preprocess",
        ]);
        assert_eq!(code, 2, "{flavor}: {err}");
        assert!(
            err.contains("without --no-preprocess")
                && err.contains("seurat")
                && !err.contains("--on log"),
            "{flavor}: {err}"
        );
    }
}

#[test]
fn qc_removes_every_cell() {
    expect_error(
        &["sentences", "--input", &bad("qc_empty.h5ad")],
        &["qc_empty.h5ad", "0 cells left after QC", "min_genes"],
    );
}

#[test]
fn duplicate_gene_names_are_made_unique_with_a_warning() {
    let (code, out, err) = run(&["info", "--input", &bad("duplicate_genes.h5ad")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("DUPGENE") && err.contains("made unique") && err.contains("-1"),
        "{err}"
    );
    assert!(out.contains("40 cells"), "{out}");
}

#[test]
fn gene_names_colliding_after_uppercasing() {
    expect_error(
        &[
            "sentences",
            "--input",
            &bad("case_collision.h5ad"),
            "--no-preprocess",
        ],
        &["Foxp3", "FOXP3", "rename"],
    );
}

#[test]
fn tenx_directory_reads_and_dedups() {
    let (code, out, err) = run(&["info", "--input", &bad("tenx_ok")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 cells × 3 genes"), "{out}");
    assert!(err.contains("GENEA"), "{err}");
}

#[test]
fn tenx_without_barcodes() {
    expect_error(
        &["info", "--input", &bad("tenx_no_barcodes")],
        &["tenx_no_barcodes", "barcodes.tsv"],
    );
}

#[test]
fn tenx_bad_header() {
    expect_error(
        &["info", "--input", &bad("tenx_bad_header")],
        &["matrix.mtx", "MatrixMarket"],
    );
}

#[test]
fn zero_n_top() {
    expect_error(
        &[
            "hvg",
            "--input",
            &bad("ok_small.h5ad"),
            "--no-preprocess",
            "--n-top",
            "0",
        ],
        &["n_top_genes"],
    );
}

#[test]
fn a_directory_that_is_not_10x() {
    expect_error(&["info", "--input", &bad("")], &["matrix.mtx"]);
}

/// scanpy's spelling `cell_ranger` is accepted beside `cell-ranger`.
#[test]
fn hvg_accepts_scanpys_cell_ranger_spelling() {
    let fx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic.h5ad");
    let fx = fx.display().to_string();
    let (a, out_a, err_a) = run(&[
        "hvg",
        "--input",
        &fx,
        "--flavor",
        "cell_ranger",
        "--n-top",
        "50",
    ]);
    let (b, out_b, _) = run(&[
        "hvg",
        "--input",
        &fx,
        "--flavor",
        "cell-ranger",
        "--n-top",
        "50",
    ]);
    assert_eq!((a, b), (0, 0), "{err_a}");
    assert_eq!(out_a, out_b);
}

/// A gene name with a tab or newline would split sentences into extra words or lines: refused,
/// naming the gene and its position. A feature matrix without columns is an error, not a panic.
#[test]
fn control_characters_in_gene_names_and_empty_features_are_errors() {
    use cellsentence::csr::Csr;
    use cellsentence::sentence::{cell_sentences, SentenceParams};
    let genes: Vec<String> = ["ACTB", "CD3\tE", "MS4A1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let x = Csr::from_dense(1, 3, &[1.0, 2.0, 3.0]);
    let err = cell_sentences(&x, &genes, &SentenceParams::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gene 2 of 3") && err.contains("control character"),
        "{err}"
    );
    let m = cellsentence::npy::Matrix {
        rows: 3,
        cols: 0,
        data: vec![],
    };
    let labels: Vec<String> = ["a", "b", "a"].iter().map(|s| s.to_string()).collect();
    let err = cellsentence::classify::check_features(&m, &labels, "embeddings")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no columns"), "{err}");
}

/// numpy.save writes a transposed or PCA-produced array in Fortran order: read, equal to C order.
#[test]
fn fortran_ordered_npy_is_read() {
    let c = cellsentence::npy::read(std::path::Path::new(&bad("c_order.npy"))).unwrap();
    let f = cellsentence::npy::read(std::path::Path::new(&bad("fortran_order.npy"))).unwrap();
    assert_eq!((f.rows, f.cols), (5, 3));
    assert_eq!(c, f);
    assert_eq!(&f.data[..4], &[-2.0, -1.5, -1.0, -0.5]);
}

/// Missing (NaN) labels are not a class: an error naming how many and the fix; with
/// `--drop-missing` those cells are left out with a warning.
#[test]
fn missing_labels_are_refused_or_dropped_with_a_warning() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("ann");
    let (emb, input, o) = (
        bad("missing_labels.npy"),
        bad("missing_labels.h5ad"),
        o.display().to_string(),
    );
    let args = [
        "annotate",
        "--embeddings",
        &emb,
        "--input",
        &input,
        "--label-key",
        "cell_type",
        "--classifier",
        "svm",
        "--folds",
        "2",
        "--out",
        &o,
    ];
    expect_error(
        &args,
        &[
            "missing_labels.h5ad",
            "obs/cell_type",
            "3 of 40 cells",
            "`c4`",
            "--drop-missing",
        ],
    );
    assert!(
        !std::path::Path::new(&o).exists(),
        "output written on error"
    );
    let mut with = args.to_vec();
    with.push("--drop-missing");
    let (code, _, err) = run(&with);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("3 of 40 cells") && err.contains("warning"),
        "{err}"
    );
    let pred = std::fs::read_to_string(std::path::Path::new(&o).join("predictions.csv")).unwrap();
    assert_eq!(pred.lines().count(), 1 + 37, "{pred}");
    assert!(!pred.contains(",NA,") && !pred.contains("c4,"), "{pred}");
}

/// Output paths are checked before any work, by one function for every command: never an input,
/// never an existing folder that is not an earlier output, a parent that cannot be made is named.
#[test]
fn output_paths_never_destroy_inputs_or_foreign_folders() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.h5ad");
    std::fs::copy(bad("ok_small.h5ad"), &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    let inp = input.display().to_string();
    expect_error(
        &["embed", "--model", "m", "--input", &inp, "--out", &inp],
        &["in.h5ad", "--out", "is the input"],
    );
    assert_eq!(std::fs::read(&input).unwrap(), before, "input changed");
    // a new file beside a model's files destroys nothing; one of its own files is refused
    let model = d.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let md = model.display().to_string();
    let beside = model.join("E.npy").display().to_string();
    let (code, _, err) = run(&["embed", "--model", &md, "--input", &inp, "--out", &beside]);
    assert_ne!(code, 0);
    assert!(
        !err.contains("--out"),
        "a new file in the model folder was refused: {err}"
    );
    let own = model.join("config.json").display().to_string();
    expect_error(
        &["embed", "--model", &md, "--input", &inp, "--out", &own],
        &["--out", "own files"],
    );
    assert_eq!(
        std::fs::read_to_string(model.join("config.json")).unwrap(),
        "{}"
    );
    let notes = d.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("thesis.txt"), "precious").unwrap();
    let n = notes.display().to_string();
    expect_error(
        &[
            "annotate",
            "--embeddings",
            &bad("missing_labels.npy"),
            "--input",
            &bad("missing_labels.h5ad"),
            "--label-key",
            "batch",
            "--classifier",
            "svm",
            "--folds",
            "2",
            "--out",
            &n,
        ],
        &["notes", "not an earlier output", "summary.json"],
    );
    expect_error(
        &["embed", "--model", "m", "--input", &inp, "--out", &n],
        &["existing folder", "file name"],
    );
    assert_eq!(
        std::fs::read(notes.join("thesis.txt")).unwrap(),
        b"precious"
    );
    // a parent that is a file: the real cause, not "file not found"
    let under_file = format!("{inp}/x.npy");
    expect_error(
        &[
            "embed",
            "--model",
            "m",
            "--input",
            &inp,
            "--out",
            &under_file,
        ],
        &["cannot be created", "writable location"],
    );
}

/// Numeric options outside their domain are refused at the boundary with the option named; the
/// stages hold their parameter sets to the same domains (experiment files and notebooks too).
#[test]
fn numeric_options_outside_their_domain() {
    let ok = bad("ok_small.h5ad");
    for (args, must) in [
        (
            vec![
                "annotate",
                "--embeddings",
                "e.npy",
                "--input",
                &ok,
                "--label-key",
                "k",
                "--out",
                "o",
                "--folds",
                "1",
            ],
            "--folds",
        ),
        (
            vec![
                "annotate",
                "--embeddings",
                "e.npy",
                "--input",
                &ok,
                "--label-key",
                "k",
                "--out",
                "o",
                "--val-fraction",
                "1.5",
            ],
            "--val-fraction",
        ),
        (
            vec!["sentences", "--input", &ok, "--max-genes", "0"],
            "--max-genes",
        ),
        (
            vec![
                "annotate",
                "--embeddings",
                "e.npy",
                "--input",
                &ok,
                "--label-key",
                "k",
                "--out",
                "o",
                "--val-fraction",
                "nan",
            ],
            "--val-fraction",
        ),
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(must) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    use cellsentence::validate::Validate;
    let p = cellsentence::preprocess::PreprocessParams {
        target_sum: Some(0.0),
        ..Default::default()
    };
    let e = p.validate().unwrap_err().to_string();
    assert!(e.contains("target_sum") && !e.contains("LOESS"), "{e}");
}

/// Degenerate inputs get the real cause: two cells (fewer than min_cells) empty every gene, not
/// "the MT filter"; a one-cell batch is named instead of a LOESS condition number; a cell name
/// with a newline would shift the cell list `embed` writes.
#[test]
fn degenerate_inputs_name_the_real_cause() {
    expect_error(
        &["sentences", "--input", &bad("two_cells.h5ad")],
        &[
            "two_cells.h5ad",
            "0 genes left",
            "min_cells = 3",
            "of the 2 cells",
        ],
    );
    let (_, _, err) = run(&["sentences", "--input", &bad("two_cells.h5ad")]);
    assert!(!err.contains("MT-") && !err.contains("Some("), "{err}");
    expect_error(
        &[
            "hvg",
            "--input",
            &bad("one_cell_batch.h5ad"),
            "--batch-key",
            "batch",
        ],
        &[
            "batch `b2`",
            "1 cell",
            "at least 2 cells",
            "use another batch key",
        ],
    );
    let d = tempfile::tempdir().unwrap();
    let model =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm/neox_seq25");
    let out = d.path().join("e.npy");
    expect_error(
        &[
            "embed",
            "--model",
            model.to_str().unwrap(),
            "--input",
            &bad("cell_name_newline.h5ad"),
            "--out",
            out.to_str().unwrap(),
        ],
        &[
            "cell_name_newline.h5ad",
            "\"c5\\nx\"",
            "cell 6 of 60",
            "control character",
        ],
    );
    assert!(!out.exists());
}

/// `sentences --out S.parquet` holds cell, sentence, n_genes, the same sentences as stdout; an
/// output that is not `.parquet` is refused before any work.
#[test]
fn sentences_to_parquet() {
    use polars::prelude::{ParquetReader, SerReader};
    let fx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic.h5ad");
    let fx = fx.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.parquet");
    let (code, text, err) = run(&["sentences", "--input", fx, "--genes", "all"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&[
        "sentences",
        "--input",
        fx,
        "--genes",
        "all",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let df = ParquetReader::new(std::fs::File::open(&out).unwrap())
        .finish()
        .unwrap();
    let names: Vec<&str> = df.get_column_names().iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["cell", "sentence", "n_genes"]);
    let s = df.column("sentence").unwrap().str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(s.len(), lines.len());
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(s.get(i), Some(*l));
    }
    let n = df.column("n_genes").unwrap().i64().unwrap();
    assert_eq!(n.get(0), Some(lines[0].split(' ').count() as i64));
    expect_error(
        &[
            "sentences",
            "--input",
            fx,
            "--out",
            dir.path().join("s.txt").to_str().unwrap(),
        ],
        &["s.txt", ".parquet"],
    );
}

#[test]
fn metrics_panel_and_its_bad_inputs() {
    use cellsentence::npy::{self, Matrix};
    let fx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic.h5ad");
    let fx = fx.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // a 3-d embedding of the 420 cells that separates the cell types (labels read back from obs)
    let ds = cellsentence::data::read(fx, &Default::default()).unwrap();
    let labels = ds.obs_labels("cell_type", "").unwrap();
    let (y, _) = cellsentence::quality::encode(&labels);
    let data: Vec<f32> = y
        .iter()
        .enumerate()
        .flat_map(|(i, &c)| [c as f32 * 3.0, (i % 7) as f32 * 0.1, (i % 5) as f32 * 0.1])
        .collect();
    let good = dir.path().join("e.npy");
    npy::write(
        &good,
        &Matrix {
            rows: y.len(),
            cols: 3,
            data: data.clone(),
        },
    )
    .unwrap();
    let out = dir.path().join("m.json");
    let base = |e: &std::path::Path, o: &std::path::Path| {
        vec![
            "metrics".to_string(),
            "--embeddings".into(),
            e.display().to_string(),
            "--input".into(),
            fx.into(),
            "--label-key".into(),
            "cell_type".into(),
            "--out".into(),
            o.display().to_string(),
        ]
    };
    let mut args = base(&good, &out);
    args.extend(["--batch-key".into(), "batch".into()]);
    let (code, _, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let p = &m["panel"];
    for k in [
        "nmi",
        "ari",
        "silhouette_label",
        "asw_label",
        "avg_bio",
        "asw_batch",
        "graph_connectivity",
        "knn_accuracy",
    ] {
        assert!(p[k].as_f64().is_some(), "panel lacks {k}: {p}");
    }
    assert_eq!(
        p["nmi"].as_f64(),
        Some(1.0),
        "separated types cluster perfectly: {p}"
    );
    let clusters = std::fs::read_to_string(dir.path().join("m.clusters.csv")).unwrap();
    assert_eq!(clusters.lines().count(), 421);
    assert!(clusters.starts_with("cell,cluster\n"));
    // bad inputs: rows ≠ cells, NaN, a missing key, one label only, one batch only
    let short = dir.path().join("short.npy");
    npy::write(
        &short,
        &Matrix {
            rows: 10,
            cols: 3,
            data: data[..30].to_vec(),
        },
    )
    .unwrap();
    let mut nan_data = data.clone();
    nan_data[7] = f32::NAN;
    let nan = dir.path().join("nan.npy");
    npy::write(
        &nan,
        &Matrix {
            rows: y.len(),
            cols: 3,
            data: nan_data,
        },
    )
    .unwrap();
    let o = dir.path().join("bad.json");
    let check = |mut args: Vec<String>, must: &[&str]| {
        let a: Vec<&str> = args.iter_mut().map(|s| s.as_str()).collect();
        expect_error(&a, must);
    };
    check(base(&short, &o), &["short.npy", "10 rows but", "420 cells"]);
    // rows that disagree with their own cell list blame the list, not the dataset
    let listed = dir.path().join("listed.npy");
    std::fs::copy(&short, &listed).unwrap();
    let names: Vec<&str> = clusters
        .lines()
        .skip(1)
        .take(12)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    std::fs::write(dir.path().join("listed.cells.txt"), names.join("\n") + "\n").unwrap();
    check(
        base(&listed, &o),
        &["listed.cells.txt lists 12 cells", "one `embed` run"],
    );
    check(
        base(&nan, &o),
        &["nan.npy", "non-finite value NaN at row 2, column 1"],
    );
    let mut a = base(&good, &o);
    a[6] = "nope".into();
    check(a, &["obs/nope", "cell_type"]);
    // one label / one batch only: tests/quality.rs (bad_inputs_are_named)
    assert!(!o.exists(), "a failed run wrote {o:?}");
}

#[test]
fn deviation_sentences_reorder_the_same_genes() {
    let fx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic.h5ad");
    let fx = fx.to_str().unwrap();
    let (code, expr, err) = run(&["sentences", "--input", fx]);
    assert_eq!(code, 0, "{err}");
    let (code, dev, err) = run(&["sentences", "--input", fx, "--order", "deviation"]);
    assert_eq!(code, 0, "{err}");
    let (e, d): (Vec<&str>, Vec<&str>) = (expr.lines().collect(), dev.lines().collect());
    assert_eq!(e.len(), d.len());
    let mut reordered = 0;
    for (a, b) in e.iter().zip(&d) {
        let mut wa: Vec<&str> = a.split(' ').collect();
        let mut wb: Vec<&str> = b.split(' ').collect();
        reordered += usize::from(wa != wb);
        wa.sort_unstable();
        wb.sort_unstable();
        assert_eq!(
            wa, wb,
            "a deviation sentence holds the cell's expressed genes"
        );
    }
    assert!(
        reordered * 2 > e.len(),
        "only {reordered} of {} sentences reordered",
        e.len()
    );
    let (code, out, err) = run(&[
        "reconstruct",
        "--input",
        fx,
        "--order",
        "deviation",
        "--cells",
        "all",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(r["r2"].as_f64().unwrap() > 0.0, "{r}");
    let (code, _, err) = run(&["sentences", "--input", fx, "--order", "rank"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("possible values: expression, deviation"),
        "{err}"
    );
}

/// A command refused for its input writes nothing: not even the folder its `--out` names (the
/// folder is made when the output is written).
#[test]
fn a_refused_command_leaves_no_output_folder() {
    let bad = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bad/zero_cells.h5ad"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new/deeper/emb.npy");
    let (code, _, err) = run(&[
        "embed",
        "--model",
        concat!(env!("CARGO_MANIFEST_DIR"), "/models/pretrained"),
        "--input",
        bad,
        "--no-preprocess",
        "--out",
        out.to_str().unwrap(),
        "--cache",
        dir.path().join("cache").to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("X has no cells"), "{err}");
    assert!(!dir.path().join("new").exists(), "{err}");
}

/// A typo in `pretrain-lm --exclude` would leave the dataset it meant in the corpus, and an
/// unknown `--datasets` id answered "no dataset left": both are refused, naming the id and the
/// known ones, before any work.
#[test]
fn pretrain_refuses_unknown_dataset_ids() {
    for option in ["--exclude", "--datasets"] {
        expect_error(
            &[
                "pretrain-lm",
                option,
                "baron_humann",
                "--out",
                "/tmp/never-written-cs",
            ],
            &[option, "`baron_humann`", "known:", "baron_human"],
        );
    }
    assert!(!std::path::Path::new("/tmp/never-written-cs").exists());
}

/// `--hvg-list` without `--genes hvg` would be ignored (the sentences hold all genes): refused,
/// naming the option and the fix, for `sentences` and the commands that build sentences.
#[test]
fn hvg_list_without_hvg_sentences_is_refused() {
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthetic.h5ad");
    let list = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/README.md");
    expect_error(
        &["sentences", "--input", fx, "--hvg-list", list],
        &["--hvg-list", "--genes hvg"],
    );
    expect_error(
        &[
            "train-lm",
            "--input",
            fx,
            "--hvg-list",
            list,
            "--out",
            "/tmp/never-written-cs2",
        ],
        &["--hvg-list", "--genes hvg"],
    );
    assert!(!std::path::Path::new("/tmp/never-written-cs2").exists());
}

/// `--n-top` at or above the kept gene count selects every gene: warned about by name (exit 0,
/// every gene printed).
#[test]
fn n_top_above_the_gene_count_is_warned_about() {
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthetic.h5ad");
    let (code, out, err) = run(&["hvg", "--input", fx, "--n-top", "100000"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: n_top_genes 100000") && err.contains("lower n_top_genes (--n-top"),
        "{err}"
    );
    assert_eq!(out.lines().count(), 6342);
}

/// `metrics --n-neighbors` above the cell count is adjusted to it as scanpy does, warned about by
/// name, and the JSON records the value used (it recorded the one asked for).
#[test]
fn metrics_n_neighbors_above_the_cells_is_adjusted_and_warned_about() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("m.json");
    let (code, _, err) = run(&[
        "metrics",
        "--embeddings",
        &bad("missing_labels.npy"),
        "--input",
        &bad("missing_labels.h5ad"),
        "--label-key",
        "cell_type",
        "--drop-missing",
        "--n-neighbors",
        "500",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("--n-neighbors 500") && err.contains("adjusted to 37"),
        "{err}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["params"]["n_neighbors"], 37);
}

/// A constant embedding (every row identical, e.g. embeddings of empty prompts) scored NMI 0.32
/// from Leiden on a graph of ties: refused, naming it.
#[test]
fn metrics_refuses_a_constant_embedding() {
    let d = tempfile::tempdir().unwrap();
    let npy = d.path().join("const.npy");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = "{'descr': '<f4', 'fortran_order': False, 'shape': (40, 6), }".to_string();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for _ in 0..240 {
        bytes.extend(1f32.to_le_bytes());
    }
    std::fs::write(&npy, bytes).unwrap();
    expect_error(
        &[
            "metrics",
            "--embeddings",
            npy.to_str().unwrap(),
            "--input",
            &bad("missing_labels.h5ad"),
            "--label-key",
            "cell_type",
            "--drop-missing",
            "--out",
            d.path().join("m.json").to_str().unwrap(),
        ],
        &["identical", "constant embedding"],
    );
    assert!(!d.path().join("m.json").exists());
}

/// A gene-level model that knows none of the input's genes would embed `<unk>` tokens: `embed`
/// says the share and refuses above half unless `--allow-unknown-genes` (then it warns).
#[test]
fn embed_refuses_a_vocabulary_that_misses_most_genes() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny_lm");
    let model_s = model.to_str().unwrap();
    let (code, _, err) = run(&[
        "train-lm",
        "-i",
        "pbmc68k_reduced",
        "--no-preprocess",
        "--config",
        r#"{"layers":1,"hidden":16,"heads":2,"intermediate":32,"steps":2,"batch_size":4,"max_genes":20}"#,
        "--out",
        model_s,
    ]);
    assert_eq!(code, 0, "{err}");
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthetic.h5ad");
    let out = dir.path().join("e.npy");
    let cache = dir.path().join("cache");
    let args = [
        "embed",
        "--model",
        model_s,
        "-i",
        fx,
        "--out",
        out.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ];
    expect_error(
        &args,
        &["--model", "(100.0 %)", "<unk>", "--allow-unknown-genes"],
    );
    assert!(!out.exists());
    // streamed in chunks: the same check on the first chunk
    let mut streamed = args.to_vec();
    streamed.extend(["--chunk-cells", "50"]);
    expect_error(&streamed, &["(100.0 %)", "--allow-unknown-genes"]);
    assert!(!out.exists());
    let mut allowed = args.to_vec();
    allowed.push("--allow-unknown-genes");
    let (code, _, err) = run(&allowed);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: 7960 of the sentences' 7960 gene tokens"),
        "{err}"
    );
}

/// A `run` that fails before writing anything (an unknown dataset) leaves no empty results folder
/// behind, and never removes a folder that was there before.
#[test]
fn failed_run_leaves_no_results_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let exp = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/annotation_intra.yaml"
    );
    let args = [
        "run",
        exp,
        "--datasets",
        "ghost",
        "--out",
        out.to_str().unwrap(),
    ];
    expect_error(&args, &["ghost", "datasets"]);
    assert!(!out.exists(), "an empty {} was left", out.display());
    std::fs::create_dir(&out).unwrap();
    expect_error(&args, &["ghost"]);
    assert!(out.is_dir(), "a folder that was there before is kept");
}

/// An experiment file declares a dataset log-normalized with `log_normalized` (the `run`
/// counterpart of `--no-preprocess`, which the error on log data names); an id that is not one of
/// the run's datasets is refused by name (issue 32 family 6).
#[test]
fn experiment_files_declare_log_normalized_data() {
    let dir = tempfile::tempdir().unwrap();
    let f = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/log1p_natural.h5ad"
    );
    let run_with = |extra: &str| {
        let y = dir.path().join("e.yaml");
        std::fs::write(
            &y,
            format!("name: t\ntask: reconstruction\ndatasets: [{f}]\nmodes: [all]\n{extra}"),
        )
        .unwrap();
        let out = dir.path().join("out");
        let cache = dir.path().join("cache");
        run(&[
            "run",
            y.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ])
    };
    let (code, _, err) = run_with("");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("log_normalized: [ID]") && !err.contains("pass --no-preprocess"),
        "{err}"
    );
    let (code, _, err) = run_with("log_normalized: [ghost]\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ghost") && err.contains("log1p_natural"),
        "{err}"
    );
    let (code, _, err) = run_with("log_normalized: [log1p_natural]\n");
    assert_eq!(code, 0, "{err}");
}

/// `--no-preprocess` declares X log-normalized: a negative value (a scaled matrix) is refused,
/// naming the cell, the gene and where the log-normalized matrix usually is.
#[test]
fn negative_values_in_declared_log_data_are_refused() {
    expect_error(
        &["sentences", "-i", &bad("negative.h5ad"), "--no-preprocess"],
        &[
            "negative.h5ad",
            "`X`",
            "negative value -4",
            "gene G7",
            "sc.pp.scale",
            "--raw",
        ],
    );
}

/// A training configuration that cannot fit in memory is refused before any work, naming the keys
/// to lower (was: killed by the OOM killer, or a panic inside tch); a snapshot beyond `steps` is
/// refused (it would never be taken).
#[test]
fn training_configurations_out_of_bounds_are_refused() {
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthetic.h5ad");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let o = out.to_str().unwrap();
    for cfg in [r#"{"batch_size": 100000}"#, r#"{"hidden": 1048576}"#] {
        expect_error(
            &["train-lm", "--input", fx, "--config", cfg, "--out", o],
            &[
                "GiB",
                "available",
                "lower batch_size, hidden or intermediate",
            ],
        );
        assert!(!out.exists());
    }
    expect_error(
        &[
            "train-lm",
            "--input",
            fx,
            "--config",
            r#"{"steps": 10, "snapshots": [5, 50]}"#,
            "--out",
            o,
        ],
        &[
            "snapshots",
            "step 50 is beyond steps 10",
            "lower it or raise steps",
        ],
    );
}

/// `--config` takes an inline JSON object: a file path or another JSON value is answered with
/// what the option takes (was: a JSON parser message).
#[test]
fn config_that_is_no_inline_object_is_explained() {
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthetic.h5ad");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cfg.json");
    std::fs::write(&file, r#"{"steps": 2}"#).unwrap();
    let f = file.to_str().unwrap();
    let out = dir.path().join("m");
    let o = out.to_str().unwrap();
    expect_error(
        &["train-lm", "--input", fx, "--config", f, "--out", o],
        &["--config", "is a file", "$(cat"],
    );
    expect_error(
        &["train-lm", "--input", fx, "--config", "[1,2]", "--out", o],
        &["--config", "not a JSON object", r#"{"steps": 200"#],
    );
    expect_error(
        &[
            "train-lm",
            "--input",
            fx,
            "--config",
            r#"{"stepz": 2}"#,
            "--out",
            o,
        ],
        &["--config", "stepz", "TrainConfig keys"],
    );
    assert!(!out.exists());
}

/// Bare OS errors are answered with what was expected: a folder given as a file (`annotate
/// --embeddings DIR`), a binary file given as a text list (`--hvg-list`); `--shard K/0` says the
/// count must be at least 1.
#[test]
fn os_errors_and_shard_counts_say_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = elsewhere.path().join("out");
    expect_error(
        &[
            "annotate",
            "--embeddings",
            d,
            "--input",
            "baron_human",
            "--label-key",
            "cell_type1",
            "--out",
            out.to_str().unwrap(),
        ],
        &["is a folder where a file is expected", "give a file path"],
    );
    let binary = dir.path().join("list.bin");
    std::fs::write(&binary, [0xffu8, 0xfe, 0x00, 0x80]).unwrap();
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthetic.h5ad");
    expect_error(
        &[
            "sentences",
            "--input",
            fx,
            "--genes",
            "hvg",
            "--hvg-list",
            binary.to_str().unwrap(),
        ],
        &["list.bin", "not UTF-8 text"],
    );
    let (code, _, err) = run(&[
        "embed", "--model", d, "--input", fx, "--out", "x.npy", "--shard", "1/0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("must be at least 1"), "{err}");
    // a file as the stage cache is refused before any work (every dataset used to be skipped)
    let cache_file = dir.path().join("cache.txt");
    std::fs::write(&cache_file, "notes").unwrap();
    let exp = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/reconstruction.yaml"
    );
    let results = elsewhere.path().join("results");
    expect_error(
        &[
            "run",
            exp,
            "--cache",
            cache_file.to_str().unwrap(),
            "--out",
            results.to_str().unwrap(),
        ],
        &["cache.txt", "--cache", "is a file"],
    );
    assert!(!results.exists(), "a refused run wrote {results:?}");
    assert_eq!(std::fs::read_to_string(&cache_file).unwrap(), "notes");
}

/// One check of a training configuration for the CLI and the experiment files (issue 32 family 7):
/// the same out-of-domain settings are refused with the same words by `train-lm --config` and by
/// an experiment file's `annotation.lm` / `annotation.pretrain.answer`, where the file's error
/// names the key and its line, at load time — before any dataset is read or folder written.
#[test]
fn training_settings_share_one_check_for_cli_and_experiment_files() {
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthetic.h5ad");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let want = "hidden must be a multiple of heads";
    expect_error(
        &[
            "train-lm",
            "--input",
            fx,
            "--config",
            r#"{"heads": 3}"#,
            "--out",
            out.to_str().unwrap(),
        ],
        &[want],
    );
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/extra/lm_answer_pretrain.yaml"
    ))
    .unwrap();
    let results = dir.path().join("results");
    let cache = dir.path().join("cache");
    for (from, to, key) in [
        ("  mlp: {", "  lm: {heads: 3}\n  mlp: {", "annotation.lm"),
        (
            "answer: {max_genes: 200,",
            "answer: {heads: 3, max_genes: 200,",
            "annotation.pretrain.answer",
        ),
    ] {
        assert!(text.contains(from));
        let y = dir.path().join("e.yaml");
        std::fs::write(&y, text.replacen(from, to, 1)).unwrap();
        let args = [
            "run",
            y.to_str().unwrap(),
            "--out",
            results.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ];
        expect_error(&args, &[want, key, "e.yaml", "line "]);
        assert!(!results.exists() && !cache.exists(), "{key}: work began");
    }
}

/// A file without cells (issue 32 family 3): refused by name — by QC ("0 cells in"), and with
/// `--no-preprocess`, where nothing filters them, as the input itself — before any model is read
/// or output written, so no embedding of an empty prompt is made or cached.
#[test]
fn an_input_without_cells_is_refused() {
    let f = bad("zero_cells.h5ad");
    expect_error(
        &["sentences", "--input", &f],
        &["zero_cells.h5ad", "0 cells left after QC", "0 cells in"],
    );
    for cmd in ["sentences", "hvg"] {
        expect_error(
            &[cmd, "--input", &f, "--no-preprocess"],
            &["zero_cells.h5ad", "X has no cells", "--no-preprocess"],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e.npy");
    let cache = dir.path().join("cache");
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/pretrained");
    expect_error(
        &[
            "embed",
            "--input",
            &f,
            "--no-preprocess",
            "--model",
            model,
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
        &["zero_cells.h5ad", "X has no cells"],
    );
    assert!(!out.exists() && !cache.exists());
}
