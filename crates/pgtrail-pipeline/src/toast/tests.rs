use std::sync::Arc;

use pgtrail_core::{Event, Kind, Source};
use pgtrail_store::Store;
use serde_json::{json, Value};

use super::*;

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map.into_iter().collect(),
        _ => JsonObject::new(),
    }
}

fn change(operation: &str, id: i64, new: Option<Value>, partial: &[&str]) -> Event {
    let mut event = Event::new(Source::Cdc, Kind::RowChange);
    event.schema = Some("public".into());
    event.table = Some("docs".into());
    event.operation = Some(operation.into());
    if operation != "TRUNCATE" {
        event.pk = Some(object(json!({"id": id.to_string()})));
    }
    event.new = new.map(object);
    event.partial = partial.iter().map(|c| c.to_string()).collect();
    event
}

fn insert(id: i64, body: &str) -> Event {
    change(
        "INSERT",
        id,
        Some(json!({"id": id, "title": "t", "body": body})),
        &[],
    )
}

/// An UPDATE of `title` that left the TOASTed `body` out.
fn touch(id: i64, title: &str) -> Event {
    change(
        "UPDATE",
        id,
        Some(json!({"id": id, "title": title})),
        &["body"],
    )
}

fn body(event: &Event) -> Option<&Value> {
    event.new.as_ref().and_then(|n| n.get("body"))
}

async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let store = pgtrail_store::open(&url).await.expect("store opens");
    (dir, store)
}

/// Fills a batch and stores it, as the writer does.
async fn pass(cache: &mut ToastCache, store: &dyn Store, mut batch: Vec<Event>) -> Vec<Event> {
    cache.fill(store, &mut batch).await;
    let mark = cache.mark();
    store.append(&batch).await.expect("append");
    cache.stored(mark);
    batch
}

#[tokio::test]
async fn a_row_updated_twice_in_one_batch_keeps_its_body() {
    let (_dir, store) = store().await;
    let mut cache = ToastCache::new(ToastBounds::default());
    let batch = pass(
        &mut cache,
        store.as_ref(),
        vec![insert(1, "long text"), touch(1, "a"), touch(1, "b")],
    )
    .await;
    for event in &batch[1..] {
        assert_eq!(body(event), Some(&json!("long text")));
        assert!(event.partial.is_empty());
    }
    assert_eq!(
        batch[2].new.as_ref().and_then(|n| n.get("title")),
        Some(&json!("b"))
    );
}

#[tokio::test]
async fn a_deleted_row_is_not_filled_from_before_its_delete() {
    let (_dir, store) = store().await;
    let mut cache = ToastCache::new(ToastBounds::default());
    // The DELETE in the same batch as the UPDATE after it (which a replica
    // can only see after a re-insert, but the cache must not care).
    let batch = pass(
        &mut cache,
        store.as_ref(),
        vec![
            insert(1, "old text"),
            change("DELETE", 1, None, &[]),
            touch(1, "after"),
        ],
    )
    .await;
    assert_eq!(body(&batch[2]), None);
    assert_eq!(batch[2].partial, ["body"]);

    // And from the store, once the cache forgot the row.
    let mut cache = ToastCache::new(ToastBounds::default());
    let batch = pass(&mut cache, store.as_ref(), vec![touch(1, "later")]).await;
    assert_eq!(
        body(&batch[0]),
        None,
        "the store's image ends at the DELETE"
    );
    assert_eq!(batch[0].partial, ["body"]);
}

#[tokio::test]
async fn a_truncate_not_yet_stored_hides_the_stored_image() {
    let (_dir, store) = store().await;
    let mut cache = ToastCache::new(ToastBounds::default());
    pass(&mut cache, store.as_ref(), vec![insert(1, "before")]).await;
    let mut fresh = ToastCache::new(ToastBounds::default());
    let mut batch = vec![change("TRUNCATE", 0, None, &[]), touch(1, "after")];
    fresh.fill(store.as_ref(), &mut batch).await;
    assert_eq!(body(&batch[1]), None);
    assert_eq!(batch[1].partial, ["body"]);
}

#[tokio::test]
async fn an_evicted_row_is_read_once_from_the_store() {
    let (_dir, store) = store().await;
    let mut cache = ToastCache::new(ToastBounds {
        rows: 2,
        bytes: usize::MAX,
    });
    pass(
        &mut cache,
        store.as_ref(),
        vec![insert(1, "one"), insert(2, "two"), insert(3, "three")],
    )
    .await;
    assert_eq!(cache.len(), 2, "row 1, the oldest, is evicted");
    let batch = pass(
        &mut cache,
        store.as_ref(),
        vec![touch(1, "x"), touch(3, "y")],
    )
    .await;
    assert_eq!(body(&batch[0]), Some(&json!("one")), "from the store");
    assert_eq!(body(&batch[1]), Some(&json!("three")), "from the cache");
    assert!(cache.len() <= 2);
}

#[tokio::test]
async fn the_byte_bound_evicts_too() {
    let (_dir, store) = store().await;
    let mut cache = ToastCache::new(ToastBounds {
        rows: usize::MAX,
        bytes: 2_000,
    });
    let big = "x".repeat(1_500);
    pass(
        &mut cache,
        store.as_ref(),
        vec![insert(1, &big), insert(2, &big), insert(3, &big)],
    )
    .await;
    assert_eq!(cache.len(), 1);
    assert!(cache.bytes <= 2_000);
}

#[tokio::test]
async fn what_no_one_saw_stays_partial() {
    let (_dir, store) = store().await;
    let mut cache = ToastCache::new(ToastBounds::default());
    let batch = pass(&mut cache, store.as_ref(), vec![touch(9, "never inserted")]).await;
    assert_eq!(body(&batch[0]), None, "no made-up value, no NULL");
    assert_eq!(batch[0].partial, ["body"]);
}

/// The writer fills batch N+1 while batch N is appended: storing N must not
/// evict the rows of N+1, whose images the store does not have yet (the
/// store's older image would be made up for batch N+2), nor forget a
/// truncation in N+1.
#[tokio::test]
async fn rows_of_a_batch_filled_ahead_stay_until_it_is_stored() {
    let (_dir, store) = store().await;
    let mut cache = ToastCache::new(ToastBounds {
        rows: 1,
        bytes: usize::MAX,
    });
    pass(&mut cache, store.as_ref(), vec![insert(1, "old")]).await;

    // Batch N, filled and about to be appended.
    let mut n = vec![insert(2, "two")];
    cache.fill(store.as_ref(), &mut n).await;
    let n_mark = cache.mark();
    // Batch N+1, filled ahead: row 1 gets a new body, table truncated after.
    let mut ahead = vec![
        change(
            "UPDATE",
            1,
            Some(json!({"id": 1, "title": "t", "body": "new"})),
            &[],
        ),
        change("TRUNCATE", 0, None, &[]),
        insert(3, "three"),
    ];
    cache.fill(store.as_ref(), &mut ahead).await;
    let ahead_mark = cache.mark();
    store.append(&n).await.expect("append N");
    cache.stored(n_mark);
    assert_eq!(cache.len(), 1, "row 3 of the unstored batch stays");

    // Batch N+2, before N+1 is stored: row 1 was truncated away in N+1; the
    // store still holds its "old" body, which must not come back.
    let mut next = vec![touch(1, "x"), touch(3, "y")];
    cache.fill(store.as_ref(), &mut next).await;
    assert_eq!(
        body(&next[0]),
        None,
        "not the store's image from before the truncate"
    );
    assert_eq!(next[0].partial, ["body"]);
    assert_eq!(
        body(&next[1]),
        Some(&json!("three")),
        "from the batch filled ahead"
    );

    store.append(&ahead).await.expect("append N+1");
    cache.stored(ahead_mark);
    assert!(
        cache.len() <= 2,
        "back to the bound, but for batch N+2's rows"
    );
}
