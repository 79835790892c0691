//! What to log: `[proxy] log` (a level), ordered `[[proxy.rules]]` (first
//! match wins) and `sample_reads` for the reads no rule chose.
//!
//! The rules are written so that a client cannot steer them:
//! - tables are matched against the statement's objects as the parser
//!   names them (quoting folded as Postgres folds it) with their schema
//!   resolved from the session's tracked `search_path`, never against the
//!   text;
//! - an `include` rule matches when the statement touches any of its tables
//!   or has any of its classes; an `exclude` rule only when every table the
//!   statement touches is one of its tables and every class it has is one of
//!   its classes (joining an excluded table to a read of another does not
//!   hide the read);
//! - an `exclude` rule cannot name `app_user` (refused at start): the
//!   application user is a claim any role can make;
//! - sampling only ever drops a pure READ that succeeded: writes, DDL,
//!   ROLE, functions and failures are never sampled away.

use pgtrail_core::config::{ProxyConfig, ProxyRule, RuleAction};
use pgtrail_sql::{Class, ClassSet, Object};

use super::EventsError;

/// `[proxy] log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Level {
    /// `none`: nothing at all is recorded (audit off).
    pub none: bool,
    /// `all`.
    pub all: bool,
    /// The classes named.
    pub classes: ClassSet,
    /// `failed` named (or `all`).
    pub failed: bool,
}

/// A table name of a rule: `schema.table` or `table`, each part folded as
/// Postgres folds an identifier (unquoted: lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    pub(crate) fn parse(text: &str) -> Option<TableName> {
        let mut parts = Vec::new();
        let mut chars = text.trim().chars().peekable();
        loop {
            let mut part = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        Some('"') => break,
                        Some(c) => part.push(c),
                        None => return None,
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == '.' || c == '"' {
                        break;
                    }
                    part.push(c.to_ascii_lowercase());
                    chars.next();
                }
                part = part.trim().to_string();
            }
            if part.is_empty() {
                return None;
            }
            parts.push(part);
            match chars.next() {
                None => break,
                Some('.') => continue,
                Some(_) => return None,
            }
        }
        match parts.len() {
            1 => Some(TableName {
                schema: None,
                name: parts.pop()?,
            }),
            2 => {
                let name = parts.pop()?;
                Some(TableName {
                    schema: parts.pop(),
                    name,
                })
            }
            _ => None,
        }
    }

    /// Whether `object` is this table. An object whose schema is unknown
    /// (an empty `search_path`) matches by name only when `lenient`.
    fn matches(&self, object: &Object, lenient: bool) -> bool {
        if object.name != self.name {
            return false;
        }
        match (&self.schema, &object.schema) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => lenient,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    include: bool,
    db_user: Vec<String>,
    app_user: Vec<String>,
    database: Vec<String>,
    tables: Vec<TableName>,
    classes: ClassSet,
    failed: bool,
    /// The rule names something only a statement has (table, class, app user).
    statement_only: bool,
}

/// What a statement is, for the rules.
pub(crate) struct Facts<'a> {
    pub db_user: Option<&'a str>,
    pub app_user: Option<&'a str>,
    pub database: Option<&'a str>,
    pub objects: &'a [Object],
    pub classes: ClassSet,
    pub failed: bool,
}

/// The log policy of one proxy.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub level: Level,
    rules: Vec<Rule>,
    /// `sample_reads` as a threshold on a 64-bit hash.
    sample: u64,
}

fn class_names(names: &[String], key: &str) -> Result<(ClassSet, bool), EventsError> {
    let mut classes = ClassSet::default();
    let mut failed = false;
    for name in names {
        if name.eq_ignore_ascii_case("failed") {
            failed = true;
        } else if let Some(class) = Class::parse(name) {
            classes.insert(class);
        } else {
            return Err(EventsError::Config {
                key: key.into(),
                reason: format!("unknown statement class '{name}'"),
            });
        }
    }
    Ok((classes, failed))
}

impl Policy {
    pub(crate) fn new(config: &ProxyConfig) -> Result<Policy, EventsError> {
        let words: Vec<String> = config.log.iter().map(|w| w.to_ascii_lowercase()).collect();
        let level = match words.as_slice() {
            [w] if w == "none" => Level {
                none: true,
                all: false,
                classes: ClassSet::default(),
                failed: false,
            },
            [w] if w == "all" => Level {
                none: false,
                all: true,
                classes: Class::ALL.into_iter().collect(),
                failed: true,
            },
            [] => {
                return Err(EventsError::Config {
                    key: "proxy.log".into(),
                    reason: "empty (use \"none\" to log nothing)".into(),
                })
            }
            words => {
                let (classes, failed) = class_names(words, "proxy.log")?;
                Level {
                    none: false,
                    all: false,
                    classes,
                    failed,
                }
            }
        };
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.iter().enumerate() {
            rules.push(Rule::new(rule, i)?);
        }
        let rate = config.sample_reads;
        if !(0.0..=1.0).contains(&rate) {
            return Err(EventsError::Config {
                key: "proxy.sample_reads".into(),
                reason: "must be between 0.0 and 1.0".into(),
            });
        }
        // 1.0 keeps everything (u64::MAX would drop a hash of exactly MAX).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let sample = if rate >= 1.0 {
            u64::MAX
        } else {
            (rate * u64::MAX as f64) as u64
        };
        Ok(Policy {
            level,
            rules,
            sample,
        })
    }

    /// Whether a statement is logged. `draw` is the statement's
    /// deterministic sampling number.
    pub(crate) fn keeps(&self, facts: &Facts<'_>, draw: u64) -> bool {
        if self.level.none {
            return false;
        }
        for rule in &self.rules {
            if rule.matches(facts) {
                return rule.include;
            }
        }
        if facts.failed {
            // Failures are always logged unless a rule said otherwise.
            return true;
        }
        if !self.level.all && !facts.classes.intersects(self.level.classes) {
            return false;
        }
        let pure_read = facts.classes == ClassSet::of(Class::Read);
        if pure_read && self.sample != u64::MAX {
            return draw < self.sample;
        }
        true
    }

    /// Whether a session's events (connect, failed login, disconnect) are
    /// logged: unless the level is `none` or the first rule that can judge a
    /// session (one naming only `db_user` and `database`) excludes it.
    pub(crate) fn keeps_session(&self, db_user: Option<&str>, database: Option<&str>) -> bool {
        if self.level.none {
            return false;
        }
        let facts = Facts {
            db_user,
            app_user: None,
            database,
            objects: &[],
            classes: ClassSet::default(),
            failed: false,
        };
        for rule in self.rules.iter().filter(|r| !r.statement_only) {
            if rule.matches(&facts) {
                return rule.include;
            }
        }
        true
    }
}

impl Rule {
    fn new(rule: &ProxyRule, i: usize) -> Result<Rule, EventsError> {
        let include = rule.action == RuleAction::Include;
        if !include && !rule.app_user.is_empty() {
            return Err(EventsError::Config {
                key: format!("proxy.rules[{i}].app_user"),
                reason: "an exclude rule cannot name app_user: the application user is a claim, \
                         and any role could claim it to go unlogged"
                    .into(),
            });
        }
        let mut tables = Vec::with_capacity(rule.table.len());
        for table in &rule.table {
            tables.push(TableName::parse(table).ok_or_else(|| EventsError::Config {
                key: format!("proxy.rules[{i}].table"),
                reason: format!("'{table}' is not table or schema.table"),
            })?);
        }
        let (classes, failed) = class_names(&rule.class, &format!("proxy.rules[{i}].class"))?;
        let any = !(rule.db_user.is_empty()
            && rule.app_user.is_empty()
            && rule.database.is_empty()
            && tables.is_empty()
            && rule.class.is_empty());
        if !any {
            return Err(EventsError::Config {
                key: format!("proxy.rules[{i}]"),
                reason: "names nothing to match (db_user, app_user, database, table, class)".into(),
            });
        }
        Ok(Rule {
            include,
            db_user: rule.db_user.clone(),
            app_user: rule.app_user.clone(),
            database: rule.database.clone(),
            statement_only: !tables.is_empty()
                || !rule.class.is_empty()
                || !rule.app_user.is_empty(),
            tables,
            classes,
            failed,
        })
    }

    fn matches(&self, facts: &Facts<'_>) -> bool {
        let listed = |list: &[String], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|l| l == v))
        };
        if !listed(&self.db_user, facts.db_user)
            || !listed(&self.app_user, facts.app_user)
            || !listed(&self.database, facts.database)
        {
            return false;
        }
        if !self.tables.is_empty() {
            let named = |o: &Object| self.tables.iter().any(|t| t.matches(o, self.include));
            let hit = if self.include {
                facts.objects.iter().any(named)
            } else {
                !facts.objects.is_empty() && facts.objects.iter().all(named)
            };
            if !hit {
                return false;
            }
        }
        if self.classes != ClassSet::default() || self.failed {
            let mut has = facts.classes;
            let failed_ok = !facts.failed || self.failed;
            if self.include {
                let class_hit = has.intersects(self.classes) || (facts.failed && self.failed);
                if !class_hit {
                    return false;
                }
            } else {
                // Every class the statement has must be excluded, a
                // failure included.
                has = ClassSet::from_iter(has.iter().filter(|c| !self.classes.contains(*c)));
                if has != ClassSet::default() || !failed_ok {
                    return false;
                }
            }
        }
        true
    }
}

/// A statement's sampling draw: a hash of the session and its statement
/// number (deterministic, and different for each execution of one text).
pub(crate) fn draw(session: u64, statement: u64) -> u64 {
    // splitmix64 of the pair.
    let mut z = session
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(statement)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
