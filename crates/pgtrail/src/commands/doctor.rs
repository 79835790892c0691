//! `pgtrail doctor`: connects, lets [`crate::doctor`] examine the database,
//! prints the report (plain for people, JSON for scripts) and exits by the
//! worst finding: 0 none worse than info, 1 warnings, 3 failures. 2 stays
//! every command's "could not run" (a connection refused, a bad URL), so a
//! CI job tells a broken check from a bad database.

use std::process::ExitCode;

use crate::cli::DoctorArgs;
use crate::commands::Invocation;
use crate::doctor::{self, Finding, Options, Report, Severity};
use crate::output::Table;

/// Exit status when a finding is a failure.
const EXIT_FAILURES: u8 = 3;

/// Runs `pgtrail doctor`.
pub async fn run(args: &DoctorArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let client = pgtrail_triggers::connect(&args.db).await?;
    let replication = &ctx.config.replication;
    let options = Options {
        publication: replication.publication.clone(),
        slot: replication.slot.clone(),
        lag_warn_bytes: i64::try_from(replication.lag_warn_mb.saturating_mul(1024 * 1024))
            .unwrap_or(i64::MAX),
        busy_writes_per_second: args.busy_writes,
        sample_seconds: args.sample,
    };
    let report = doctor::examine(&client, &options).await?;
    ctx.output
        .document(&report, || text(&report, args.verbose))?;
    Ok(match report.worst() {
        Severity::Info => crate::exit::ok(),
        Severity::Warn => crate::exit::check_failed(),
        Severity::Fail => ExitCode::from(EXIT_FAILURES),
    })
}

/// The report for people: the server line, the findings worth acting on
/// (all with `--verbose`), the tables with their advice, a count.
fn text(report: &Report, verbose: bool) -> String {
    let s = &report.server;
    let mut out = format!(
        "pgtrail doctor: PostgreSQL {}, wal_level {}, as role {}{}\n",
        s.version,
        s.wal_level,
        doctor::ident(&s.role),
        s.managed
            .map(|m| format!(", managed service: {m}"))
            .unwrap_or_default()
    );
    let shown: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| verbose || f.severity > Severity::Info)
        .collect();
    if !shown.is_empty() {
        out.push('\n');
    }
    for f in shown {
        // Messages about a table or role name it first; the subject is not repeated.
        let subject = f.subject.text();
        let about = if f.message.contains(&subject)
            || matches!(&f.subject, doctor::Subject::Role { name } if f.message.contains(&doctor::ident(name)))
        {
            String::new()
        } else {
            format!("{}: ", printable(&subject))
        };
        out.push_str(&format!(
            "{:<4}  {}  {about}{}\n",
            f.severity.label(),
            f.code,
            printable(&f.message)
        ));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("      fix: {}\n", printable(fix)));
        }
    }
    if !report.tables.is_empty() {
        let mut table = Table::new(&[
            "table",
            "captured now",
            "writes/s",
            "key",
            "identity",
            "toasted",
            "advice",
        ]);
        for t in &report.tables {
            let now = match (t.triggers, t.in_publication) {
                (Some(mode), true) => format!("{mode} triggers, published"),
                (Some(mode), false) => format!("{mode} triggers"),
                (None, true) => "published".into(),
                (None, false) => "no".into(),
            };
            table.push(vec![
                printable(&format!(
                    "{}.{}",
                    doctor::ident(&t.schema),
                    doctor::ident(&t.name)
                )),
                now,
                format!("{:.1}", t.writes_per_second),
                if t.has_primary_key { "pk" } else { "none" }.into(),
                t.replica_identity.into(),
                if t.toast_bytes > 0 {
                    doctor::bytes_text(t.toast_bytes as f64)
                } else {
                    "-".into()
                },
                match t.recommendation.capture {
                    doctor::tables::Capture::RowTriggers => "row triggers",
                    doctor::tables::Capture::StatementTriggers => "statement triggers",
                    doctor::tables::Capture::LogicalReplication => "logical replication",
                }
                .into(),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
        if !verbose {
            out.push_str("(why and what each costs: --verbose, or --format json)\n");
        }
    }
    let n = report.summary;
    out.push_str(&format!(
        "\n{} failure(s), {} warning(s), {} note(s){}\n",
        n.fail,
        n.warn,
        n.info,
        if verbose { "" } else { " (notes: --verbose)" }
    ));
    out
}

/// Text with control characters escaped, so a name holding a newline or an
/// escape sequence cannot forge a line of the report or drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
        assert_eq!(printable("naïve \"x\""), "naïve \"x\"");
    }
}
