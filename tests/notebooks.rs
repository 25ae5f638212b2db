//! Runs the code of every notebook (`notebooks/*.ipynb`), cell by cell in order, against the
//! library: build.rs turns each notebook into one `#[test]` function. A cell that stops compiling
//! or returns an error fails here. scripts/test-notebooks.sh runs them in the evcxr kernel itself.
#![allow(unused, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/notebooks.rs"));
