//! A compressed sparse row matrix with `u32` column indices and `f32` values — the same
//! 8 bytes per stored entry as scipy's CSR, so large count matrices stay small in memory.
use rayon::prelude::*;

/// Cells × genes sparse matrix in CSR layout. Column indices are sorted within each row.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    /// Number of rows (cells).
    pub n_rows: usize,
    /// Number of columns (genes).
    pub n_cols: usize,
    /// Row offsets into `indices`/`data`, length `n_rows + 1`.
    pub indptr: Vec<usize>,
    /// Column index of each stored entry.
    pub indices: Vec<u32>,
    /// Value of each stored entry.
    pub data: Vec<f32>,
}

impl Csr {
    /// Builds a matrix from raw parts, checking the structure; sorts each row's columns if needed.
    pub fn from_parts(
        n_rows: usize,
        n_cols: usize,
        indptr: Vec<usize>,
        mut indices: Vec<u32>,
        mut data: Vec<f32>,
    ) -> Result<Self, String> {
        if indptr.len() != n_rows + 1 {
            return Err(format!(
                "indptr has length {} but the matrix has {} rows (expected {})",
                indptr.len(),
                n_rows,
                n_rows + 1
            ));
        }
        if indices.len() != data.len() {
            return Err(format!(
                "indices ({}) and data ({}) differ in length",
                indices.len(),
                data.len()
            ));
        }
        if indptr[0] != 0 || *indptr.last().unwrap() != data.len() {
            return Err(format!(
                "indptr must start at 0 and end at nnz = {}",
                data.len()
            ));
        }
        if indptr.windows(2).any(|w| w[0] > w[1]) {
            return Err("indptr is not non-decreasing".into());
        }
        if let Some(&bad) = indices.iter().find(|&&c| c as usize >= n_cols) {
            return Err(format!(
                "column index {bad} out of range for {n_cols} columns"
            ));
        }
        for r in 0..n_rows {
            let (s, e) = (indptr[r], indptr[r + 1]);
            let cols = &indices[s..e];
            if cols.windows(2).any(|w| w[0] >= w[1]) {
                let mut pairs: Vec<(u32, f32)> = cols
                    .iter()
                    .copied()
                    .zip(data[s..e].iter().copied())
                    .collect();
                pairs.sort_by_key(|p| p.0);
                if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err(format!(
                        "row {r} stores column {} twice",
                        pairs.windows(2).find(|w| w[0].0 == w[1].0).unwrap()[0].0
                    ));
                }
                for (k, (c, v)) in pairs.into_iter().enumerate() {
                    indices[s + k] = c;
                    data[s + k] = v;
                }
            }
        }
        Ok(Self {
            n_rows,
            n_cols,
            indptr,
            indices,
            data,
        })
    }

    /// Builds a CSR matrix from a row-major dense buffer, dropping zeros.
    pub fn from_dense(n_rows: usize, n_cols: usize, values: &[f32]) -> Self {
        let mut indptr = Vec::with_capacity(n_rows + 1);
        let mut indices = Vec::new();
        let mut data = Vec::new();
        indptr.push(0);
        for r in 0..n_rows {
            for (c, &v) in values[r * n_cols..(r + 1) * n_cols].iter().enumerate() {
                if v != 0.0 {
                    indices.push(c as u32);
                    data.push(v);
                }
            }
            indptr.push(data.len());
        }
        Self {
            n_rows,
            n_cols,
            indptr,
            indices,
            data,
        }
    }

    /// Converts compressed-sparse-column parts (as stored for `csc_matrix`) to CSR.
    pub fn from_csc_parts(
        n_rows: usize,
        n_cols: usize,
        colptr: &[usize],
        row_idx: &[u32],
        values: &[f32],
    ) -> Result<Self, String> {
        let t = Csr::from_parts(
            n_cols,
            n_rows,
            colptr.to_vec(),
            row_idx.to_vec(),
            values.to_vec(),
        )?;
        Ok(t.transpose())
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.data.len()
    }

    /// Column indices and values of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[s..e], &self.data[s..e])
    }

    /// The transpose, as CSR (i.e. the CSC layout of `self`).
    pub fn transpose(&self) -> Self {
        let mut counts = vec![0usize; self.n_cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for i in 0..self.n_cols {
            counts[i + 1] += counts[i];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let mut indices = vec![0u32; self.nnz()];
        let mut data = vec![0f32; self.nnz()];
        for r in 0..self.n_rows {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let p = next[c as usize];
                indices[p] = r as u32;
                data[p] = v;
                next[c as usize] += 1;
            }
        }
        Self {
            n_rows: self.n_cols,
            n_cols: self.n_rows,
            indptr,
            indices,
            data,
        }
    }

    /// Every row, only the given columns (increasing).
    pub fn select_cols(&self, cols: &[usize]) -> Self {
        let rows: Vec<usize> = (0..self.n_rows).collect();
        self.select(&rows, Some(cols))
    }

    /// Keeps the given rows (in that order) and, if given, the given columns (which must be increasing).
    pub fn select(&self, rows: &[usize], cols: Option<&[usize]>) -> Self {
        let map: Option<Vec<u32>> = cols.map(|cols| {
            let mut m = vec![u32::MAX; self.n_cols];
            for (new, &old) in cols.iter().enumerate() {
                m[old] = new as u32;
            }
            m
        });
        let parts: Vec<(Vec<u32>, Vec<f32>)> = rows
            .par_iter()
            .map(|&r| {
                let (c, v) = self.row(r);
                match &map {
                    None => (c.to_vec(), v.to_vec()),
                    Some(m) => {
                        let mut ci = Vec::with_capacity(c.len());
                        let mut vi = Vec::with_capacity(c.len());
                        for (&cc, &vv) in c.iter().zip(v) {
                            let n = m[cc as usize];
                            if n != u32::MAX {
                                ci.push(n);
                                vi.push(vv);
                            }
                        }
                        (ci, vi)
                    }
                }
            })
            .collect();
        let nnz: usize = parts.iter().map(|p| p.0.len()).sum();
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut data = Vec::with_capacity(nnz);
        indptr.push(0);
        for (c, v) in parts {
            indices.extend_from_slice(&c);
            data.extend_from_slice(&v);
            indptr.push(indices.len());
        }
        Self {
            n_rows: rows.len(),
            n_cols: cols.map_or(self.n_cols, |c| c.len()),
            indptr,
            indices,
            data,
        }
    }

    /// Keeps the given rows (increasing) and optionally columns (increasing) by compacting the
    /// arrays in place: no second copy of the matrix is ever held.
    pub fn retain(&mut self, rows: &[usize], cols: Option<&[usize]>) {
        let map: Option<Vec<u32>> = cols.map(|cols| {
            let mut m = vec![u32::MAX; self.n_cols];
            for (new, &old) in cols.iter().enumerate() {
                m[old] = new as u32;
            }
            m
        });
        let mut w = 0usize;
        let mut new_ptr = Vec::with_capacity(rows.len() + 1);
        new_ptr.push(0);
        for &r in rows {
            let (s, e) = (self.indptr[r], self.indptr[r + 1]);
            for k in s..e {
                let c = match &map {
                    Some(m) => m[self.indices[k] as usize],
                    None => self.indices[k],
                };
                if c != u32::MAX {
                    self.indices[w] = c;
                    self.data[w] = self.data[k];
                    w += 1;
                }
            }
            new_ptr.push(w);
        }
        self.indices.truncate(w);
        self.data.truncate(w);
        self.indptr = new_ptr;
        self.n_rows = rows.len();
        if let Some(c) = cols {
            self.n_cols = c.len();
        }
    }

    /// Drops explicitly stored zeros.
    pub fn eliminate_zeros(&mut self) {
        if !self.data.contains(&0.0) {
            return;
        }
        let mut w = 0;
        let mut new_ptr = Vec::with_capacity(self.n_rows + 1);
        new_ptr.push(0);
        for r in 0..self.n_rows {
            for k in self.indptr[r]..self.indptr[r + 1] {
                if self.data[k] != 0.0 {
                    self.data[w] = self.data[k];
                    self.indices[w] = self.indices[k];
                    w += 1;
                }
            }
            new_ptr.push(w);
        }
        self.data.truncate(w);
        self.indices.truncate(w);
        self.indptr = new_ptr;
    }

    /// Number of stored non-zero entries per row.
    pub fn row_nnz(&self) -> Vec<usize> {
        (0..self.n_rows)
            .map(|r| self.row(r).1.iter().filter(|v| **v != 0.0).count())
            .collect()
    }

    /// Number of rows in which each column is non-zero.
    pub fn col_nnz(&self) -> Vec<usize> {
        let mut n = vec![0usize; self.n_cols];
        for (&c, &v) in self.indices.iter().zip(&self.data) {
            if v != 0.0 {
                n[c as usize] += 1;
            }
        }
        n
    }

    /// Row sums accumulated in f64 (in storage order).
    pub fn row_sums(&self) -> Vec<f64> {
        (0..self.n_rows)
            .into_par_iter()
            .map(|r| self.row(r).1.iter().map(|&v| v as f64).sum())
            .collect()
    }

    /// Dense copy of row `r`.
    pub fn dense_row(&self, r: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.n_cols];
        let (c, v) = self.row(r);
        for (&cc, &vv) in c.iter().zip(v) {
            out[cc as usize] = vv;
        }
        out
    }

    /// Bytes held by the three arrays.
    pub fn size_bytes(&self) -> usize {
        self.indptr.len() * std::mem::size_of::<usize>()
            + self.indices.len() * 4
            + self.data.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_and_select_roundtrip() {
        let dense = [1.0, 0.0, 2.0, 0.0, 0.0, 3.0, 4.0, 5.0, 0.0];
        let m = Csr::from_dense(3, 3, &dense);
        assert_eq!(m.nnz(), 5);
        let t = m.transpose().transpose();
        assert_eq!(t, m);
        let mut r = m.clone();
        r.retain(&[0, 2], Some(&[0, 2]));
        assert_eq!(r, m.select(&[0, 2], Some(&[0, 2])));
        let s = m.select(&[2, 0], Some(&[0, 2]));
        assert_eq!(s.dense_row(0), vec![4.0, 0.0]);
        assert_eq!(s.dense_row(1), vec![1.0, 2.0]);
        assert_eq!(m.col_nnz(), vec![2, 1, 2]);
    }

    #[test]
    fn from_parts_sorts_and_rejects_duplicates() {
        let m = Csr::from_parts(1, 3, vec![0, 2], vec![2, 0], vec![1.0, 2.0]).unwrap();
        assert_eq!(m.indices, vec![0, 2]);
        assert_eq!(m.data, vec![2.0, 1.0]);
        assert!(Csr::from_parts(1, 3, vec![0, 2], vec![1, 1], vec![1.0, 2.0]).is_err());
        assert!(Csr::from_parts(1, 3, vec![0, 1], vec![5], vec![1.0]).is_err());
    }
}
