//! The HVG passes of a streamed run: per-batch sums of the kept genes added chunk by chunk in
//! row order, then the same selection as the in-memory `hvg::highly_variable_genes`.
use super::{Passes, Prep};
use crate::error::{Error, Result};
use crate::hvg::{self, Flavor, HvgParams, HvgResult};

/// Pass 3 (and for `seurat_v3`, only when a value lies above its gene's clip, 4): the HVG
/// selection of the kept genes `names` from streamed per-batch sums, as
/// `hvg::highly_variable_genes` (`base`: the log base `seurat` undoes).
pub(super) fn select_hvg(
    passes: &Passes<'_>,
    prep: &Prep<'_>,
    h: &HvgParams,
    names: &[String],
    base: Option<f64>,
    batches: Option<&[String]>,
) -> Result<HvgResult> {
    let n = prep.report.kept_cells.len();
    if n < 2 {
        return Err(Error::param(
            "cells",
            format!("HVG needs at least 2 cells, got {n}"),
        ));
    }
    let (cats, of) = match batches {
        Some(b) => hvg::batch_index(b),
        None => (Vec::new(), vec![0; n]),
    };
    let groups = Groups {
        of,
        n: cats.len().max(1),
    };
    match h.flavor {
        Flavor::SeuratV3 => seurat_v3(passes, prep, h, names.len(), &groups, &cats),
        Flavor::Seurat | Flavor::CellRanger => {
            let mut sums = vec![hvg::DispSums::new(names.len()); groups.n];
            passes.run_prepped("HVG: dispersions (streamed)", prep, None, |x, range| {
                for (g, rows) in groups.rows(range).into_iter().enumerate() {
                    sums[g].add(x, rows.into_iter(), h.flavor, base);
                }
                Ok(())
            })?;
            hvg::dispersion_select(&sums, names, h, batches.is_some())
        }
        f => Err(Error::param(
            "chunk_cells",
            format!("flavor {f} models counts; streaming selects HVG on log data"),
        )),
    }
}

/// Each kept cell's batch (an index into the sorted batch names; all 0 without batches).
struct Groups {
    of: Vec<usize>,
    n: usize,
}

impl Groups {
    /// The rows of a chunk holding the kept cells `range`, by batch, in row order.
    fn rows(&self, range: std::ops::Range<usize>) -> Vec<Vec<usize>> {
        let mut rows = vec![Vec::new(); self.n];
        for (r, &g) in self.of[range].iter().enumerate() {
            rows[g].push(r);
        }
        rows
    }

    fn sizes(&self) -> Vec<usize> {
        let mut n = vec![0; self.n];
        self.of.iter().for_each(|&g| n[g] += 1);
        n
    }
}

/// `seurat_v3` from streamed sums, per batch: pass 3 adds each batch's sums and, as they are
/// when nothing is clipped, its clipped sums and each gene's largest value; pass 4 adds the
/// clipped sums again only when a value lies above its gene's clip.
fn seurat_v3(
    passes: &Passes<'_>,
    prep: &Prep<'_>,
    h: &HvgParams,
    ng: usize,
    groups: &Groups,
    cats: &[&String],
) -> Result<HvgResult> {
    let sizes = groups.sizes();
    if !cats.is_empty() {
        hvg::seurat_v3_check_batches(cats, &sizes)?;
    }
    let zeros = || vec![vec![0f64; ng]; groups.n];
    let (mut s, mut sq, mut cs, mut csq) = (zeros(), zeros(), zeros(), zeros());
    let mut max = vec![vec![f32::NEG_INFINITY; ng]; groups.n];
    // every cell's sums give the means reported (the one batch's without a batch key)
    let (mut s_all, mut sq_all) = (vec![0f64; ng], vec![0f64; ng]);
    let unclipped = vec![f64::INFINITY; ng];
    passes.run_prepped("HVG: gene sums (streamed)", prep, None, |x, range| {
        if groups.n > 1 {
            hvg::add_sums(x, 0..x.n_rows, &mut s_all, &mut sq_all, None);
        }
        for (g, rows) in groups.rows(range).iter().enumerate() {
            let rows = || rows.iter().copied();
            hvg::add_sums(x, rows(), &mut s[g], &mut sq[g], None);
            hvg::add_sums(x, rows(), &mut cs[g], &mut csq[g], Some(&unclipped));
            for r in rows() {
                let (c, v) = x.row(r);
                for (&j, &v) in c.iter().zip(v) {
                    max[g][j as usize] = max[g][j as usize].max(v);
                }
            }
        }
        Ok(())
    })?;
    let mut trends = Vec::with_capacity(groups.n);
    for g in 0..groups.n {
        let (mean, var) = hvg::finish_mean_var(&s[g], &sq[g], sizes[g]);
        let (reg_std, clip) = hvg::seurat_v3_trend(&mean, &var, sizes[g], h.span)?;
        trends.push((mean, reg_std, clip));
    }
    let clipped = |g: usize| (0..ng).any(|j| max[g][j] as f64 > trends[g].2[j]);
    if (0..groups.n).any(clipped) {
        (cs, csq) = (zeros(), zeros());
        passes.run_prepped("HVG: clipped sums (streamed)", prep, None, |x, range| {
            for (g, rows) in groups.rows(range).iter().enumerate() {
                let clip = Some(&trends[g].2[..]);
                hvg::add_sums(x, rows.iter().copied(), &mut cs[g], &mut csq[g], clip);
            }
            Ok(())
        })?;
    }
    let norm_vars: Vec<Vec<f64>> = (0..groups.n)
        .map(|g| {
            let (mean, reg_std, _) = &trends[g];
            hvg::seurat_v3_norm_var(mean, reg_std, &cs[g], &csq[g], sizes[g])
        })
        .collect();
    let means_all = if groups.n > 1 {
        hvg::finish_mean_var(&s_all, &sq_all, prep.report.kept_cells.len()).0
    } else {
        trends.swap_remove(0).0
    };
    Ok(hvg::seurat_v3_select(&norm_vars, h.n_top_genes, means_all))
}
