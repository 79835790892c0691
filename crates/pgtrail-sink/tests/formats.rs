//! Every format, from real `Event` values of each kind: the fields each
//! format requires are there, and hostile values (line breaks, `|`, `=`,
//! `]`, quotes, backslashes, NUL, fake `CEF:0|` and syslog headers, a
//! megabyte of SQL, a row image thousands of levels deep) stay values.
//!
//! Each record is read back by a strict reader written here from the
//! format's specification (CEF, RFC 5424, RFC 4180) or by serde_json: a
//! forged record or field would show up as a second record, a duplicate
//! key, or a value that differs from the event's.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use pgtrail_core::event::{Channel, JsonObject};
use pgtrail_core::{Event, Kind, Source};
use pgtrail_sink::format::{Encoder, Facility, Format, CSV_COLUMNS, SD_ID};
use pgtrail_store::checkpoint::{Checkpoint, CheckpointKind};
use serde_json::{json, Value};

// ---------------------------------------------------------------- events

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 12, 34, 56)
        .single()
        .expect("valid")
        + chrono::Duration::microseconds(123_456)
}

fn sealed(mut e: Event, seq: i64) -> Event {
    e.seq = Some(seq);
    e.prev_hash = Some(format!("{:064x}", seq - 1));
    e.hash = Some(format!("{seq:064x}"));
    e
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(o) => o,
        _ => JsonObject::new(),
    }
}

fn row_change() -> Event {
    let mut e = Event::at(Source::Cdc, Kind::RowChange, at());
    e.db_user = Some("app".into());
    e.app_user = Some("alice@example.com".into());
    e.claim("app_user", Channel::Setting);
    e.client_addr = Some("10.1.2.3".into());
    e.client_port = Some(54321);
    e.backend_pid = Some(4242);
    e.database = Some("shop".into());
    e.schema = Some("public".into());
    e.table = Some("users".into());
    e.operation = Some("UPDATE".into());
    e.pk = Some(object(json!({"id": "1"})));
    e.old = Some(object(json!({"id": 1, "email": "a@x"})));
    e.new = Some(object(json!({"id": 1, "email": "b@x"})));
    e.changed = vec!["email".into()];
    e.xid = Some(777);
    e.lsn = Some("0/16B3748".into());
    e.committed_at = Some(at());
    e.tx_seq = Some(0);
    sealed(e, 10)
}

fn ddl() -> Event {
    let mut e = Event::at(Source::Trigger, Kind::Ddl, at());
    e.db_user = Some("owner".into());
    e.database = Some("shop".into());
    e.schema = Some("public".into());
    e.table = Some("orders".into());
    e.operation = Some("ALTER TABLE".into());
    e.sql = Some("ALTER TABLE orders ADD COLUMN note text".into());
    sealed(e, 11)
}

fn statement() -> Event {
    let mut e = Event::at(Source::Proxy, Kind::Statement, at());
    e.db_user = Some("app".into());
    e.client_addr = Some("::1".into());
    e.client_port = Some(40000);
    e.session_id = Some("4242@2026-12-06".into());
    e.application_name = Some("psql".into());
    e.database = Some("shop".into());
    e.schema = Some("public".into());
    e.table = Some("users".into());
    e.operation = Some("SELECT".into());
    e.objects = vec!["public.users".into()];
    e.sql = Some("SELECT * FROM users WHERE id = $1".into());
    e.params = Some(vec![json!("1")]);
    e.class = Some("READ".into());
    e.command_tag = Some("SELECT 1".into());
    e.rows = Some(1);
    e.duration_us = Some(1500);
    sealed(e, 12)
}

fn failed_statement() -> Event {
    let mut e = statement();
    e.operation = Some("DELETE".into());
    e.sql = Some("DELETE FROM users".into());
    e.class = Some("WRITE".into());
    e.command_tag = None;
    e.rows = None;
    e.sqlstate = Some("42501".into());
    e.error = Some("permission denied for table users".into());
    sealed(e, 13)
}

fn login() -> Event {
    let mut e = Event::at(Source::Proxy, Kind::Session, at());
    e.db_user = Some("app".into());
    e.client_addr = Some("10.9.8.7".into());
    e.client_port = Some(50000);
    e.database = Some("shop".into());
    e.operation = Some("CONNECT".into());
    e.vouch_server_fields();
    sealed(e, 14)
}

fn failed_login() -> Event {
    let mut e = login();
    e.sqlstate = Some("28P01".into());
    e.error = Some("password authentication failed for user \"app\"".into());
    sealed(e, 15)
}

fn logout() -> Event {
    let mut e = login();
    e.operation = Some("DISCONNECT".into());
    e.duration_us = Some(9_000_000);
    e.context = Some(object(json!({"statements": 3})));
    sealed(e, 16)
}

fn alarm() -> Event {
    let mut e = pgtrail_core::alarm::Alarm::on_table(
        "capture_disabled",
        "public",
        "users",
        "the trigger was disabled",
    )
    .event(Source::Trigger);
    e.captured_at = at();
    sealed(e, 17)
}

fn access() -> Event {
    let mut e = Event::at(Source::Server, Kind::Access, at());
    e.app_user = Some("viewer-token".into());
    e.client_addr = Some("127.0.0.1".into());
    e.operation = Some("GET /api/v1/events".into());
    e.rows = Some(50);
    sealed(e, 18)
}

fn every_kind() -> Vec<(&'static str, Event)> {
    vec![
        ("row_change", row_change()),
        ("ddl", ddl()),
        ("statement", statement()),
        ("failed statement", failed_statement()),
        ("login", login()),
        ("failed login", failed_login()),
        ("logout", logout()),
        ("alarm", alarm()),
        ("access", access()),
    ]
}

fn checkpoint() -> Checkpoint {
    Checkpoint {
        kind: CheckpointKind::Head,
        seq: 18,
        hash: format!("{:064x}", 18),
        count: 18,
        created_at: at(),
        public_key: Some("ab".repeat(32)),
        signature: None,
        note: Some("pgtrail/store-1\n18\nROOT=\n\n— pgtrail-key sig=\n".into()),
        frontier: None,
    }
}

fn encode(format: Format, event: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::new(format)
        .with_host("db-1.example.com")
        .encode(event, &mut out)
        .unwrap_or_else(|e| panic!("{format}: {e}"));
    out
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("records are UTF-8")
}

// --------------------------------------------------------------- readers

/// One JSON record per line: exactly one line, parsed.
fn one_json_line(bytes: &[u8]) -> Value {
    let text = text(bytes);
    assert!(text.ends_with('\n'), "a line: {text:.200}");
    assert_eq!(text.matches('\n').count(), 1, "one line: {text:.300}");
    serde_json::from_str(text.trim_end_matches('\n')).expect("valid JSON")
}

/// A CEF record read strictly: the seven header fields and the extension
/// pairs, unescaped. Refuses unknown escapes, a raw line break, a missing
/// header field, a duplicate key.
struct Cef {
    header: Vec<String>,
    ext: BTreeMap<String, String>,
}

fn parse_cef(bytes: &[u8]) -> Cef {
    let line = text(bytes);
    let line = line.strip_suffix('\n').expect("ends with a newline");
    assert!(
        !line.contains(['\n', '\r']),
        "raw line break in {line:.300}"
    );
    assert!(line.starts_with("CEF:0|"), "{line:.100}");
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while header.len() < 7 {
        match chars.next() {
            None => panic!("only {} header fields in {line:.300}", header.len()),
            Some('\\') => match chars.next() {
                Some(c @ ('\\' | '|')) => field.push(c),
                other => panic!("bad header escape \\{other:?} in {line:.300}"),
            },
            Some('|') => header.push(std::mem::take(&mut field)),
            Some(c) => field.push(c),
        }
    }
    // Extension: unescape, remembering which `=` and spaces were literal.
    let mut tokens: Vec<(char, bool)> = Vec::new(); // (char, escaped)
    while let Some(c) = chars.next() {
        if c == '\\' {
            let unescaped = match chars.next() {
                Some('\\') => '\\',
                Some('=') => '=',
                Some('n') => '\n',
                Some('r') => '\r',
                other => panic!("bad extension escape \\{other:?} in {line:.300}"),
            };
            tokens.push((unescaped, true));
        } else {
            tokens.push((c, false));
        }
    }
    // Keys: the word before each unescaped `=`, starting the extension or
    // after an unescaped space.
    let mut keys: Vec<(usize, usize)> = Vec::new(); // (key start, '=' index)
    for (i, (c, escaped)) in tokens.iter().enumerate() {
        if *c == '=' && !escaped {
            let mut start = i;
            while start > 0 && {
                let (p, e) = tokens[start - 1];
                !e && (p.is_ascii_alphanumeric() || p == '_')
            } {
                start -= 1;
            }
            assert!(start < i, "an = without a key in {line:.300}");
            assert!(
                start == 0 || tokens[start - 1] == (' ', false),
                "a key not after a space in {line:.300}"
            );
            keys.push((start, i));
        }
    }
    let mut ext = BTreeMap::new();
    for (n, (start, eq)) in keys.iter().enumerate() {
        let key: String = tokens[*start..*eq].iter().map(|(c, _)| c).collect();
        let end = keys.get(n + 1).map_or(tokens.len(), |(next, _)| next - 1);
        let value: String = tokens[eq + 1..end].iter().map(|(c, _)| c).collect();
        assert!(
            ext.insert(key.clone(), value).is_none(),
            "duplicate key {key} in {line:.300}"
        );
    }
    Cef { header, ext }
}

/// An RFC 5424 message read strictly (section 6's ABNF).
struct Syslog {
    pri: u16,
    header: Vec<String>, // TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
    sd: Vec<(String, Vec<(String, String)>)>,
    msg: String,
}

fn parse_syslog(bytes: &[u8]) -> Syslog {
    let line = text(bytes);
    assert!(
        !line.contains(['\n', '\r', '\0']),
        "raw control character in {line:.300}"
    );
    let rest = line.strip_prefix('<').expect("<PRI>");
    let (pri, rest) = rest.split_once('>').expect("<PRI>");
    assert!((1..=3).contains(&pri.len()) && pri.bytes().all(|b| b.is_ascii_digit()));
    let pri: u16 = pri.parse().expect("PRI");
    assert!(pri <= 191);
    let rest = rest.strip_prefix("1 ").expect("VERSION 1");
    let mut header = Vec::new();
    let mut rest = rest;
    for (name, max) in [
        ("TIMESTAMP", 48),
        ("HOSTNAME", 255),
        ("APP-NAME", 48),
        ("PROCID", 128),
        ("MSGID", 32),
    ] {
        let (field, after) = rest
            .split_once(' ')
            .unwrap_or_else(|| panic!("{name} in {line:.200}"));
        assert!(
            !field.is_empty()
                && field.len() <= max
                && field.bytes().all(|b| (33..=126).contains(&b)),
            "{name} {field:?}"
        );
        header.push(field.to_string());
        rest = after;
    }
    let mut sd = Vec::new();
    let mut chars = rest.char_indices().peekable();
    let sd_end;
    if rest.starts_with('-') {
        chars.next();
        sd_end = 1;
    } else {
        loop {
            match chars.next() {
                Some((_, '[')) => {}
                other => panic!("SD-ELEMENT expected, got {other:?} in {line:.300}"),
            }
            let sd_name = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
                let mut name = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c == '=' || c == ' ' || c == ']' || c == '"' {
                        break;
                    }
                    assert!(c.is_ascii_graphic(), "SD-NAME character {c:?}");
                    name.push(c);
                    chars.next();
                }
                assert!((1..=32).contains(&name.len()), "SD-NAME {name:?}");
                name
            };
            let id = sd_name(&mut chars);
            let mut params = Vec::new();
            loop {
                match chars.next() {
                    Some((_, ']')) => break,
                    Some((_, ' ')) => {}
                    other => panic!("SP or ] expected, got {other:?} in {line:.300}"),
                }
                let name = sd_name(&mut chars);
                assert_eq!(chars.next().map(|(_, c)| c), Some('='));
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'));
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        None => panic!("unterminated PARAM-VALUE in {line:.300}"),
                        Some('"') => break,
                        Some(']') => panic!("unescaped ] in PARAM-VALUE in {line:.300}"),
                        Some('\\') => match chars.peek().map(|(_, c)| *c) {
                            Some(c @ ('"' | '\\' | ']')) => {
                                value.push(c);
                                chars.next();
                            }
                            // RFC 5424 6.3.3: any other backslash is kept.
                            _ => value.push('\\'),
                        },
                        Some(c) => value.push(c),
                    }
                }
                params.push((name, value));
            }
            sd.push((id, params));
            match chars.peek() {
                Some((_, '[')) => continue,
                Some((i, _)) => {
                    sd_end = *i;
                    break;
                }
                None => {
                    sd_end = rest.len();
                    break;
                }
            }
        }
    }
    let msg = match &rest[sd_end..] {
        "" => String::new(),
        more => more.strip_prefix(' ').expect("SP before MSG").to_string(),
    };
    Syslog {
        pri,
        header,
        sd,
        msg,
    }
}

impl Syslog {
    fn param(&self, name: &str) -> Option<&str> {
        assert_eq!(self.sd.len(), 1, "one SD-ELEMENT");
        let found: Vec<&str> = self.sd[0]
            .1
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        assert!(found.len() <= 1, "parameter {name} twice");
        found.first().copied()
    }

    fn json(&self) -> Value {
        assert!(self.msg.is_ascii(), "MSG is ASCII");
        serde_json::from_str(&self.msg).expect("MSG is JSON")
    }
}

/// RFC 4180 read strictly: CRLF-ended records, quoted fields with doubled
/// quotes, no quote inside an unquoted field, no bare CR or LF.
fn parse_csv(bytes: &[u8]) -> Vec<Vec<String>> {
    let text = text(bytes);
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut at_start = true;
    loop {
        let Some(c) = chars.next() else {
            assert!(
                field.is_empty() && record.is_empty(),
                "last record not ended by CRLF"
            );
            break;
        };
        match c {
            '"' if at_start => {
                loop {
                    match chars.next() {
                        None => panic!("unterminated quoted field"),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => field.push(c),
                    }
                }
                assert!(
                    matches!(chars.peek(), Some(',' | '\r')),
                    "after a closing quote: {:?}",
                    chars.peek()
                );
                at_start = false;
            }
            '"' => panic!("quote inside an unquoted field: {field:?}"),
            ',' => {
                record.push(std::mem::take(&mut field));
                at_start = true;
            }
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "CR without LF");
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                at_start = true;
            }
            '\n' => panic!("bare LF"),
            c => {
                field.push(c);
                at_start = false;
            }
        }
    }
    records
}

/// The one data record of a CSV (header + record), by column name.
fn one_csv_record(event: &Event) -> BTreeMap<String, String> {
    let encoder = Encoder::new(Format::Csv);
    let mut out = encoder.header();
    encoder.encode(event, &mut out).expect("encodes");
    let records = parse_csv(&out);
    assert_eq!(records.len(), 2, "header and one record");
    assert_eq!(records[0], CSV_COLUMNS.to_vec());
    assert_eq!(records[1].len(), CSV_COLUMNS.len());
    for cell in &records[1] {
        assert!(
            !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "a cell a spreadsheet would run: {cell:.100}"
        );
    }
    CSV_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .zip(records[1].iter().cloned())
        .collect()
}

/// A CSV cell's text as the event had it: the formula guard, one leading
/// `'`, removed (as docs/integrations.md tells a program to).
fn unguarded(cell: &str) -> &str {
    cell.strip_prefix('\'').unwrap_or(cell)
}

// ------------------------------------------------------ required fields

#[test]
fn jsonl_is_the_event_as_is() {
    for (name, event) in every_kind() {
        let value = one_json_line(&encode(Format::Jsonl, &event));
        let back: Event = serde_json::from_value(value).expect(name);
        assert_eq!(back, event, "{name}");
    }
}

#[test]
fn ocsf_has_the_required_attributes_of_its_class() {
    for (name, event) in every_kind() {
        let v = one_json_line(&encode(Format::Ocsf, &event));
        let session = event.kind == Kind::Session;
        let class = if session { 3002 } else { 6005 };
        assert_eq!(v["class_uid"], class, "{name}");
        assert_eq!(v["category_uid"], if session { 3 } else { 6 }, "{name}");
        let activity = v["activity_id"].as_i64().expect("activity_id");
        assert_eq!(v["type_uid"], class * 100 + activity, "{name}");
        for key in [
            "severity_id",
            "time",
            "status_id",
            "actor",
            "src_endpoint",
            "metadata",
            "unmapped",
        ] {
            assert!(!v[key].is_null(), "{name}: {key} missing in {v}");
        }
        assert_eq!(v["time"], event.captured_at.timestamp_millis(), "{name}");
        assert_eq!(v["metadata"]["product"]["name"], "pgtrail");
        assert_eq!(
            v["metadata"]["product"]["version"],
            env!("CARGO_PKG_VERSION")
        );
        assert!(v["metadata"]["version"]
            .as_str()
            .is_some_and(|s| s.starts_with("1.")));
        assert_eq!(v["metadata"]["uid"], event.id.to_string());
        assert_eq!(v["unmapped"]["seq"], event.seq.expect("sealed"), "{name}");
        assert_eq!(v["unmapped"]["hash"], json!(event.hash), "{name}");
        assert_eq!(
            v["unmapped"]["captured_at"],
            pgtrail_core::time::format_micros(&event.captured_at),
            "{name}"
        );
        assert_eq!(
            v["status_id"],
            if event.failed() {
                2
            } else if event.kind == Kind::Alarm {
                0
            } else {
                1
            },
            "{name}"
        );
        if session {
            assert!(v["user"]["name"].is_string(), "{name}: user");
        }
    }
    let v = one_json_line(&encode(Format::Ocsf, &row_change()));
    assert_eq!(
        (v["activity_id"].as_i64(), v["activity_name"].as_str()),
        (Some(2), Some("Update"))
    );
    assert_eq!(v["actor"]["user"]["name"], "app");
    assert_eq!(v["unmapped"]["app_user"], "alice@example.com");
    assert_eq!(v["src_endpoint"], json!({"ip": "10.1.2.3", "port": 54321}));
    assert_eq!(v["database"]["name"], "shop");
    assert_eq!(v["table"]["name"], "public.users");
    assert_eq!(v["unmapped"]["new"], json!({"id": 1, "email": "b@x"}));
    let v = one_json_line(&encode(Format::Ocsf, &statement()));
    assert_eq!(v["activity_id"], 4);
    assert_eq!(
        v["query_info"]["query_string"],
        "SELECT * FROM users WHERE id = $1"
    );
    assert_eq!(v["duration"], 1);
    let v = one_json_line(&encode(Format::Ocsf, &failed_statement()));
    assert_eq!(
        (v["activity_id"].as_i64(), v["status"].as_str()),
        (Some(7), Some("Failure"))
    );
    assert_eq!(v["status_code"], "42501");
    let v = one_json_line(&encode(Format::Ocsf, &failed_login()));
    assert_eq!(
        (v["activity_id"].as_i64(), v["type_uid"].as_i64()),
        (Some(1), Some(300201))
    );
    assert_eq!(
        (v["status_id"].as_i64(), v["severity_id"].as_i64()),
        (Some(2), Some(3))
    );
    assert!(v["status_detail"]
        .as_str()
        .is_some_and(|s| s.contains("password")));
    let v = one_json_line(&encode(Format::Ocsf, &logout()));
    assert_eq!(v["activity_id"], 2);
    let v = one_json_line(&encode(Format::Ocsf, &alarm()));
    assert_eq!(
        (v["activity_id"].as_i64(), v["severity_id"].as_i64()),
        (Some(99), Some(4))
    );
    assert_eq!(v["activity_name"], "capture_disabled");
}

#[test]
fn ecs_has_event_user_source_related_and_db() {
    for (name, event) in every_kind() {
        let v = one_json_line(&encode(Format::Ecs, &event));
        assert_eq!(
            v["@timestamp"],
            pgtrail_core::time::format_micros(&event.captured_at)
        );
        assert_eq!(v["event"]["id"], event.id.to_string(), "{name}");
        assert!(
            v["event"]["category"]
                .as_array()
                .is_some_and(|c| !c.is_empty()),
            "{name}"
        );
        assert!(
            v["event"]["type"].as_array().is_some_and(|c| c.len() == 1),
            "{name}"
        );
        assert!(v["event"]["action"].is_string(), "{name}");
        let outcome = if event.failed() {
            "failure"
        } else if event.kind == Kind::Alarm {
            "unknown"
        } else {
            "success"
        };
        assert_eq!(v["event"]["outcome"], outcome, "{name}");
        assert_eq!(v["db"]["system"], "postgresql", "{name}");
        assert_eq!(v["pgtrail"]["seq"], event.seq.expect("sealed"), "{name}");
        assert_eq!(
            v["ecs"]["version"].as_str().map(|s| s.starts_with("8.")),
            Some(true)
        );
    }
    let v = one_json_line(&encode(Format::Ecs, &row_change()));
    assert_eq!(v["event"]["category"], json!(["database"]));
    assert_eq!(v["event"]["type"], json!(["change"]));
    assert_eq!(v["event"]["action"], "update");
    assert_eq!(v["user"]["name"], "app");
    assert_eq!(v["source"]["ip"], "10.1.2.3");
    assert_eq!(v["source"]["port"], 54321);
    assert_eq!(v["related"]["user"], json!(["app", "alice@example.com"]));
    assert_eq!(v["related"]["ip"], json!(["10.1.2.3"]));
    assert_eq!(v["db"]["namespace"], "shop");
    assert_eq!(v["db"]["collection"]["name"], "public.users");
    assert_eq!(v["db"]["operation"]["name"], "UPDATE");
    assert_eq!(v["pgtrail"]["old"], json!({"id": 1, "email": "a@x"}));
    let v = one_json_line(&encode(Format::Ecs, &failed_statement()));
    assert_eq!(v["db"]["query"]["text"], "DELETE FROM users");
    assert_eq!(v["db"]["response"]["status_code"], "42501");
    assert_eq!(v["error"]["code"], "42501");
    let v = one_json_line(&encode(Format::Ecs, &failed_login()));
    assert_eq!(v["event"]["category"][0], "authentication");
    assert_eq!(v["event"]["type"], json!(["start"]));
    assert_eq!(v["event"]["outcome"], "failure");
    let v = one_json_line(&encode(Format::Ecs, &alarm()));
    assert_eq!(v["event"]["kind"], "alert");
    let v = one_json_line(&encode(Format::Ecs, &ddl()));
    assert_eq!(v["event"]["category"], json!(["database", "configuration"]));
}

#[test]
fn cef_has_its_header_and_dictionary_fields() {
    for (name, event) in every_kind() {
        let cef = parse_cef(&encode(Format::Cef, &event));
        assert_eq!(
            &cef.header[..4],
            ["CEF:0", "pgtrail", "pgtrail", env!("CARGO_PKG_VERSION")],
            "{name}"
        );
        assert!(
            cef.header[4].starts_with(event.kind.as_str()),
            "{name}: signature {}",
            cef.header[4]
        );
        let severity: u8 = cef.header[6].parse().expect("severity");
        assert!(severity <= 10);
        assert_eq!(
            cef.ext["rt"],
            event.captured_at.timestamp_millis().to_string()
        );
        assert_eq!(cef.ext["externalId"], event.id.to_string());
        assert_eq!(cef.ext["cn1"], event.seq.expect("sealed").to_string());
        assert_eq!(cef.ext["cn1Label"], "seq");
        assert_eq!(
            cef.ext.get("cs6").map(String::as_str),
            event.hash.as_deref()
        );
        assert_eq!(
            cef.ext["outcome"],
            if event.failed() {
                "failure"
            } else if event.kind == Kind::Alarm {
                "unknown"
            } else {
                "success"
            }
        );
    }
    let cef = parse_cef(&encode(Format::Cef, &row_change()));
    assert_eq!(cef.header[4], "row_change:UPDATE");
    assert_eq!(cef.header[5], "UPDATE public.users");
    assert_eq!(cef.ext["suser"], "app");
    assert_eq!(
        (cef.ext["cs1"].as_str(), cef.ext["cs1Label"].as_str()),
        ("alice@example.com", "appUser")
    );
    assert_eq!(cef.ext["src"], "10.1.2.3");
    assert_eq!(cef.ext["spt"], "54321");
    assert_eq!(cef.ext["cs4"], "public.users");
    assert_eq!(cef.ext["pgtrailNew"], r#"{"email":"b@x","id":1}"#);
    let cef = parse_cef(&encode(Format::Cef, &failed_login()));
    assert_eq!(cef.header[5], "login failed");
    assert_eq!(cef.header[6], "7");
    assert_eq!(cef.ext["cs5"], "28P01");
    assert_eq!(
        cef.ext["reason"],
        "password authentication failed for user \"app\""
    );
    assert_eq!(parse_cef(&encode(Format::Cef, &alarm())).header[6], "9");
}

#[test]
fn syslog_is_one_rfc5424_message_with_structured_data() {
    for (name, event) in every_kind() {
        let m = parse_syslog(&encode(Format::Syslog, &event));
        let facility = if event.kind == Kind::Session { 4 } else { 16 };
        let severity = match event.kind {
            Kind::Alarm => 1,
            _ if event.failed() => 4,
            _ => 6,
        };
        assert_eq!(m.pri, facility * 8 + severity, "{name}");
        assert_eq!(
            m.header[0],
            pgtrail_core::time::format_micros(&event.captured_at)
        );
        assert_eq!(m.header[1], "db-1.example.com");
        assert_eq!(m.header[2], "pgtrail");
        assert_eq!(m.header[3], std::process::id().to_string());
        assert_eq!(m.header[4], event.kind.as_str());
        assert_eq!(m.sd[0].0, SD_ID);
        assert_eq!(m.param("id"), Some(event.id.to_string().as_str()));
        assert_eq!(
            m.param("seq"),
            Some(event.seq.expect("sealed").to_string().as_str())
        );
        assert_eq!(m.param("hash"), event.hash.as_deref());
        let back: Event = serde_json::from_value(m.json()).expect("MSG is the event");
        assert_eq!(back, event, "{name}");
    }
    let mut out = Vec::new();
    Encoder::new(Format::Syslog)
        .with_facility(Facility::Local3)
        .encode(&failed_login(), &mut out)
        .expect("encodes");
    assert_eq!(parse_syslog(&out).pri, 19 * 8 + 4);
    let m = parse_syslog(&encode(Format::Syslog, &row_change()));
    assert_eq!(m.param("table"), Some("public.users"));
    assert_eq!(m.param("app_user"), Some("alice@example.com"));
}

#[test]
fn csv_has_the_documented_columns() {
    for (name, event) in every_kind() {
        let row = one_csv_record(&event);
        assert_eq!(row["id"], event.id.to_string(), "{name}");
        assert_eq!(row["seq"], event.seq.expect("sealed").to_string());
        assert_eq!(row["kind"], event.kind.as_str());
        assert_eq!(row["hash"], event.hash.clone().unwrap_or_default());
    }
    let row = one_csv_record(&row_change());
    assert_eq!(row["new"], r#"{"email":"b@x","id":1}"#);
    assert_eq!(row["changed"], r#"["email"]"#);
    assert_eq!(row["captured_at"], "2026-12-06T12:34:56.123456Z");
    let row = one_csv_record(&failed_login());
    assert_eq!(
        row["error"],
        "password authentication failed for user \"app\""
    );
    assert!(Encoder::new(Format::Jsonl).header().is_empty());
}

#[test]
fn each_format_writes_a_checkpoint_record() {
    let c = checkpoint();
    let write = |format| {
        let mut out = Vec::new();
        Encoder::new(format)
            .encode_checkpoint(&c, &mut out)
            .expect("encodes");
        out
    };
    let v = one_json_line(&write(Format::Jsonl));
    let back: Checkpoint = serde_json::from_value(v["checkpoint"].clone()).expect("a checkpoint");
    assert_eq!(back, c);
    let v = one_json_line(&write(Format::Ocsf));
    assert_eq!(
        (v["class_uid"].as_i64(), v["type_uid"].as_i64()),
        (Some(0), Some(99))
    );
    assert_eq!(v["unmapped"]["checkpoint"]["note"], json!(c.note));
    assert_eq!(v["time"], c.created_at.timestamp_millis());
    let v = one_json_line(&write(Format::Ecs));
    assert_eq!(v["event"]["kind"], "state");
    assert_eq!(v["pgtrail"]["checkpoint"]["seq"], 18);
    let cef = parse_cef(&write(Format::Cef));
    assert_eq!(cef.header[4], "checkpoint");
    assert_eq!(cef.ext.get("pgtrailNote"), c.note.as_ref());
    assert_eq!(cef.ext["cn1"], "18");
    assert_eq!(cef.ext["cs6"], c.hash);
    let m = parse_syslog(&write(Format::Syslog));
    assert_eq!(m.header[4], "checkpoint");
    assert_eq!(m.param("hash"), Some(c.hash.as_str()));
    assert_eq!(m.json()["checkpoint"]["note"], json!(c.note));
    let encoder = Encoder::new(Format::Csv);
    let mut out = encoder.header();
    encoder.encode_checkpoint(&c, &mut out).expect("encodes");
    let records = parse_csv(&out);
    assert_eq!(records.len(), 2);
    let row: BTreeMap<&str, &str> = CSV_COLUMNS
        .iter()
        .copied()
        .zip(records[1].iter().map(String::as_str))
        .collect();
    assert_eq!(
        (row["kind"], row["seq"], row["hash"]),
        ("checkpoint", "18", c.hash.as_str())
    );
    let inner: Value = serde_json::from_str(row["context"]).expect("JSON");
    assert_eq!(inner["note"], json!(c.note));
}

// ------------------------------------------------------------- attacks

/// What an application controls (its claimed user, its SQL, its row
/// values, a quoted table name) set to `hostile`.
fn hostile_event(hostile: &str) -> Event {
    let mut e = statement();
    e.app_user = Some(hostile.to_string());
    e.sql = Some(hostile.to_string());
    e.error = Some(hostile.to_string());
    e.sqlstate = Some("XX000".into());
    e.table = Some(hostile.to_string());
    e.operation = Some(hostile.to_string());
    e.application_name = Some(hostile.to_string());
    e.new = Some(object(json!({ hostile: hostile, "k": [hostile] })));
    e
}

/// Every format: one record, and the hostile text comes back as the
/// value of the fields it was put in (exactly, or with the control
/// characters a format documents it replaces).
fn assert_contained(hostile: &str) {
    let event = hostile_event(hostile);
    let context = format!("hostile value {hostile:?}");

    let v = one_json_line(&encode(Format::Jsonl, &event));
    assert_eq!(v["app_user"], hostile, "{context}");
    assert_eq!(v["sql"], hostile, "{context}");

    let v = one_json_line(&encode(Format::Ocsf, &event));
    assert_eq!(v["unmapped"]["app_user"], hostile, "{context}");
    assert_eq!(v["query_info"]["query_string"], hostile, "{context}");
    assert_eq!(v["unmapped"]["new"][hostile], hostile, "{context}");
    assert_eq!(v["class_uid"], 6005, "{context}");

    let v = one_json_line(&encode(Format::Ecs, &event));
    assert_eq!(v["db"]["query"]["text"], hostile, "{context}");
    assert_eq!(v["related"]["user"][1], hostile, "{context}");
    assert_eq!(v["event"]["outcome"], "failure", "{context}");

    let cef = parse_cef(&encode(Format::Cef, &event));
    let cef_value: String = hostile
        .chars()
        .map(|c| {
            if c < ' ' && !matches!(c, '\t' | '\n' | '\r') {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    assert_eq!(cef.header.len(), 7, "{context}");
    assert_eq!(cef.ext["cs1"], cef_value, "{context}");
    assert_eq!(cef.ext["cs2"], cef_value, "{context}");
    assert_eq!(cef.ext["reason"], cef_value, "{context}");
    assert_eq!(cef.ext["act"], cef_value, "{context}");
    assert_eq!(cef.ext["cs5"], "XX000", "{context}");
    assert_eq!(cef.ext["suser"], "app", "{context}");
    assert_eq!(cef.ext["outcome"], "failure", "{context}");
    let new: Value = serde_json::from_str(&cef.ext["pgtrailNew"]).expect("JSON");
    assert_eq!(new[hostile], hostile, "{context}");

    let m = parse_syslog(&encode(Format::Syslog, &event));
    let sd_value: String = hostile
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    assert_eq!(m.sd.len(), 1, "{context}");
    assert_eq!(m.param("app_user"), Some(sd_value.as_str()), "{context}");
    assert_eq!(m.param("operation"), Some(sd_value.as_str()), "{context}");
    assert_eq!(m.param("db_user"), Some("app"), "{context}");
    assert_eq!(m.param("sqlstate"), Some("XX000"), "{context}");
    assert_eq!(m.header[4], "statement", "{context}");
    let back: Event = serde_json::from_value(m.json()).expect("MSG is the event");
    assert_eq!(back, event, "{context}");

    let row = one_csv_record(&event);
    assert_eq!(unguarded(&row["app_user"]), hostile, "{context}");
    assert_eq!(unguarded(&row["sql"]), hostile, "{context}");
    assert_eq!(row["db_user"], "app", "{context}");
    let new: Value = serde_json::from_str(&row["new"]).expect("JSON");
    assert_eq!(new[hostile], hostile, "{context}");
}

#[test]
fn hostile_values_cannot_forge_a_record_or_a_field() {
    for hostile in [
        "",
        "a|b",
        "x\\|y",
        "a=b",
        "c\\=d",
        " suser=root",
        "x suser=root cs1=admin",
        "line\nCEF:0|evil|evil|1|sig|forged|10|suser=root",
        "line\r\n<13>1 2026-01-01T00:00:00Z evil evil - - - forged",
        "] [pgtrail@32473 db_user=\"root\"]",
        "\"quoted\" \\\"",
        "back\\slash\\",
        "nul\0byte",
        "=HYPERLINK(\"http://evil\",\"x\")",
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(1,2)",
        "\t=1",
        "\r=1",
        "tab\tinside",
        "trailing space ",
        "é 漢字 😀 \u{2028}\u{feff}",
        "a,b\r\nc,d",
        "\\",
        "=",
        "|",
        "]",
        "\"",
    ] {
        assert_contained(hostile);
    }
}

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_hostile_strings_stay_values() {
    const PIECES: [&str; 24] = [
        "|",
        "=",
        "\\",
        "\n",
        "\r",
        "\r\n",
        "]",
        "[",
        "\"",
        "'",
        ",",
        " ",
        "\t",
        "\0",
        "\u{1b}",
        "CEF:0|",
        "<13>1 ",
        "suser=",
        "cs1=",
        "pgtrail@32473",
        "é",
        "😀",
        "\u{7f}",
        "=cmd",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..2_000 {
        let mut s = String::new();
        for _ in 0..rng.below(12) {
            if rng.below(4) == 0 {
                s.push(char::from(b'a' + rng.below(26) as u8));
            } else {
                s.push_str(PIECES[rng.below(PIECES.len())]);
            }
        }
        if round % 3 == 0 {
            s.insert(0, ['=', '+', '-', '@'][rng.below(4)]);
        }
        assert_contained(&s);
    }
}

#[test]
fn a_megabyte_statement_is_one_record() {
    let sql = format!("SELECT '{}'", "x|=]\"\\\n".repeat(150_000));
    assert!(sql.len() > 1_000_000);
    assert_contained(&sql);
}

#[test]
fn a_deeply_nested_row_image_does_not_overflow_the_stack() {
    // Postgres accepts jsonb a few thousand levels deep; a recursive writer
    // would overflow a 2 MiB thread long before 20,000.
    let text = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep = pgtrail_core::json::parse(&text).expect("parses");
    let mut event = row_change();
    let mut new = JsonObject::new();
    new.insert("deep".into(), deep);
    event.new = Some(new);
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            for format in Format::ALL {
                let out = encode(format, &event);
                assert!(out.len() > 40_000, "{format}");
                if format != Format::Syslog {
                    assert!(out.ends_with(b"\n"), "{format}");
                }
            }
        })
        .expect("spawns")
        .join()
        .expect("no overflow");
}

#[test]
fn format_names_parse_and_unknown_ones_are_refused() {
    for format in Format::ALL {
        assert_eq!(format.as_str().parse::<Format>().expect("known"), format);
    }
    assert_eq!("CEF".parse::<Format>().expect("any case"), Format::Cef);
    let error = "leef".parse::<Format>().expect_err("unknown");
    assert!(error
        .to_string()
        .contains("jsonl, ocsf, ecs, cef, syslog, csv"));
    assert_eq!(
        "local7".parse::<Facility>().expect("known"),
        Facility::Local7
    );
    assert!("kern".parse::<Facility>().is_err());
}
