//! What the application claims about its user, as the proxy sees it in the
//! traffic: `SET [SESSION|LOCAL] pgtrail."user" = …`, `RESET`,
//! `set_config('pgtrail.user', …, is_local)`, a sqlcommenter comment on the
//! statement, and `-c pgtrail.user=…` in the startup packet's `options`.
//!
//! Every claim says the channel it came through and how long it lasts
//! (the session, the transaction for `SET LOCAL` and `is_local = true`, or
//! the one statement for a comment). A value pgtrail cannot read from the
//! text (`set_config($1, …)`, `set_config('pgtrail.user', lower(x), …)`) is
//! recorded as [`ClaimValue::Unknown`], never guessed. The setting names
//! and comment keys come from `[identity]` (the same ones the trigger and
//! logical-replication paths read), and the comment is read by
//! `pgtrail_core::sql_comment`, the one sqlcommenter parser of every path;
//! only which comment it is given differs: here, a comment token the
//! scanner found at the start or end of the statement, so a comment-like
//! text inside a string literal is never taken for a claim.
//!
//! [`ClaimTracker`] follows the claims through a session with Postgres's
//! rules for settings: `SET LOCAL` ends with the transaction, and every
//! setting made in a transaction that rolls back is undone.

use std::collections::HashMap;

use pgtrail_core::config::IdentityConfig;
use pgtrail_core::sql_comment;
use serde::Serialize;

use crate::literal;
use crate::token::Tok;
use crate::REDACTED;

/// What a claim is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimField {
    /// The application's end user (`app_user`).
    AppUser,
    /// The application's context object (`context`).
    Context,
}

/// The channel a claim came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimChannel {
    /// `SET`/`RESET` of the setting.
    Set,
    /// A `set_config(…)` call.
    SetConfig,
    /// A sqlcommenter comment on the statement.
    Comment,
    /// `-c name=value` in the startup packet's `options`, or the setting
    /// itself as a startup parameter.
    StartupOption,
}

impl ClaimChannel {
    /// The event's channel for this claim (`provenance.claimed`).
    pub fn event_channel(self) -> pgtrail_core::event::Channel {
        match self {
            ClaimChannel::Comment => pgtrail_core::event::Channel::Comment,
            _ => pgtrail_core::event::Channel::Setting,
        }
    }
}

/// How long a claim holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimScope {
    /// Until changed (undone if its transaction rolls back).
    Session,
    /// Until the transaction ends (`SET LOCAL`, `set_config(…, true)`).
    Transaction,
    /// This statement only (a comment).
    Statement,
}

/// A claimed value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimValue {
    /// Set to this text.
    Set(String),
    /// Set, but to a value the text does not show (an expression, or a
    /// parameter whose value is not known).
    Unknown,
    /// Set to the value of parameter `$n` (1-based) of the statement: the
    /// proxy fills it in from the Bind message or EXECUTE's arguments
    /// ([`Claim::with_parameters`]); unfilled, it counts as unknown.
    Parameter(u32),
    /// Reset to the default (`RESET`, `SET … TO DEFAULT`, `RESET ALL`, `DISCARD ALL`).
    Reset,
}

/// One claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claim {
    /// What it is about.
    pub field: ClaimField,
    /// The setting or comment key that carried it; `None` for a
    /// `set_config` whose setting name is not a literal (it may have been
    /// the user setting: the value is then [`ClaimValue::Unknown`]).
    pub setting: Option<String>,
    /// The claimed value.
    pub value: ClaimValue,
    /// Where it came from.
    pub channel: ClaimChannel,
    /// How long it holds.
    pub scope: ClaimScope,
}

/// The setting names and comment keys that carry claims.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    user_settings: Vec<String>,
    context_setting: String,
    comment_user_keys: Vec<String>,
}

impl Names {
    pub(crate) fn new(identity: &IdentityConfig) -> Names {
        Names {
            user_settings: identity
                .user_settings
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            context_setting: identity.context_setting.to_ascii_lowercase(),
            comment_user_keys: identity.comment_user_keys.clone(),
        }
    }

    fn field(&self, setting: &str) -> Option<ClaimField> {
        let setting = setting.to_ascii_lowercase();
        if self.user_settings.contains(&setting) {
            Some(ClaimField::AppUser)
        } else if setting == self.context_setting {
            Some(ClaimField::Context)
        } else {
            None
        }
    }
}

/// A change of a session setting the statement makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SettingChange {
    /// The setting, lower case; `None` when a `set_config` names it with an
    /// expression; `Some("all")` for `RESET ALL`.
    pub(crate) name: Option<String>,
    pub(crate) value: ClaimValue,
    pub(crate) channel: ClaimChannel,
    pub(crate) scope: ClaimScope,
}

/// The setting changes of a statement's code tokens (comments removed):
/// `SET`/`RESET` when the statement is one, and every `set_config` call.
pub(crate) fn setting_changes(code: &[&Tok]) -> Vec<SettingChange> {
    let mut out = Vec::new();
    if let Some(change) = set_statement(code) {
        out.push(change);
    }
    for i in 0..code.len() {
        if let Some(change) = set_config_call(code, i) {
            out.push(change);
        }
    }
    out
}

/// The claims among `changes`, and the comment's.
pub(crate) fn claims(
    names: &Names,
    changes: &[SettingChange],
    comment: &[(String, String)],
) -> Vec<Claim> {
    let mut out = Vec::new();
    for change in changes {
        let fields: Vec<ClaimField> = match change.name.as_deref() {
            // RESET ALL / DISCARD ALL reset both.
            Some("all") if change.value == ClaimValue::Reset => {
                vec![ClaimField::AppUser, ClaimField::Context]
            }
            Some(name) => names.field(name).into_iter().collect(),
            // A setting named by an expression may be the user's.
            None => vec![ClaimField::AppUser],
        };
        for field in fields {
            out.push(Claim {
                field,
                setting: change.name.clone(),
                value: change.value.clone(),
                channel: change.channel,
                scope: change.scope,
            });
        }
    }
    let user = names.comment_user_keys.iter().find_map(|wanted| {
        comment
            .iter()
            .find(|(key, value)| key == wanted && !value.is_empty())
    });
    if let Some((key, value)) = user {
        out.push(Claim {
            field: ClaimField::AppUser,
            setting: Some(key.clone()),
            value: ClaimValue::Set(value.clone()),
            channel: ClaimChannel::Comment,
            scope: ClaimScope::Statement,
        });
    }
    out
}

/// The pairs of the sqlcommenter comment that ends (or else starts) the
/// statement, as the scanner found it: values of keys that name a secret
/// are replaced.
pub(crate) fn comment_pairs(tokens: &[&Tok]) -> Vec<(String, String)> {
    let pairs_of = |t: Option<&&Tok>| {
        t.filter(|t| t.token == pg_query::protobuf::Token::CComment)
            .and_then(|t| sql_comment::parse(t.text))
    };
    let pairs =
        pairs_of(tokens.iter().rev().find(|t| !t.is(";"))).or_else(|| pairs_of(tokens.first()));
    let mut pairs = pairs.unwrap_or_default();
    for (key, value) in &mut pairs {
        if literal::is_secret_name(key) {
            *value = REDACTED.to_string();
        } else if let Some(redacted) = literal::redact_credentials(value, REDACTED) {
            *value = redacted;
        }
    }
    pairs
}

/// `SET [SESSION|LOCAL] name {TO|=} value[, …] | DEFAULT` and `RESET name|ALL`.
fn set_statement(code: &[&Tok]) -> Option<SettingChange> {
    let first = code.first()?;
    if first.is_kw("RESET") {
        let (name, _) = dotted_name(code, 1)?;
        return Some(SettingChange {
            name: Some(name),
            value: ClaimValue::Reset,
            channel: ClaimChannel::Set,
            scope: ClaimScope::Session,
        });
    }
    if !first.is_kw("SET") {
        return None;
    }
    let mut i = 1;
    let mut scope = ClaimScope::Session;
    if code.get(i).is_some_and(|t| t.is_kw("LOCAL")) {
        scope = ClaimScope::Transaction;
        i += 1;
    } else if code.get(i).is_some_and(|t| t.is_kw("SESSION"))
        && !code
            .get(i + 1)
            .is_some_and(|t| t.is_kw("AUTHORIZATION") || t.is_kw("CHARACTERISTICS"))
    {
        i += 1;
    }
    let (name, next) = dotted_name(code, i)?;
    let assign = code.get(next)?;
    if !(assign.is_kw("TO") || assign.is("=")) {
        return None;
    }
    let values = &code[next + 1..];
    let value = if values.len() == 1 && values[0].is_kw("DEFAULT") {
        ClaimValue::Reset
    } else {
        let mut parts = Vec::new();
        for (k, tok) in values.iter().enumerate() {
            if k % 2 == 1 {
                if !tok.is(",") {
                    return None;
                }
                continue;
            }
            parts.push(value_text(tok)?);
        }
        // Several values are a list (search_path): quoted as Postgres
        // flattens list settings.
        if parts.len() > 1 || name == "search_path" {
            ClaimValue::Set(
                parts
                    .iter()
                    .map(|p| quote_list_item(p))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        } else {
            ClaimValue::Set(parts.pop()?)
        }
    };
    Some(SettingChange {
        name: Some(name),
        value,
        channel: ClaimChannel::Set,
        scope,
    })
}

/// A setting name `a.b.c` starting at `i`, and the index after it.
fn dotted_name(code: &[&Tok], mut i: usize) -> Option<(String, usize)> {
    let mut name = code.get(i)?.name()?;
    i += 1;
    while code.get(i).is_some_and(|t| t.is(".")) {
        name.push('.');
        name.push_str(&code.get(i + 1)?.name()?);
        i += 2;
    }
    Some((name, i))
}

/// The value a SET value token stands for (a string, a number, a name).
fn value_text(tok: &Tok) -> Option<String> {
    use pg_query::protobuf::Token;
    if tok.is_string() {
        return tok.string_value();
    }
    match tok.token {
        Token::Iconst | Token::Fconst => Some(tok.text.to_string()),
        _ => tok.name(),
    }
}

fn quote_list_item(item: &str) -> String {
    let plain = !item.is_empty()
        && item
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        item.to_string()
    } else {
        format!("\"{}\"", item.replace('"', "\"\""))
    }
}

/// A `set_config(name, value, is_local)` call starting at `i` (the
/// function's name, unqualified or `pg_catalog.`).
fn set_config_call(code: &[&Tok], i: usize) -> Option<SettingChange> {
    if code[i].name().as_deref() != Some("set_config") || !code.get(i + 1)?.is("(") {
        return None;
    }
    if i >= 1 && code[i - 1].is(".") {
        // Only pg_catalog's: another schema's set_config is another function.
        if i < 2 || code[i - 2].name().as_deref() != Some("pg_catalog") {
            return None;
        }
    }
    let args = call_args(code, i + 2)?;
    if args.len() != 3 {
        return None;
    }
    let name = literal_arg(&args[0]).map(|n| n.to_ascii_lowercase());
    let value = match (literal_arg(&args[1]), param_arg(&args[1])) {
        (Some(v), _) => ClaimValue::Set(v),
        (None, Some(n)) => ClaimValue::Parameter(n),
        (None, None) => ClaimValue::Unknown,
    };
    // is_local: true, false, or a string Postgres reads as a boolean; an
    // expression counts as session-wide (the longer-lasting reading).
    let local = match args[2].as_slice() {
        [t] if t.is_kw("TRUE") => true,
        [t] if t.is_kw("FALSE") => false,
        _ => literal_arg(&args[2]).is_some_and(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "t" | "true" | "on" | "y" | "yes" | "1"
            )
        }),
    };
    Some(SettingChange {
        name,
        value: if name_is_literal(&args[0]) {
            value
        } else {
            ClaimValue::Unknown
        },
        channel: ClaimChannel::SetConfig,
        scope: if local {
            ClaimScope::Transaction
        } else {
            ClaimScope::Session
        },
    })
}

/// The arguments of a call whose `(` is just before `start`, split at
/// top-level commas; `None` when the call is not closed.
fn call_args<'t, 'a>(code: &'t [&'t Tok<'a>], start: usize) -> Option<Vec<Vec<&'t Tok<'a>>>> {
    let mut args: Vec<Vec<&Tok>> = vec![Vec::new()];
    let mut depth = 0usize;
    for tok in code.get(start..)? {
        match tok.text {
            "(" | "[" => depth += 1,
            ")" if depth == 0 => return Some(args),
            ")" | "]" => depth = depth.saturating_sub(1),
            "," if depth == 0 => {
                args.push(Vec::new());
                continue;
            }
            _ => {}
        }
        if let Some(arg) = args.last_mut() {
            arg.push(*tok);
        }
    }
    None
}

/// The arguments of `EXECUTE name (a, b, …)`: each a literal's value, or
/// `None` for an expression.
pub(crate) fn execute_args(code: &[&Tok]) -> Vec<Option<String>> {
    if !code.get(2).is_some_and(|t| t.is("(")) {
        return Vec::new();
    }
    call_args(code, 3)
        .unwrap_or_default()
        .iter()
        .map(|arg| {
            literal_arg(arg).or_else(|| match arg.as_slice() {
                [t] if matches!(
                    t.token,
                    pg_query::protobuf::Token::Iconst | pg_query::protobuf::Token::Fconst
                ) =>
                {
                    Some(t.text.to_string())
                }
                _ => None,
            })
        })
        .collect()
}

/// `$n` (optionally cast to text): the parameter's number.
fn param_arg(arg: &[&Tok]) -> Option<u32> {
    let (first, rest) = arg.split_first()?;
    if first.token != pg_query::protobuf::Token::Param {
        return None;
    }
    let text_cast = match rest {
        [] => true,
        [cast, ty] => cast.is("::") && matches!(ty.name().as_deref(), Some("text" | "varchar")),
        _ => false,
    };
    text_cast.then(|| first.text.trim_start_matches('$').parse().ok())?
}

impl Claim {
    /// The claim with a [`ClaimValue::Parameter`] value replaced by that
    /// parameter's value from `params` (`None`: SQL NULL, a binary value,
    /// or a parameter not sent, all of which leave the value unknown).
    pub fn with_parameters(&self, params: &[Option<&str>]) -> Claim {
        let mut claim = self.clone();
        if let ClaimValue::Parameter(n) = claim.value {
            claim.value = usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| params.get(i).copied().flatten())
                .map_or(ClaimValue::Unknown, |v| ClaimValue::Set(v.to_string()));
        }
        claim
    }
}

fn name_is_literal(arg: &[&Tok]) -> bool {
    literal_arg(arg).is_some()
}

/// The value of an argument that is one string literal, optionally cast
/// (`'x'`, `'x'::text`); `None` for anything else.
fn literal_arg(arg: &[&Tok]) -> Option<String> {
    let (first, rest) = arg.split_first()?;
    if !first.is_string() {
        return None;
    }
    match rest {
        [] => first.string_value(),
        [cast, ty]
            if cast.is("::")
                && matches!(
                    ty.name().as_deref(),
                    Some("text" | "varchar" | "bool" | "boolean")
                ) =>
        {
            first.string_value()
        }
        _ => None,
    }
}

/// The settings of a startup packet's `options` parameter (`-c name=value`,
/// `-cname=value`, `--name=value`), split as the server splits it:
/// at unescaped whitespace, a backslash taking the next character
/// literally (libpq writes a space in a value as `\ `).
pub fn startup_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next()
        } else if let Some(rest) = word.strip_prefix("--") {
            // --name=value: dashes in the name stand for underscores.
            rest.split_once('=')
                .map(|(n, v)| format!("{}={v}", n.replace('-', "_")))
        } else {
            word.strip_prefix("-c").map(str::to_string)
        };
        if let Some((name, value)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((name.to_ascii_lowercase(), value.to_string()));
        }
    }
    out
}

/// The claims of a startup packet: its parameters (name, value), where
/// `options` holds `-c` settings and a custom setting may also be a
/// parameter of its own.
pub(crate) fn startup_claims(names: &Names, params: &[(&str, &str)]) -> Vec<Claim> {
    let mut settings = Vec::new();
    for (name, value) in params {
        if name.eq_ignore_ascii_case("options") {
            settings.extend(startup_options(value));
        } else {
            settings.push((name.to_ascii_lowercase(), value.to_string()));
        }
    }
    let changes: Vec<SettingChange> = settings
        .into_iter()
        .map(|(name, value)| SettingChange {
            name: Some(name),
            value: ClaimValue::Set(value),
            channel: ClaimChannel::StartupOption,
            scope: ClaimScope::Session,
        })
        .collect();
    claims(names, &changes, &[])
}

/// A claim as it stands in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The value (never [`ClaimValue::Reset`]: a reset leaves nothing held).
    pub value: ClaimValue,
    /// The channel it came through.
    pub channel: ClaimChannel,
    /// The setting that carries it (`None`: a `set_config` of an unknown name).
    pub setting: Option<String>,
}

/// One setting's value in layers, as Postgres keeps it.
#[derive(Debug, Clone, Default)]
struct Layers {
    committed: Option<Held>,
    /// Set (session-wide) in the open transaction: `Some(None)` is a reset.
    in_tx: Option<Option<Held>>,
    /// Set LOCAL in the open transaction.
    local: Option<Option<Held>>,
}

impl Layers {
    fn current(&self) -> Option<&Held> {
        match (&self.local, &self.in_tx) {
            (Some(local), _) => local.as_ref(),
            (None, Some(in_tx)) => in_tx.as_ref(),
            (None, None) => self.committed.as_ref(),
        }
    }
}

/// Follows one session's claims. The caller applies the claims of each
/// statement that succeeded ([`ClaimTracker::apply`]) and reports the end
/// of each transaction block ([`ClaimTracker::end_transaction`]).
///
/// Limits: a `ROLLBACK TO SAVEPOINT` undoes settings made after the
/// savepoint in Postgres, not here (they stay until the transaction ends);
/// settings made by functions the statement calls (other than a literal
/// `set_config`) are not seen at all.
#[derive(Debug, Clone, Default)]
pub struct ClaimTracker {
    /// Per field, per setting (the user may come from several settings:
    /// the first configured one that is set wins, as on the other paths).
    settings: HashMap<(FieldKey, Option<String>), Layers>,
    user_order: Vec<String>,
}

type FieldKey = u8;

fn field_key(field: ClaimField) -> FieldKey {
    match field {
        ClaimField::AppUser => 0,
        ClaimField::Context => 1,
    }
}

impl ClaimTracker {
    /// A tracker for a session whose user settings are, in order of
    /// precedence, `identity.user_settings`.
    pub fn new(identity: &IdentityConfig) -> ClaimTracker {
        ClaimTracker {
            settings: HashMap::new(),
            user_order: identity
                .user_settings
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Applies the claims of a statement that succeeded. `in_block`: the
    /// statement ran inside a transaction block (`BEGIN` … `COMMIT`); outside
    /// one, a session claim holds at once and a transaction-scoped one has
    /// already ended. Comment claims are the statement's own and are not kept.
    pub fn apply(&mut self, claims: &[Claim], in_block: bool) {
        for claim in claims {
            if claim.channel == ClaimChannel::Comment {
                continue;
            }
            let key = (field_key(claim.field), claim.setting.clone());
            let held = match &claim.value {
                ClaimValue::Reset => None,
                ClaimValue::Parameter(_) => Some(Held {
                    value: ClaimValue::Unknown,
                    channel: claim.channel,
                    setting: claim.setting.clone(),
                }),
                value => Some(Held {
                    value: value.clone(),
                    channel: claim.channel,
                    setting: claim.setting.clone(),
                }),
            };
            if claim.setting.is_none() {
                // A set_config of a setting named by an expression: any
                // user setting may now hold anything.
                for setting in self.user_order.clone() {
                    self.set((0, Some(setting)), held.clone(), claim.scope, in_block);
                }
                continue;
            }
            if claim.setting.as_deref() == Some("all") {
                // RESET ALL / DISCARD ALL: every setting of the field.
                let keys: Vec<_> = self
                    .settings
                    .keys()
                    .filter(|(f, _)| *f == key.0)
                    .cloned()
                    .collect();
                for k in keys {
                    self.set(k, None, claim.scope, in_block);
                }
                continue;
            }
            self.set(key, held, claim.scope, in_block);
        }
    }

    fn set(
        &mut self,
        key: (FieldKey, Option<String>),
        held: Option<Held>,
        scope: ClaimScope,
        in_block: bool,
    ) {
        let layers = self.settings.entry(key).or_default();
        match (scope, in_block) {
            (ClaimScope::Session, true) => {
                layers.in_tx = Some(held);
                layers.local = None;
            }
            (ClaimScope::Session, false) => layers.committed = held,
            (ClaimScope::Transaction, true) => layers.local = Some(held),
            (ClaimScope::Transaction, false) | (ClaimScope::Statement, _) => {}
        }
    }

    /// The transaction block ended: committed, or rolled back (which undoes
    /// every setting made in it).
    pub fn end_transaction(&mut self, committed: bool) {
        for layers in self.settings.values_mut() {
            if let (true, Some(in_tx)) = (committed, layers.in_tx.take()) {
                layers.committed = in_tx;
            }
            layers.in_tx = None;
            layers.local = None;
        }
    }

    /// The application user claimed for the session now: the first user
    /// setting (in configured order) that holds a non-empty value, or an
    /// unknown value if a `set_config` of an unknown setting may have set it.
    pub fn app_user(&self) -> Option<&Held> {
        let user = |setting: Option<&str>| {
            self.settings
                .get(&(0, setting.map(str::to_string)))
                .and_then(Layers::current)
                .filter(|h| h.value != ClaimValue::Set(String::new()))
        };
        self.user_order
            .iter()
            .find_map(|s| user(Some(s)))
            .or_else(|| user(None))
    }

    /// The context claimed for the session now.
    pub fn context(&self) -> Option<&Held> {
        self.settings
            .iter()
            .filter(|((f, _), _)| *f == 1)
            .find_map(|(_, layers)| layers.current())
    }

    /// The application user of a statement with `claims`: its comment's
    /// claim, else the session's as it stood before the statement (a
    /// statement that sets the user is recorded under the user before it,
    /// with its new claim beside).
    pub fn app_user_for<'a>(
        &'a self,
        claims: &'a [Claim],
    ) -> Option<(&'a ClaimValue, ClaimChannel)> {
        claims
            .iter()
            .find(|c| c.channel == ClaimChannel::Comment && c.field == ClaimField::AppUser)
            .map(|c| (&c.value, c.channel))
            .or_else(|| self.app_user().map(|h| (&h.value, h.channel)))
    }
}
