//! The JSON API under `/api/v1` (docs/api.md).
//!
//! One table, [`ROUTES`], says every route: its method, path, parameters
//! and answers, and the handler it runs. The router is built from it and
//! the OpenAPI document (`/api/v1/openapi.json`) is written from it, so a
//! route cannot exist undocumented.
//!
//! Every handler reads as a [`Principal`](crate::auth::Principal), records
//! its access in the trail before it answers (`AppState::record_access`;
//! a read that cannot be recorded is refused), reads query parameters
//! strictly ([`params`]) and fails as `application/problem+json`
//! ([`problem`]).

pub mod ddl;
pub mod events;
pub mod export;
pub mod openapi;
pub mod params;
pub mod problem;
pub mod reports;
pub mod rows;
pub mod sessions;
pub mod status;
pub mod tail;
pub mod verify;

use axum::routing::{get, post, MethodRouter};
use axum::Router;

use crate::AppState;

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Query,
    Path,
    Header,
}

/// One parameter of a route.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub at: In,
    pub required: bool,
    /// JSON Schema type: `string`, `integer` or `boolean`.
    pub kind: &'static str,
    pub description: &'static str,
}

/// One route of the API.
#[derive(Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// The axum path under `/api/v1` (`{name}` for a path parameter).
    pub path: &'static str,
    pub summary: &'static str,
    pub params: &'static [&'static [Param]],
    /// The status of a successful answer, its media type and a schema
    /// name of `openapi::components`.
    pub ok: (u16, &'static str, &'static str),
    pub handler: fn() -> MethodRouter<AppState>,
}

const fn query(name: &'static str, kind: &'static str, description: &'static str) -> Param {
    Param {
        name,
        at: In::Query,
        required: false,
        kind,
        description,
    }
}

const fn path(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        at: In::Path,
        required: true,
        kind: "string",
        description,
    }
}

/// The event filters: `pgtrail log`'s flags and the search box's keys.
pub const FILTERS: &[Param] = &[
    query("q", "string", "A search in the search box's language: `user:alice table:orders op:update since:yesterday failed` and free words over statement text (at most 4096 bytes)."),
    query("user", "string", "The application user or the database role."),
    query("not_user", "string", "Leave out this database role."),
    query("db_user", "string", "The database role the server authenticated (never a claimed user)."),
    query("table", "string", "`table` or `schema.table` (identifiers may be double-quoted)."),
    query("pk", "string", "A row key: `id=42`, `a=1,b=x` or a JSON object."),
    query("op", "string", "An operation: INSERT, UPDATE, DELETE, SELECT, CREATE TABLE, CONNECT, …"),
    query("kind", "string", "row_change, ddl, statement, session, snapshot, alarm, quarantine or access."),
    query("source", "string", "trigger, cdc, proxy or server."),
    query("class", "string", "A statement class: READ, WRITE, FUNCTION, ROLE, DDL, MISC, MISC_SET, UNKNOWN."),
    query("ip", "string", "A client address or CIDR block (10.0.0.0/8)."),
    query("db", "string", "A database name."),
    query("failed", "boolean", "Only failures (a statement or login with an error)."),
    query("since", "string", "From this time: RFC 3339, a date, psql's timestamptz text, 2h, 7d, today, yesterday, last week."),
    query("until", "string", "Before this time (the same forms as since)."),
];

const LIMIT: &[Param] = &[query(
    "limit",
    "integer",
    "Events per page: 1 to 1000, 50 by default.",
)];
const BEFORE: &[Param] = &[query(
    "before",
    "integer",
    "The cursor: `next` of the previous page (only events with a lower seq).",
)];
const ROW: &[Param] = &[
    path("table", "`table` or `schema.table`."),
    path(
        "pk",
        "The row's key: `id=42`, `a=1,b=x` or a JSON object (percent-encoded).",
    ),
];
const AT: &[Param] = &[Param {
    name: "at",
    at: In::Query,
    required: true,
    kind: "string",
    description: "The moment: the same forms as since.",
}];
const SEQ: &[Param] = &[Param {
    name: "seq",
    at: In::Path,
    required: true,
    kind: "integer",
    description: "The event's position in the chain.",
}];
const DDL: &[Param] = &[
    query("q", "string", "Words that must all be in a command's SQL."),
    query("user", "string", "Who ran it."),
    query("table", "string", "The table it concerns."),
    query("since", "string", "From this time."),
    query("until", "string", "Before this time."),
    query(
        "limit",
        "integer",
        "Commands read, newest first: 1 to 5000, 500 by default.",
    ),
];
const SESSIONS: &[Param] = &[
    query("since", "string", "From this time."),
    query("until", "string", "Before this time."),
    query("user", "string", "The user who logged in (or tried)."),
    query("failed", "boolean", "Only failed logins."),
];
const FAILURES: &[Param] = &[
    query("since", "string", "From this time."),
    query("until", "string", "Before this time."),
    query(
        "user",
        "string",
        "The database role (or application user) who failed.",
    ),
    query(
        "ip",
        "string",
        "A client address or CIDR block (10.0.0.0/8).",
    ),
];
const TAIL: &[Param] = &[
    query(
        "after",
        "integer",
        "Resume after this seq (as `Last-Event-ID` does).",
    ),
    Param {
        name: "Last-Event-ID",
        at: In::Header,
        required: false,
        kind: "integer",
        description: "Sent by a reconnecting EventSource: resume after this seq.",
    },
];

const WINDOW: &[Param] = &[
    query("since", "string", "From this time (the same forms as the event filters'); by default a report's own span before until. At most 92 days before until."),
    query("until", "string", "Before this time; now by default."),
];
const BULK: &[Param] = &[
    query("threshold", "integer", "Report a user's changes of one table with one operation above this many rows (100 by default)."),
    query("table", "string", "Only this table."),
];
const AFTER_HOURS: &[Param] = &[
    query(
        "hours",
        "string",
        "Working hours, `08-18` by default (from 08:00 to 18:00; `22-06` runs past midnight).",
    ),
    query(
        "days",
        "string",
        "Working days: `mon-fri` by default, or a list `mon,tue,sat`.",
    ),
    query(
        "tz",
        "string",
        "A UTC offset: `UTC` by default, `+02:00`, `-05:30`.",
    ),
];
const SPIKES: &[Param] = &[
    query(
        "multiple",
        "integer",
        "Flag an hour above this multiple of the table's usual hourly DELETEs (3 by default).",
    ),
    query(
        "min",
        "integer",
        "And with at least this many DELETEs (10 by default).",
    ),
    query("table", "string", "Only this table."),
];
const WHO_READ: &[Param] = &[
    Param {
        name: "table",
        at: In::Query,
        required: true,
        kind: "string",
        description: "The table read: `table` or `schema.table`.",
    },
    query(
        "pk",
        "string",
        "The row's key (`id=42`): each read says whether its text or parameters name it.",
    ),
];

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/events",
        summary: "Search events, newest first, a page at a time",
        params: &[FILTERS, LIMIT, BEFORE],
        ok: (200, "application/json", "Page"),
        handler: || get(events::list),
    },
    Route {
        method: "get",
        path: "/events/{seq}",
        summary: "One event, every field, with the other events of its transaction",
        params: &[SEQ],
        ok: (200, "application/json", "EventView"),
        handler: || get(events::one),
    },
    Route {
        method: "get",
        path: "/events.ndjson",
        summary: "Export a search as JSON Lines, newest first, streamed",
        params: &[FILTERS, BEFORE],
        ok: (200, "application/x-ndjson", "Event"),
        handler: || get(export::ndjson),
    },
    Route {
        method: "get",
        path: "/events.csv",
        summary: "Export a search as CSV (formulas neutralised), newest first, streamed",
        params: &[FILTERS, BEFORE],
        ok: (200, "text/csv", "Csv"),
        handler: || get(export::csv),
    },
    Route {
        method: "get",
        path: "/tail",
        summary: "Follow new events as they are sealed (server-sent events)",
        params: &[FILTERS, TAIL],
        ok: (200, "text/event-stream", "Event"),
        handler: || get(tail::tail),
    },
    Route {
        method: "get",
        path: "/rows/{table}/{pk}/history",
        summary: "A row's changes, newest first, with field diffs",
        params: &[ROW],
        ok: (200, "application/json", "History"),
        handler: || get(rows::history),
    },
    Route {
        method: "get",
        path: "/rows/{table}/{pk}/as-of",
        summary: "A row as it was at a moment",
        params: &[ROW, AT],
        ok: (200, "application/json", "AsOf"),
        handler: || get(rows::as_of),
    },
    Route {
        method: "get",
        path: "/rows/{table}/{pk}/blame",
        summary: "Who set each current value of a row",
        params: &[ROW],
        ok: (200, "application/json", "Blame"),
        handler: || get(rows::blame),
    },
    Route {
        method: "get",
        path: "/ddl",
        summary: "Schema changes grouped by transaction, oldest first",
        params: &[DDL],
        ok: (200, "application/json", "Ddl"),
        handler: || get(ddl::list),
    },
    Route {
        method: "get",
        path: "/sessions",
        summary: "Failed logins, then sessions by user and address",
        params: &[SESSIONS],
        ok: (200, "application/json", "Sessions"),
        handler: || get(sessions::report),
    },
    Route {
        method: "get",
        path: "/failures",
        summary:
            "Failed logins and failed statements counted per user and per address, the most first",
        params: &[FAILURES],
        ok: (200, "application/json", "Failures"),
        handler: || get(sessions::failures),
    },
    Route {
        method: "get",
        path: "/status",
        summary: "The store's head, checkpoints and alarms",
        params: &[],
        ok: (200, "application/json", "Status"),
        handler: || get(status::status),
    },
    Route {
        method: "get",
        path: "/verify",
        summary: "The progress or result of the server's verify",
        params: &[],
        ok: (200, "application/json", "Verify"),
        handler: || get(verify::progress),
    },
    Route {
        method: "post",
        path: "/verify",
        summary: "Start a verify of the whole store in the background (one at a time)",
        params: &[],
        ok: (202, "application/json", "Verify"),
        handler: || post(verify::start),
    },
    Route {
        method: "get",
        path: "/reports/bulk-changes",
        summary:
            "Users whose row changes of one table with one operation exceed a threshold in a window",
        params: &[WINDOW, BULK],
        ok: (200, "application/json", "BulkReport"),
        handler: || get(reports::bulk_changes),
    },
    Route {
        method: "get",
        path: "/reports/after-hours",
        summary: "Events by user outside working hours",
        params: &[WINDOW, AFTER_HOURS],
        ok: (200, "application/json", "AfterHoursReport"),
        handler: || get(reports::after_hours),
    },
    Route {
        method: "get",
        path: "/reports/delete-spikes",
        summary: "Hours in which a table's DELETEs rose above a multiple of its usual rate",
        params: &[WINDOW, SPIKES],
        ok: (200, "application/json", "SpikeReport"),
        handler: || get(reports::delete_spikes),
    },
    Route {
        method: "get",
        path: "/reports/who-read",
        summary: "The proxy's logged reads of a table, and which name a row's key",
        params: &[WINDOW, WHO_READ],
        ok: (200, "application/json", "WhoReadReport"),
        handler: || get(reports::who_read),
    },
    Route {
        method: "get",
        path: "/openapi.json",
        summary: "This API's OpenAPI 3.1 document",
        params: &[],
        ok: (200, "application/json", "OpenApi"),
        handler: || get(openapi::document),
    },
];

pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for route in ROUTES {
        router = router.route(route.path, (route.handler)());
    }
    router.fallback(|| async {
        problem::Problem::not_found("no such API route; see /api/v1/openapi.json")
    })
}
