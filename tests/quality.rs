//! The embedding-quality panel against its references (tests/fixtures/make_quality_fixture.py):
//! scanpy's neighbour graph, leidenalg's partition quality, scikit-learn's NMI / ARI / silhouette /
//! k-NN classifier and scIB's asw_batch / graph_connectivity, on PCA(50) of Baron's HVG expression.
use std::path::Path;

use cellsentence::npy;
use cellsentence::quality::{self, neighbors, scores, QualityParams};
use serde_json::Value;

fn fixture() -> (npy::Matrix, Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let x = npy::read(&dir.join("annotation/features.npy")).unwrap();
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference/quality.json")).unwrap())
            .unwrap();
    (x, r)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: ours {a}, reference {b}");
}

#[test]
fn panel_matches_scanpy_leidenalg_sklearn_and_scib() {
    let (x, r) = fixture();
    let labels = strings(&r["labels"]);
    let batches = strings(&r["batches"]);
    let q = quality::evaluate(&x, &labels, Some(&batches), &QualityParams::default()).unwrap();
    let p = &q.panel;
    // exact definitions (the distances are computed in f64 from the same f32 values)
    close(
        p.silhouette_label,
        r["silhouette_label"].as_f64().unwrap(),
        1e-9,
        "silhouette",
    );
    close(
        p.asw_label,
        r["asw_label"].as_f64().unwrap(),
        1e-9,
        "asw_label",
    );
    close(
        p.asw_batch.unwrap(),
        r["asw_batch"].as_f64().unwrap(),
        1e-9,
        "asw_batch",
    );
    close(
        p.knn_accuracy.unwrap(),
        r["knn_accuracy"].as_f64().unwrap(),
        0.0,
        "knn_accuracy",
    );
    close(
        p.graph_connectivity.unwrap(),
        r["graph_connectivity"].as_f64().unwrap(),
        1e-12,
        "graph_connectivity",
    );
    // Leiden: partition quality within 1 % of leidenalg's at the same resolution
    let best_res = p.resolution;
    let reference = r["leiden"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| (s["resolution"].as_f64().unwrap() - best_res).abs() < 1e-9)
        .unwrap();
    let q_ref = reference["modularity"].as_f64().unwrap();
    assert!(
        p.modularity >= q_ref - 0.01 * q_ref.abs(),
        "modularity {} vs leidenalg {q_ref} at resolution {best_res}",
        p.modularity
    );
    // the best NMI over the sweep is in leidenalg's range
    let ref_best = r["best"]["nmi"].as_f64().unwrap();
    assert!(
        (p.nmi - ref_best).abs() < 0.05,
        "best NMI {} vs scanpy/leidenalg {ref_best}",
        p.nmi
    );
    assert_eq!(q.clusters.len(), x.rows);
    eprintln!("ours: {p:?}\nleidenalg at {best_res}: {reference}");
    close(
        p.avg_bio,
        (p.nmi + p.ari + p.asw_label) / 3.0,
        1e-15,
        "avg_bio",
    );
}

#[test]
fn leiden_modularity_within_one_percent_of_leidenalg_at_every_resolution() {
    let (x, r) = fixture();
    let params = QualityParams::default();
    let labels = strings(&r["labels"]);
    let q = quality::evaluate(&x, &labels, None, &params).unwrap();
    assert!(q.panel.asw_batch.is_none() && q.panel.knn_accuracy.is_none());
    let g = graph(&x);
    for s in r["leiden"].as_array().unwrap() {
        let res = s["resolution"].as_f64().unwrap();
        let (_, ours) = quality::leiden_clusters(&g, res, 0).unwrap();
        let theirs = s["modularity"].as_f64().unwrap();
        assert!(
            ours >= theirs - 0.01 * theirs.abs(),
            "resolution {res}: modularity {ours} vs leidenalg {theirs}"
        );
    }
}

fn graph(x: &npy::Matrix) -> neighbors::Graph {
    let mut knn = neighbors::Knn {
        k: 15,
        indices: Vec::new(),
        distances: Vec::new(),
    };
    for i in 0..x.rows {
        let cand: Vec<(f64, u32)> = (0..x.rows)
            .map(|j| {
                let d: f64 = x
                    .row(i)
                    .iter()
                    .zip(x.row(j))
                    .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                    .sum();
                (if i == j { 0.0 } else { d.sqrt() }, j as u32)
            })
            .collect();
        let mut cand = cand;
        cand.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        knn.indices.extend(cand[..15].iter().map(|c| c.1));
        knn.distances.extend(cand[..15].iter().map(|c| c.0));
    }
    neighbors::connectivities(&knn)
}

#[test]
fn connectivities_match_scanpy() {
    let (x, r) = fixture();
    let g = graph(&x);
    let c = &r["connectivities"];
    let nnz: Vec<u64> = c["row_nnz"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let sums: Vec<f64> = c["row_sums"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for i in 0..x.rows {
        let (cols, ws) = g.row(i);
        assert_eq!(cols.len() as u64, nnz[i], "row {i}: neighbour count");
        close(
            ws.iter().sum(),
            sums[i],
            1e-4,
            &format!("row {i} weight sum"),
        );
    }
    for (i, row) in c["first_rows"].as_array().unwrap().iter().enumerate() {
        let (cols, ws) = g.row(i);
        let rc: Vec<u32> = row["cols"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(cols, rc.as_slice(), "row {i}: neighbours");
        for (w, rv) in ws.iter().zip(row["vals"].as_array().unwrap()) {
            close(*w, rv.as_f64().unwrap(), 1e-5, &format!("row {i} weight"));
        }
    }
}

#[test]
fn nmi_and_ari_equal_sklearn_on_the_reference_clusters() {
    let (_, r) = fixture();
    let (y, _) = quality::encode(&strings(&r["labels"]));
    let c: Vec<usize> = r["best"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    close(
        scores::nmi(&y, &c),
        r["best"]["nmi"].as_f64().unwrap(),
        1e-12,
        "nmi",
    );
    close(
        scores::ari(&y, &c),
        r["best"]["ari"].as_f64().unwrap(),
        1e-12,
        "ari",
    );
}

#[test]
fn bad_inputs_are_named() {
    let (x, r) = fixture();
    let labels = strings(&r["labels"]);
    let p = QualityParams::default();
    let err = |x: &npy::Matrix, l: &[String], b: Option<&[String]>| {
        quality::evaluate(x, l, b, &p).unwrap_err().to_string()
    };
    assert!(err(&x, &labels[1..], None).contains("2142 rows but 2141 labelled cells"));
    let mut nan = x.clone();
    nan.data[5 * nan.cols + 3] = f32::NAN;
    assert!(err(&nan, &labels, None).contains("row 5, column 3"));
    let one = vec!["beta".to_string(); x.rows];
    assert!(err(&x, &one, None).contains("one label only"));
    assert!(err(&x, &labels, Some(&one)).contains("one batch only"));
}
