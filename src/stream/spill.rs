//! The spill of a streamed run: the file's chunks decoded once, kept uncompressed and compact
//! (u16 columns and counts when they fit) in an unnamed temporary file that the system removes
//! even after a kill, and read back into buffers reused across chunks.
use crate::csr::Csr;
use crate::error::{Error, Result};

/// Where and how one chunk lies in a [`Spill`].
#[derive(Debug, Clone, Copy)]
pub(super) struct SpillChunk {
    /// First file row and rows of the chunk.
    start: usize,
    rows: usize,
    nnz: usize,
    /// Column indices stored as u32 (else u16: every column < 65,536).
    wide_indices: bool,
    /// Values stored as f32 (else u16: every value a whole count < 65,536, bit for bit).
    float_data: bool,
}

/// Chunks written as `indptr` (u64), `indices` (u16 or u32) and `data` (u16 or f32) slices.
pub(super) struct Spill {
    file: std::fs::File,
    chunks: Vec<SpillChunk>,
}

/// A [`Spill`] being written (with scratch buffers reused across chunks).
pub(super) struct SpillWriter {
    w: std::io::BufWriter<std::fs::File>,
    chunks: Vec<SpillChunk>,
    narrow: Vec<u16>,
}

fn spill_io(e: std::io::Error) -> Error {
    Error::io(std::env::temp_dir(), e)
}

/// `v` as a whole count that u16 holds exactly (same bits back as f32).
fn as_u16(v: f32) -> Option<u16> {
    let n = v as u16;
    ((n as f32).to_bits() == v.to_bits()).then_some(n)
}

impl SpillWriter {
    pub(super) fn new() -> Result<Self> {
        let file = tempfile::tempfile().map_err(spill_io)?;
        Ok(SpillWriter {
            w: std::io::BufWriter::with_capacity(1 << 22, file),
            chunks: Vec::new(),
            narrow: Vec::new(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        std::io::Write::write_all(&mut self.w, bytes).map_err(spill_io)
    }

    /// Writes `v` through the reused u16 buffer.
    fn write_u16(&mut self, v: impl Iterator<Item = u16>) -> Result<()> {
        let mut n = std::mem::take(&mut self.narrow);
        n.clear();
        n.extend(v);
        let written = self.write(bytemuck::cast_slice(&n));
        self.narrow = n;
        written
    }

    /// Appends `x`, the chunk of the file rows from `start`.
    pub(super) fn push(&mut self, start: usize, x: &Csr) -> Result<()> {
        let ptr: Vec<u64> = x.indptr.iter().map(|&p| p as u64).collect();
        self.write(bytemuck::cast_slice(&ptr))?;
        let wide_indices = x.n_cols > 1 << 16;
        if wide_indices {
            self.write(bytemuck::cast_slice(&x.indices))?;
        } else {
            self.write_u16(x.indices.iter().map(|&i| i as u16))?;
        }
        let float_data = !x.data.iter().all(|&v| as_u16(v).is_some());
        if float_data {
            self.write(bytemuck::cast_slice(&x.data))?;
        } else {
            self.write_u16(x.data.iter().map(|&v| v as u16))?;
        }
        self.chunks.push(SpillChunk {
            start,
            rows: x.n_rows,
            nnz: x.nnz(),
            wide_indices,
            float_data,
        });
        Ok(())
    }

    pub(super) fn finish(self) -> Result<Spill> {
        let file = self.w.into_inner().map_err(|e| spill_io(e.into_error()))?;
        Ok(Spill {
            file,
            chunks: self.chunks,
        })
    }
}

impl Spill {
    /// Runs `f(start, chunk)` on every chunk, in order, reading into buffers reused across
    /// chunks (`f` may change the chunk in place).
    pub(super) fn for_each(
        &mut self,
        n_cols: usize,
        mut f: impl FnMut(usize, &mut Csr) -> Result<()>,
    ) -> Result<()> {
        use std::io::Seek;
        self.file.rewind().map_err(spill_io)?;
        let mut r = std::io::BufReader::with_capacity(1 << 22, &self.file);
        let (mut ptr, mut narrow) = (Vec::<u64>::new(), Vec::<u16>::new());
        let mut x = Csr {
            n_rows: 0,
            n_cols,
            indptr: vec![0],
            indices: Vec::new(),
            data: Vec::new(),
        };
        for c in &self.chunks {
            ptr.resize(c.rows + 1, 0);
            read(&mut r, &mut ptr)?;
            x.indptr.clear();
            x.indptr.extend(ptr.iter().map(|&p| p as usize));
            if c.wide_indices {
                x.indices.resize(c.nnz, 0);
                read(&mut r, &mut x.indices)?;
            } else {
                read_widened(&mut r, &mut narrow, c.nnz, &mut x.indices, u32::from)?;
            }
            if c.float_data {
                x.data.resize(c.nnz, 0.0);
                read(&mut r, &mut x.data)?;
            } else {
                read_widened(&mut r, &mut narrow, c.nnz, &mut x.data, f32::from)?;
            }
            (x.n_rows, x.n_cols) = (c.rows, n_cols);
            f(c.start, &mut x)?;
        }
        Ok(())
    }
}

/// Fills `buf` from `r`.
fn read<T: bytemuck::Pod>(r: &mut impl std::io::Read, buf: &mut [T]) -> Result<()> {
    r.read_exact(bytemuck::cast_slice_mut(buf))
        .map_err(spill_io)
}

/// Reads `n` u16 values (through `scratch`) into `out`, widened by `widen`.
fn read_widened<T>(
    r: &mut impl std::io::Read,
    scratch: &mut Vec<u16>,
    n: usize,
    out: &mut Vec<T>,
    widen: impl Fn(u16) -> T,
) -> Result<()> {
    scratch.resize(n, 0);
    read(r, scratch)?;
    out.clear();
    out.extend(scratch.iter().map(|&v| widen(v)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(n_cols: usize, indices: Vec<u32>, data: Vec<f32>) -> Csr {
        let n = data.len();
        Csr::from_parts(2, n_cols, vec![0, 1, n], indices, data).unwrap()
    }

    #[test]
    fn spill_gives_back_every_layout_bit_for_bit() {
        let chunks = [
            // u16 columns, whole counts (u16 values; -0.0 must stay -0.0, so that chunk is f32)
            csr(100, vec![3, 0, 99], vec![1.0, 65535.0, 7.0]),
            csr(100, vec![3, 0, 99], vec![1.0, -0.0, 7.0]),
            // a count u16 cannot hold, a fraction: f32 values
            csr(100, vec![5, 1, 2], vec![65536.0, 0.5, 3.0]),
            // more columns than u16 indexes: u32 columns
            csr(70_000, vec![69_999, 0, 65_536], vec![2.0, 1.0, 1e-3]),
        ];
        let mut w = SpillWriter::new().unwrap();
        for (k, x) in chunks.iter().enumerate() {
            w.push(10 * k, x).unwrap();
        }
        let mut sp = w.finish().unwrap();
        let layouts: Vec<(bool, bool)> = sp
            .chunks
            .iter()
            .map(|c| (c.wide_indices, c.float_data))
            .collect();
        assert_eq!(
            layouts,
            [(false, false), (false, true), (false, true), (true, true)]
        );
        let mut back = Vec::new();
        sp.for_each(70_000, |s, x| {
            back.push((s, x.clone()));
            Ok(())
        })
        .unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (k, (s, x)) in back.into_iter().enumerate() {
            let want = &chunks[k];
            assert_eq!(s, 10 * k);
            assert_eq!((&x.indptr, &x.indices), (&want.indptr, &want.indices));
            assert_eq!(bits(&x.data), bits(&want.data), "chunk {k}");
        }
    }
}
