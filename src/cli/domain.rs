//! Option parsers that hold values to their domain at the command line (clap names the option).
use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};

/// One of a library enum's names (its `FromStr`, aliases included); `--help` lists the
/// canonical names. The library's enums know their names; clap only asks them.
pub fn choice<T>() -> Choice<T> {
    Choice(std::marker::PhantomData)
}

/// The parser [`choice`] returns.
pub struct Choice<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Clone for Choice<T> {
    fn clone(&self) -> Self {
        Choice(std::marker::PhantomData)
    }
}

impl<T> TypedValueParser for Choice<T>
where
    T: std::str::FromStr + strum::VariantNames + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let s = value.to_string_lossy();
        s.parse::<T>().map_err(|_| {
            let mut err = clap::Error::new(ErrorKind::InvalidValue).with_cmd(cmd);
            if let Some(a) = arg {
                err.insert(ContextKind::InvalidArg, ContextValue::String(a.to_string()));
            }
            err.insert(
                ContextKind::InvalidValue,
                ContextValue::String(s.to_string()),
            );
            let valid = T::VARIANTS.iter().map(|v| v.to_string()).collect();
            err.insert(ContextKind::ValidValue, ContextValue::Strings(valid));
            err
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(T::VARIANTS.iter().map(|v| PossibleValue::new(*v))))
    }
}

/// A whole number ≥ `min`.
pub fn at_least(min: usize, what: &'static str) -> impl TypedValueParser<Value = usize> {
    clap::builder::StringValueParser::new().try_map(move |s| {
        let v: usize = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a whole number"))?;
        if v >= min {
            Ok(v)
        } else {
            Err(format!("{what} must be at least {min}"))
        }
    })
}

/// A count ≥ 1.
pub fn count() -> impl TypedValueParser<Value = usize> {
    at_least(1, "the value")
}

/// A number of folds ≥ 2.
pub fn folds() -> impl TypedValueParser<Value = usize> {
    at_least(2, "the number of folds")
}

/// A fraction in [0, 1).
pub fn fraction() -> impl TypedValueParser<Value = f64> {
    clap::builder::StringValueParser::new().try_map(|s| {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number"))?;
        if (0.0..1.0).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{v} is outside [0, 1)"))
        }
    })
}

/// `START:END` (0-based, END excluded) with START < END.
pub fn range(s: &str) -> std::result::Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not START:END (e.g. 0:5000)"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{v}` is not a whole number"))
    };
    let (a, b) = (n(a)?, n(b)?);
    if a >= b {
        return Err(format!("START {a} must be below END {b}"));
    }
    Ok((a, b))
}
