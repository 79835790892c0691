//! The reports page (`/reports`, one report at `/reports/{name}`): the
//! reports of `pgtrail_store::reports`, each with its parameters in a GET
//! form (no CSRF needed: nothing is changed), run through the same
//! function as `GET /api/v1/reports/{name}`, and recorded as an access.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use pgtrail_store::reports::{self, Line, Mention, Scanned, MAX_COUNT, MAX_SCAN};

use super::view::time;
use super::{html, PageError};
use crate::api::reports::record;
use crate::auth::Principal;
use crate::AppState;

/// The longest parameter value a report form takes, in bytes.
const MAX_VALUE: usize = 1024;

/// What each report is, for the index and its page.
const ABOUT: [(&str, &str, &str); 4] = [
    (
        "bulk-changes",
        "Bulk changes by user",
        "Users whose row changes of one table with one operation exceed a threshold within the window: \
         the \"suspicious activity\" query compliance guides give.",
    ),
    (
        "after-hours",
        "Activity outside working hours",
        "Row changes, schema changes, statements and logins outside the working hours and days you give, by user.",
    ),
    (
        "delete-spikes",
        "DELETE spikes",
        "Hours in which a table lost more rows than a multiple of its usual hourly rate over the window.",
    ),
    (
        "who-read",
        "Who read this row",
        "The proxy's logged reads of a table and, given a row's key, which of them name it.",
    ),
];

/// One input of a report's form.
pub struct Field {
    pub name: &'static str,
    pub label: &'static str,
    pub value: String,
    pub hint: &'static str,
}

/// One cell of the results table.
pub struct Cell {
    pub text: String,
    pub href: Option<String>,
    pub class: &'static str,
}

fn cell(text: impl Into<String>) -> Cell {
    Cell {
        text: text.into(),
        href: None,
        class: "",
    }
}

fn seq_cell(seq: Option<i64>) -> Cell {
    let seq = seq.unwrap_or_default();
    Cell {
        text: seq.to_string(),
        href: Some(format!("/events/{seq}")),
        class: "seq",
    }
}

/// A report's answer as the page shows it.
#[derive(Default)]
struct Results {
    summary: Vec<String>,
    headers: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
    empty: String,
}

#[derive(Template)]
#[template(path = "reports.html")]
struct Index {
    principal: Principal,
    reports: Vec<(&'static str, &'static str, &'static str)>,
    css: String,
    js: String,
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    principal: Principal,
    name: &'static str,
    title: &'static str,
    about: &'static str,
    fields: Vec<Field>,
    error: Option<String>,
    results: Option<Results>,
    capped: Option<String>,
    /// What the proxy can and cannot tell (who-read only).
    who_read: bool,
    css: String,
    js: String,
}

/// `GET /reports`.
pub async fn index(principal: Principal) -> Result<Response, PageError> {
    html(&Index {
        principal,
        reports: ABOUT.to_vec(),
        css: super::asset_path("pgtrail.css"),
        js: super::asset_path("htmx.min.js"),
    })
}

/// The form's inputs of report `name`, holding what was asked.
fn fields(name: &str, asked: &HashMap<String, String>) -> Vec<Field> {
    let f = |name: &'static str, label: &'static str, hint: &'static str| Field {
        name,
        label,
        value: asked.get(name).cloned().unwrap_or_default(),
        hint,
    };
    let window = [
        f("since", "Since", "24h, 7d, 2026-03-01, …"),
        f("until", "Until", "now"),
    ];
    let own: Vec<Field> = match name {
        "bulk-changes" => vec![
            f("threshold", "More rows than", "100"),
            f("table", "Table", "any"),
        ],
        "after-hours" => vec![
            f("hours", "Working hours", "08-18"),
            f("days", "Working days", "mon-fri"),
            f("tz", "UTC offset", "UTC, +02:00"),
        ],
        "delete-spikes" => vec![
            f("multiple", "Times the usual rate", "3"),
            f("min", "At least DELETEs", "10"),
            f("table", "Table", "any"),
        ],
        _ => vec![
            f("table", "Table", "public.patients"),
            f("pk", "Row key", "id=42"),
        ],
    };
    own.into_iter().chain(window).collect()
}

/// `GET /reports/{name}`: the form, and the report run with its values
/// (who-read runs once a table is named).
pub async fn page(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Query(asked): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let Some(&(name, title, about)) = ABOUT.iter().find(|(n, _, _)| *n == name) else {
        return Err(PageError::NotFound("no such report".into()));
    };
    let page = |error, results, capped| ReportPage {
        principal: principal.clone(),
        name,
        title,
        about,
        fields: fields(name, &asked),
        error,
        results,
        capped,
        who_read: name == "who-read",
        css: super::asset_path("pgtrail.css"),
        js: super::asset_path("htmx.min.js"),
    };
    let ran = match run(&state, &principal, name, &asked).await {
        Ok(ran) => ran,
        Err(PageError::BadRequest(why)) => {
            let answer = html(&page(Some(why), None, None))?;
            return Ok((StatusCode::BAD_REQUEST, answer).into_response());
        }
        Err(e) => return Err(e),
    };
    let (results, capped) = match ran {
        Some((results, scanned)) => (Some(results), capped_note(&scanned)),
        None => (None, None),
    };
    html(&page(None, results, capped))
}

fn capped_note(scanned: &Scanned) -> Option<String> {
    scanned.capped.then(|| {
        format!(
            "This report stopped after reading {} events (its cap): it counts only the newest part \
             of the window. Narrow the window or the table to count all of it.",
            scanned.cap
        )
    })
}

/// Runs report `name` with `asked`; `None` when it needs more to run.
async fn run(
    state: &AppState,
    principal: &Principal,
    name: &str,
    asked: &HashMap<String, String>,
) -> Result<Option<(Results, Scanned)>, PageError> {
    if let Some((key, _)) = asked.iter().find(|(_, v)| v.len() > MAX_VALUE) {
        return Err(PageError::BadRequest(format!(
            "{}: longer than {MAX_VALUE} bytes",
            pgtrail_core::filter::shown(key, 32)
        )));
    }
    let known: Vec<&str> = fields(name, asked).iter().map(|f| f.name).collect();
    if let Some(unknown) = asked.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(PageError::BadRequest(format!(
            "{}: not a parameter of this report",
            pgtrail_core::filter::shown(unknown, 32)
        )));
    }
    let get = |n: &str| asked.get(n).map(String::as_str);
    let bad = |e: reports::ParamError| PageError::BadRequest(e.to_string());
    let store = state.store.as_ref();
    let now = Utc::now();
    let answer = match name {
        "bulk-changes" => {
            let p = reports::BulkParams::parse(&get, now).map_err(bad)?;
            let r = reports::bulk_changes(store, &p, MAX_COUNT).await?;
            record(state, principal, name, &p, r.rows.len()).await?;
            let results = Results {
                summary: vec![format!(
                    "Row changes from {} to {}: {} user/table/operation group(s) above {} rows.",
                    time(p.window.since),
                    time(p.window.until),
                    r.rows.len(),
                    p.threshold
                )],
                headers: vec![
                    "User",
                    "Table",
                    "Operation",
                    "Rows",
                    "First (UTC)",
                    "Last (UTC)",
                ],
                rows: r
                    .rows
                    .iter()
                    .map(|row| {
                        vec![
                            cell(&row.user),
                            cell(&row.table),
                            cell(&row.operation),
                            cell(row.rows.to_string()),
                            cell(time(row.first)),
                            cell(time(row.last)),
                        ]
                    })
                    .collect(),
                empty: "No user went above the threshold.".into(),
            };
            (results, r.scanned)
        }
        "after-hours" => {
            let p = reports::AfterHoursParams::parse(&get, now).map_err(bad)?;
            let r = reports::after_hours(store, &p, MAX_SCAN).await?;
            record(state, principal, name, &p, r.events.len()).await?;
            let mut summary = vec![format!(
                "Outside {:02}:00–{:02}:00 on {} at UTC{}, from {} to {}.",
                p.start,
                p.end,
                days_text(&p.days),
                p.tz,
                time(p.window.since),
                time(p.window.until)
            )];
            summary.extend(r.users.iter().map(|u| {
                format!(
                    "{}: {} event(s), {} to {}",
                    u.user,
                    u.events,
                    time(u.first),
                    time(u.last)
                )
            }));
            let results = Results {
                summary,
                headers: vec![
                    "Seq",
                    "Time (UTC)",
                    "Local",
                    "User",
                    "Kind",
                    "Table",
                    "Operation",
                ],
                rows: r
                    .events
                    .iter()
                    .map(|l| {
                        vec![
                            seq_cell(l.seq),
                            cell(time(l.at)),
                            cell(p.zone.format(l.at, "%a %H:%M")),
                            cell(&l.user),
                            cell(l.kind.to_string()),
                            cell(l.table.clone().unwrap_or_default()),
                            cell(l.operation.clone().unwrap_or_default()),
                        ]
                    })
                    .collect(),
                empty: "Nothing happened outside working hours.".into(),
            };
            (results, r.scanned)
        }
        "delete-spikes" => {
            let p = reports::SpikeParams::parse(&get, now).map_err(bad)?;
            let r = reports::delete_spikes(store, &p, MAX_COUNT).await?;
            record(state, principal, name, &p, r.spikes.len()).await?;
            let results = Results {
                summary: vec![format!(
                    "DELETEs of {} table(s) from {} to {}; an hour is a spike above {}× the table's usual hourly rate and at least {} deletes.",
                    r.tables,
                    time(p.window.since),
                    time(p.window.until),
                    p.multiple,
                    p.min
                )],
                headers: vec!["Hour (UTC)", "Table", "DELETEs", "Usual per hour", "By"],
                rows: r
                    .spikes
                    .iter()
                    .map(|s| {
                        vec![
                            cell(s.hour.format("%Y-%m-%d %H:00").to_string()),
                            cell(&s.table),
                            Cell {
                                class: "failed",
                                ..cell(s.deletes.to_string())
                            },
                            cell(format!("{:.2}", s.usual_per_hour)),
                            cell(
                                s.users
                                    .iter()
                                    .map(|(u, n)| format!("{u} ({n})"))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            ),
                        ]
                    })
                    .collect(),
                empty: "No DELETE spike.".into(),
            };
            (results, r.scanned)
        }
        _ => {
            // The form alone until it is filled in.
            if asked.values().all(|v| v.trim().is_empty()) {
                return Ok(None);
            }
            let p = reports::WhoReadParams::parse(&get, now).map_err(bad)?;
            let r = reports::who_read(store, &p, principal.sees_params(), MAX_SCAN).await?;
            record(state, principal, name, &p, r.reads.len()).await?;
            let mut summary = vec![format!(
                "{} logged read(s) of {} from {} to {}.",
                r.total,
                p.table,
                time(p.window.since),
                time(p.window.until)
            )];
            if p.pk.is_some() {
                summary.push(format!(
                    "{} of them name the key in their text or parameters.",
                    r.naming_key
                ));
            }
            let results = Results {
                summary,
                headers: vec![
                    "Seq",
                    "Time (UTC)",
                    "User",
                    "From",
                    "Rows",
                    "Names the key",
                    "Statement",
                ],
                rows: r
                    .reads
                    .iter()
                    .map(|read| {
                        let Line {
                            seq,
                            at,
                            user,
                            client_addr,
                            ..
                        } = &read.line;
                        vec![
                            seq_cell(*seq),
                            cell(time(*at)),
                            cell(user),
                            cell(client_addr.clone().unwrap_or_default()),
                            cell(read.rows.map(|n| n.to_string()).unwrap_or_default()),
                            mention_cell(read.mentions),
                            Cell {
                                class: "sql",
                                ..cell(read.sql.clone().unwrap_or_default())
                            },
                        ]
                    })
                    .collect(),
                empty: "No logged read of this table in the window.".into(),
            };
            (results, r.scanned)
        }
    };
    Ok(Some(answer))
}

fn mention_cell(mention: Mention) -> Cell {
    let (text, class) = match mention {
        Mention::Text => ("yes, in its text", "failed"),
        Mention::Params => ("yes, in a parameter", "failed"),
        Mention::No => ("not by value", ""),
        Mention::Unknown => ("unknown", "muted"),
    };
    Cell {
        class,
        ..cell(text)
    }
}

fn days_text(days: &std::collections::BTreeSet<u32>) -> String {
    const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    days.iter()
        .filter_map(|d| NAMES.get(*d as usize))
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}
