//! Label-agreement scores with scikit-learn's definitions (`normalized_mutual_info_score` with
//! the arithmetic mean, `adjusted_rand_score`, `silhouette_samples`) and scIB's
//! `graph_connectivity`. Labels are class indices `0..n_classes`.
use super::neighbors::Graph;

/// Contingency counts `(class, cluster) → n` and the marginals.
fn contingency(a: &[usize], b: &[usize]) -> (Vec<u64>, Vec<u64>, Vec<u64>, usize) {
    let (na, nb) = (
        a.iter().max().map_or(0, |m| m + 1),
        b.iter().max().map_or(0, |m| m + 1),
    );
    let mut c = vec![0u64; na * nb];
    for (&x, &y) in a.iter().zip(b) {
        c[x * nb + y] += 1;
    }
    let ra: Vec<u64> = (0..na)
        .map(|i| c[i * nb..(i + 1) * nb].iter().sum())
        .collect();
    let rb: Vec<u64> = (0..nb)
        .map(|j| (0..na).map(|i| c[i * nb + j]).sum())
        .collect();
    (c, ra, rb, nb)
}

fn entropy(counts: &[u64]) -> f64 {
    let n: u64 = counts.iter().sum();
    let ln = (n as f64).ln();
    -counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| (c as f64 / n as f64) * ((c as f64).ln() - ln))
        .sum::<f64>()
}

/// scikit-learn `normalized_mutual_info_score(a, b)` (arithmetic mean of the entropies).
pub fn nmi(a: &[usize], b: &[usize]) -> f64 {
    let (c, ra, rb, nb) = contingency(a, b);
    let (ka, kb) = (
        ra.iter().filter(|&&v| v > 0).count(),
        rb.iter().filter(|&&v| v > 0).count(),
    );
    if ka == kb && ka <= 1 {
        return 1.0;
    }
    let n = a.len() as f64;
    let mut mi = 0.0;
    for (idx, &nij) in c.iter().enumerate() {
        if nij == 0 {
            continue;
        }
        let (i, j) = (idx / nb, idx % nb);
        let p = nij as f64 / n;
        let outer = ra[i] as f64 * rb[j] as f64;
        let term = p * ((nij as f64).ln() - n.ln()) + p * (-outer.ln() + 2.0 * n.ln());
        mi += if term.abs() < f64::EPSILON { 0.0 } else { term };
    }
    let mi = mi.max(0.0);
    if mi == 0.0 {
        return 0.0;
    }
    mi / ((entropy(&ra) + entropy(&rb)) / 2.0)
}

/// scikit-learn `adjusted_rand_score(a, b)` (pair counts in exact integers).
pub fn ari(a: &[usize], b: &[usize]) -> f64 {
    let (c, ra, rb, nb) = contingency(a, b);
    let n = a.len() as i128;
    let sq: i128 = c.iter().map(|&v| (v as i128) * (v as i128)).sum();
    let (mut cn_k, mut ct_c) = (0i128, 0i128);
    for (idx, &v) in c.iter().enumerate() {
        let (i, j) = (idx / nb, idx % nb);
        cn_k += v as i128 * rb[j] as i128;
        ct_c += v as i128 * ra[i] as i128;
    }
    let tp = sq - n;
    let fp = cn_k - sq;
    let fn_ = ct_c - sq;
    let tn = n * n - fp - fn_ - sq;
    if fn_ == 0 && fp == 0 {
        return 1.0;
    }
    2.0 * (tp * tn - fn_ * fp) as f64 / ((tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn)) as f64
}

/// scikit-learn's silhouette of one cell from its summed distances to each class (`sums`,
/// its own class included) and the class sizes: 0 for a cell alone in its class.
pub fn silhouette(own: usize, sums: &[f64], sizes: &[usize]) -> f64 {
    if sizes[own] <= 1 {
        return 0.0;
    }
    let a = sums[own] / (sizes[own] - 1) as f64;
    let b = (0..sums.len())
        .filter(|&c| c != own && sizes[c] > 0)
        .map(|c| sums[c] / sizes[c] as f64)
        .fold(f64::INFINITY, f64::min);
    let s = (b - a) / a.max(b);
    if s.is_finite() {
        s
    } else {
        0.0
    }
}

/// scIB `graph_connectivity`: per label, the share of its cells in the largest connected
/// component of the graph restricted to that label; the mean over labels.
pub fn graph_connectivity(g: &Graph, labels: &[usize], n_labels: usize) -> f64 {
    let n = g.n_nodes();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for i in 0..n {
        for &j in g.row(i).0 {
            let j = j as usize;
            if labels[i] == labels[j] {
                let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                parent[ri.max(rj)] = ri.min(rj);
            }
        }
    }
    let mut comp = vec![0usize; n];
    for i in 0..n {
        comp[find(&mut parent, i)] += 1;
    }
    let mut size = vec![0usize; n_labels];
    let mut largest = vec![0usize; n_labels];
    for i in 0..n {
        size[labels[i]] += 1;
        if parent[i] == i {
            largest[labels[i]] = largest[labels[i]].max(comp[i]);
        }
    }
    let present: Vec<usize> = (0..n_labels).filter(|&l| size[l] > 0).collect();
    present
        .iter()
        .map(|&l| largest[l] as f64 / size[l] as f64)
        .sum::<f64>()
        / present.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_permuted_agreement() {
        let a = [0, 0, 1, 1, 2, 2];
        let b = [2, 2, 0, 0, 1, 1];
        assert!((nmi(&a, &b) - 1.0).abs() < 1e-12);
        assert_eq!(ari(&a, &b), 1.0);
        // sklearn: adjusted_rand_score([0,0,1,1], [0,1,0,1]) = -0.5
        assert!((ari(&[0, 0, 1, 1], &[0, 1, 0, 1]) + 0.5).abs() < 1e-12);
        assert_eq!(nmi(&[0, 0, 1, 1], &[0, 1, 0, 1]), 0.0);
    }
}
