//! cellsentence: a reproducible experiment harness for cell sentences (Cell2Sentence).
//!
//! Stages are plain functions over typed values, wired by the CLI and usable from notebooks:
//! [`data`] → [`preprocess`] → [`hvg`] → [`sentence`] → [`reconstruct`]; [`experiment`] runs
//! experiment files through the [`cache`] and writes [`report`] tables and [`figure`]s; [`lm`] and
//! [`classify`] hold the language model and the annotation heads; [`reproduce`] runs everything and
//! writes `results/REPORT.md`. Reference behaviour is scanpy's
//! (preprocessing, HVG) and Cell2Sentence's (sentences); see the tests for the parity checks.
pub mod attribution;
pub mod bench;
pub mod cache;
pub mod classify;
pub mod cli;
pub mod csr;
pub mod data;
pub mod deviation;
pub mod embedding;
pub mod error;
pub mod experiment;
pub mod figure;
pub mod hvg;
pub mod lm;
pub mod loess;
pub mod notebook;
pub mod npy;
pub mod output;
pub mod paper;
pub mod pipeline;
pub mod pl;
pub mod prelude;
pub mod preprocess;
pub mod progress;
pub mod quality;
pub mod reconstruct;
pub mod report;
pub mod reproduce;
pub mod sentence;
pub mod stats;
pub mod stream;
pub mod validate;

pub use error::{Error, Result};

/// Environment variables that pin libtorch's CPU kernels (ATen, MKL, oneDNN) to AVX2 code paths.
/// AVX-512 and AVX2 kernels round differently; LM training and the MLP amplify that into
/// macro-F1s 0.02–0.04 apart, so without the pins the committed numbers depend on which x86-64
/// CPU ran them. MKL's strict mode also keeps a cell's result independent of its batch (sharded
/// embeddings stack into the one-run matrix byte for byte) and of the thread count.
/// `.cargo/config.toml` sets the same values for `cargo test`.
pub const CPU_KERNEL_PINS: [(&str, &str); 3] = [
    ("ATEN_CPU_CAPABILITY", "avx2"),
    ("MKL_CBWR", "AVX2,STRICT"),
    ("ONEDNN_MAX_CPU_ISA", "AVX2"),
];

/// Sets each of [`CPU_KERNEL_PINS`] the user has not set (a value already in the environment is
/// kept, e.g. `ATEN_CPU_CAPABILITY=default`). Call first thing in `main`, before any libtorch
/// operation and before other threads start; x86-64 only.
pub fn pin_cpu_kernels() {
    if cfg!(target_arch = "x86_64") {
        for (key, value) in CPU_KERNEL_PINS {
            if std::env::var_os(key).is_none() {
                std::env::set_var(key, value);
            }
        }
    }
}

/// The value of each of [`CPU_KERNEL_PINS`] in this process's environment (`None`: unset).
pub fn cpu_kernels() -> Vec<(&'static str, Option<String>)> {
    CPU_KERNEL_PINS
        .iter()
        .map(|(key, _)| (*key, std::env::var(key).ok()))
        .collect()
}

static TORCH_SEED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` right after seeding libtorch's process-wide generator, with no other seeded section
/// in between: concurrent callers (threads, parallel tests) wait instead of drawing from each
/// other's stream.
pub fn torch_seeded<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    let _guard = TORCH_SEED.lock().unwrap_or_else(|p| p.into_inner());
    tch::manual_seed(seed as i64);
    f()
}

/// Runs `f`, which draws from libtorch's global generator without needing a seed (e.g. the
/// throw-away initialisation of a model about to be loaded), outside every seeded section.
pub fn torch_unseeded<T>(f: impl FnOnce() -> T) -> T {
    let _guard = TORCH_SEED.lock().unwrap_or_else(|p| p.into_inner());
    f()
}

/// A file of the project (a reference script, say) by its path from the project root: under the
/// current directory when it is there (a checkout run from its root, on a machine other than the
/// one that built the binary), else under the checkout the binary was built from.
pub fn project_file(rel: &str) -> std::path::PathBuf {
    let here = std::path::Path::new(rel);
    if here.is_file() {
        return here.to_path_buf();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[cfg(test)]
mod tests {
    /// The pins the binary sets and the ones `cargo test` gets from `.cargo/config.toml` agree,
    /// and this test process has them.
    #[test]
    fn cpu_kernel_pins_match_the_cargo_config() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.cargo/config.toml");
        let config = std::fs::read_to_string(path).unwrap();
        for (key, value) in super::CPU_KERNEL_PINS {
            let line = format!("{key} = \"{value}\"");
            assert!(
                config.lines().any(|l| l.trim() == line),
                "{path} lacks `{line}`"
            );
            assert!(
                std::env::var_os(key).is_some(),
                "{key} is not set for this test"
            );
        }
    }
}
