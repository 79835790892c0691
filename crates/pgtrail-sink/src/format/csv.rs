//! CSV (RFC 4180): a header line ([`COLUMNS`], every event field in the
//! schema's order), then one line per record, each ended by CRLF.
//!
//! A cell holding a comma, a quote, CR or LF is quoted, its quotes doubled.
//! Row images, context, parameters and lists are JSON text in one cell.
//! Spreadsheet formula injection: a text cell that starts with `=`, `+`,
//! `-`, `@`, a tab or CR gets a leading `'`, so Excel, LibreOffice and
//! Google Sheets show it as text instead of running it (numbers are
//! written as numbers and are not changed). A text cell that starts with
//! `'` itself gets one more, so the guard can be undone exactly: a program
//! reading the file drops one leading `'` from any text cell that has one. A checkpoint is a line with
//! `kind` = `checkpoint`, its `seq`, `hash` and time, and the whole
//! checkpoint (the signed note included) as JSON in `context`.

use pgtrail_core::Event;
use pgtrail_store::checkpoint::Checkpoint;

/// The columns, in order: every field of an event, in the schema's order
/// (the same as the HTTP API's `events.csv`).
pub const COLUMNS: [&str; 38] = [
    "seq",
    "id",
    "source",
    "kind",
    "captured_at",
    "db_user",
    "app_user",
    "client_addr",
    "client_port",
    "application_name",
    "backend_pid",
    "session_id",
    "context",
    "provenance",
    "database",
    "schema",
    "table",
    "operation",
    "objects",
    "pk",
    "old",
    "new",
    "changed",
    "partial",
    "sql",
    "params",
    "class",
    "command_tag",
    "rows",
    "duration_us",
    "sqlstate",
    "error",
    "xid",
    "lsn",
    "committed_at",
    "tx_seq",
    "prev_hash",
    "hash",
];

/// The header line.
pub(crate) fn header() -> Vec<u8> {
    let mut line = COLUMNS.join(",").into_bytes();
    line.extend_from_slice(b"\r\n");
    line
}

/// One cell's value.
enum Cell {
    Empty,
    Number(i64),
    Text(String),
}

fn text(value: Option<&str>) -> Cell {
    value.map_or(Cell::Empty, |v| Cell::Text(v.to_string()))
}

fn number(value: Option<i64>) -> Cell {
    value.map_or(Cell::Empty, Cell::Number)
}

fn list(items: &[String]) -> Cell {
    if items.is_empty() {
        return Cell::Empty;
    }
    let mut json = Vec::new();
    super::json::strings(&mut json, items);
    Cell::Text(String::from_utf8_lossy(&json).into_owned())
}

fn object(value: Option<&serde_json::Map<String, serde_json::Value>>) -> Cell {
    value.map_or(Cell::Empty, |o| {
        Cell::Text(pgtrail_core::json::object_to_string(o))
    })
}

/// One event as one line.
pub(crate) fn event(e: &Event, out: &mut Vec<u8>) {
    let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        text(t.as_ref().map(pgtrail_core::time::format_micros).as_deref())
    };
    let cells = [
        number(e.seq),
        Cell::Text(e.id.to_string()),
        Cell::Text(e.source.as_str().into()),
        Cell::Text(e.kind.as_str().into()),
        Cell::Text(pgtrail_core::time::format_micros(&e.captured_at)),
        text(e.db_user.as_deref()),
        text(e.app_user.as_deref()),
        text(e.client_addr.as_deref()),
        number(e.client_port.map(i64::from)),
        text(e.application_name.as_deref()),
        number(e.backend_pid.map(i64::from)),
        text(e.session_id.as_deref()),
        object(e.context.as_ref()),
        e.provenance
            .as_ref()
            .and_then(|p| serde_json::to_string(p).ok())
            .map_or(Cell::Empty, Cell::Text),
        text(e.database.as_deref()),
        text(e.schema.as_deref()),
        text(e.table.as_deref()),
        text(e.operation.as_deref()),
        list(&e.objects),
        object(e.pk.as_ref()),
        object(e.old.as_ref()),
        object(e.new.as_ref()),
        list(&e.changed),
        list(&e.partial),
        text(e.sql.as_deref()),
        e.params.as_ref().map_or(Cell::Empty, |p| {
            Cell::Text(pgtrail_core::json::array_to_string(p))
        }),
        text(e.class.as_deref()),
        text(e.command_tag.as_deref()),
        number(e.rows),
        number(e.duration_us),
        text(e.sqlstate.as_deref()),
        text(e.error.as_deref()),
        number(e.xid),
        text(e.lsn.as_deref()),
        time(&e.committed_at),
        number(e.tx_seq),
        text(e.prev_hash.as_deref()),
        text(e.hash.as_deref()),
    ];
    line(&cells, out);
}

/// A checkpoint as one line (see the module's comment).
pub(crate) fn checkpoint(c: &Checkpoint, out: &mut Vec<u8>) {
    let mut cells: Vec<Cell> = COLUMNS.iter().map(|_| Cell::Empty).collect();
    let set = |cells: &mut Vec<Cell>, column: &str, cell: Cell| {
        if let Some(i) = COLUMNS.iter().position(|c| *c == column) {
            cells[i] = cell;
        }
    };
    set(&mut cells, "seq", Cell::Number(c.seq));
    set(&mut cells, "kind", Cell::Text("checkpoint".into()));
    set(
        &mut cells,
        "captured_at",
        Cell::Text(pgtrail_core::time::format_micros(&c.created_at)),
    );
    set(&mut cells, "operation", Cell::Text(c.kind.as_str().into()));
    if let Ok(json) = serde_json::to_string(c) {
        set(&mut cells, "context", Cell::Text(json));
    }
    set(&mut cells, "hash", Cell::Text(c.hash.clone()));
    line(&cells, out);
}

fn line(cells: &[Cell], out: &mut Vec<u8>) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match cell {
            Cell::Empty => {}
            Cell::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Cell::Text(t) => text_cell(t, out),
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// A text cell: neutralised against formulas (see the module's comment),
/// quoted when it holds a comma, a quote or a line break.
pub fn text_cell(text: &str, out: &mut Vec<u8>) {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']);
    let quote = text.contains([',', '"', '\n', '\r']);
    if quote {
        out.push(b'"');
    }
    if formula {
        out.push(b'\'');
    }
    for b in text.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    if quote {
        out.push(b'"');
    }
}
