//! Content-addressed cache of stage outputs.
//!
//! A stage's output is stored under `<dir>/<stage>/<key>.json`, where the key is the SHA-256 of
//! the stage name, its code version and the JSON of everything it depends on (input file digests,
//! parameters, seeds). Entries are written atomically, so an interrupted run leaves either a whole
//! entry or none. With `force`, every stage is recomputed once in this run (and stored again).
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::report::write_atomic;

/// Bump when any stage's output format or arithmetic changes: invalidates every entry.
pub const CACHE_FORMAT: u32 = 2;

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stage-output cache rooted at a directory.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    force: bool,
    quiet: bool,
    done: Mutex<HashSet<String>>,
    digests: Mutex<BTreeMap<String, (u64, u128, String)>>,
    /// Stage lookups answered from the cache / computed, over this cache's life.
    tally: [std::sync::atomic::AtomicUsize; 2],
}

/// What happened to a stage lookup (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Read from the cache.
    Hit,
    /// Computed (missing, unreadable, or forced).
    Computed,
}

impl Cache {
    /// A cache in `dir`; `force` recomputes every stage once. Temporaries that killed runs left in
    /// the stage folders are removed (those of live runs are kept).
    pub fn new(dir: impl Into<PathBuf>, force: bool) -> Self {
        let dir = dir.into();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                let _ = crate::output::clean_leftovers(&e.path());
            }
        }
        Self {
            dir,
            force,
            quiet: false,
            done: Mutex::new(HashSet::new()),
            digests: Mutex::new(BTreeMap::new()),
            tally: Default::default(),
        }
    }

    /// [`Cache::new`] after checking `dir` (the `--cache` option) can be the cache folder: a file
    /// there is refused before any work (every stage would fail on it).
    pub fn open(dir: impl Into<PathBuf>, force: bool) -> Result<Self> {
        let dir = dir.into();
        if dir.exists() && !dir.is_dir() {
            return Err(Error::bad_value(
                &dir,
                "--cache",
                "is a file, but the stage cache is a folder of stage outputs",
                "give a folder (default .cache/stages; it is created when missing), or move the file",
            ));
        }
        Ok(Self::new(dir, force))
    }

    /// Silences the hit/computed log lines.
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of `stage` for `inputs`. The libtorch CPU-kernel settings in effect
    /// ([`crate::CPU_KERNEL_PINS`]) are part of it: an entry computed under other kernels holds
    /// other numbers and is not reused.
    pub fn key(stage: &str, inputs: &impl Serialize) -> String {
        let kernels = crate::cpu_kernels();
        let js = serde_json::to_string(&(stage, CACHE_FORMAT, kernels, inputs)).unwrap_or_default();
        sha256_hex(js.as_bytes())
    }

    /// The file that holds `stage`'s output for `key`.
    pub fn path(&self, stage: &str, key: &str) -> PathBuf {
        self.dir.join(stage).join(format!("{key}.json"))
    }

    /// Returns the cached output of `stage` for `inputs`, or computes, stores and returns it.
    /// `label` names the unit of work in the log (e.g. the dataset).
    pub fn json<T: Serialize + DeserializeOwned>(
        &self,
        stage: &str,
        label: &str,
        inputs: &impl Serialize,
        compute: impl FnOnce() -> Result<T>,
    ) -> Result<(T, Outcome)> {
        let key = Self::key(stage, inputs);
        let path = self.path(stage, &key);
        let forced = self.force && !self.done.lock().unwrap().contains(&key);
        if !forced {
            if let Some(v) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<T>(&b).ok())
            {
                self.log(&format!("{stage} {label}: cached ({})", &key[..12]));
                return Ok((v, self.count(Outcome::Hit)));
            }
        }
        let v = compute()?;
        let bytes = serde_json::to_vec(&v)
            .map_err(|e| Error::param(stage, format!("cannot serialize the output: {e}")))?;
        write_atomic(&path, &bytes)?;
        self.done.lock().unwrap().insert(key.clone());
        self.log(&format!("{stage} {label}: computed ({})", &key[..12]));
        Ok((v, self.count(Outcome::Computed)))
    }

    /// Like [`Cache::json`] for a cells × dimensions matrix, stored as `<stage>/<key>.npy`.
    pub fn npy(
        &self,
        stage: &str,
        label: &str,
        inputs: &impl Serialize,
        compute: impl FnOnce() -> Result<crate::npy::Matrix>,
    ) -> Result<(crate::npy::Matrix, Outcome)> {
        let key = Self::key(stage, inputs);
        let path = self.dir.join(stage).join(format!("{key}.npy"));
        let forced = self.force && !self.done.lock().unwrap().contains(&key);
        if !forced && path.is_file() {
            if let Ok(m) = crate::npy::read(&path) {
                self.log(&format!("{stage} {label}: cached ({})", &key[..12]));
                return Ok((m, self.count(Outcome::Hit)));
            }
        }
        let m = compute()?;
        crate::npy::write(&path, &m)?;
        self.done.lock().unwrap().insert(key.clone());
        self.log(&format!("{stage} {label}: computed ({})", &key[..12]));
        Ok((m, self.count(Outcome::Computed)))
    }

    /// A cached directory artifact (e.g. a trained model): `<stage>/<key>/`. `compute` must create
    /// the directory it is given atomically (all or nothing), as the LM trainer does.
    pub fn dir_artifact(
        &self,
        stage: &str,
        label: &str,
        inputs: &impl Serialize,
        compute: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<(PathBuf, Outcome)> {
        let key = Self::key(stage, inputs);
        let path = self.dir.join(stage).join(&key);
        let forced = self.force && !self.done.lock().unwrap().contains(&key);
        if !forced && path.is_dir() {
            self.log(&format!("{stage} {label}: cached ({})", &key[..12]));
            return Ok((path, self.count(Outcome::Hit)));
        }
        compute(&path)?;
        self.done.lock().unwrap().insert(key.clone());
        self.log(&format!("{stage} {label}: computed ({})", &key[..12]));
        Ok((path, self.count(Outcome::Computed)))
    }

    /// SHA-256 of a file's contents (a directory: of its files, in name order). Every run reads
    /// the contents anew (a file rewritten with the same size and modification time still gets its
    /// true digest); within one run a file is read once per (path, size, modification time).
    pub fn file_digest(&self, path: &Path) -> Result<String> {
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            let mut parts = Vec::new();
            for f in files {
                let name = f
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                parts.push((name, self.file_digest(&f)?));
            }
            return Ok(sha256_hex(
                serde_json::to_string(&parts).unwrap_or_default().as_bytes(),
            ));
        }
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let id = std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        if let Some((size, t, d)) = self.digests.lock().unwrap().get(&id) {
            if *size == meta.len() && *t == mtime {
                return Ok(d.clone());
            }
        }
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
        let d: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.digests
            .lock()
            .unwrap()
            .insert(id, (meta.len(), mtime, d.clone()));
        Ok(d)
    }

    /// Stage lookups so far: (read from the cache, computed).
    pub fn counts(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.tally[0].load(Relaxed), self.tally[1].load(Relaxed))
    }

    fn count(&self, o: Outcome) -> Outcome {
        let i = usize::from(o == Outcome::Computed);
        self.tally[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        o
    }

    fn log(&self, msg: &str) {
        if !self.quiet {
            eprintln!("[cache] {msg}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_once_then_hits_and_force_recomputes_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::new(dir.path(), false).quiet(true);
        let (v, o) = c.json("s", "x", &(1, "a"), || Ok(vec![1.5f64])).unwrap();
        assert_eq!((v, o), (vec![1.5], Outcome::Computed));
        let (v, o) = c.json("s", "x", &(1, "a"), || Ok(vec![9.0f64])).unwrap();
        assert_eq!((v, o), (vec![1.5], Outcome::Hit));
        let (_, o) = c.json("s", "x", &(2, "a"), || Ok(vec![2.0f64])).unwrap();
        assert_eq!(o, Outcome::Computed);
        let f = Cache::new(dir.path(), true).quiet(true);
        let (v, o) = f.json("s", "x", &(1, "a"), || Ok(vec![3.0f64])).unwrap();
        assert_eq!((v, o), (vec![3.0], Outcome::Computed));
        let (v, o) = f.json("s", "x", &(1, "a"), || Ok(vec![4.0f64])).unwrap();
        assert_eq!((v, o), (vec![3.0], Outcome::Hit));
    }

    #[test]
    fn file_digest_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::new(dir.path().join("c"), false);
        let f = dir.path().join("a.txt");
        std::fs::write(&f, b"one").unwrap();
        let a = c.file_digest(&f).unwrap();
        assert_eq!(a, sha256_hex(b"one"));
        std::fs::write(&f, b"two!").unwrap();
        assert_ne!(c.file_digest(&f).unwrap(), a);
    }

    /// A model file swapped for another of the same size and modification time: the next run
    /// sees the new contents (no stale cached embeddings).
    #[test]
    fn same_size_and_mtime_still_gets_the_true_digest() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("model.safetensors");
        std::fs::write(&f, b"weights-A").unwrap();
        let t = std::fs::metadata(&f).unwrap().modified().unwrap();
        let a = Cache::new(dir.path().join("c"), false)
            .file_digest(&f)
            .unwrap();
        std::fs::write(&f, b"weights-B").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(t)
            .unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().modified().unwrap(), t);
        let b = Cache::new(dir.path().join("c"), false)
            .file_digest(&f)
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(b, sha256_hex(b"weights-B"));
    }
}
