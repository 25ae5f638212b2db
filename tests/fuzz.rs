//! Property-style robustness: the CLI on randomly corrupted copies of a bundled file (bit flips,
//! truncation, shuffled or out-of-range CSR arrays) either succeeds with valid output (exit 0) or
//! fails with a message (exit 2) — never a panic, a signal, or a hang (each case bounded in time).
//! Each file goes through the in-memory and the streamed (chunked) pipeline, Parquet output, and
//! `metrics` (labels read from it); corrupted embedding shards go through `merge`.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hdf5_metno as hdf5;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The per-case bound: far above a healthy run on these 30-cell files (well under a second).
const LIMIT: Duration = Duration::from_secs(30);

fn source() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad/ok_small.h5ad")
}

/// Runs the CLI on `file`; returns (exit code, stdout, stderr) or panics on a signal or a hang.
fn run(args: &[&str], file: &Path, case: &str) -> (i32, String, String) {
    let file = file.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--input", file.as_str()]);
    run_cli(&all, case)
}

/// Runs the CLI with `args`; returns (exit code, stdout, stderr) or panics on a signal or a hang.
fn run_cli(args: &[&str], case: &str) -> (i32, String, String) {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("cellsentence"))
        .arg("--quiet")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{case}: {args:?} hung (> {LIMIT:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.signal().is_none(),
        "{case}: {args:?} died by signal {:?}: {err}",
        status.signal()
    );
    (status.code().unwrap_or(-1), out, err)
}

/// The commands each corrupted file goes through: in memory, streamed in chunks, to Parquet, and
/// `metrics` reading its labels (an embedding of the file's 30 cells beside it), each with where its
/// output lands (stdout, or a file under `work`).
fn commands(work: &Path) -> Vec<(Vec<String>, Option<PathBuf>)> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let w = |name: &str| work.join(name).display().to_string();
    let parquet = work.join("fuzz.parquet");
    let metrics = work.join("metrics.json");
    vec![
        (s(&["info"]), None),
        (s(&["sentences", "--genes", "hvg", "--n-top", "50"]), None),
        (s(&["sentences", "--chunk-cells", "7"]), None),
        (
            s(&["sentences", "--out", &parquet.display().to_string()]),
            Some(parquet),
        ),
        (
            s(&[
                "metrics",
                "--embeddings",
                &w("emb.npy"),
                "--label-key",
                "cell_type",
                "--n-neighbors",
                "5",
                "--out",
                &metrics.display().to_string(),
            ]),
            Some(metrics),
        ),
    ]
}

/// Every command on one corrupted file: exit 0 with output, or exit 2 with an error message.
fn check(file: &Path, case: &str, work: &Path, outcomes: &mut [usize; 2]) {
    for (args, out_file) in commands(work) {
        if let Some(f) = &out_file {
            let _ = std::fs::remove_file(f);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run(&args, file, case);
        assert!(
            !err.contains("panicked"),
            "{case}: {args:?} panicked: {err}"
        );
        match code {
            0 => {
                match &out_file {
                    Some(f) => assert!(
                        f.metadata().is_ok_and(|m| m.len() > 0),
                        "{case}: {args:?} exit 0 without writing {}",
                        f.display()
                    ),
                    None => assert!(
                        !out.trim().is_empty(),
                        "{case}: {args:?} exit 0 without output"
                    ),
                }
                outcomes[0] += 1;
            }
            2 => {
                assert!(
                    err.contains("error:"),
                    "{case}: {args:?} exit 2 without a message: {err}"
                );
                outcomes[1] += 1;
            }
            c => panic!("{case}: {args:?} exit {c}: {err}"),
        }
    }
}

/// Rewrites one CSR array of the copy at `path` with `f`.
fn edit_i64(path: &Path, name: &str, f: impl FnOnce(&mut Vec<i64>)) {
    let h = hdf5::File::open_rw(path).unwrap();
    let ds = h.dataset(name).unwrap();
    let mut v: Vec<i64> = ds.read_raw().unwrap();
    f(&mut v);
    let dtype = ds.dtype().unwrap();
    drop(ds);
    h.unlink(name).unwrap();
    if dtype.size() == 4 {
        let w: Vec<i32> = v.iter().map(|&x| x as i32).collect();
        h.new_dataset_builder().with_data(&w).create(name).unwrap();
    } else {
        h.new_dataset_builder().with_data(&v).create(name).unwrap();
    }
}

#[test]
fn corrupted_inputs_never_panic_hang_or_die() {
    let src = std::fs::read(source()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // an embedding of the source's 30 cells, for `metrics` (it reads labels from the corrupted file)
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let emb = cellsentence::npy::Matrix {
        rows: 30,
        cols: 8,
        data: (0..240).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
    };
    cellsentence::npy::write(&work.path().join("emb.npy"), &emb).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(20261130);
    let mut outcomes = [0usize; 2];
    let mut cases = 0;
    // bit flips anywhere in the file
    for i in 0..24 {
        let mut b = src.clone();
        flip_bits(&mut b, &mut rng);
        let f = dir.path().join(format!("flip{i}.h5ad"));
        std::fs::write(&f, &b).unwrap();
        check(&f, &format!("bit flips #{i}"), work.path(), &mut outcomes);
        cases += 1;
    }
    // truncation at random lengths
    for i in 0..8 {
        let n = rng.random_range(0..src.len());
        let f = dir.path().join(format!("trunc{i}.h5ad"));
        std::fs::write(&f, &src[..n]).unwrap();
        check(
            &f,
            &format!("truncated to {n} bytes"),
            work.path(),
            &mut outcomes,
        );
        cases += 1;
    }
    // CSR arrays shuffled or out of range (a well-formed HDF5 file with a broken matrix)
    type Edit = Box<dyn Fn(&mut Vec<i64>, &mut ChaCha8Rng)>;
    let edits: Vec<(&str, &str, Edit)> = vec![
        (
            "X/indices",
            "shuffled indices",
            Box::new(|v, r| shuffle(v, r)),
        ),
        (
            "X/indptr",
            "shuffled indptr",
            Box::new(|v, r| shuffle(v, r)),
        ),
        (
            "X/indices",
            "index past the last gene",
            Box::new(|v, _| v[3] = 1_000_000),
        ),
        ("X/indices", "negative index", Box::new(|v, _| v[0] = -1)),
        (
            "X/indptr",
            "indptr ends past the data",
            Box::new(|v, _| *v.last_mut().unwrap() += 7),
        ),
        (
            "X/indptr",
            "indptr decreasing",
            Box::new(|v, _| v[2] = v[1].saturating_sub(1).max(0) - 1),
        ),
        (
            "X/indptr",
            "indptr one short",
            Box::new(|v, _| {
                v.pop();
            }),
        ),
        (
            "X/indices",
            "duplicate column in a row",
            Box::new(|v, _| v[1] = v[0]),
        ),
    ];
    for (name, what, edit) in &edits {
        let f = dir
            .path()
            .join(format!("csr_{}.h5ad", what.replace(' ', "_")));
        std::fs::write(&f, &src).unwrap();
        edit_i64(&f, name, |v| edit(v, &mut rng));
        check(&f, what, work.path(), &mut outcomes);
        cases += 1;
    }
    eprintln!(
        "{cases} corrupted files × {} commands: {} clean exits, {} clear errors, 0 panics/signals/hangs",
        commands(work.path()).len(),
        outcomes[0],
        outcomes[1]
    );
}

/// Flips 1 to 8 random bits anywhere in `b`.
fn flip_bits(b: &mut [u8], r: &mut ChaCha8Rng) {
    for _ in 0..r.random_range(1..=8) {
        let k = r.random_range(0..b.len());
        b[k] ^= 1 << r.random_range(0..8);
    }
}

fn shuffle(v: &mut [i64], r: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = r.random_range(0..=i);
        v.swap(i, j);
    }
}

/// `merge` on a good shard beside a corrupted one (bit flips, truncation): exit 0 with the merged
/// file, or exit 2 with a message.
#[test]
fn corrupted_shards_never_panic_hang_or_die() {
    let dir = tempfile::tempdir().unwrap();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/pretrained");
    let cache = dir.path().join("cache");
    let input = source();
    let shard = |cells: &str, name: &str| {
        let out = dir.path().join(name);
        let args = [
            "embed",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--allow-unknown-genes",
            "--cells",
            cells,
            "--cache",
            cache.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        let (code, _, err) = run_cli(&args, "making a shard");
        assert_eq!(code, 0, "{err}");
        out
    };
    let (s1, s2) = (shard("0:15", "s1.h5ad"), shard("15:30", "s2.h5ad"));
    let good = std::fs::read(&s2).unwrap();
    let merged = dir.path().join("merged.h5ad");
    let mut rng = ChaCha8Rng::seed_from_u64(20261205);
    let mut outcomes = [0usize; 2];
    for i in 0..16 {
        let mut b = good.clone();
        if i < 12 {
            flip_bits(&mut b, &mut rng);
        } else {
            b.truncate(rng.random_range(0..good.len()));
        }
        let bad = dir.path().join(format!("bad{i}.h5ad"));
        std::fs::write(&bad, &b).unwrap();
        let _ = std::fs::remove_file(&merged);
        let args = [
            "merge",
            s1.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--out",
            merged.to_str().unwrap(),
        ];
        let case = format!("corrupted shard #{i}");
        let (code, _, err) = run_cli(&args, &case);
        assert!(!err.contains("panicked"), "{case}: panicked: {err}");
        match code {
            0 => {
                assert!(
                    merged.is_file(),
                    "{case}: exit 0 without {}",
                    merged.display()
                );
                outcomes[0] += 1;
            }
            2 => {
                assert!(
                    err.contains("error:"),
                    "{case}: exit 2 without a message: {err}"
                );
                assert!(
                    !merged.exists(),
                    "{case}: a failed merge left {}",
                    merged.display()
                );
                outcomes[1] += 1;
            }
            c => panic!("{case}: exit {c}: {err}"),
        }
    }
    eprintln!(
        "16 corrupted shards through merge: {} clean exits, {} clear errors, 0 panics/signals/hangs",
        outcomes[0], outcomes[1]
    );
}
