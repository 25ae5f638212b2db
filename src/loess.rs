//! One-predictor LOESS as Cleveland's netlib `loess` computes it with its defaults
//! (`family="gaussian"`, `surface="interpolate"`, `cell=0.2`), which is what scikit-misc — and so
//! scanpy's `seurat_v3` HVG flavor — uses.
//!
//! The fit is not evaluated at every point: the x range (padded by 0.5 %) is split into a k-d tree
//! whose cells hold at most `floor(n·span·cell)` points, a local weighted polynomial (tricube
//! weights over the `floor(n·span)` nearest points) is fitted at every cell boundary (vertex), and
//! the curve is interpolated between vertices with cubic Hermite polynomials using the local fits'
//! values and slopes.

/// Errors of the LOESS fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoessError {
    /// Fewer points than the local polynomial needs.
    #[error("span too small: {nf} neighbours for a degree-{degree} fit on {n} points")]
    SpanTooSmall { n: usize, nf: usize, degree: usize },
    /// A local design matrix was numerically singular (netlib loess reports "pseudoinverse used").
    #[error("pseudoinverse used at {at}: reciprocal condition number {rcond:.4e} (too many identical x values near this point)")]
    Singular { at: f64, rcond: f64 },
    /// Non-finite input.
    #[error("non-finite x or y value")]
    NonFinite,
}

/// Local-fit cell size as a fraction of the span (netlib's `cell` control parameter).
pub const CELL: f64 = 0.2;

/// Fits `y ~ x` with LOESS (`span`, `degree` 1 or 2) and returns the fitted values at each `x`.
pub fn fit(x: &[f64], y: &[f64], span: f64, degree: usize) -> Result<Vec<f64>, LoessError> {
    let n = x.len();
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return Err(LoessError::NonFinite);
    }
    let nf = n.min((n as f64 * span).floor() as usize);
    let k = degree + 1;
    if nf == 0 || k > nf.saturating_sub(1) {
        return Err(LoessError::SpanTooSmall { n, nf, degree });
    }
    let fc = (n as f64 * (span * CELL)).floor() as usize;
    let tree = KdTree::build(x, fc);
    let mut vval = Vec::with_capacity(tree.vertices.len());
    for &v in &tree.vertices {
        vval.push(local_fit(x, y, v, nf, span, degree)?);
    }
    Ok(x.iter().map(|&z| tree.interpolate(z, &vval)).collect())
}

/// Evaluates the local polynomial fit at `q`: returns (value, slope).
pub fn local_fit(
    x: &[f64],
    y: &[f64],
    q: f64,
    nf: usize,
    span: f64,
    degree: usize,
) -> Result<(f64, f64), LoessError> {
    let mut dist: Vec<(f64, usize)> = x
        .iter()
        .enumerate()
        .map(|(i, &xi)| ((xi - q) * (xi - q), i))
        .collect();
    // the nf nearest points (squared distances); ties at the boundary get weight 0 anyway
    dist.select_nth_unstable_by(nf - 1, |a, b| a.0.total_cmp(&b.0));
    let rho = dist[nf - 1].0 * span.max(1.0);
    if rho <= 0.0 {
        return Err(LoessError::Singular { at: q, rcond: 0.0 });
    }
    let near = &dist[..nf];
    let k = degree + 1;
    // design matrix (weighted) and response, column-major
    let mut b = vec![0f64; nf * k];
    let mut eta = vec![0f64; nf];
    for (r, &(d2, i)) in near.iter().enumerate() {
        let u = (d2 / rho).sqrt();
        let w = (1.0 - u * u * u).powi(3).max(0.0).sqrt();
        let dx = x[i] - q;
        b[r] = w;
        if k > 1 {
            b[nf + r] = w * dx;
        }
        if k > 2 {
            b[2 * nf + r] = w * dx * dx;
        }
        eta[r] = w * y[i];
    }
    let colnorm = equilibrate(&mut b, nf, k);
    // one-sided Jacobi SVD: B V = U Σ
    let v = jacobi_rotate(&mut b, nf, k);
    let sigma: Vec<f64> = (0..k)
        .map(|j| {
            b[j * nf..(j + 1) * nf]
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let smax = sigma.iter().cloned().fold(0.0, f64::max);
    let smin = sigma.iter().cloned().fold(f64::INFINITY, f64::min);
    let tol = smax * (100.0 * f64::EPSILON);
    if smin <= tol {
        return Err(LoessError::Singular {
            at: q,
            rcond: smin / smax,
        });
    }
    // coefficients = V Σ⁻¹ Uᵀ η, where U_j = B_j / σ_j
    let mut coef = vec![0f64; k];
    for j in 0..k {
        let ut_eta: f64 = (0..nf).map(|r| b[j * nf + r] * eta[r]).sum::<f64>() / sigma[j];
        let g = ut_eta / sigma[j];
        for (i, c) in coef.iter_mut().enumerate() {
            *c += v[j * k + i] * g;
        }
    }
    for j in 0..k {
        coef[j] /= colnorm[j];
    }
    Ok((coef[0], if k > 1 { coef[1] } else { 0.0 }))
}

/// Scales each column of the `nf` × `k` column-major `b` to unit norm; returns the norms (1 for
/// a zero column).
fn equilibrate(b: &mut [f64], nf: usize, k: usize) -> Vec<f64> {
    let mut colnorm = vec![1f64; k];
    for j in 0..k {
        let s: f64 = b[j * nf..(j + 1) * nf]
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt();
        if s > 0.0 {
            b[j * nf..(j + 1) * nf].iter_mut().for_each(|v| *v /= s);
            colnorm[j] = s;
        }
    }
    colnorm
}

/// One-sided Jacobi rotations of the `nf` × `k` column-major `b` until its columns are
/// orthogonal (B V = U Σ, at most 60 sweeps); returns V (`k` × `k`, column-major).
fn jacobi_rotate(b: &mut [f64], nf: usize, k: usize) -> Vec<f64> {
    let mut v = vec![0f64; k * k];
    for j in 0..k {
        v[j * k + j] = 1.0;
    }
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..k {
            for qq in p + 1..k {
                let (mut alpha, mut beta, mut gamma) = (0f64, 0f64, 0f64);
                for r in 0..nf {
                    let (a, c) = (b[p * nf + r], b[qq * nf + r]);
                    alpha += a * a;
                    beta += c * c;
                    gamma += a * c;
                }
                if gamma == 0.0 || gamma.abs() <= f64::EPSILON * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for r in 0..nf {
                    let (a, d) = (b[p * nf + r], b[qq * nf + r]);
                    b[p * nf + r] = c * a - s * d;
                    b[qq * nf + r] = s * a + c * d;
                }
                for r in 0..k {
                    let (a, d) = (v[p * k + r], v[qq * k + r]);
                    v[p * k + r] = c * a - s * d;
                    v[qq * k + r] = s * a + c * d;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    v
}

/// The 1-D k-d tree of netlib loess: sorted vertices (cell boundaries).
struct KdTree {
    vertices: Vec<f64>,
}

impl KdTree {
    fn build(x: &[f64], fc: usize) -> Self {
        let (lo, hi) = x
            .iter()
            .fold((f64::MAX, -f64::MAX), |(a, b), &v| (a.min(v), b.max(v)));
        let mu = 0.005 * (hi - lo).max(1e-10 * lo.abs().max(hi.abs()) + 1e-30);
        let (lo, hi) = (lo - mu, hi + mu);
        let mut sorted = x.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let mut vertices = vec![lo, hi];
        // cells as (first, last) positions into `sorted` (0-based, inclusive) with bounds
        let mut stack = vec![(0usize, sorted.len() - 1, lo, hi)];
        while let Some((l, u, vlo, vhi)) = stack.pop() {
            if u - l < fc || vhi - vlo <= 0.0 {
                continue;
            }
            // 1-based median position as Fortran's integer division, then move off ties
            let (l1, u1) = (l + 1, u + 1);
            let m1 = (l1 + u1) / 2;
            let mut m = m1;
            let mut offset: i64 = 0;
            loop {
                let pos = m1 as i64 + offset;
                if pos >= u1 as i64 || pos < l1 as i64 {
                    break;
                }
                let p = pos as usize;
                if sorted[p - 1] == sorted[p] {
                    offset = -offset;
                    if offset >= 0 {
                        offset += 1;
                    }
                } else {
                    m = p;
                    break;
                }
            }
            let split = sorted[m - 1];
            if split == vlo || split == vhi {
                continue;
            }
            vertices.push(split);
            stack.push((l, m - 1, vlo, split));
            stack.push((m, u, split, vhi));
        }
        vertices.sort_by(|a, b| a.total_cmp(b));
        vertices.dedup();
        KdTree { vertices }
    }

    /// Cubic Hermite interpolation inside the cell that holds `z` (`z <= split` goes left).
    fn interpolate(&self, z: f64, vval: &[(f64, f64)]) -> f64 {
        let v = &self.vertices;
        // leaf cell [v[i], v[i+1]] with v[i] < z <= v[i+1] (z at a split belongs to the lower cell)
        let mut i = v.partition_point(|&e| e < z).saturating_sub(1);
        if i + 1 >= v.len() {
            i = v.len() - 2;
        }
        let (v0, v1) = (v[i], v[i + 1]);
        let (g0, s0) = vval[i];
        let (g1, s1) = vval[i + 1];
        let h = (z - v0) / (v1 - v0);
        let phi0 = (1.0 - h).powi(2) * (1.0 + 2.0 * h);
        let phi1 = h * h * (3.0 - 2.0 * h);
        let psi0 = h * (1.0 - h).powi(2);
        let psi1 = h * h * (h - 1.0);
        phi0 * g0 + phi1 * g1 + (psi0 * s0 + psi1 * s1) * (v1 - v0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_a_quadratic_exactly() {
        let x: Vec<f64> = (0..200).map(|i| i as f64 / 10.0).collect();
        let y: Vec<f64> = x.iter().map(|v| 1.0 + 0.5 * v - 0.02 * v * v).collect();
        let f = fit(&x, &y, 0.3, 2).unwrap();
        for (a, b) in f.iter().zip(&y) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    #[test]
    fn constant_x_is_singular() {
        let x = vec![1.0; 50];
        let y: Vec<f64> = (0..50).map(|i| i as f64).collect();
        assert!(fit(&x, &y, 0.3, 2).is_err());
    }
}
