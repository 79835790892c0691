//! What the proxy learns about one statement.

use std::sync::Arc;
use std::time::SystemTime;

use pgtrail_wire::backend::{ErrorFields, TransactionStatus};
use pgtrail_wire::frontend::Parameters;

/// How the statement was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Statement `part` (0-based) of a simple-protocol Query, which may hold
    /// several statements separated by semicolons; `sql` is the whole text.
    Simple {
        /// Which statement of the text.
        part: u32,
    },
    /// An Execute of a portal (extended protocol).
    Extended,
    /// The legacy FunctionCall message.
    FunctionCall {
        /// The function's OID.
        oid: u32,
    },
}

/// The protocol step a failure was reported for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A simple Query.
    Query,
    /// Parse (syntax errors, unknown tables, …).
    Parse,
    /// Bind (bad parameter values, …).
    Bind,
    /// Describe.
    Describe,
    /// Execute.
    Execute,
    /// Close.
    Close,
    /// Sync (the implicit transaction's commit, e.g. a deferred constraint).
    Sync,
    /// FunctionCall.
    FunctionCall,
}

/// How a statement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server reported completion (CommandComplete or a function result).
    Completed,
    /// The server reported an error.
    Failed {
        /// At which step.
        step: Step,
        /// Severity, SQLSTATE, message, detail, hint, …
        error: ErrorFields,
    },
    /// Not run: an earlier message of the same pipeline failed, and the
    /// server discards everything until the next Sync.
    NotRun,
    /// A portal run with a row limit was closed (Close, end of transaction,
    /// rebinding the unnamed portal) before it completed.
    Suspended,
    /// The connection ended before the server answered: it may or may not
    /// have run.
    NoReply,
}

/// One statement, complete: everything known once its result is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRecord {
    /// How it was sent.
    pub protocol: Protocol,
    /// The SQL text, as sent (`None` for a FunctionCall, or an Execute of a
    /// statement the proxy never saw prepared).
    pub sql: Option<Arc<str>>,
    /// Extended protocol: the prepared statement's name (`""` is unnamed).
    pub statement: Option<String>,
    /// Extended protocol: the portal's name (`""` is unnamed).
    pub portal: Option<String>,
    /// Bind parameters (or FunctionCall arguments): formats and raw values.
    pub params: Parameters,
    /// The command tag, e.g. `INSERT 0 3`.
    pub command_tag: Option<String>,
    /// Rows the tag reports (affected, or returned by SELECT).
    pub rows: Option<u64>,
    /// DataRow messages the client received for it.
    pub rows_returned: u64,
    /// CopyData payload bytes, either direction.
    pub copy_bytes: u64,
    /// Execute messages it took (more than one with a row limit).
    pub executions: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// When the server could start it (sent, and the previous reply done).
    pub started_at: SystemTime,
    /// When its last reply arrived.
    pub finished_at: SystemTime,
    /// The transaction status at the next ReadyForQuery after it.
    pub transaction_status: Option<TransactionStatus>,
    /// The backend's process id (from BackendKeyData).
    pub backend_pid: Option<i32>,
}

impl StatementRecord {
    pub(crate) fn new(protocol: Protocol, sql: Option<Arc<str>>, now: SystemTime) -> Self {
        StatementRecord {
            protocol,
            sql,
            statement: None,
            portal: None,
            params: Parameters::default(),
            command_tag: None,
            rows: None,
            rows_returned: 0,
            copy_bytes: 0,
            executions: 0,
            outcome: Outcome::Completed,
            started_at: now,
            finished_at: now,
            transaction_status: None,
            backend_pid: None,
        }
    }

    /// The SQLSTATE when it failed.
    pub fn sqlstate(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Failed { error, .. } => Some(error.code()),
            _ => None,
        }
    }
}
