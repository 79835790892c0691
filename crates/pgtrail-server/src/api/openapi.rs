//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, written from
//! the route table the router is built from ([`super::ROUTES`]). The event
//! schema is pgtrail's own (`schema/event.schema.json`, which a test holds
//! every serialized event to); OpenAPI 3.1 takes JSON Schema 2020-12 as is.

use axum::Json;
use serde_json::{json, Map, Value};

use super::{In, ROUTES};

/// The event's JSON Schema.
const EVENT_SCHEMA: &str = include_str!("../../../../schema/event.schema.json");

/// `GET /api/v1/openapi.json`. Describes the API, not the trail: no access
/// record.
pub async fn document() -> Json<Value> {
    Json(openapi())
}

/// The document.
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut parameters = Vec::new();
        for param in route.params.iter().flat_map(|group| group.iter()) {
            parameters.push(json!({
                "name": param.name,
                "in": match param.at {
                    In::Query => "query",
                    In::Path => "path",
                    In::Header => "header",
                },
                "required": param.required,
                "description": param.description,
                "schema": { "type": param.kind },
            }));
        }
        let (status, media, schema) = route.ok;
        let problem = json!({
            "description": "A problem (RFC 9457)",
            "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
        });
        let operation = json!({
            "summary": route.summary,
            "operationId": operation_id(route.method, route.path),
            "parameters": parameters,
            "security": [{ "token": [] }],
            "responses": {
                status.to_string(): {
                    "description": route.summary,
                    "content": { media: { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
                },
                "400": problem.clone(),
                "401": { "description": "No valid credential" },
                "404": problem.clone(),
                "503": problem,
            }
        });
        let item = paths
            .entry(format!("/api/v1{}", route.path))
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(route.method.to_string(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "pgtrail HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Search and read pgtrail's audit trail. Every read is itself recorded in the trail (kind = access). See docs/api.md.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": { "type": "http", "scheme": "bearer", "description": "A token from `pgtrail token create` (none needed from loopback before any token exists)." }
            },
            "schemas": components(),
        },
    })
}

/// A report's schema: its own `properties`, the parameters it ran with and
/// what it read (`scanned.capped`: it stopped at the cap).
fn report(properties: Value) -> Value {
    let mut all = json!({
        "params": { "type": "object" },
        "scanned": { "type": "object", "properties": {
            "events": { "type": "integer" }, "capped": { "type": "boolean" }, "cap": { "type": "integer" } } },
    });
    if let (Value::Object(all), Value::Object(own)) = (&mut all, properties) {
        all.extend(own);
    }
    json!({ "type": "object", "properties": all })
}

/// `get /rows/{table}/{pk}/as-of` → `getRowsTablePkAsOf`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for word in path.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            id.push(first.to_ascii_uppercase());
            id.extend(chars);
        }
    }
    id
}

/// The answers' schemas.
fn components() -> Value {
    let event: Value =
        serde_json::from_str(EVENT_SCHEMA).unwrap_or_else(|_| json!({ "type": "object" }));
    let event_ref = json!({ "$ref": "#/components/schemas/Event" });
    let events = json!({ "type": "array", "items": event_ref });
    let time = json!({ "type": "string", "format": "date-time" });
    let nullable_int = json!({ "type": ["integer", "null"] });
    let failure_counts = json!({ "type": "array", "items": { "type": "object", "properties": {
        "value": { "type": ["string", "null"] }, "count": { "type": "integer" }, "last": time } } });
    json!({
        "Event": event,
        "Page": {
            "type": "object",
            "required": ["events", "next"],
            "properties": {
                "events": events,
                "next": { "type": ["integer", "null"], "description": "Pass as before= for the next page; null on the last." },
            },
        },
        "EventView": {
            "type": "object",
            "required": ["event", "transaction"],
            "properties": {
                "event": event_ref,
                "transaction": {
                    "type": "object",
                    "properties": {
                        "events": events,
                        "complete": { "type": "boolean" },
                    },
                },
                "linked": {
                    "type": ["object", "null"],
                    "description": "Across capture paths: the proxy's statements of the event's transaction and the row changes they made (pgtrail log --tx).",
                    "properties": {
                        "tx": { "type": "string", "description": "An xid, or the proxy's PID@TIME." },
                        "xids": { "type": "array", "items": { "type": "integer" } },
                        "backend_pid": { "type": ["integer", "null"] },
                        "statements": events,
                        "changes": events,
                        "made_by": { "type": "array", "items": { "type": ["integer", "null"] }, "description": "For each change, the index in statements of the one that made it." },
                    },
                },
            },
        },
        "Csv": { "type": "string", "description": "A header line of every event field, then one line per event (RFC 4180)." },
        "History": {
            "type": "object",
            "properties": {
                "row": { "type": "object" },
                "changes": { "type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "event": event_ref,
                        "changes": { "type": "array", "items": { "type": "object", "properties": {
                            "column": { "type": "string" }, "old": {}, "new": {} } } },
                    },
                } },
            },
        },
        "AsOf": {
            "type": "object",
            "required": ["row", "at", "state"],
            "properties": {
                "row": { "type": "object" },
                "at": time,
                "state": { "enum": ["not_yet_existing", "existing", "deleted"] },
                "values": { "type": "object" },
                "last": event_ref,
                "by": event_ref,
                "first": event_ref,
            },
        },
        "Blame": {
            "type": "object",
            "properties": {
                "row": { "type": "object" },
                "exists": { "type": "boolean" },
                "columns": { "type": "array", "items": { "type": "object", "properties": {
                    "column": { "type": "string" }, "value": {}, "event": event_ref } } },
            },
        },
        "Ddl": {
            "type": "object",
            "properties": {
                "transactions": { "type": "array", "items": { "type": "object", "properties": {
                    "xid": nullable_int, "at": time, "actor": { "type": ["string", "null"] }, "events": events } } },
                "partial": { "type": "boolean" },
            },
        },
        "Sessions": {
            "type": "object",
            "properties": {
                "failed_logins": { "type": "array", "items": { "type": "object" } },
                "sessions": { "type": "array", "items": { "type": "object" } },
                "partial": { "type": "boolean" },
            },
        },
        "Failures": {
            "type": "object",
            "properties": {
                "logins_by_user": failure_counts,
                "logins_by_addr": failure_counts,
                "statements_by_user": failure_counts,
                "statements_by_addr": failure_counts,
                "partial": { "type": "boolean" },
            },
        },
        "Status": {
            "type": "object",
            "properties": {
                "store": { "type": "string" },
                "head": { "type": ["object", "null"] },
                "checkpoints": { "type": "object" },
                "alarms": { "type": "array", "items": { "type": "object" } },
                "recent_alarms": events,
            },
        },
        "Verify": {
            "type": "object",
            "properties": {
                "state": { "enum": ["idle", "running", "done", "failed"] },
                "events_checked": { "type": "integer" },
                "head_seq": nullable_int,
                "ok": { "type": ["boolean", "null"] },
                "report": { "type": ["object", "null"] },
            },
        },
        "BulkReport": report(json!({
            "rows": { "type": "array", "items": { "type": "object", "properties": {
                "user": { "type": "string" }, "table": { "type": "string" }, "operation": { "type": "string" },
                "rows": { "type": "integer" }, "first": time, "last": time } } },
        })),
        "AfterHoursReport": report(json!({
            "users": { "type": "array", "items": { "type": "object", "properties": {
                "user": { "type": "string" }, "events": { "type": "integer" }, "first": time, "last": time } } },
            "events": { "type": "array", "items": { "type": "object" }, "description": "The newest of them, at most 200." },
        })),
        "SpikeReport": report(json!({
            "spikes": { "type": "array", "items": { "type": "object", "properties": {
                "table": { "type": "string" }, "hour": time, "deletes": { "type": "integer" },
                "usual_per_hour": { "type": "number" }, "users": { "type": "array" } } } },
            "tables": { "type": "integer" },
        })),
        "WhoReadReport": report(json!({
            "reads": { "type": "array", "items": { "type": "object", "properties": {
                "line": { "type": "object" }, "sql": { "type": ["string", "null"] }, "rows": nullable_int,
                "failed": { "type": "boolean" },
                "mentions": { "enum": ["text", "params", "no", "unknown"], "description": "Whether the statement's text or parameters name every value of the key: a read that does not may still have read the row." } } } },
            "total": { "type": "integer" },
            "naming_key": { "type": "integer" },
        })),
        "OpenApi": { "type": "object" },
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": { "type": "string", "format": "uri" },
                "title": { "type": "string" },
                "status": { "type": "integer" },
                "detail": { "type": "string" },
                "parameter": { "type": "string", "description": "The parameter at fault." },
            },
        },
    })
}
