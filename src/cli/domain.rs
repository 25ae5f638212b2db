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

/// `K/N`: the K-th (1-based) of N equal parts, 1 ≤ K ≤ N.
pub fn shard(s: &str) -> std::result::Result<(usize, usize), String> {
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not K/N (e.g. 2/8: the second of 8 shards)"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{v}` is not a whole number"))
    };
    let (k, n) = (num(k)?, num(n)?);
    if n == 0 {
        return Err(format!(
            "N is {n}: the number of shards must be at least 1 (e.g. 2/8: the second of 8 shards)"
        ));
    }
    if k == 0 || k > n {
        return Err(format!("K must be in 1..={n} (shards are numbered from 1)"));
    }
    Ok((k, n))
}

/// The cells `START..END` of shard `k` of `n` over `total` cells (the parts differ by one cell at
/// most; together they cover every cell once).
pub fn shard_cells((k, n): (usize, usize), total: usize) -> (usize, usize) {
    ((k - 1) * total / n, k * total / n)
}

/// A size in bytes: a number with an optional unit K, M, G or T (powers of 1024), e.g. `2G`.
pub fn bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 2G, 500M, 1048576)"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("`{s}` must be a positive size"));
    }
    Ok((v * mult as f64) as u64)
}
