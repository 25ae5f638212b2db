//! Helpers shared by the integration tests.
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `cmd` with its output discarded, kills it with SIGKILL after `ms` milliseconds and reaps it.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn kill_after(cmd: &mut Command, ms: u64) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the binary under test");
    std::thread::sleep(Duration::from_millis(ms));
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

/// Runs `cmd`; with `kill_at`, the process is to SIGKILL itself at that kill point
/// (`CELLSENTENCE_KILL_AT`), else to succeed. Returns its stdout.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn run_or_kill_at(cmd: &mut Command, kill_at: Option<&str>) -> String {
    if let Some(k) = kill_at {
        cmd.env("CELLSENTENCE_KILL_AT", k);
    }
    let o = cmd.output().expect("run the binary under test");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    use std::os::unix::process::ExitStatusExt;
    match kill_at {
        None => assert!(o.status.success(), "{err}"),
        Some(_) => assert_eq!(o.status.signal(), Some(9), "not killed: {err}"),
    }
    String::from_utf8_lossy(&o.stdout).to_string()
}
