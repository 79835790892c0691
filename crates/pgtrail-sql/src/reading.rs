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

/// Most backslashes a text may hold that may be second bytes of
/// characters (`strings::multibyte_suspects`) and still be read every way
/// (2^n readings in each mode); a text with more is [`unreadable`].
pub(crate) const MAX_SUSPECTS: usize = 4;

/// The analysis of a text whose `expected` reading and `others` differ;
/// `stored` is the text each statement keeps (decided by the caller, who
/// knows the text policy). Readings the parser rejects run nothing, so
/// only the parsed ones count, unless none parsed.
pub(crate) fn ambiguous(expected: Analysis, others: Vec<Analysis>, stored: String) -> Analysis {
    let mut all = Vec::with_capacity(others.len() + 1);
    all.push(expected);
    all.extend(others);
    let readings: Vec<Analysis> = if all.iter().any(|r| r.parsed) {
        all.into_iter().filter(|r| r.parsed).collect()
    } else {
        all
    };
    let mut base = readings[0].clone();
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

/// A text with too many ways to read it (more than [`MAX_SUSPECTS`]
/// suspect backslashes): the two modes' readings merged, then every
/// statement also UNKNOWN (logged whatever the level) and naming no object
/// (so no rule excluding some tables can match it).
pub(crate) fn unreadable(expected: Analysis, other: Analysis, stored: String) -> Analysis {
    let mut analysis = ambiguous(expected, vec![other], stored);
    for statement in &mut analysis.statements {
        statement.classes.insert(Class::Unknown);
        statement.objects.clear();
    }
    analysis.encoding_ambiguous = true;
    analysis
}

/// Whether two readings are the same analysis but for the text they store
/// (a reading with a byte replaced stores that byte).
pub(crate) fn same_but_text(a: &Analysis, b: &Analysis) -> bool {
    a.parsed == b.parsed
        && a.statements.len() == b.statements.len()
        && a.statements.iter().zip(&b.statements).all(|(x, y)| {
            let mut x = x.clone();
            x.sql.clone_from(&y.sql);
            x == *y
        })
}
