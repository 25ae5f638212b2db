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

/// `r` with its parameter named under `key` (a section of an experiment file): `training` (a
/// whole training configuration) becomes `key`, any other name `key.name`.
pub fn under(key: &str, r: Result<()>) -> Result<()> {
    r.map_err(|e| match e {
        Error::Param { name, what } => {
            let name = if name == "training" {
                key.to_string()
            } else {
                format!("{key}.{name}")
            };
            Error::Param { name, what }
        }
        other => other,
    })
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
