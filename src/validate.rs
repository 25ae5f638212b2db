//! One check of every parameter set against its domain, run by the stage that takes it (so the
//! CLI, experiment files and notebooks all get the same error): counts positive, fractions in
//! range, finite numbers. Errors name the parameter, the value, the allowed range and the usual
//! value.
use crate::error::{Error, Result};

/// A parameter set that knows its domain.
pub trait Validate {
    /// Errors naming the first parameter outside its domain.
    fn validate(&self) -> Result<()>;
}

/// `v` ≥ 1.
pub fn positive(name: &str, v: usize, usual: &str) -> Result<()> {
    if v == 0 {
        return Err(Error::param(
            name,
            format!("0 is not allowed, it must be positive (at least 1); use {usual}"),
        ));
    }
    Ok(())
}

/// A finite `v` > 0.
pub fn positive_real(name: &str, v: f64, usual: &str) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::param(
            name,
            format!("{v} is not allowed, it must be a finite number above 0; use {usual}"),
        ));
    }
    Ok(())
}

/// `lo` ≤ `v` < `hi` (or ≤ `hi` when `hi_inclusive`).
pub fn within(name: &str, v: f64, lo: f64, hi: f64, hi_inclusive: bool, usual: &str) -> Result<()> {
    let ok = v >= lo && (v < hi || (hi_inclusive && v == hi));
    if !ok {
        let close = if hi_inclusive { ']' } else { ')' };
        return Err(Error::param(
            name,
            format!("{v} is outside [{lo}, {hi}{close}; use {usual}"),
        ));
    }
    Ok(())
}

impl Validate for crate::preprocess::QcParams {
    fn validate(&self) -> Result<()> {
        if let Some(m) = self.max_genes {
            if m <= self.min_genes {
                return Err(Error::param(
                    "max_genes",
                    format!(
                        "{m} keeps no cell with min_genes {} (cells need min_genes ≤ genes < max_genes); use 6000, or null for no limit",
                        self.min_genes
                    ),
                ));
            }
        }
        if let Some(p) = self.max_pct_mt {
            within(
                "max_pct_mt",
                p,
                0.0,
                100.0,
                true,
                "50, or null for no limit",
            )?;
            if p == 0.0 {
                return Err(Error::param(
                    "max_pct_mt",
                    "0 keeps no cell (the test is pct_mt < max_pct_mt); use 50, or null for no limit",
                ));
            }
        }
        Ok(())
    }
}

impl Validate for crate::preprocess::PreprocessParams {
    fn validate(&self) -> Result<()> {
        self.qc.validate()?;
        if let Some(t) = self.target_sum {
            positive_real(
                "target_sum",
                f64::from(t),
                "null = median of the totals (scanpy's default), or 1e4",
            )?;
        }
        if let Some(b) = self.log_base {
            if !(b.is_finite() && b > 0.0 && b != 1.0) {
                return Err(Error::param(
                    "log_base",
                    format!("{b} is not a logarithm base (positive, not 1); use 10, or null for natural log"),
                ));
            }
        }
        Ok(())
    }
}

impl Validate for crate::hvg::HvgParams {
    fn validate(&self) -> Result<()> {
        positive("n_top_genes", self.n_top_genes, "2000")?;
        positive("n_bins", self.n_bins, "20")?;
        within("span", self.span, f64::MIN_POSITIVE, 1.0, true, "0.3")
    }
}

impl Validate for crate::sentence::SentenceParams {
    fn validate(&self) -> Result<()> {
        if let Some(m) = self.max_genes {
            positive("max_genes", m, "200, or no limit")?;
        }
        Ok(())
    }
}

impl Validate for crate::classify::MlpConfig {
    fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() || self.hidden.iter().any(|&h| h < 1) {
            return Err(Error::param(
                "mlp.hidden",
                "needs at least one positive layer width; use [512, 256] (the paper's)",
            ));
        }
        within("mlp.dropout", self.dropout, 0.0, 1.0, false, "0.1")?;
        positive_real("mlp.lr", self.lr, "0.001")?;
        positive("mlp.batch_size", self.batch_size, "128")?;
        positive("mlp.max_epochs", self.max_epochs, "150")
    }
}

impl Validate for crate::classify::SvmConfig {
    fn validate(&self) -> Result<()> {
        positive_real("svm.c", self.c, "1.0")?;
        positive_real("svm.tol", self.tol, "1e-4")?;
        positive("svm.max_iter", self.max_iter, "1000")
    }
}

impl Validate for crate::classify::ScmapConfig {
    fn validate(&self) -> Result<()> {
        positive("scmap.n_features", self.n_features, "500")?;
        within("scmap.threshold", self.threshold, -1.0, 1.0, true, "0.7")
    }
}

impl Validate for crate::experiment::annotation::AnnotationSection {
    fn validate(&self) -> Result<()> {
        if self.folds < 2 {
            return Err(Error::param(
                "folds",
                format!(
                    "{} is not allowed, cross-validation needs at least 2 folds; use 5",
                    self.folds
                ),
            ));
        }
        within("val_fraction", self.val_fraction, 0.0, 1.0, false, "0.1")?;
        positive("max_genes", self.max_genes, "200 (the C2S prompt budget)")?;
        positive("pca_components", self.pca_components, "50")?;
        use crate::experiment::annotation::Method;
        let answers = self
            .methods
            .iter()
            .any(|m| matches!(m, Method::LmAnswer | Method::LmAnswerMlp));
        if !self.answer.is_default() && !answers {
            return Err(Error::param(
                "annotation.answer",
                "is set but no method uses it; add lm_answer or lm_answer_mlp to methods, or remove the section",
            ));
        }
        if answers && self.answer.starts.is_empty() {
            return Err(Error::param(
                "annotation.answer.starts",
                "is empty; give random, pretrained or both",
            ));
        }
        self.mlp.validate()?;
        self.svm.validate()?;
        self.scmap.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::PreprocessParams;

    #[test]
    fn out_of_domain_values_name_parameter_and_range() {
        let p = PreprocessParams {
            target_sum: Some(0.0),
            ..Default::default()
        };
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("target_sum") && e.contains("above 0"), "{e}");
        let h = crate::hvg::HvgParams {
            span: 1.5,
            ..Default::default()
        };
        let e = h.validate().unwrap_err().to_string();
        assert!(e.contains("span") && e.contains("outside"), "{e}");
        let q = crate::preprocess::QcParams {
            max_pct_mt: Some(-1.0),
            ..Default::default()
        };
        assert!(q.validate().is_err());
        assert!(PreprocessParams::default().validate().is_ok());
    }
}
