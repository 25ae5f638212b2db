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
pub mod bench_scale;
pub mod cache;
pub mod classify;
pub mod cli;
pub mod csr;
pub mod data;
pub mod deviation;
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
