//! Clusters left behind by a process that died without dropping them.
//!
//! `Drop` cleans up after a panic, but not after SIGKILL, an abort or a
//! stack overflow: the server would run on and its directory fill the temp
//! dir, run after run. So each temporary cluster's directory names its
//! owner process (pid and start time, so a reused pid is not mistaken for
//! the owner), and the first temporary cluster a process starts stops and
//! removes every cluster whose owner is gone.

use std::path::Path;
use std::sync::Once;

use crate::cluster::Cluster;
use crate::find_bindir;

/// Temporary cluster directories are `<temp dir>/pgtrail-test-<uuid>`.
pub(crate) const DIR_PREFIX: &str = "pgtrail-test-";

/// The file in a cluster's directory naming its owner: `<pid> <start time>`.
const OWNER_FILE: &str = "owner";

/// Records this process as the owner of the cluster in `dir`.
pub(crate) fn write_owner(dir: &Path) -> std::io::Result<()> {
    let pid = std::process::id();
    let started = start_time(pid).unwrap_or(0);
    std::fs::write(dir.join(OWNER_FILE), format!("{pid} {started}\n"))
}

/// Reaps orphans once per process (each nextest test is a process of its own).
pub(crate) fn reap_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        reap_orphans();
    });
}

/// Stops and removes every temporary cluster whose owner process is gone;
/// returns how many. A directory without an owner file (being created, or
/// made by an older testkit) is left alone.
pub fn reap_orphans() -> usize {
    let Ok(bins) = find_bindir() else { return 0 };
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_cluster = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(DIR_PREFIX));
        if is_cluster && owner_is_gone(&dir) {
            // Dropping an adopted cluster stops its server and removes it.
            drop(Cluster::adopt(bins.clone(), dir));
            reaped += 1;
        }
    }
    reaped
}

fn owner_is_gone(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
        return false;
    };
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(pid)), Some(Ok(started))) = (fields.next(), fields.next()) else {
        // Half written: its owner is alive and writing it.
        return false;
    };
    let Ok(pid) = u32::try_from(pid) else {
        return true;
    };
    start_time(pid) != Some(started)
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`
/// field 22), or `None` when there is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // fields from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_start_time_and_a_dead_pid_has_none() {
        assert!(start_time(std::process::id()).is_some());
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert_eq!(start_time(pid), None);
    }

    #[test]
    fn an_owner_file_with_another_start_time_names_a_dead_owner() {
        let dir =
            std::env::temp_dir().join(format!("reaper-unit-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        write_owner(&dir).expect("write owner");
        assert!(!owner_is_gone(&dir), "this process owns it");
        let pid = std::process::id();
        std::fs::write(dir.join(OWNER_FILE), format!("{pid} 1\n")).expect("rewrite");
        assert!(owner_is_gone(&dir), "same pid, other start: a reused pid");
        std::fs::write(dir.join(OWNER_FILE), "12").expect("rewrite");
        assert!(!owner_is_gone(&dir), "half written: left alone");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
