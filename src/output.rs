//! Outputs that appear whole or not at all.
//!
//! - A folder output (a results folder, a model directory) is written into a temporary sibling
//!   ([`StagedDir`]) and swapped into place in one step: Linux `renameat2(RENAME_EXCHANGE)`, or
//!   elsewhere a rename of the old folder aside, then of the new one into place, recovered by
//!   [`clean_leftovers`] if a kill falls between the two.
//! - A set of files in different places (`embed`'s `.npy` and `.cells.txt`) is committed through a
//!   journal ([`commit_files`]): once the journal is written the set rolls forward at the next
//!   start ([`recover`]); before that the old set stays untouched.
//! - `CELLSENTENCE_KILL_AT=<label>` SIGKILLs the process at the named commit point
//!   ([`kill_point`]), so tests can prove a kill at every rename leaves the old or the new output.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Prefix of the temporary files [`write_atomic`] renames into place.
pub const TMP_PREFIX: &str = ".cellsentence-tmp-";

/// Removes temporary files an interrupted run (kill -9) left in `dir` and its subfolders (not those
/// of a live run); returns how many. Finished results are never temporary files, so this only
/// drops debris.
fn sweep_temporaries(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            n += sweep_temporaries(&p);
        } else if is_leftover(&e.file_name().to_string_lossy()) && std::fs::remove_file(&p).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory
/// ([`write_temp`]), then a rename.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = write_temp(dir, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Prefix of an old folder moved aside while a new one takes its place (non-Linux fallback).
const OLD_PREFIX: &str = ".cellsentence-old-";
/// Prefix of a commit journal.
const JOURNAL_PREFIX: &str = ".cellsentence-commit-";

/// Fault injection for kill tests: when `CELLSENTENCE_KILL_AT` equals `label`, the process
/// SIGKILLs itself here (no destructor, no cleanup runs, as with `kill -9`).
pub fn kill_point(label: &str) {
    if std::env::var("CELLSENTENCE_KILL_AT").is_ok_and(|v| v == label) {
        #[cfg(unix)]
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        std::process::abort();
    }
}

/// Prefix of this process's temporary files and folders: [`TMP_PREFIX`] and the process id, so
/// cleaning never removes what a live run (another process, or another thread of this one) is
/// still writing.
pub fn tmp_prefix() -> String {
    format!("{TMP_PREFIX}{}-", std::process::id())
}

/// Whether a file name is a temporary of a run that is no longer alive (or of an older version
/// that named no process).
pub fn is_leftover(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
        return false;
    };
    let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
    match pid {
        None => true,
        Some(pid) if pid == std::process::id() => false,
        Some(pid) => !alive(pid),
    }
}

fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .is_some_and(|p| {
                !matches!(
                    rustix::process::test_kill_process(p),
                    Err(rustix::io::Errno::SRCH)
                )
            })
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// What an output path is to hold.
#[derive(Debug, Clone, Copy)]
pub enum OutKind {
    /// One file.
    File,
    /// A folder replaced whole; an existing folder must be empty or hold `marker` (an earlier
    /// output of the same command).
    Folder {
        /// A file every such output folder has.
        marker: &'static str,
    },
}

/// Checks an output path before any work is done: never one of `inputs` nor an existing file or
/// folder inside an input folder (a new file beside a model's files destroys nothing), a file
/// output never an existing folder, a folder output never an existing folder that
/// is not an earlier output (see [`OutKind`]); creates the parent folder or says why it cannot,
/// and removes the temporaries killed runs left there ([`clean_leftovers`]).
pub fn check_out(option: &str, out: &Path, inputs: &[&Path], kind: OutKind) -> Result<()> {
    let bad = |what: String, fix: &str| Error::bad_value(out, option, what, fix);
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    let out_c = canon(out)
        .or_else(|| canon(parent_of(out)).map(|d| d.join(out.file_name().unwrap_or_default())));
    for i in inputs {
        let (Some(o), Some(ic)) = (&out_c, canon(i)) else {
            continue;
        };
        if *o == ic {
            return Err(bad(
                format!(
                    "is the input {} (writing there would destroy it)",
                    i.display()
                ),
                "choose an output path that is not an input",
            ));
        }
        if ic.is_dir() && o.starts_with(&ic) && o.exists() {
            return Err(bad(
                format!(
                    "is one of the input {}'s own files (writing there would destroy it)",
                    i.display()
                ),
                "choose a new name, or a path outside the input",
            ));
        }
    }
    match kind {
        OutKind::File if out.is_dir() => {
            return Err(bad(
                "is an existing folder, but a file is written here".into(),
                "give a file name, e.g. <folder>/out.npy",
            ))
        }
        OutKind::Folder { marker } if out.exists() => {
            let empty = out
                .read_dir()
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !out.is_dir() || !(empty || out.join(marker).is_file()) {
                return Err(bad(
                    format!("exists and is not an earlier output of this command (no {marker}); it is left untouched"),
                    "choose a new folder, or delete it",
                ));
            }
        }
        _ => {}
    }
    let parent = parent_of(out);
    // the output's folders are made when it is written (a refused run leaves none behind):
    // writability is probed in the nearest folder that exists
    let existing =
        nearest_folder(parent).map_err(|what| bad(what, "choose a writable location"))?;
    let probe = tempfile::Builder::new()
        .prefix(&tmp_prefix())
        .tempfile_in(existing);
    if let Err(e) = probe {
        return Err(bad(
            format!("its folder {} is not writable ({e})", existing.display()),
            "choose a writable location",
        ));
    }
    // what a killed earlier run of any command left beside its output goes now
    if parent.is_dir() {
        clean_leftovers(parent)?;
    }
    Ok(())
}

/// The nearest of `dir` and its ancestors that exists (`.` for a relative path none of whose
/// folders exist); an ancestor that is a file means the folder cannot be created.
fn nearest_folder(dir: &Path) -> std::result::Result<&Path, String> {
    for a in dir.ancestors() {
        if a.as_os_str().is_empty() {
            break;
        }
        if a.is_dir() {
            return Ok(a);
        }
        if a.exists() {
            return Err(format!(
                "its folder {} cannot be created ({} is a file)",
                dir.display(),
                a.display()
            ));
        }
    }
    Ok(Path::new("."))
}

fn parent_of(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into())
}

/// A temporary folder beside `out` that becomes `out` on [`StagedDir::commit`]; dropped
/// uncommitted, it is removed.
pub struct StagedDir {
    tmp: tempfile::TempDir,
    out: PathBuf,
}

impl StagedDir {
    /// Creates the staging folder next to `out` (creating `out`'s parent if needed).
    pub fn new(out: &Path) -> Result<Self> {
        let parent = parent_of(out);
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}{}-", tmp_prefix(), file_name(out)))
            .tempdir_in(parent)
            .map_err(|e| Error::io(parent, e))?;
        Ok(Self {
            tmp,
            out: out.to_path_buf(),
        })
    }

    /// Where to write the new output.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Copies each file named in `names` that `out` has and the staged folder lacks (hand-written
    /// notes such as a README kept beside generated results).
    pub fn keep_from_old(&self, names: &[&str]) -> Result<()> {
        for n in names {
            let (old, new) = (self.out.join(n), self.path().join(n));
            if old.is_file() && !new.exists() {
                std::fs::copy(&old, &new).map_err(|e| Error::io(&old, e))?;
            }
        }
        Ok(())
    }

    /// Puts the staged folder in place of `out` in one step; `label` names the kill points.
    pub fn commit(self, label: &str) -> Result<()> {
        let staged = self.tmp.keep();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // tempdir creates 0700; outputs are ordinary folders
            let _ = std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755));
        }
        replace_dir(&staged, &self.out, label)
    }
}

/// Replaces `out` by `staged` (a sibling folder): old or new, never neither, whatever the kill.
pub fn replace_dir(staged: &Path, out: &Path, label: &str) -> Result<()> {
    kill_point(&format!("{label}:before"));
    if !out.exists() {
        std::fs::rename(staged, out).map_err(|e| Error::io(out, e))?;
        return Ok(());
    }
    if exchange(staged, out) {
        // `staged` now holds the old output
        kill_point(&format!("{label}:swapped"));
        std::fs::remove_dir_all(staged).map_err(|e| Error::io(staged, e))?;
        return Ok(());
    }
    let aside = parent_of(out).join(format!("{OLD_PREFIX}{}", file_name(out)));
    if aside.exists() {
        std::fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
    }
    std::fs::rename(out, &aside).map_err(|e| Error::io(out, e))?;
    kill_point(&format!("{label}:aside"));
    std::fs::rename(staged, out).map_err(|e| Error::io(out, e))?;
    kill_point(&format!("{label}:swapped"));
    std::fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
    Ok(())
}

/// Swaps two paths atomically where the platform can.
fn exchange(a: &Path, b: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (a, b);
        false
    }
}

/// Writes `bytes` to a new temporary file in `dir` (synced, mode 0644) and returns its path, to be
/// named in [`commit_files`].
pub fn write_temp(dir: &Path, bytes: &[u8]) -> Result<PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&tmp_prefix())
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(dir, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(dir, e))?;
    let (_, path) = tmp.keep().map_err(|e| Error::io(dir, e.error))?;
    Ok(path)
}

#[derive(Serialize, Deserialize)]
struct Journal {
    /// (staged file, final file) names in the journal's folder, renamed in order.
    renames: Vec<(String, String)>,
}

/// Commits files written to temporary paths as one unit: a journal naming every rename is written
/// first (atomically), then the renames run, then the journal goes. A kill before the journal
/// leaves the old files (the temporaries are leftovers); a kill after it is rolled forward by
/// [`recover`]. All paths must lie in `dir`.
pub fn commit_files(dir: &Path, label: &str, renames: &[(PathBuf, PathBuf)]) -> Result<()> {
    let first = renames.first().map(|r| file_name(&r.1)).unwrap_or_default();
    let journal = dir.join(format!("{JOURNAL_PREFIX}{first}.json"));
    let mut j = Journal {
        renames: Vec::new(),
    };
    for (from, to) in renames {
        j.renames.push((file_name(from), file_name(to)));
    }
    kill_point(&format!("{label}:before"));
    write_atomic(&journal, &serde_json::to_vec(&j).unwrap_or_default())?;
    kill_point(&format!("{label}:journal"));
    roll_forward(&journal, &j, label)
}

fn roll_forward(journal: &Path, j: &Journal, label: &str) -> Result<()> {
    let dir = parent_of(journal);
    for (i, (from, to)) in j.renames.iter().enumerate() {
        let (from, to) = (dir.join(from), dir.join(to));
        if from.exists() {
            std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
        }
        kill_point(&format!("{label}:renamed{i}"));
    }
    std::fs::remove_file(journal).map_err(|e| Error::io(journal, e))?;
    Ok(())
}

/// Finishes commits a kill interrupted in `dir` (journals roll forward) and restores a folder
/// left aside by the non-Linux swap; returns how many it completed.
pub fn recover(dir: &Path) -> Result<usize> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if name.starts_with(JOURNAL_PREFIX) && name.ends_with(".json") {
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            let j: Journal = serde_json::from_slice(&bytes).map_err(|e| {
                Error::param(
                    "journal",
                    format!("{}: unreadable commit journal ({e}); delete it and rerun the command that wrote it", p.display()),
                )
            })?;
            roll_forward(&p, &j, "recover")?;
            n += 1;
        } else if let Some(orig) = name.strip_prefix(OLD_PREFIX) {
            let target = dir.join(orig);
            if target.exists() {
                std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
            } else {
                std::fs::rename(&p, &target).map_err(|e| Error::io(&target, e))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// The cleanup a run does before it writes: [`clean_leftovers`] of `dir` (interrupted commits
/// recovered, killed runs' temporaries removed), and the temporary files anywhere below each of
/// `results` (result folders whose files are written one by one); returns how many it removed.
pub fn clean(dir: &Path, results: &[PathBuf]) -> Result<usize> {
    let n = clean_leftovers(dir)?;
    Ok(n + results.iter().map(|r| sweep_temporaries(r)).sum::<usize>())
}

/// Recovers interrupted commits in `dir` ([`recover`]), then removes the temporary files and
/// folders killed runs left there (not recursively: outputs below are whole; a live run's
/// temporaries are kept, see [`is_leftover`]); returns how many leftovers it removed.
pub fn clean_leftovers(dir: &Path) -> Result<usize> {
    recover(dir)?;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in rd.flatten() {
        if !is_leftover(&e.file_name().to_string_lossy()) {
            continue;
        }
        let p = e.path();
        let gone = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if gone.is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_dir_replaces_old_output_and_keeps_named_notes() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("res");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("old.csv"), "old").unwrap();
        std::fs::write(out.join("README.md"), "notes").unwrap();
        let s = StagedDir::new(&out).unwrap();
        std::fs::write(s.path().join("new.csv"), "new").unwrap();
        s.keep_from_old(&["README.md"]).unwrap();
        s.commit("t").unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["README.md", "new.csv"]);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn journal_rolls_forward_and_leftovers_go() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.npy"), d.path().join("a.cells.txt"));
        let (ta, tb) = (
            d.path().join(format!("{TMP_PREFIX}a")),
            d.path().join(format!("{TMP_PREFIX}b")),
        );
        std::fs::write(&ta, "A").unwrap();
        std::fs::write(&tb, "B").unwrap();
        // a journal written but not yet applied, as a kill would leave it
        let name = |p: &Path| file_name(p);
        let j = Journal {
            renames: vec![(name(&ta), name(&a)), (name(&tb), name(&b))],
        };
        std::fs::write(
            d.path().join(format!("{JOURNAL_PREFIX}a.json")),
            serde_json::to_vec(&j).unwrap(),
        )
        .unwrap();
        std::fs::write(d.path().join(format!("{TMP_PREFIX}stray")), "x").unwrap();
        assert_eq!(clean_leftovers(d.path()).unwrap(), 1);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "A");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "B");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }
}
