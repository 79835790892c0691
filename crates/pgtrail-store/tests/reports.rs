//! The reports of `pgtrail_store::reports`, on both backends: data shaped
//! to trigger each report beside data that must not, the window and its
//! edges, and the cap on the events read.

use chrono::{DateTime, TimeZone, Utc};
use pgtrail_core::{Event, Filter, Kind, Source};
use pgtrail_store::reports::{self, Mention};
use pgtrail_store::{ActivityCount, Store};
use pgtrail_testkit::proxy_events::{login, statement};
use serde_json::json;

/// Monday 2026-03-02 00:00 UTC: the window is that week.
fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, minute, 0)
        .single()
        .expect("valid time")
}

fn change(when: DateTime<Utc>, user: &str, table: &str, op: &str, id: usize) -> Event {
    let mut e = Event::at(Source::Trigger, Kind::RowChange, when);
    e.app_user = Some(user.into());
    e.db_user = Some("app".into());
    e.schema = Some("public".into());
    e.table = Some(table.into());
    e.operation = Some(op.into());
    e.pk = json!({ "id": id.to_string() }).as_object().cloned();
    e
}

/// The week's trail:
/// - mallory deletes 150 orders on Wednesday between 02:00 and 02:15 (bulk,
///   after hours, a spike);
/// - bob inserts 120 orders over the working days (bulk, not after hours);
/// - alice updates 60 orders in working hours and deletes one a day at noon;
/// - logs lose 10 rows every hour, 25 in one (2.5 times: no spike);
/// - dave updates one order on Tuesday at 17:30 UTC (19:30 at +02:00);
/// - carol logs in on Saturday;
/// - after the window, mallory updates 500 orders (never counted).
fn week() -> Vec<Event> {
    let mut events = Vec::new();
    for i in 0..150 {
        events.push(change(
            at(4, 2, (i / 10) as u32),
            "mallory",
            "orders",
            "DELETE",
            i,
        ));
    }
    for i in 0..120 {
        let day = 2 + (i % 5) as u32;
        events.push(change(
            at(day, 9 + (i % 8) as u32, 5),
            "bob",
            "orders",
            "INSERT",
            1000 + i,
        ));
    }
    for i in 0..60 {
        events.push(change(
            at(2 + (i % 5) as u32, 10, 30),
            "alice",
            "orders",
            "UPDATE",
            i,
        ));
    }
    for day in 2..9 {
        events.push(change(
            at(day, 12, 0),
            "alice",
            "orders",
            "DELETE",
            500 + day as usize,
        ));
    }
    for hour in 0..168u32 {
        let n = if hour == 50 { 25 } else { 10 };
        let when = at(2 + hour / 24, hour % 24, 20);
        for i in 0..n {
            events.push(change(
                when,
                "janitor",
                "logs",
                "DELETE",
                (hour * 100 + i) as usize,
            ));
        }
    }
    events.push(change(at(3, 17, 30), "dave", "orders", "UPDATE", 7));
    events.push(login(at(7, 12, 0), "carol", "shop", "10.0.0.7", None));
    for i in 0..500 {
        events.push(change(at(20, 3, 0), "mallory", "orders", "UPDATE", i));
    }
    events
}

fn texts<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
    move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

const WEEK: [(&str, &str); 2] = [("since", "2026-03-02"), ("until", "2026-03-09")];

fn now() -> DateTime<Utc> {
    at(10, 12, 0)
}

pub async fn bulk_changes_name_who_went_over_the_threshold(store: &dyn Store) {
    store.append(&week()).await.expect("append");
    let pairs = [WEEK[0], WEEK[1], ("threshold", "100")];
    let p = reports::BulkParams::parse(&texts(&pairs), now()).expect("params");
    let r = reports::bulk_changes(store, &p, reports::MAX_SCAN)
        .await
        .expect("report");
    let found: Vec<(&str, &str, &str, u64)> = r
        .rows
        .iter()
        .map(|b| {
            (
                b.user.as_str(),
                b.table.as_str(),
                b.operation.as_str(),
                b.rows,
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("janitor", "public.logs", "DELETE", 1695),
            ("mallory", "public.orders", "DELETE", 150),
            ("bob", "public.orders", "INSERT", 120),
        ],
        "alice's 60 updates stay under; mallory's 500 after the window are not counted"
    );
    assert!(!r.scanned.capped);
    // One table only.
    let pairs = [WEEK[0], WEEK[1], ("table", "orders")];
    let p = reports::BulkParams::parse(&texts(&pairs), now()).expect("params");
    let r = reports::bulk_changes(store, &p, reports::MAX_SCAN)
        .await
        .expect("report");
    assert!(
        r.rows.iter().all(|b| b.table == "public.orders"),
        "{:?}",
        r.rows
    );
    assert_eq!(r.rows.len(), 2);
    // A cap on the events read: the report says it stopped.
    let r = reports::bulk_changes(store, &p, 100).await.expect("report");
    assert!(
        r.scanned.capped && r.scanned.events == 100,
        "{:?}",
        r.scanned
    );
}

pub async fn after_hours_counts_by_user_in_the_given_offset(store: &dyn Store) {
    store.append(&week()).await.expect("append");
    let pairs = [WEEK[0], WEEK[1], ("hours", "08-18"), ("days", "mon-fri")];
    let p = reports::AfterHoursParams::parse(&texts(&pairs), now()).expect("params");
    let r = reports::after_hours(store, &p, reports::MAX_SCAN)
        .await
        .expect("report");
    let users: Vec<(&str, u64)> = r
        .users
        .iter()
        .map(|u| (u.user.as_str(), u.events))
        .collect();
    // janitor: 10 an hour outside 08-18 on weekdays and all weekend, 15
    // more at Wednesday 02:00; alice: her noon deletes on the weekend.
    let janitor_outside = 10 * (5 * 14 + 2 * 24) + 15;
    assert_eq!(
        users,
        [
            ("janitor", janitor_outside),
            ("mallory", 150),
            ("alice", 2),
            ("carol", 1)
        ],
        "bob and dave (17:30 UTC) worked in hours, alice on weekdays"
    );
    assert_eq!(r.events.len(), reports::MAX_LISTED);
    // At +02:00, dave's 17:30 UTC is 19:30: after hours; mallory's 02:00 is 04:00.
    let pairs = [WEEK[0], WEEK[1], ("tz", "+02:00")];
    let p = reports::AfterHoursParams::parse(&texts(&pairs), now()).expect("params");
    let r = reports::after_hours(store, &p, reports::MAX_SCAN)
        .await
        .expect("report");
    let dave = r
        .users
        .iter()
        .find(|u| u.user == "dave")
        .expect("dave listed");
    assert_eq!(dave.events, 1);
    assert!(r
        .users
        .iter()
        .any(|u| u.user == "mallory" && u.events == 150));
    // bob's inserts at 16:05 UTC (one in eight) are 18:05 there.
    let bob = r
        .users
        .iter()
        .find(|u| u.user == "bob")
        .expect("bob listed");
    assert_eq!(bob.events, 15);
}

pub async fn delete_spikes_flag_the_hour_above_the_usual_rate(store: &dyn Store) {
    store.append(&week()).await.expect("append");
    let pairs = [WEEK[0], WEEK[1]];
    let p = reports::SpikeParams::parse(&texts(&pairs), now()).expect("params");
    let r = reports::delete_spikes(store, &p, reports::MAX_SCAN)
        .await
        .expect("report");
    assert_eq!(r.tables, 2);
    assert_eq!(
        r.spikes.len(),
        1,
        "logs' 25 in one hour is 2.5 times: {:?}",
        r.spikes
    );
    let spike = &r.spikes[0];
    assert_eq!(spike.table, "public.orders");
    assert_eq!(spike.hour, at(4, 2, 0));
    assert_eq!(spike.deletes, 150);
    assert_eq!(spike.users, [("mallory".to_string(), 150)]);
    assert!(spike.usual_per_hour < 0.1, "{}", spike.usual_per_hour);
    // At twice the usual rate, logs' hour of 25 is one too.
    let pairs = [
        WEEK[0],
        WEEK[1],
        ("multiple", "2"),
        ("table", "public.logs"),
    ];
    let p = reports::SpikeParams::parse(&texts(&pairs), now()).expect("params");
    let r = reports::delete_spikes(store, &p, reports::MAX_SCAN)
        .await
        .expect("report");
    let hours: Vec<_> = r
        .spikes
        .iter()
        .map(|s| (s.table.as_str(), s.hour, s.deletes))
        .collect();
    assert_eq!(hours, [("public.logs", at(4, 2, 0), 25)]);
}

pub async fn who_read_lists_reads_of_the_table_and_which_name_the_key(store: &dyn Store) {
    let select = |minute, user: &str, objects: &[&str], sql: &str| {
        statement(at(3, 10, minute), user, "SELECT", "READ", objects, sql, 1)
    };
    let mut by_param = select(
        2,
        "doctor",
        &["public.patients"],
        "select * from patients where id = $1",
    );
    by_param.params = Some(vec![json!("42")]);
    let events = vec![
        select(
            1,
            "nurse",
            &["public.patients"],
            "select * from patients where id = 42",
        ),
        by_param,
        select(
            3,
            "analyst",
            &["public.patients"],
            "select count(*) from patients",
        ),
        select(
            4,
            "nurse",
            &["public.patients"],
            "select * from patients where id = 420",
        ),
        select(
            5,
            "nurse",
            &["public.visits"],
            "select * from visits where patient_id = 42",
        ),
        // A write is not a read, and a row change is not a statement.
        statement(
            at(3, 10, 6),
            "app",
            "UPDATE",
            "WRITE",
            &["public.patients"],
            "update patients set x = 1 where id = 42",
            1,
        ),
        change(at(3, 10, 7), "app", "patients", "UPDATE", 42),
    ];
    store.append(&events).await.expect("append");
    let pairs = [
        WEEK[0],
        WEEK[1],
        ("table", "public.patients"),
        ("pk", "id=42"),
    ];
    let p = reports::WhoReadParams::parse(&texts(&pairs), now()).expect("params");
    let r = reports::who_read(store, &p, true, reports::MAX_SCAN)
        .await
        .expect("report");
    assert_eq!(r.total, 4);
    assert_eq!(r.naming_key, 2);
    let found: Vec<(&str, Mention)> = r
        .reads
        .iter()
        .map(|read| (read.line.user.as_str(), read.mentions))
        .collect();
    assert_eq!(
        found,
        [
            ("doctor", Mention::Params),
            ("nurse", Mention::Text),
            ("nurse", Mention::No),
            ("analyst", Mention::No),
        ]
    );
    // Without the parameters (a viewer), a parameterised read is unknown.
    let r = reports::who_read(store, &p, false, reports::MAX_SCAN)
        .await
        .expect("report");
    let doctor = r
        .reads
        .iter()
        .find(|read| read.line.user == "doctor")
        .expect("doctor");
    assert_eq!(doctor.mentions, Mention::Unknown);
    assert_eq!(r.naming_key, 1);
}

/// The groups of `events` as `Store::activity_counts` should answer them,
/// sorted.
fn groups_of(events: &[Event]) -> Vec<ActivityCount> {
    let mut groups: Vec<ActivityCount> = Vec::new();
    for e in events {
        let one = ActivityCount::of(e);
        match groups.iter_mut().find(|g| {
            (&g.actor, &g.table, &g.operation, g.hour)
                == (&one.actor, &one.table, &one.operation, one.hour)
        }) {
            Some(g) => {
                g.events += 1;
                g.first = g.first.min(one.first);
                g.last = g.last.max(one.last);
            }
            None => groups.push(one),
        }
    }
    sorted(groups)
}

fn sorted(mut groups: Vec<ActivityCount>) -> Vec<ActivityCount> {
    groups.sort_by(|a, b| {
        (&a.actor, &a.table, &a.operation, a.hour).cmp(&(&b.actor, &b.table, &b.operation, b.hour))
    });
    groups
}

pub async fn activity_counts_are_the_events_counted(store: &dyn Store) {
    let mut events = week();
    // No actor, no table, a lower-case operation, a fraction of a second.
    let mut odd = Event::at(
        Source::Cdc,
        Kind::RowChange,
        at(5, 23, 59) + chrono::Duration::microseconds(999_999),
    );
    odd.operation = Some("delete".into());
    events.push(odd);
    let mut bare = change(at(5, 0, 0), "x", "logs", "INSERT", 1);
    bare.schema = None;
    events.push(bare);
    store.append(&events).await.expect("append");
    let window = |f: Filter| Filter {
        since: Some(at(2, 0, 0)),
        until: Some(at(9, 0, 0)),
        ..f
    };
    for filter in [
        window(Filter::default()),
        window(Filter {
            kind: Some(Kind::RowChange),
            operation: Some("DELETE".into()),
            ..Filter::default()
        }),
        window(Filter {
            table: Some(pgtrail_core::filter::TableName::parse("orders").expect("table")),
            ..Filter::default()
        }),
        Filter {
            user: Some("mallory".into()),
            ..Filter::default()
        },
    ] {
        let all = store
            .query(&Filter {
                limit: None,
                ..filter.clone()
            })
            .await
            .expect("query");
        let (counts, counted) = store
            .activity_counts(&filter, reports::MAX_COUNT)
            .await
            .expect("counts");
        assert_eq!(counted, all.len() as u64, "{filter:?}");
        assert_eq!(sorted(counts), groups_of(&all), "{filter:?}");
        // Capped: the newest 100 only.
        let (counts, counted) = store.activity_counts(&filter, 100).await.expect("counts");
        assert_eq!(counted, 100.min(all.len() as u64));
        let newest: Vec<Event> = all.into_iter().take(100).collect();
        assert_eq!(sorted(counts), groups_of(&newest), "{filter:?} capped");
    }
}

/// A store that answers only the required methods: `activity_counts` is
/// the trait's default, counted from `query`.
struct QueryOnly(std::sync::Arc<dyn Store>);

#[async_trait::async_trait]
impl Store for QueryOnly {
    async fn append(
        &self,
        events: &[Event],
    ) -> pgtrail_store::Result<pgtrail_store::AppendReceipt> {
        self.0.append(events).await
    }
    async fn query(&self, filter: &Filter) -> pgtrail_store::Result<Vec<Event>> {
        self.0.query(filter).await
    }
    async fn row_events(&self, row: &pgtrail_core::RowRef) -> pgtrail_store::Result<Vec<Event>> {
        self.0.row_events(row).await
    }
    async fn scan(&self, after: i64, limit: usize) -> pgtrail_store::Result<Vec<Event>> {
        self.0.scan(after, limit).await
    }
    async fn scan_stored(
        &self,
        after: i64,
        limit: usize,
    ) -> pgtrail_store::Result<Vec<pgtrail_store::StoredEvent>> {
        self.0.scan_stored(after, limit).await
    }
    async fn head(&self) -> pgtrail_store::Result<Option<pgtrail_store::ChainHead>> {
        self.0.head().await
    }
    async fn add_checkpoint(
        &self,
        checkpoint: &pgtrail_store::Checkpoint,
    ) -> pgtrail_store::Result<()> {
        self.0.add_checkpoint(checkpoint).await
    }
    async fn checkpoints(&self) -> pgtrail_store::Result<Vec<pgtrail_store::Checkpoint>> {
        self.0.checkpoints().await
    }
    async fn prune(&self, through: i64) -> pgtrail_store::Result<pgtrail_store::PruneOutcome> {
        self.0.prune(through).await
    }
    async fn prepare_until(&self, until: DateTime<Utc>) -> pgtrail_store::Result<Vec<String>> {
        self.0.prepare_until(until).await
    }
    fn location(&self) -> String {
        self.0.location()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_activity_counts_page_through_query() {
    let h = crate::conformance::sqlite().await;
    activity_counts_are_the_events_counted(&QueryOnly(h.store.clone())).await;
}

macro_rules! reports {
    ($backend:ident) => {
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn activity_counts_are_the_events_counted() {
                let h = crate::conformance::$backend().await;
                super::activity_counts_are_the_events_counted(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bulk_changes_name_who_went_over_the_threshold() {
                let h = crate::conformance::$backend().await;
                super::bulk_changes_name_who_went_over_the_threshold(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn after_hours_counts_by_user_in_the_given_offset() {
                let h = crate::conformance::$backend().await;
                super::after_hours_counts_by_user_in_the_given_offset(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delete_spikes_flag_the_hour_above_the_usual_rate() {
                let h = crate::conformance::$backend().await;
                super::delete_spikes_flag_the_hour_above_the_usual_rate(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn who_read_lists_reads_of_the_table_and_which_name_the_key() {
                let h = crate::conformance::$backend().await;
                super::who_read_lists_reads_of_the_table_and_which_name_the_key(&*h.store).await;
            }
        }
    };
}

reports!(sqlite);
reports!(postgres);

/// Indicative figures: the bulk-changes report over N row changes in
/// SQLite, counted in SQL (`activity_counts`) against the trait's default
/// (decoding every event through `query`), alternating, 5 rounds each.
/// `PGTRAIL_REPORTS_N=200000 cargo nextest run -p pgtrail-store --test main
/// -E 'test(reports_timing)' --run-ignored only --no-capture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn reports_timing() {
    let n: usize = std::env::var("PGTRAIL_REPORTS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let h = crate::conformance::sqlite().await;
    let users = ["alice", "bob", "carol", "dave", "mallory"];
    let ops = ["INSERT", "UPDATE", "DELETE"];
    for start in (0..n).step_by(5_000) {
        let batch: Vec<Event> = (start..(start + 5_000).min(n))
            .map(|i| {
                let when = at(2, 0, 0) + chrono::Duration::seconds((i % 600_000) as i64);
                change(when, users[i % 5], ["orders", "logs"][i % 2], ops[i % 3], i)
            })
            .collect();
        h.store.append(&batch).await.expect("append");
    }
    let pairs = [WEEK[0], WEEK[1]];
    let p = reports::BulkParams::parse(&texts(&pairs), now()).expect("params");
    let default = QueryOnly(h.store.clone());
    let (mut sql, mut paged) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let a = reports::bulk_changes(h.store.as_ref(), &p, reports::MAX_COUNT)
            .await
            .expect("sql");
        sql.push(t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        let b = reports::bulk_changes(&default, &p, reports::MAX_COUNT)
            .await
            .expect("paged");
        paged.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(a.rows, b.rows);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (m, lo, hi) = stats(&mut sql);
    println!(
        "bulk-changes over {n} events, SQL aggregate: median {m:.0} ms (min {lo:.0}, max {hi:.0})"
    );
    let (m, lo, hi) = stats(&mut paged);
    println!(
        "bulk-changes over {n} events, paged query:   median {m:.0} ms (min {lo:.0}, max {hi:.0})"
    );
}
