//! Finding PostgreSQL's server binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TestkitError;

/// The directory holding initdb, postgres and pg_ctl, and its major version.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    /// The bin directory.
    pub bindir: PathBuf,
    /// Major version, e.g. 15.
    pub major: u32,
}

impl PgBinaries {
    /// Path of one program in the bin directory.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "postgres", "pg_ctl"]
        .iter()
        .all(|p| dir.join(p).is_file())
}

/// Finds the server binaries (see the crate docs for the search order).
pub fn find_bindir() -> Result<PgBinaries, TestkitError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("PGTRAIL_TEST_PGBIN") {
        candidates.push(PathBuf::from(dir));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    candidates.extend(versioned.into_iter().map(|(_, dir)| dir));

    let found = candidates
        .into_iter()
        .find(|d| has_server(d))
        .ok_or(TestkitError::NoBinaries)?;
    // /usr/local/bin may hold symlinks to one version's programs; the real
    // directory also has psql, pg_recvlogical and the rest of that version.
    let bindir = std::fs::canonicalize(found.join("initdb"))
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or(found);
    let major = server_major(&bindir)?;
    Ok(PgBinaries { bindir, major })
}

fn server_major(bindir: &Path) -> Result<u32, TestkitError> {
    let program = bindir.join("postgres");
    let out = Command::new(&program)
        .arg("--version")
        .output()
        .map_err(|e| TestkitError::Command {
            command: format!("{} --version", program.display()),
            detail: e.to_string(),
        })?;
    // "postgres (PostgreSQL) 15.18 (Debian …)"
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|word| word.split('.').next()?.parse::<u32>().ok())
        .ok_or_else(|| TestkitError::Command {
            command: format!("{} --version", program.display()),
            detail: format!("unexpected output: {text}"),
        })
}
