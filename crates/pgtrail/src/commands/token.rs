//! `pgtrail token create|list|revoke`: who may use the dashboard and the
//! API (`pgtrail_server::tokens`). Each creation and revocation is an
//! access event in the store: the doors of the auditors are audited too.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_server::access::token_event;
use pgtrail_server::auth::Role;
use pgtrail_server::tokens::TokenSet;

use crate::cli::{TokenCommand, TokenCreateArgs, TokenRevokeArgs};
use crate::output::Table;
use crate::Invocation;

/// The tokens file's name when `[server] tokens_file` is unset.
pub const DEFAULT_TOKENS_FILE: &str = "pgtrail-tokens.toml";

/// Runs `pgtrail token …`.
pub async fn run(command: &TokenCommand, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create(args) => create(args, ctx).await,
        TokenCommand::List => list(ctx),
        TokenCommand::Revoke(args) => revoke(args, ctx).await,
    }
}

/// `[server] tokens_file`, else `pgtrail-tokens.toml` beside the
/// configuration file (the one read, or the one `--config` names).
pub fn tokens_path(ctx: &Invocation) -> PathBuf {
    if let Some(path) = &ctx.config.server.tokens_file {
        return PathBuf::from(path);
    }
    let config = ctx.config_file.as_ref().unwrap_or(&ctx.config_target);
    match config.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(DEFAULT_TOKENS_FILE),
        _ => PathBuf::from(DEFAULT_TOKENS_FILE),
    }
}

async fn create(args: &TokenCreateArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let role: Role = args.role.parse().map_err(anyhow::Error::msg)?;
    let path = tokens_path(ctx);
    let mut tokens = TokenSet::load(&path)?;
    let token = tokens.create(&args.name, role)?;
    // Recorded first: a token the trail does not know of is never made.
    let store = ctx.open_existing_store().await?;
    store
        .append(&[token_event(
            "token_create",
            &args.name,
            role,
            who().as_deref(),
        )])
        .await
        .context("cannot record the token's creation in the store: no token made")?;
    tokens.save(&path).with_context(|| {
        format!(
            "the store records the creation of '{}', but the tokens file could not be written",
            args.name
        )
    })?;
    eprintln!(
        "created token '{}' ({}) in {}; it is shown once, keep it secret:",
        args.name,
        role.as_str(),
        path.display()
    );
    crate::output::line(&token)?;
    Ok(crate::exit::ok())
}

fn list(ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let path = tokens_path(ctx);
    let tokens = TokenSet::load(&path)?;
    #[derive(serde::Serialize)]
    struct Row<'a> {
        name: &'a str,
        role: &'a str,
        created_at: String,
    }
    let rows: Vec<Row> = tokens
        .entries()
        .iter()
        .map(|entry| Row {
            name: &entry.name,
            role: entry.role.as_str(),
            created_at: entry.created_at.to_rfc3339(),
        })
        .collect();
    ctx.output.records(&rows, |rows| {
        if rows.is_empty() {
            return format!("no tokens in {}\n", path.display());
        }
        let mut table = Table::new(&["name", "role", "created"]);
        for row in rows {
            table.push(vec![
                row.name.to_string(),
                row.role.to_string(),
                row.created_at.clone(),
            ]);
        }
        table.render()
    })?;
    Ok(crate::exit::ok())
}

async fn revoke(args: &TokenRevokeArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let path = tokens_path(ctx);
    let mut tokens = TokenSet::load(&path)?;
    let entry = tokens.revoke(&args.name)?;
    // Revoked first: taking a key away must not wait for the store.
    tokens.save(&path)?;
    eprintln!("revoked token '{}'", entry.name);
    let recorded = async {
        let store = ctx.open_existing_store().await?;
        store
            .append(&[token_event(
                "token_revoke",
                &entry.name,
                entry.role,
                who().as_deref(),
            )])
            .await?;
        anyhow::Ok(())
    };
    recorded
        .await
        .context("the token is revoked, but the revocation could not be recorded in the store")?;
    Ok(crate::exit::ok())
}

/// Who runs the command, as the environment claims it.
fn who() -> Option<String> {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}
