//! Loading the configuration: file → `PGTRAIL_*` environment → flags.
//!
//! The file is `--config FILE` (or `PGTRAIL_CONFIG`), else `pgtrail.toml` in
//! the working directory when it exists, else the defaults. Environment
//! variables named `PGTRAIL_SECTION__KEY` (double underscore between section
//! and key, e.g. `PGTRAIL_STORE__URL`, `PGTRAIL_SIGNING__PRIVATE_KEY`) then
//! override single keys; variables without `__` (such as `PGTRAIL_STORE`,
//! the `--store` flag's variable) are flags, not config keys. Unknown keys,
//! in the file or the environment, are errors that name the key: a typo must
//! never silently fall back to a default.
//!
//! The overlay is done on the TOML value and then deserialized into
//! `pgtrail_core::config::Config` once, so one set of serde rules
//! (`deny_unknown_fields`, types, `validate`) applies to every layer. This
//! keeps the dependency list short (no figment) for about thirty lines.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use pgtrail_core::config::Config;

/// The file used when `--config` is not given.
pub const DEFAULT_FILE: &str = "pgtrail.toml";

/// Prefix of configuration environment variables.
const ENV_PREFIX: &str = "PGTRAIL_";

/// Sections renamed when each word came to mean one thing (ARCHITECTURE.md,
/// "Glossary"): (old, new). The old name is still read, with a warning.
const RENAMED_SECTIONS: &[(&str, &str)] = &[("capture", "replication")];

/// Keys renamed likewise: (section, old, new).
const RENAMED_KEYS: &[(&str, &str, &str)] =
    &[("triggers", "seal_interval_ms", "drain_interval_ms")];

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged, validated configuration.
    pub config: Config,
    /// The file read, if any.
    pub file: Option<PathBuf>,
}

/// Loads `explicit` (must exist) or `pgtrail.toml` (if it exists), overlays
/// `env` (`(name, value)` pairs, normally `std::env::vars()`), and validates.
pub fn load(
    explicit: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Loaded> {
    let (mut table, file) = match explicit {
        Some(path) => (read_table(path)?, Some(path.to_path_buf())),
        None if Path::new(DEFAULT_FILE).exists() => {
            let path = PathBuf::from(DEFAULT_FILE);
            (read_table(&path)?, Some(path))
        }
        None => (toml::Table::new(), None),
    };
    rename_deprecated(&mut table)?;
    let origin = file
        .as_ref()
        .map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
    let overridden = overlay_env(&mut table, env)?;
    let config: Config = toml::Value::Table(table).try_into().with_context(|| {
        if overridden.is_empty() {
            format!("invalid configuration in {origin}")
        } else {
            format!(
                "invalid configuration ({origin}, with environment variables {})",
                overridden.join(", ")
            )
        }
    })?;
    config
        .validate()
        .with_context(|| format!("invalid configuration ({origin} and PGTRAIL_* environment)"))?;
    Ok(Loaded { config, file })
}

/// Reads a file as a TOML table; errors name the file, the line and the key.
fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    // Deserialize into Config first: that checks key names and types with
    // line numbers, which the plain table would not. An old and a new name
    // at once is said first: serde would only call it a duplicate.
    if let Ok(table) = text.parse::<toml::Table>() {
        refuse_both_names(&table).with_context(|| path.display().to_string())?;
    }
    if let Err(e) = toml::from_str::<Config>(&text) {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let at = line.map(|n| format!(" line {n}")).unwrap_or_default();
        bail!("{}{at}: {}", path.display(), e.message().trim());
    }
    text.parse::<toml::Table>()
        .with_context(|| format!("cannot parse {}", path.display()))
}

/// Moves sections and keys under a deprecated name to their new name,
/// warning once for each; both names at once is an error (which one meant?).
fn rename_deprecated(table: &mut toml::Table) -> anyhow::Result<()> {
    refuse_both_names(table)?;
    for (old, new) in RENAMED_SECTIONS {
        if let Some(section) = table.remove(*old) {
            tracing::warn!("[{old}] in the configuration is deprecated: call it [{new}].");
            table.insert(new.to_string(), section);
        }
    }
    for (section, old, new) in RENAMED_KEYS {
        let Some(section_table) = table.get_mut(*section).and_then(toml::Value::as_table_mut)
        else {
            continue;
        };
        if let Some(value) = section_table.remove(*old) {
            tracing::warn!("[{section}] {old} in the configuration is deprecated: call it {new}.");
            section_table.insert(new.to_string(), value);
        }
    }
    Ok(())
}

/// An old and a new name at once: which one was meant?
fn refuse_both_names(table: &toml::Table) -> anyhow::Result<()> {
    for (old, new) in RENAMED_SECTIONS {
        if table.contains_key(*old) && table.contains_key(*new) {
            bail!("both [{old}] and [{new}] are set: [{old}] is the old name of [{new}], keep one");
        }
    }
    for (section, old, new) in RENAMED_KEYS {
        let both = |s: &toml::Value| s.get(*old).is_some() && s.get(*new).is_some();
        if table.get(*section).is_some_and(both) {
            bail!("both [{section}] {old} and {new} are set: {old} is the old name of {new}, keep one");
        }
    }
    Ok(())
}

/// The current name of a section or key that may be given by its old name.
fn current_name(section: &str, key: &str) -> (String, String) {
    let section = RENAMED_SECTIONS
        .iter()
        .find(|(old, _)| *old == section)
        .map_or(section, |(_, new)| new);
    let key = RENAMED_KEYS
        .iter()
        .find(|(s, old, _)| *s == section && *old == key)
        .map_or(key, |(_, _, new)| new);
    (section.to_string(), key.to_string())
}

/// Applies `PGTRAIL_SECTION__KEY=value` variables to `table`; returns their names.
///
/// A value starting with `[` is read as a TOML array (for list keys such as
/// `identity.user_settings`); a key whose default is a number or a boolean
/// (`replication.batch_events`) is read as one; anything else is a string.
fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Vec<String>> {
    let defaults = toml::Table::try_from(Config::default())
        .context("the default configuration is not a TOML table")?;
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name.contains("__"))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let [section, key] = path.as_slice() else {
            bail!("environment variable {name}: expected PGTRAIL_SECTION__KEY, e.g. PGTRAIL_STORE__URL");
        };
        // PGTRAIL_CAPTURE__DB still sets [replication] db.
        let (section, key) = current_name(section, key);
        let (section, key) = (&section, &key);
        let value = if value.trim_start().starts_with('[') {
            let wrapped: toml::Table = format!("v = {value}").parse().with_context(|| {
                format!("environment variable {name}: not a TOML array: {value}")
            })?;
            wrapped
                .get("v")
                .cloned()
                .unwrap_or(toml::Value::String(value))
        } else {
            let default = defaults.get(section).and_then(|s| s.get(key.as_str()));
            match default {
                Some(toml::Value::Integer(_)) => {
                    toml::Value::Integer(value.trim().parse().with_context(|| {
                        format!("environment variable {name}: not a whole number: {value}")
                    })?)
                }
                Some(toml::Value::Boolean(_)) => {
                    toml::Value::Boolean(value.trim().parse().with_context(|| {
                        format!("environment variable {name}: expected true or false: {value}")
                    })?)
                }
                _ => toml::Value::String(value),
            }
        };
        let section_table = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section_table) = section_table.as_table_mut() else {
            bail!("environment variable {name}: '{section}' is not a section");
        };
        section_table.insert(key.clone(), value);
        applied.push(name);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[store]\nurl = \"sqlite:a.db\"\n").expect("write");
        let loaded = load(
            Some(&file),
            env(&[
                ("PGTRAIL_STORE__URL", "sqlite:b.db"),
                ("PGTRAIL_SIGNING__PRIVATE_KEY", "/k"),
                ("PGTRAIL_IDENTITY__USER_SETTINGS", "[\"app.user\"]"),
                ("PGTRAIL_STORE", "ignored: a flag's variable"),
            ]),
        )
        .expect("load");
        assert_eq!(loaded.config.store.url, "sqlite:b.db");
        assert_eq!(loaded.config.signing.private_key.as_deref(), Some("/k"));
        assert_eq!(loaded.config.identity.user_settings, ["app.user"]);
    }

    #[test]
    fn numbers_from_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[replication]\nslot = \"a\"\n").expect("write");
        let loaded = load(
            Some(&file),
            env(&[
                ("PGTRAIL_REPLICATION__BATCH_EVENTS", "100"),
                ("PGTRAIL_REPLICATION__DB", "postgres://u@h/db"),
            ]),
        )
        .expect("load");
        assert_eq!(loaded.config.replication.batch_events, 100);
        assert_eq!(loaded.config.replication.slot, "a");
        assert_eq!(
            loaded.config.replication.db.as_deref(),
            Some("postgres://u@h/db")
        );

        let err = load(
            Some(&file),
            env(&[("PGTRAIL_REPLICATION__LAG_WARN_MB", "lots")]),
        )
        .expect_err("not a number");
        assert!(
            format!("{err:#}").contains("PGTRAIL_REPLICATION__LAG_WARN_MB"),
            "{err:#}"
        );
    }

    #[test]
    fn old_names_still_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            "[capture]\nslot = \"a\"\n[triggers]\nseal_interval_ms = 250\n",
        )
        .expect("write");
        let loaded = load(
            Some(&file),
            env(&[
                // A number, read as one: the old section's defaults are found.
                ("PGTRAIL_CAPTURE__BATCH_EVENTS", "100"),
                ("PGTRAIL_TRIGGERS__SEAL_INTERVAL_MS", "300"),
            ]),
        )
        .expect("load");
        assert_eq!(loaded.config.replication.slot, "a");
        assert_eq!(loaded.config.replication.batch_events, 100);
        assert_eq!(loaded.config.triggers.drain_interval_ms, 300);

        // The file alone, and the old environment name over a new section.
        let loaded = load(Some(&file), env(&[])).expect("load");
        assert_eq!(loaded.config.triggers.drain_interval_ms, 250);
        std::fs::write(&file, "[replication]\nslot = \"a\"\n").expect("write");
        let loaded = load(Some(&file), env(&[("PGTRAIL_CAPTURE__SLOT", "b")])).expect("load");
        assert_eq!(loaded.config.replication.slot, "b");
    }

    #[test]
    fn an_old_and_a_new_name_at_once_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            "[triggers]\nseal_interval_ms = 250\ndrain_interval_ms = 100\n",
        )
        .expect("write");
        let err = format!("{:#}", load(Some(&file), env(&[])).expect_err("both"));
        assert!(
            err.contains("both [triggers] seal_interval_ms and drain_interval_ms"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[store]\nulr = \"sqlite:a.db\"\n").expect("write");
        let err = format!("{:#}", load(Some(&file), env(&[])).expect_err("typo"));
        assert!(err.contains("ulr"), "{err}");

        std::fs::write(&file, "").expect("write");
        let err = format!(
            "{:#}",
            load(Some(&file), env(&[("PGTRAIL_STORE__ULR", "x")])).expect_err("typo")
        );
        assert!(
            err.contains("ulr") && err.contains("PGTRAIL_STORE__ULR"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let err = load(Some(Path::new("/nonexistent/p.toml")), env(&[])).expect_err("missing");
        assert!(format!("{err:#}").contains("/nonexistent/p.toml"));
    }
}
