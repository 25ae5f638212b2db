//! Helpers shared by the integration tests.
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `cmd` with its output discarded, kills it with SIGKILL after `ms` milliseconds and reaps it.
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
