//! The password file (`~/.pgpass`, `PGPASSFILE`, `passfile=`), read as libpq
//! reads it: lines `host:port:database:user:password`, `*` matching
//! anything in the first four fields, `\` escaping `:` and `\`, the first
//! matching line winning. A file that others may read or write (any group or
//! other permission bit) is ignored, as libpq ignores it, and the reason is
//! kept so the "password missing" error can name it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a look-up in the password file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A matching line's password.
    Found(String),
    /// The file was read, and no line matched.
    NoMatch(PathBuf),
    /// There is no such file.
    Missing(PathBuf),
    /// The file exists and was not used: the reason.
    Ignored(PathBuf, String),
}

/// The key a line is matched against.
pub(crate) struct Key<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) dbname: &'a str,
    pub(crate) user: &'a str,
}

/// Looks `key` up in the file at `path`.
pub(crate) fn lookup(path: &Path, key: &Key<'_>) -> Lookup {
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Lookup::Missing(path.to_path_buf()),
    };
    if !metadata.is_file() {
        return Lookup::Ignored(path.to_path_buf(), "it is not a plain file".into());
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Lookup::Ignored(
            path.to_path_buf(),
            format!("its mode is {mode:04o}; libpq and pgtrail use it only at 0600 or stricter (chmod 0600)"),
        );
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return Lookup::Ignored(path.to_path_buf(), format!("it cannot be read: {e}")),
    };
    let port = key.port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_fields(line);
        let [host, line_port, dbname, user, password] = match <[String; 5]>::try_from(fields) {
            Ok(f) => f,
            Err(_) => continue,
        };
        let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        if matches(&host, key.host)
            && matches(&line_port, &port)
            && matches(&dbname, key.dbname)
            && matches(&user, key.user)
        {
            return Lookup::Found(password);
        }
    }
    Lookup::NoMatch(path.to_path_buf())
}

/// Splits a line at unescaped `:` into five fields (the password keeps any
/// further colons, as libpq reads it).
fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(field)) = (chars.next(), fields.last_mut()) {
                    field.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(text: &str, mode: u32) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).expect("chmod");
        f
    }

    fn key<'a>(host: &'a str, user: &'a str) -> Key<'a> {
        Key {
            host,
            port: 5432,
            dbname: "shop",
            user,
        }
    }

    #[test]
    fn first_matching_line_wins_with_wildcards_and_escapes() {
        let f = file(
            "# comment\nother:5432:shop:alice:no\ndb:*:shop:alice:a\\:b:c\n*:*:*:*:fallback\n",
            0o600,
        );
        assert_eq!(
            lookup(f.path(), &key("db", "alice")),
            Lookup::Found("a:b:c".into())
        );
        assert_eq!(
            lookup(f.path(), &key("elsewhere", "bob")),
            Lookup::Found("fallback".into())
        );
        let f = file("db:5433:shop:alice:x\n", 0o600);
        assert!(matches!(
            lookup(f.path(), &key("db", "alice")),
            Lookup::NoMatch(_)
        ));
    }

    #[test]
    fn a_file_others_can_read_is_ignored() {
        for mode in [0o640, 0o604, 0o660] {
            let f = file("*:*:*:*:secret\n", mode);
            match lookup(f.path(), &key("db", "alice")) {
                Lookup::Ignored(_, reason) => assert!(reason.contains("0600"), "{reason}"),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        let f = file("*:*:*:*:secret\n", 0o400);
        assert_eq!(
            lookup(f.path(), &key("db", "alice")),
            Lookup::Found("secret".into())
        );
        assert!(matches!(
            lookup(Path::new("/nonexistent/.pgpass"), &key("db", "a")),
            Lookup::Missing(_)
        ));
    }
}
