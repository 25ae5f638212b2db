//! 2-D `.npy` matrices (NumPy format 1.0, little-endian, C order): f32 written atomically,
//! f32/f64 read with errors that name the file.
use crate::{Error, Result};
use std::path::Path;

/// A dense row-major matrix of f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// The header of an f32 `.npy` file of `rows` × `cols` (the values follow, row-major).
pub fn header(rows: usize, cols: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// The bytes of an f32 `.npy` file.
pub fn to_bytes(m: &Matrix) -> Vec<u8> {
    let mut out = header(m.rows, m.cols);
    out.reserve(4 * m.data.len());
    for v in &m.data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes `m` to `path` atomically.
pub fn write(path: &Path, m: &Matrix) -> Result<()> {
    crate::report::write_atomic(path, &to_bytes(m))
}

/// Reads a 2-D f32 or f64 `.npy` file (f64 is converted to f32).
pub fn read(path: &Path) -> Result<Matrix> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |what: &str| {
        Error::format(
            path,
            what.to_string(),
            "save a 2-D float32/float64 array with numpy.save (cells × dimensions)",
        )
    };
    let h = parse_header(&bytes).map_err(|what| bad(&what))?;
    let (rows, cols, size) = (h.rows, h.cols, h.size);
    let body = &bytes[h.start..];
    let need = rows.checked_mul(cols).and_then(|n| n.checked_mul(size));
    if need != Some(body.len()) {
        let need = need.map_or("more than this machine can address".into(), |n| {
            n.to_string()
        });
        return Err(bad(&format!(
            "data has {} bytes, shape ({rows}, {cols}) needs {need}",
            body.len(),
        )));
    }
    let data: Vec<f32> = if size == 4 {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        body.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect()
    };
    let data = if h.fortran {
        let mut t = vec![0f32; data.len()];
        for (k, v) in data.into_iter().enumerate() {
            t[(k % rows.max(1)) * cols + k / rows.max(1)] = v;
        }
        t
    } else {
        data
    };
    Ok(Matrix { rows, cols, data })
}

/// What a `.npy` header says: the shape, the item size (4 or 8), whether the data are in
/// Fortran (column) order, and where the data start.
struct Header {
    rows: usize,
    cols: usize,
    size: usize,
    fortran: bool,
    start: usize,
}

/// Parses the header of a 2-D little-endian float `.npy`; the error says what is wrong.
fn parse_header(bytes: &[u8]) -> std::result::Result<Header, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err("unsupported .npy version".into()),
    };
    let header = bytes
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated header")?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[i..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or("header lacks descr")?;
    let size = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(format!(
            "dtype {} is not little-endian float32/float64",
            descr.split(',').next().unwrap_or("")
        ));
    };
    // numpy.save writes a transposed or PCA-produced array column by column
    let fortran = field("fortran_order").is_some_and(|f| f.starts_with("True"));
    let shape = field("shape").ok_or("header lacks shape")?;
    let dims: Vec<usize> = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("bad shape")?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| "bad shape")?;
    if dims.len() != 2 {
        return Err(format!("array has {} dimensions, need 2", dims.len()));
    }
    Ok(Header {
        rows: dims[0],
        cols: dims[1],
        size,
        fortran,
        start: start + hlen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = Matrix {
            rows: 2,
            cols: 3,
            data: vec![1.0, -2.5, 3.0, 0.0, 1e-8, f32::MAX],
        };
        let p = dir.path().join("m.npy");
        write(&p, &m).unwrap();
        assert_eq!(read(&p).unwrap(), m);
        let b = std::fs::read(&p).unwrap();
        assert_eq!((b.len() - 24) % 64, 0);
    }
}
