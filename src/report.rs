//! Result tables (CSV, Markdown, Parquet); files are written atomically by [`crate::output`].
use std::path::Path;

use polars::prelude::{AnyValue, Column, DataFrame, NamedFrom, Series};

use crate::error::{Error, Result};
use crate::sentence::Sentences;

pub use crate::output::{write_atomic, TMP_PREFIX};

/// `p` relative to the results root `out` (as REPORT.md links it), or whole when outside it.
pub fn relative(out: &Path, p: &Path) -> String {
    p.strip_prefix(out).unwrap_or(p).display().to_string()
}

/// Writes `df` as a Parquet file at `path` (written beside and renamed: whole or absent).
pub fn write_parquet(df: &DataFrame, path: &Path) -> Result<()> {
    use polars::prelude::ParquetWriter;
    let mut buf = Vec::new();
    let mut df = df.clone();
    ParquetWriter::new(&mut buf)
        .finish(&mut df)
        .map_err(|e| Error::param("parquet", format!("{}: {e}", path.display())))?;
    write_atomic(path, &buf)
}

/// Writes cell sentences as Parquet: columns `cell`, `sentence`, `n_genes`.
pub fn write_sentences(path: &Path, cells: &[String], sentences: &Sentences) -> Result<()> {
    let n_genes = sentences.lengths().into_iter().map(|n| n as i64).collect();
    write_parquet(
        &sentence_frame(cells.to_vec(), sentences.texts(), n_genes)?,
        path,
    )
}

/// The sentence table: `cell`, `sentence` and its word count `n_genes`.
fn sentence_frame(
    cells: Vec<String>,
    sentences: Vec<String>,
    n_genes: Vec<i64>,
) -> Result<DataFrame> {
    frame(vec![
        ("cell", Col::Str(cells.into_iter().map(Some).collect())),
        (
            "sentence",
            Col::Str(sentences.into_iter().map(Some).collect()),
        ),
        ("n_genes", Col::I64(n_genes)),
    ])
}

/// A table row from values of any `Display` type: `t.push(row![name, cells, f4(r2)])`.
#[macro_export]
macro_rules! row {
    ($($cell:expr),* $(,)?) => { [$(::std::string::ToString::to_string(&$cell)),*] };
}

/// A small string table rendered as CSV or Markdown.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows of cells, one string per column.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with the given column names.
    pub fn new<S: Into<String>>(columns: impl IntoIterator<Item = S>) -> Self {
        Self {
            columns: columns.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }
    /// Appends a row.
    pub fn push<S: Into<String>>(&mut self, row: impl IntoIterator<Item = S>) {
        self.rows.push(row.into_iter().map(Into::into).collect());
    }
    /// CSV text (RFC 4180 quoting).
    pub fn to_csv(&self) -> String {
        let esc = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        for row in std::iter::once(&self.columns).chain(&self.rows) {
            out.push_str(&row.iter().map(|c| esc(c)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        out
    }
    /// Parses CSV text as [`Table::to_csv`] writes it (RFC 4180 quoting; the first line names the
    /// columns). A row whose cell count differs from the header's is an error naming its line.
    pub fn from_csv(text: &str) -> std::result::Result<Table, String> {
        let mut rows: Vec<Vec<String>> = Vec::new();
        let (mut row, mut cell) = (Vec::new(), String::new());
        let (mut quoted, mut chars) = (false, text.chars().peekable());
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    cell.push('"');
                    chars.next();
                }
                (true, '"') => quoted = false,
                (true, c) => cell.push(c),
                (false, '"') if cell.is_empty() => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut cell)),
                (false, '\n') => {
                    row.push(std::mem::take(&mut cell));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => cell.push(c),
            }
        }
        if !cell.is_empty() || !row.is_empty() {
            row.push(cell);
            rows.push(row);
        }
        let mut it = rows.into_iter();
        let mut t = Table::new(it.next().unwrap_or_default());
        for (i, r) in it.enumerate() {
            if r.len() != t.columns.len() {
                return Err(format!(
                    "line {}: {} cells for {} columns",
                    i + 2,
                    r.len(),
                    t.columns.len()
                ));
            }
            t.rows.push(r);
        }
        Ok(t)
    }
    /// Index of the column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
    /// The cell of `row` in the column named `name` (empty when there is no such column).
    pub fn cell<'a>(&self, row: &'a [String], name: &str) -> &'a str {
        self.column(name)
            .and_then(|i| row.get(i))
            .map_or("", String::as_str)
    }
    /// The named columns, retitled: `(column, title)` pairs (a missing column stays empty).
    pub fn select(&self, cols: &[(&str, &str)]) -> Table {
        let mut t = Table::new(cols.iter().map(|(_, title)| *title));
        for r in &self.rows {
            t.push(cols.iter().map(|(c, _)| self.cell(r, c).to_string()));
        }
        t
    }
    /// GitHub-flavoured Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "| {} |\n|{}\n",
            self.columns.join(" | "),
            "---|".repeat(self.columns.len())
        );
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out
    }
}

/// Formats a float with 4 decimals (the rounding used in every table and snapshot).
pub fn f4(v: f64) -> String {
    let s = format!("{v:.4}");
    if s == "-0.0000" {
        "0.0000".into()
    } else {
        s
    }
}

/// A typed column for [`frame`].
#[derive(Debug, Clone)]
pub enum Col {
    /// Text (None = missing).
    Str(Vec<Option<String>>),
    /// Floats (None = missing).
    F64(Vec<Option<f64>>),
    /// Integers.
    I64(Vec<i64>),
}

/// Builds a polars DataFrame from named typed columns of equal length.
pub fn frame(columns: Vec<(&str, Col)>) -> Result<DataFrame> {
    let cols: Vec<Column> = columns
        .into_iter()
        .map(|(name, c)| {
            let s = match c {
                Col::Str(v) => Series::new(name.into(), v),
                Col::F64(v) => Series::new(name.into(), v),
                Col::I64(v) => Series::new(name.into(), v),
            };
            Column::from(s)
        })
        .collect();
    DataFrame::new_infer_height(cols).map_err(|e| Error::param("table", e.to_string()))
}

/// Renders a DataFrame as a string [`Table`]: floats with 4 decimals, missing values empty.
pub fn frame_table(df: &DataFrame) -> Table {
    let mut t = Table::new(df.get_column_names().iter().map(|n| n.to_string()));
    for i in 0..df.height() {
        let row: Vec<String> = df
            .columns()
            .iter()
            .map(|c| match c.get(i) {
                Ok(AnyValue::Null) | Err(_) => String::new(),
                Ok(AnyValue::Float64(v)) => f4(v),
                Ok(AnyValue::Float32(v)) => f4(v as f64),
                Ok(AnyValue::String(s)) => s.to_string(),
                Ok(AnyValue::StringOwned(s)) => s.to_string(),
                Ok(v) => v.to_string(),
            })
            .collect();
        t.rows.push(row);
    }
    t
}

/// Writes `df` as `<dir>/<stem>.csv` and `<dir>/<stem>.md` (the Markdown under `heading`).
pub fn write_frame(df: &DataFrame, dir: &Path, stem: &str, heading: &str) -> Result<Table> {
    let t = frame_table(df);
    write_atomic(dir.join(format!("{stem}.csv")), t.to_csv().as_bytes())?;
    write_atomic(
        dir.join(format!("{stem}.md")),
        format!("{heading}\n\n{}", t.to_markdown()).as_bytes(),
    )?;
    Ok(t)
}

/// Cell sentences written to Parquet as they come (columns `cell`, `sentence`, `n_genes`, as
/// [`write_sentences`]), a row group every `BATCH` cells: nothing is held but one batch. Written
/// beside the path and renamed by [`SentenceParquet::finish`]: whole or absent.
pub struct SentenceParquet {
    writer: Option<polars::io::parquet::write::BatchedWriter<std::fs::File>>,
    tmp: std::path::PathBuf,
    path: std::path::PathBuf,
    cells: Vec<String>,
    sentences: Vec<String>,
    n_genes: Vec<i64>,
    rows: usize,
}

impl SentenceParquet {
    const BATCH: usize = 65_536;

    /// Starts writing `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = crate::output::write_temp(dir, &[])?;
        Ok(SentenceParquet {
            writer: None,
            tmp,
            path: path.to_path_buf(),
            cells: Vec::new(),
            sentences: Vec::new(),
            n_genes: Vec::new(),
            rows: 0,
        })
    }

    /// Adds one cell's sentence (its words, most expressed first).
    pub fn push(&mut self, cell: &str, words: &[&str]) -> Result<()> {
        self.cells.push(cell.to_string());
        self.sentences.push(words.join(" "));
        self.n_genes.push(words.len() as i64);
        if self.cells.len() >= Self::BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        use polars::prelude::ParquetWriter;
        let fail = |e: &dyn std::fmt::Display| {
            Error::param("parquet", format!("{}: {e}", self.path.display()))
        };
        let cells = std::mem::take(&mut self.cells);
        let sentences = std::mem::take(&mut self.sentences);
        let n_genes = std::mem::take(&mut self.n_genes);
        self.rows += cells.len();
        let df = sentence_frame(cells, sentences, n_genes)?;
        if self.writer.is_none() {
            let f = std::fs::File::create(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
            let w = ParquetWriter::new(f)
                .batched(df.schema())
                .map_err(|e| fail(&e))?;
            self.writer = Some(w);
        }
        if let Some(w) = self.writer.as_mut() {
            w.write_batch(&df).map_err(|e| fail(&e))?;
        }
        Ok(())
    }

    /// Writes the last batch and renames the file into place; returns the number of rows.
    pub fn finish(mut self) -> Result<usize> {
        let done = (|| {
            if !self.cells.is_empty() || self.writer.is_none() {
                self.flush()?;
            }
            if let Some(w) = self.writer.take() {
                w.finish().map_err(|e| {
                    Error::param("parquet", format!("{}: {e}", self.path.display()))
                })?;
            }
            crate::output::kill_point("sentences-parquet-written");
            std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))
        })();
        if done.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        done.map(|()| self.rows)
    }
}

impl Drop for SentenceParquet {
    /// An unfinished file (an error on the way) is removed.
    fn drop(&mut self) {
        if self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn csv_round_trips_quoted_cells() {
        let mut t = Table::new(["a", "b"]);
        t.push(["x, y", "say \"hi\""]);
        t.push(["", "line\nbreak"]);
        assert_eq!(Table::from_csv(&t.to_csv()).unwrap(), t);
        assert!(Table::from_csv("a,b\n1\n").unwrap_err().contains("line 2"));
    }
}
