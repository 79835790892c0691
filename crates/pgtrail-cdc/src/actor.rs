//! Who made a change: the actor pgtrail's logical messages carry.
//!
//! Logical decoding alone says what changed, never who changed it. With
//! `--setup --actor`, pgtrail installs (see [`crate::triggers`]) a BEFORE
//! ... FOR EACH STATEMENT trigger on every captured table that emits a
//! transactional logical message ([`CONTEXT_PREFIX`]) holding the
//! application user and context from the session settings, the session and
//! current role, the client address and port, `application_name` and the
//! backend pid — once per transaction, and again only when one of them
//! changes (it remembers the last payload in a transaction-local setting).
//! Because the message is transactional and written before the statement's
//! rows, it arrives inside the transaction ahead of the changes it
//! describes; the assembler attaches the latest actor to every following
//! change of the transaction.
//!
//! The trigger's payload is a JSON array of texts in fixed positions (see
//! [`Actor::parse`]): one `to_json(array[…])` costs the writer far fewer
//! instructions than `json_build_object`, which looks up the type of each of
//! its sixteen arguments on every call. The object form is still read: DDL
//! messages, spill files and triggers installed by older versions use it.
//!
//! DDL arrives the same way: an event trigger emits [`DDL_PREFIX`] messages
//! with the command tag, the objects and the statement text.

use pgtrail_core::event::{Channel, JsonObject};
use pgtrail_core::{sql_comment, Event};
use serde::Deserialize;
use serde_json::Value;

/// Prefix of the actor messages.
pub const CONTEXT_PREFIX: &str = "pgtrail";
/// Prefix of the DDL messages.
pub const DDL_PREFIX: &str = "pgtrail.ddl";

/// Position of the first user setting in the trigger's array payload.
const ARRAY_USER_SETTINGS: usize = 8;

/// The actor of the statements that follow, as the context message carries it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Actor {
    /// Application user from the configured session settings.
    #[serde(default)]
    pub app_user: Option<String>,
    /// The context setting's text (a JSON object when the application followed the convention).
    #[serde(default)]
    pub context: Option<String>,
    /// `session_user`.
    #[serde(default)]
    pub db_user: Option<String>,
    /// The role set with SET ROLE (from triggers before schema `pgtrail_cdc`:
    /// `current_user`, which also differed inside SECURITY DEFINER functions).
    #[serde(default)]
    pub current_user: Option<String>,
    /// `inet_client_addr()`; absent for Unix-socket clients.
    #[serde(default)]
    pub client_addr: Option<String>,
    /// `inet_client_port()`.
    #[serde(default)]
    pub client_port: Option<i32>,
    /// `application_name`.
    #[serde(default)]
    pub application_name: Option<String>,
    /// `pg_backend_pid()`.
    #[serde(default)]
    pub backend_pid: Option<i32>,
    /// The pairs of the statement's sqlcommenter comment, if it had one
    /// (see `pgtrail_core::sql_comment`).
    #[serde(default)]
    pub comment: Vec<(String, String)>,
}

impl Actor {
    /// Parses a context message's payload: a JSON object with the field
    /// names, or the trigger's array of texts `[db_user, current_user,
    /// client_addr, client_port, application_name, backend_pid, context,
    /// statement comment, user setting 1, user setting 2, …]`, where the
    /// first user setting that is set and not empty is the application user
    /// and the statement comment is the sqlcommenter comment the trigger
    /// found at the end (or start) of the statement.
    pub fn parse(content: &[u8]) -> Result<Actor, serde_json::Error> {
        if content.trim_ascii_start().first() != Some(&b'[') {
            return serde_json::from_slice(content);
        }
        let fields: Vec<Option<String>> = serde_json::from_slice(content)?;
        if fields.len() < ARRAY_USER_SETTINGS {
            return Err(serde::de::Error::invalid_length(
                fields.len(),
                &"at least 8 actor fields",
            ));
        }
        let number = |text: &Option<String>| -> Result<Option<i32>, serde_json::Error> {
            text.as_deref()
                .map(|t| t.parse::<i32>().map_err(serde::de::Error::custom))
                .transpose()
        };
        let mut fields = fields.into_iter();
        let mut next = || fields.next().flatten();
        Ok(Actor {
            db_user: next(),
            // The context function reads the role set with SET ROLE ('none'
            // when none: no role can be named so); earlier ones, current_user.
            current_user: next().filter(|role| role != "none"),
            client_addr: next(),
            client_port: number(&next())?,
            application_name: next(),
            backend_pid: number(&next())?,
            context: next(),
            comment: next()
                .and_then(|text| sql_comment::parse(&text))
                .unwrap_or_default(),
            app_user: std::iter::from_fn(|| fields.next())
                .flatten()
                .find(|user| !user.is_empty()),
        })
    }

    /// Sets the actor fields of `event`; the statement's comment names the
    /// user (by the first of `comment_user_keys` it has) where no setting
    /// did, and adds its pairs to the context. The session fields are
    /// recorded as vouched for by the server (only pgtrail's own functions
    /// may emit these messages: see [`crate::triggers`]), the settings and
    /// the comment as the application's claims.
    pub fn apply_to(&self, event: &mut Event, comment_user_keys: &[String]) {
        event.app_user = self.app_user.clone().filter(|u| !u.is_empty());
        event.db_user = self.db_user.clone();
        event.client_addr = self.client_addr.clone();
        event.client_port = self.client_port;
        event.application_name = self.application_name.clone().filter(|a| !a.is_empty());
        event.backend_pid = self.backend_pid;
        let mut context = JsonObject::new();
        if let Some(text) = self.context.as_deref().filter(|t| !t.is_empty()) {
            // Core's reader: any depth, any key. Not an object, or one that
            // repeats a key: kept verbatim rather than dropped.
            match pgtrail_core::json::parse_captured(text) {
                Ok(pgtrail_core::json::Parsed {
                    value: Value::Object(object),
                    duplicates,
                }) if duplicates.is_empty() => context = object,
                _ => {
                    context.insert("value".into(), Value::String(text.to_string()));
                }
            }
        }
        let context_claimed = !context.is_empty();
        if let (Some(current), Some(session)) = (&self.current_user, &self.db_user) {
            if current != session {
                context.insert("current_user".into(), Value::String(current.clone()));
            }
        }
        event.context = (!context.is_empty()).then_some(context);
        event.provenance = None;
        event.vouch_server_fields();
        if event.app_user.is_some() {
            event.claim("app_user", Channel::Setting);
        }
        if context_claimed {
            event.claim("context", Channel::Setting);
        }
        if event.application_name.is_some() {
            event.claim("application_name", Channel::Setting);
        }
        sql_comment::apply_pairs(event, &self.comment, comment_user_keys);
    }
}

/// A DDL message's payload: the command and the actor (the context
/// function's array under `actor`, or, from earlier versions, the actor's
/// fields beside the command's).
#[derive(Debug, Clone, Deserialize)]
pub struct DdlMessage {
    /// The command tag, e.g. `ALTER TABLE`.
    pub command_tag: String,
    /// `object_identity` of every object the command created, altered or dropped.
    #[serde(default)]
    pub objects: Vec<String>,
    /// Schema of the first object, when it has one.
    #[serde(default)]
    pub schema: Option<String>,
    /// The statement text (`current_query()`).
    #[serde(default)]
    pub sql: Option<String>,
    /// Who ran it.
    #[serde(flatten)]
    pub actor: Actor,
}

impl DdlMessage {
    /// Parses a DDL message's payload.
    pub fn parse(content: &[u8]) -> Result<DdlMessage, serde_json::Error> {
        let mut object: JsonObject = serde_json::from_slice(content)?;
        let array = match object.remove("actor") {
            Some(array @ Value::Array(_)) => Some(array),
            Some(_) => return Err(serde::de::Error::custom("the DDL actor is not an array")),
            None => None,
        };
        let mut ddl: DdlMessage = serde_json::from_value(Value::Object(object))?;
        if let Some(array) = array {
            ddl.actor = Actor::parse(array.to_string().as_bytes())?;
        }
        Ok(ddl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgtrail_core::{Kind, Source};

    #[test]
    fn actor_fills_the_event_and_keeps_odd_context() {
        let actor = Actor::parse(
            br#"{"app_user":"alice","context":"{\"request_id\":\"r1\"}","db_user":"app","current_user":"admin",
                "client_addr":"10.0.0.5","client_port":5123,"application_name":"web","backend_pid":42}"#,
        )
        .expect("valid payload");
        let mut event = Event::new(Source::Cdc, Kind::RowChange);
        actor.apply_to(&mut event, &[]);
        assert_eq!(event.app_user.as_deref(), Some("alice"));
        assert_eq!(event.db_user.as_deref(), Some("app"));
        assert_eq!(
            (event.client_port, event.backend_pid),
            (Some(5123), Some(42))
        );
        let context = event.context.clone().expect("context");
        assert_eq!(context["request_id"], "r1");
        assert_eq!(context["current_user"], "admin");

        let actor = Actor::parse(br#"{"context":"not json","db_user":"app","current_user":"app"}"#)
            .expect("valid");
        let mut event = Event::new(Source::Cdc, Kind::RowChange);
        actor.apply_to(&mut event, &[]);
        assert_eq!(event.context.clone().expect("kept")["value"], "not json");
        assert_eq!(event.app_user, None);
    }

    #[test]
    fn array_payload_of_the_trigger() {
        let actor = Actor::parse(
            br#"["app","admin","10.0.0.5","5123","web","42","{\"request_id\":\"r1\"}",null,"","bob"]"#,
        )
        .expect("valid payload");
        assert_eq!(
            actor,
            Actor {
                app_user: Some("bob".into()),
                context: Some(r#"{"request_id":"r1"}"#.into()),
                db_user: Some("app".into()),
                current_user: Some("admin".into()),
                client_addr: Some("10.0.0.5".into()),
                client_port: Some(5123),
                application_name: Some("web".into()),
                backend_pid: Some(42),
                comment: Vec::new(),
            },
            "the first user setting that is set and not empty wins"
        );
        let unix_socket =
            Actor::parse(br#"["app","app",null,null,"","7",null,null]"#).expect("valid");
        assert_eq!(
            (unix_socket.client_port, unix_socket.app_user),
            (None, None)
        );
        assert!(Actor::parse(br#"["app","app",null]"#).is_err(), "too short");
        assert!(
            Actor::parse(br#"["app","app",null,"x","","7",null,null]"#).is_err(),
            "bad port"
        );
    }

    #[test]
    fn the_statements_comment_names_the_user_where_no_setting_did() {
        let commented =
            br#"["app","app",null,null,"","7",null,"/*request_id='r9',user='dana'*/",null]"#;
        let actor = Actor::parse(commented).expect("valid");
        let mut event = Event::new(Source::Cdc, Kind::RowChange);
        actor.apply_to(&mut event, &["user".to_string()]);
        assert_eq!(event.app_user.as_deref(), Some("dana"));
        assert_eq!(event.context.clone().expect("context")["request_id"], "r9");

        let with_setting = br#"["app","app",null,null,"","7",null,"/*user='dana'*/","erin"]"#;
        let mut event = Event::new(Source::Cdc, Kind::RowChange);
        Actor::parse(with_setting)
            .expect("valid")
            .apply_to(&mut event, &["user".to_string()]);
        assert_eq!(event.app_user.as_deref(), Some("erin"), "the setting wins");
    }

    #[test]
    fn ddl_payload() {
        let ddl = DdlMessage::parse(
            br#"{"command_tag":"ALTER TABLE","objects":["public.t"],"schema":"public","sql":"alter table t add c int","db_user":"postgres"}"#,
        )
        .expect("valid");
        assert_eq!(ddl.command_tag, "ALTER TABLE");
        assert_eq!(ddl.actor.db_user.as_deref(), Some("postgres"));

        // The context function's form: the actor array, its role 'none'.
        let ddl = DdlMessage::parse(
            br#"{"command_tag":"CREATE TABLE","objects":["public.t"],"actor":["app","none","10.0.0.5","5123","psql","42",null,null,"alice"]}"#,
        )
        .expect("valid");
        assert_eq!(ddl.actor.current_user, None, "no SET ROLE");
        let mut event = Event::new(Source::Cdc, Kind::Ddl);
        ddl.actor.apply_to(&mut event, &[]);
        assert_eq!(
            (event.db_user.as_deref(), event.app_user.as_deref()),
            (Some("app"), Some("alice"))
        );
        let provenance = event.provenance.clone().expect("provenance");
        assert_eq!(
            provenance.vouched,
            ["backend_pid", "client_addr", "client_port", "db_user"]
        );
        assert_eq!(provenance.channels("app_user"), [Channel::Setting]);
        assert_eq!(provenance.channels("application_name"), [Channel::Setting]);
        assert!(DdlMessage::parse(br#"{"command_tag":"X","actor":"boss"}"#).is_err());
    }
}
