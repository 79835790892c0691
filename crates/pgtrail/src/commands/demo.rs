//! `pgtrail demo`: the first command a new user runs. Starts a throwaway
//! Postgres, installs trigger capture, plays a short session as four
//! application users, shows the trail, then keeps the database running
//! (sealing every second) so the next commands can be tried on it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use pgtrail_testkit::{Cluster, ClusterOptions};
use pgtrail_triggers::{InstallOptions, TrackOptions};

use crate::cli::{DemoArgs, FilterArgs, HistoryArgs, LogArgs};
use crate::output::{self, Format, Output};
use crate::Invocation;

/// The session the demo plays, one transaction per step, each with the
/// application user a web app would set.
const SESSION: &[(&str, &str)] = &[
    (
        "ops@example.com",
        "create table users (id serial primary key, email text not null, name text, \
         plan text not null default 'free', updated_at timestamptz not null default now())",
    ),
    (
        "signup-service",
        "insert into users (email, name) values ('ann@example.com', 'Ann'), ('bob@example.com', 'Bob')",
    ),
    (
        "alice@example.com",
        "update users set plan = 'pro', name = 'Ann Smith', updated_at = now() where id = 1",
    ),
    ("carol@example.com", "delete from users where id = 2"),
    ("ops@example.com", "create table scratch (id int); drop table scratch"),
];

/// Runs `pgtrail demo`.
pub async fn run(args: &DemoArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    eprintln!("starting a throwaway PostgreSQL…");
    let options = ClusterOptions {
        data_dir: args.data_dir.clone(),
        port: args.port,
        ..ClusterOptions::default()
    };
    let cluster = tokio::task::spawn_blocking(move || Cluster::start_with(options))
        .await
        .context("starting PostgreSQL")?
        .context("cannot start PostgreSQL for the demo")?;
    let admin = cluster
        .connect("postgres")
        .await
        .context("connecting to the demo cluster")?;
    let fresh = admin
        .query_one(
            "select not exists (select 1 from pg_database where datname = 'shop')",
            &[],
        )
        .await?
        .get::<_, bool>(0);
    if fresh {
        admin.batch_execute("create database shop").await?;
    }
    let url = cluster.url("shop");

    pgtrail_triggers::install(
        &url,
        &InstallOptions {
            identity: ctx.config.identity.clone(),
            target_version: None,
        },
    )
    .await
    .context("installing pgtrail")?;
    let client = pgtrail_triggers::connect(&url).await?;
    if fresh {
        pgtrail_triggers::track_schema(
            &client,
            "public",
            &TrackOptions {
                ignore: vec!["updated_at".into()],
                ..TrackOptions::default()
            },
            true,
        )
        .await?;
        eprintln!("pgtrail installed; new tables in schema public are tracked (updated_at alone is ignored)\n");
        // The application's own session: pgtrail's keep only the catalog
        // on their search path.
        let mut app = cluster
            .connect("shop")
            .await
            .context("connecting to the demo database")?;
        for (user, sql) in SESSION {
            eprintln!("  as {user:<18} {sql}");
            let tx = app.transaction().await?;
            tx.execute("select set_config('pgtrail.user', $1, true)", &[user])
                .await?;
            tx.batch_execute(sql)
                .await
                .with_context(|| format!("demo step failed: {sql}"))?;
            tx.commit().await?;
        }
        eprintln!();
    }
    let mut drainer = pgtrail_triggers::connect(&url).await?;
    pgtrail_triggers::drain_all(&mut drainer).await?;

    let mut shown = ctx.clone();
    shown.config.store.url = url.clone();
    shown.output = Output::new(Some(Format::Table));
    // The dashboard's access records wait beside the throwaway cluster,
    // not in the working directory.
    let spool = cluster.dir().join("pgtrail-server-spool");
    shown.config.server.access_spool_dir = Some(spool.display().to_string());
    output::line("$ pgtrail log")?;
    super::log::run(
        &LogArgs {
            filter: FilterArgs::default(),
            limit: 20,
            tx: None,
        },
        &shown,
    )
    .await?;
    output::line("\n$ pgtrail history public.users id=1")?;
    super::history::run(
        &HistoryArgs {
            table: "public.users".into(),
            pk: "id=1".into(),
        },
        &shown,
    )
    .await?;

    let (dashboard, dashboard_stop) = dashboard(&shown).await;
    output::line(&format!(
        "\nThe demo database keeps running, and changes are sealed every second.\n\
         Connection string: {url}\n\
         {dashboard}\n\
         Try:\n  \
           psql {url}\n  \
           pgtrail --store {url} log --user alice@example.com\n  \
           pgtrail --store {url} blame public.users id=1\n  \
           pgtrail --store {url} ddl\n  \
           pgtrail --store {url} verify\n  \
           pgtrail status --db {url}\n\
         Stop with Ctrl-C{}.",
        if args.data_dir.is_some() {
            " (the data directory is kept)"
        } else {
            " (the database is removed)"
        }
    ))?;

    let stop = super::drain::shutdown();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if let Err(e) = pgtrail_triggers::drain_all(&mut drainer).await {
                    eprintln!("warning: sealing failed: {e:#}");
                }
            }
        }
    }
    if let Some(stop) = dashboard_stop {
        let _ = stop.send(());
    }
    drop(cluster);
    eprintln!("demo stopped");
    Ok(crate::exit::ok())
}

/// Serves the dashboard over the demo's store on 127.0.0.1:8080 (another
/// free port if taken) until the sender is used; says where, or why not.
async fn dashboard(ctx: &Invocation) -> (String, Option<tokio::sync::oneshot::Sender<()>>) {
    let started = async {
        let store = ctx.open_existing_store().await?;
        let flags = crate::cli::ServeArgs {
            listen: None,
            tls_cert: None,
            tls_key: None,
            insecure_http: false,
        };
        let access = super::serve::access_spool("127.0.0.1:8080", store.clone(), ctx)?;
        let first =
            super::serve::server_part("127.0.0.1:8080", &flags, store.clone(), access.clone(), ctx);
        let part = match first.await {
            Ok(part) => part,
            Err(_) => {
                super::serve::server_part("127.0.0.1:0", &flags, store, access.clone(), ctx).await?
            }
        };
        anyhow::Ok((part, access))
    };
    match started.await {
        Ok((part, access)) => {
            let address = part.address();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let stopped = async {
                    let _ = stopped.await;
                };
                if let Err(e) = part.run(stopped).await {
                    eprintln!("warning: the dashboard stopped: {e}");
                }
                access
                    .finish(pgtrail_server::access_spool::DRAIN_ON_STOP)
                    .await;
            });
            (format!("Dashboard: http://{address}/"), Some(stop))
        }
        Err(e) => (
            format!("Dashboard: not started ({e:#}); try `pgtrail --store URL serve`"),
            None,
        ),
    }
}
