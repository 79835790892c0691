//! SQL understood by the real Postgres parser (`pg_query`, libpg_query):
//! redaction of statement text before it enters the trail, and what the
//! statement proxy's events say about a statement: [`Analyzer`] turns a
//! text into one [`Statement`] per statement (class in pgAudit's
//! vocabulary, command, transaction control, objects, the application's
//! claims), once per distinct text (or per shape: texts that differ only
//! in their literals share one parse, see `shape`). See the `statement`, `class`,
//! `objects` and `claims` modules for the rules and their limits.
//!
//! Kept out of `pgtrail-core` on purpose: libpg_query is a C build (and
//! bindgen needs libclang), which only the crates that read statement text
//! should pay for.
//!
//! Two redactions, both keeping the rest of the text as written (they
//! splice at the scanner's token positions, so the statement stays
//! readable):
//!
//! - [`redact_secrets`]: passwords and connection-string credentials
//!   (`CREATE/ALTER ROLE … PASSWORD`, `OPTIONS (password …)` of servers and
//!   user mappings, `CREATE/ALTER SUBSCRIPTION … CONNECTION`, conninfo
//!   `password=…` and URI `scheme://user:secret@host` inside any literal or
//!   comment). Applied to every statement text pgtrail stores.
//! - [`redact_constants`]: every constant (as `pg_query::normalize` does,
//!   but from the scanner, so it works on any text that scans). For
//!   statement text of installs with masked columns: a masked value can
//!   only appear in the text as a constant.
//!
//! Text that cannot be parsed is not trusted to be understood: every string
//! literal is replaced. Text that cannot even be scanned (an unterminated
//! quote, a NUL byte) is withheld whole, with [`WITHHELD`] in its place.

mod binds;
mod cache;
mod claims;
mod class;
mod literal;
mod objects;
mod reading;
mod redact;
mod shape;
mod statement;
mod strings;
mod token;

pub use cache::{Analyzer, TextPolicy, MAX_CACHED_TEXT};
pub use claims::{
    startup_options, Claim, ClaimChannel, ClaimField, ClaimScope, ClaimTracker, ClaimValue, Held,
};
pub use class::{Class, ClassSet};
pub use objects::{Access, Object, ObjectRef, Resolution, Resolver, SearchPath};
pub use redact::{
    redact_constants, redact_constants_outside_ddl, redact_secrets, redact_value, RedactMode,
    Redaction, Redactor, REDACTED, WITHHELD,
};
pub use statement::{Analysis, Deallocate, Runs, Statement, Transaction};
pub use strings::{mode_matters, StandardStrings};

/// `name` as a double-quoted SQL identifier (inner quotes doubled), for SQL
/// pgtrail writes around a name it was given: always quoted, so a keyword
/// or a mixed-case name stays one identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
