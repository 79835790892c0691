//! A text that reads differently with `standard_conforming_strings` on and
//! off (see `strings`), and the one analysis that lets neither reading
//! escape the trail.
//!
//! The proxy learns the session's setting from the server's
//! ParameterStatus, which comes only before ReadyForQuery: a SET earlier in
//! the same message or pipeline, `set_config` in a function, a role's or
//! database's setting all change it before the proxy hears. So a text
//! holding a backslash is analyzed in both modes; when the analyses differ,
//! the server may run either, and the analysis recorded is the expected
//! mode's (the other's when the expected one does not parse: a reading the
//! parser rejects runs nothing), with
//!
//! - every statement in the classes and objects of every statement of both
//!   readings (the server's statements are matched to the analysis's by
//!   position, and the two readings may split the text differently), its
//!   main class the weightiest of them, so a `log` limited to some classes
//!   keeps it if either reading would be kept;
//! - an EXECUTE left unresolved (UNKNOWN, logged whatever the level);
//! - the whole text as each statement's stored text: as written when it
//!   names no secret and no credential, else only if both readings redact
//!   it alike, else withheld ([`crate::WITHHELD`]);
//! - [`Analysis::ambiguous`] set.

use crate::class::{Class, ClassSet};
use crate::statement::Analysis;

/// Classes from the weightiest down: the main class of a statement whose
/// readings disagree.
const WEIGHT: [Class; 8] = [
    Class::Role,
    Class::Ddl,
    Class::Write,
    Class::Function,
    Class::Misc,
    Class::MiscSet,
    Class::Read,
    Class::Unknown,
];

/// The analysis of a text whose `expected` and `other` readings differ;
/// `stored` is the text each statement keeps (decided by the caller, who
/// knows the text policy).
pub(crate) fn ambiguous(expected: Analysis, other: Analysis, stored: String) -> Analysis {
    let (mut base, readings) = match (expected.parsed, other.parsed) {
        (false, true) => (other.clone(), vec![other]),
        (true, false) => (expected.clone(), vec![expected]),
        _ => (expected.clone(), vec![expected, other]),
    };
    let mut classes = ClassSet::default();
    let mut objects = Vec::new();
    let mut functions = Vec::new();
    for statement in readings.iter().flat_map(|r| &r.statements) {
        for class in statement.classes.iter() {
            classes.insert(class);
        }
        classes.insert(statement.class);
        objects.extend(statement.objects.iter().cloned());
        functions.extend(statement.functions.iter().cloned());
    }
    objects.sort();
    objects.dedup();
    functions.sort();
    functions.dedup();
    let main = WEIGHT
        .into_iter()
        .find(|c| classes.contains(*c))
        .unwrap_or(Class::Unknown);
    if base.statements.iter().any(|s| s.execute.is_some()) {
        // What an EXECUTE runs may be either reading's: left UNKNOWN.
        classes.insert(Class::Unknown);
    }
    for statement in &mut base.statements {
        statement.execute = None;
        statement.class = main;
        statement.classes = classes;
        statement.objects = objects.clone();
        statement.functions = functions.clone();
        statement.sql = stored.clone();
    }
    base.ambiguous = true;
    base
}
