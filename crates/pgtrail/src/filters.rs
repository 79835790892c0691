//! Turning what users type into the store's questions: [`FilterArgs`] into a
//! `pgtrail_core::Filter`, `TABLE PK` into a `RowRef`. The syntax itself
//! (keys, tables, times) is parsed in `pgtrail-core`, so the CLI and the
//! HTTP API accept the same forms; here we only attach the flag's name.

use anyhow::{anyhow, Context as _};
use chrono::{DateTime, Utc};
use pgtrail_core::filter::{parse_class, AddrFilter, TableName};
use pgtrail_core::time::parse_time;
use pgtrail_core::{Filter, Kind, PkFilter, RowRef, Source};

use crate::cli::FilterArgs;

/// The filter `args` describe, with relative times counted back from `now`.
pub fn filter(
    args: &FilterArgs,
    limit: Option<usize>,
    now: DateTime<Utc>,
) -> anyhow::Result<Filter> {
    Ok(Filter {
        table: args
            .table
            .as_deref()
            .map(table)
            .transpose()
            .context("--table")?,
        pk: args
            .pk
            .as_deref()
            .map(PkFilter::parse)
            .transpose()
            .context("--pk")?,
        user: args.user.clone(),
        not_user: args.not_user.clone(),
        operation: args.op.clone(),
        class: args
            .class
            .as_deref()
            .map(class)
            .transpose()
            .context("--class")?,
        kind: args
            .kind
            .as_deref()
            .map(|k| k.parse::<Kind>().map_err(|e| anyhow!(e)))
            .transpose()
            .context("--kind")?,
        source: args
            .source
            .as_deref()
            .map(|s| s.parse::<Source>().map_err(|e| anyhow!(e)))
            .transpose()
            .context("--source")?,
        since: args
            .since
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()
            .context("--since")?,
        until: args
            .until
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()
            .context("--until")?,
        failed: args.failed,
        search: args.search.clone(),
        limit,
        db_user: args.db_user.clone(),
        client_addr: args
            .ip
            .as_deref()
            .map(AddrFilter::parse)
            .transpose()
            .context("--ip")?,
        database: args.db.clone(),
        before_seq: args.before,
        backend_pid: None,
        xid: None,
    })
}

/// A class argument, upper-cased; a misspelt class is refused rather than
/// silently matching nothing.
pub fn class(input: &str) -> anyhow::Result<String> {
    Ok(parse_class(input)?)
}

/// A table argument.
pub fn table(input: &str) -> anyhow::Result<TableName> {
    Ok(TableName::parse(input)?)
}

/// The row named by `TABLE PK` arguments.
pub fn row(table_arg: &str, pk_arg: &str) -> anyhow::Result<RowRef> {
    Ok(RowRef {
        table: table(table_arg)?,
        pk: PkFilter::parse(pk_arg)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_name_the_flag() {
        let now = Utc::now();
        let args = FilterArgs {
            since: Some("tomorrow".into()),
            ..FilterArgs::default()
        };
        let err = format!("{:#}", filter(&args, None, now).expect_err("bad time"));
        assert!(err.starts_with("--since: invalid time 'tomorrow'"), "{err}");
        let args = FilterArgs {
            pk: Some("42".into()),
            ..FilterArgs::default()
        };
        let err = format!("{:#}", filter(&args, None, now).expect_err("bad key"));
        assert!(err.starts_with("--pk: invalid key '42'"), "{err}");
        let args = FilterArgs {
            kind: Some("rowchange".into()),
            ..FilterArgs::default()
        };
        assert!(
            format!("{:#}", filter(&args, None, now).expect_err("bad kind")).contains("row_change")
        );
        let args = FilterArgs {
            class: Some("reads".into()),
            ..FilterArgs::default()
        };
        let err = format!("{:#}", filter(&args, None, now).expect_err("bad class"));
        assert!(err.starts_with("--class: unknown class 'reads'"), "{err}");
    }

    #[test]
    fn search_box_filters_have_flags() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        let args = FilterArgs {
            db_user: Some("app".into()),
            ip: Some("10.1.2.3/8".into()),
            db: Some("shop".into()),
            before: Some(42),
            since: Some("2026-12-06 02:19:01.57915+00".into()),
            until: Some("last week".into()),
            ..FilterArgs::default()
        };
        let f = filter(&args, Some(10), now).expect("ok");
        assert_eq!(f.db_user.as_deref(), Some("app"));
        assert_eq!(
            f.client_addr.map(|a| a.to_string()).as_deref(),
            Some("10.0.0.0/8")
        );
        assert_eq!(f.database.as_deref(), Some("shop"));
        assert_eq!(f.before_seq, Some(42));
        assert_eq!(
            f.since
                .map(|t| pgtrail_core::time::format_micros(&t))
                .as_deref(),
            Some("2026-12-06T02:19:01.579150Z")
        );
        assert_eq!(
            f.until
                .map(|t| pgtrail_core::time::format_micros(&t))
                .as_deref(),
            Some("2026-11-29T12:00:00.000000Z")
        );
        let args = FilterArgs {
            ip: Some("10.0.0.0/33".into()),
            ..FilterArgs::default()
        };
        let err = format!("{:#}", filter(&args, None, now).expect_err("bad address"));
        assert!(
            err.starts_with("--ip: invalid address '10.0.0.0/33'"),
            "{err}"
        );
    }

    #[test]
    fn class_is_case_insensitive() {
        let args = FilterArgs {
            class: Some("misc_set".into()),
            ..FilterArgs::default()
        };
        let f = filter(&args, None, Utc::now()).expect("ok");
        assert_eq!(f.class.as_deref(), Some("MISC_SET"));
    }
}
