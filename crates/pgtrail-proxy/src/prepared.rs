//! Named and unnamed prepared statements and portals, as the server holds
//! them. A name counts only once the server confirmed it (ParseComplete,
//! BindComplete): the reply queue applies each change when its reply
//! arrives, in the server's order, so a failed Parse never shadows an
//! older statement of the same name.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use pgtrail_wire::frontend::Parameters;

/// Statements or portals kept per session before new names are no longer
/// remembered (their Executes are then recorded without SQL text). The
/// server holds them too; this only bounds what a client can make the
/// proxy keep.
pub const MAX_NAMES: usize = 10_000;

/// A portal: a bound statement, ready to run.
#[derive(Debug, Clone)]
pub(crate) struct Portal {
    pub statement: String,
    pub sql: Option<Arc<str>>,
    pub params: Parameters,
    /// Set while a row-limited run is suspended: what it did so far.
    pub progress: Option<Progress>,
}

/// A suspended portal's run so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    pub rows_returned: u64,
    pub executions: u32,
    pub started_at: SystemTime,
}

/// What the server has prepared in this session.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    statements: HashMap<String, Arc<str>>,
    portals: HashMap<String, Portal>,
}

impl Prepared {
    pub fn statement(&self, name: &str) -> Option<Arc<str>> {
        self.statements.get(name).cloned()
    }

    /// After ParseComplete.
    pub fn add_statement(&mut self, name: String, sql: Arc<str>) {
        if self.statements.len() < MAX_NAMES || self.statements.contains_key(&name) {
            self.statements.insert(name, sql);
        }
    }

    /// After CloseComplete for a statement, or a DEALLOCATE.
    pub fn remove_statement(&mut self, name: &str) {
        self.statements.remove(name);
    }

    pub fn portal_mut(&mut self, name: &str) -> Option<&mut Portal> {
        self.portals.get_mut(name)
    }

    /// After BindComplete. Returns the portal it replaced (only the unnamed
    /// one can be replaced), so a suspended run can be recorded.
    pub fn add_portal(&mut self, name: String, portal: Portal) -> Option<Portal> {
        if self.portals.len() < MAX_NAMES || self.portals.contains_key(&name) {
            self.portals.insert(name, portal)
        } else {
            None
        }
    }

    /// After CloseComplete for a portal.
    pub fn remove_portal(&mut self, name: &str) -> Option<(String, Portal)> {
        self.portals.remove_entry(name)
    }

    /// At the end of a transaction every protocol-level portal is gone.
    pub fn end_transaction(&mut self) -> Vec<(String, Portal)> {
        self.portals.drain().collect()
    }

    /// A simple Query drops the unnamed statement and portal.
    pub fn simple_query(&mut self) -> Option<(String, Portal)> {
        self.statements.remove("");
        self.portals.remove_entry("")
    }

    /// Applies a completed SQL command that changes prepared statements:
    /// `PREPARE name AS …`, `DEALLOCATE [PREPARE] name | ALL`, `DISCARD ALL`.
    /// The name is read from `sql` only when it holds that one statement.
    /// Returns portals dropped (DISCARD ALL closes them too).
    pub fn apply_command(&mut self, tag: &str, sql: &str) -> Vec<(String, Portal)> {
        match tag {
            "DEALLOCATE ALL" => self.statements.clear(),
            "DISCARD ALL" => {
                self.statements.clear();
                return self.end_transaction();
            }
            "DEALLOCATE" => {
                let mut words = Words::new(sql);
                words.next(); // DEALLOCATE
                let mut name = words.next();
                if name.as_deref() == Some("prepare") {
                    name = words.next();
                }
                if let (Some(name), true) = (name, words.at_end()) {
                    self.remove_statement(&name);
                }
            }
            "PREPARE" => {
                let mut words = Words::new(sql);
                words.next(); // PREPARE
                if let Some(name) = words.next() {
                    if !sql.trim_end().trim_end_matches(';').contains(';') {
                        self.add_statement(name, Arc::from(sql));
                    }
                }
            }
            _ => {}
        }
        Vec::new()
    }
}

/// SQL identifiers and keywords in order, folded as the server folds them:
/// unquoted to lower case, `"quoted"` kept exactly. Just enough to read
/// the name after PREPARE or DEALLOCATE.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    fn new(sql: &'a str) -> Self {
        Words { rest: sql }
    }

    /// Whether only blanks and semicolons are left.
    fn at_end(&self) -> bool {
        self.rest.trim().trim_matches(';').trim().is_empty()
    }

    fn next(&mut self) -> Option<String> {
        self.rest = self.rest.trim_start();
        if let Some(quoted) = self.rest.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if quoted[i + 1..].starts_with('"') {
                        name.push('"');
                        chars.next();
                    } else {
                        self.rest = &quoted[i + 1..];
                        return Some(name);
                    }
                } else {
                    name.push(c);
                }
            }
            return None;
        }
        let end = self
            .rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let word = self.rest[..end].to_lowercase();
        self.rest = &self.rest[end..];
        Some(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_level_prepare_and_deallocate() {
        let mut prepared = Prepared::default();
        prepared.apply_command("PREPARE", "PREPARE Q1 (int) AS SELECT $1");
        assert!(prepared.statement("q1").is_some(), "unquoted names fold");
        prepared.apply_command("PREPARE", "prepare \"Mixed\"\"Q\" AS SELECT 1");
        assert!(
            prepared.statement("Mixed\"Q").is_some(),
            "quoted names keep case"
        );
        prepared.apply_command("DEALLOCATE", "DEALLOCATE PREPARE q1;");
        assert!(prepared.statement("q1").is_none());
        prepared.apply_command("DEALLOCATE", "deallocate \"Mixed\"\"Q\"");
        assert!(prepared.statement("Mixed\"Q").is_none());
        prepared.add_statement("a".into(), Arc::from("SELECT 1"));
        // Two statements in one text: the name is not guessed.
        prepared.apply_command("DEALLOCATE", "DEALLOCATE a; SELECT 1");
        assert!(prepared.statement("a").is_some());
        prepared.apply_command("DEALLOCATE ALL", "DEALLOCATE ALL");
        assert!(prepared.statement("a").is_none());
    }

    #[test]
    fn names_are_bounded() {
        let mut prepared = Prepared::default();
        for i in 0..MAX_NAMES + 5 {
            prepared.add_statement(format!("s{i}"), Arc::from("SELECT 1"));
        }
        assert_eq!(prepared.statements.len(), MAX_NAMES);
        // Replacing a known name still works at the limit.
        prepared.add_statement("s0".into(), Arc::from("SELECT 2"));
        assert_eq!(prepared.statement("s0").as_deref(), Some("SELECT 2"));
    }
}
