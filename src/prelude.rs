//! One import for notebooks and scripts, as `import scanpy as sc` is for scanpy:
//! `use cellsentence::prelude::*;` brings the stage modules and the parameter types a walkthrough
//! names.
pub use crate::classify::mlp::MlpConfig;
pub use crate::classify::scmap::ScmapConfig;
pub use crate::classify::svm::SvmConfig;
pub use crate::classify::{self, metrics, splits, Classifier};
pub use crate::hvg::{Flavor, HvgParams};
pub use crate::lm::{self, EmbedOptions, PromptStyle, TrainConfig};
pub use crate::pipeline::{
    self, each_sentence, Backend, Counts, HvgInput, HvgSource, Pipeline, SentenceRecipe,
};
pub use crate::preprocess::{self, PreprocessParams};
pub use crate::reconstruct::{self, RecModel};
pub use crate::report::{f4, Table};
pub use crate::reproduce::{self, ReproduceOptions};
pub use crate::sentence::{GeneSet, SentenceParams, Sentences};
pub use crate::{data, figure, notebook, paper, pl, row};
