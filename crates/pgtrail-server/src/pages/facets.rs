//! The search page's facets: counts per user, table, operation, source and
//! outcome of the events the search matches, each a link that narrows it.

use pgtrail_core::search::{FacetCount, Facets};

use super::view::query_string;

/// How many values of each facet the page lists.
pub const TOP: usize = 8;

pub struct FacetItem {
    pub value: String,
    pub count: u64,
    /// The search narrowed to this value (none for `ok`: the language
    /// searches for failures only).
    pub href: Option<String>,
}

pub struct FacetView {
    pub title: &'static str,
    pub items: Vec<FacetItem>,
}

/// `key:value` as the search language reads it back: quoted when the value
/// holds a space, a quote or a backslash.
pub fn term(key: &str, value: &str) -> String {
    if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
        format!(
            "{key}:\"{}\"",
            value.replace('\\', "\\\\").replace('"', "\\\"")
        )
    } else {
        format!("{key}:{value}")
    }
}

fn facet(title: &'static str, key: &str, counts: &[FacetCount], q: &str) -> FacetView {
    FacetView {
        title,
        items: counts
            .iter()
            .map(|c| {
                let narrowed = format!("{} {}", q.trim(), term(key, &c.value));
                FacetItem {
                    value: c.value.clone(),
                    count: c.count,
                    href: (key != "outcome" || c.value == "failed")
                        .then(|| format!("/?{}", query_string(&[("q", narrowed.trim())]))),
                }
            })
            .collect(),
    }
}

pub fn views(facets: &Facets, q: &str) -> Vec<FacetView> {
    vec![
        facet("User", "user", &facets.users, q),
        facet("Table", "table", &facets.tables, q),
        facet("Operation", "op", &facets.operations, q),
        facet("Source", "source", &facets.sources, q),
        facet("Outcome", "outcome", &facets.outcomes, q),
    ]
}
