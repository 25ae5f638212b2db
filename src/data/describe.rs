//! A dataset described in words, as `cellsentence info` prints it (and `adata` prints itself in
//! Python): the file, its shape and density, what X holds, and every obs column's values.
use std::collections::BTreeMap;

use super::{Dataset, DatasetEntry, XState};
use crate::error::Result;

/// `ds` (read from `entry`) described: the file, shape, what X holds (log-normalized with its
/// base, raw counts, or neither) and the matrix read, then each obs column with its categories
/// and counts (at most 40; else the number of distinct values).
pub fn describe(entry: &DatasetEntry, ds: &Dataset) -> Result<String> {
    let mut out = String::new();
    out.push_str(&format!("file: {}\n", entry.path.display()));
    out.push_str(&format!(
        "shape: {} cells × {} genes, {} stored entries ({:.2} % dense)\n",
        ds.n_cells(),
        ds.n_genes(),
        ds.x.nnz(),
        100.0 * ds.x.nnz() as f64 / (ds.n_cells().max(1) * ds.n_genes().max(1)) as f64
    ));
    let ints = ds.x.data.iter().all(|v| v.fract() == 0.0 && *v >= 0.0);
    let kind = match ds.state {
        XState::LogNormalized { base } => format!(
            "log-normalized (log1p base {})",
            base.map_or("e".to_string(), |b| b.to_string())
        ),
        _ if ints => "raw counts (non-negative integers)".to_string(),
        _ => "non-integer values without a log1p record".to_string(),
    };
    out.push_str(&format!("X: {kind}; matrix read: {:?}\n", entry.matrix));
    out.push_str(&format!("obs columns ({}):\n", ds.obs.width()));
    for col in ds.obs.columns() {
        let name = col.name().to_string();
        let vals = ds.obs_column(&name)?;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &vals {
            *counts.entry(v.as_str()).or_default() += 1;
        }
        if counts.len() <= 40 {
            let mut c: Vec<(&str, usize)> = counts.into_iter().collect();
            c.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            out.push_str(&format!(
                "  {name} ({}, {} categories): {}\n",
                col.dtype(),
                c.len(),
                c.iter()
                    .map(|(k, n)| format!("{k}={n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        } else {
            out.push_str(&format!(
                "  {name} ({}, {} distinct values)\n",
                col.dtype(),
                counts.len()
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// The synthetic count file is described as counts, with its shape and obs categories.
    #[test]
    fn a_count_file_is_described_as_counts() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthetic.h5ad");
        let entry = crate::data::resolve(path, &[]).unwrap();
        let ds = crate::data::read(&entry.path, &Default::default()).unwrap();
        let text = super::describe(&entry, &ds).unwrap();
        let shape = format!("shape: {} cells × {} genes", ds.n_cells(), ds.n_genes());
        assert!(text.contains(&shape), "{text}");
        assert!(text.contains("X: raw counts"), "{text}");
        assert!(text.contains("categories):"), "{text}");
    }
}
