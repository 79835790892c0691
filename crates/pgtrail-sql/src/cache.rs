//! The analyzer the proxy calls: each distinct statement text is analyzed
//! (parsed, classified, redacted) once, then served from a bounded cache.
//!
//! The key is the exact text, not pg_query's fingerprint: a fingerprint
//! costs a parse (as much as the analysis it would save), and two texts
//! with one fingerprint differ in their constants, which the redacted
//! text and the claims (`set_config('pgtrail.user', 'alice', …)`) depend
//! on. Applications that matter for throughput send parameterized
//! statements, so their texts repeat exactly.
//!
//! The cache holds two generations of at most `capacity / 2` entries each:
//! a hit in the older one moves the entry to the newer; when the newer is
//! full, the older is dropped. That keeps everything used in the last
//! generation, costs O(1) per lookup and needs no linked list. Texts
//! longer than [`MAX_CACHED_TEXT`] are analyzed every time (a long INSERT
//! of literal rows rarely repeats, and would crowd out the rest).

use std::collections::HashMap;
use std::sync::Arc;

use pgtrail_core::config::IdentityConfig;

use crate::claims::{self, Claim, Names};
use crate::redact;
use crate::statement::{self, Analysis};
use crate::token::Tok;

/// Texts longer than this (bytes) are not cached.
pub const MAX_CACHED_TEXT: usize = 16 * 1024;

/// How statement text is redacted before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextPolicy {
    /// Secrets removed, the rest kept as written (`redact_secrets`).
    #[default]
    Secrets,
    /// Every constant replaced by `$n` too (`redact_constants`).
    Constants,
}

/// Analyzes statement texts, once per distinct text.
#[derive(Debug)]
pub struct Analyzer {
    names: Names,
    policy: TextPolicy,
    capacity: usize,
    young: HashMap<Box<str>, Arc<Analysis>>,
    old: HashMap<Box<str>, Arc<Analysis>>,
    hits: u64,
    misses: u64,
}

impl Analyzer {
    /// An analyzer keeping up to `capacity` texts, reading claims from the
    /// settings and comment keys of `identity`, storing text per `policy`.
    pub fn new(capacity: usize, identity: &IdentityConfig, policy: TextPolicy) -> Analyzer {
        Analyzer {
            names: Names::new(identity),
            policy,
            capacity: capacity.max(2),
            young: HashMap::new(),
            old: HashMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// What the statements of `sql` are (see [`Analysis`]).
    pub fn analyze(&mut self, sql: &str) -> Arc<Analysis> {
        if let Some(found) = self.young.get(sql) {
            self.hits += 1;
            return Arc::clone(found);
        }
        if let Some((key, found)) = self.old.remove_entry(sql) {
            self.hits += 1;
            self.insert(key, Arc::clone(&found));
            return found;
        }
        self.misses += 1;
        let analysis = Arc::new(self.analyze_uncached(sql));
        if sql.len() <= MAX_CACHED_TEXT {
            self.insert(sql.into(), Arc::clone(&analysis));
        }
        analysis
    }

    /// The cached analysis of `sql`, if any (a hit counts as in
    /// [`Analyzer::analyze`]; a miss is not counted: the caller analyzes
    /// with [`Analyzer::analyze_uncached`], outside any lock it holds, and
    /// hands the result to [`Analyzer::store`]).
    pub fn cached(&mut self, sql: &str) -> Option<Arc<Analysis>> {
        if let Some(found) = self.young.get(sql) {
            self.hits += 1;
            return Some(Arc::clone(found));
        }
        let (key, found) = self.old.remove_entry(sql)?;
        self.hits += 1;
        self.insert(key, Arc::clone(&found));
        Some(found)
    }

    /// Caches `analysis` as the analysis of `sql` (a miss, counted), unless
    /// the text is longer than [`MAX_CACHED_TEXT`].
    pub fn store(&mut self, sql: &str, analysis: Arc<Analysis>) {
        self.misses += 1;
        if sql.len() <= MAX_CACHED_TEXT && !self.young.contains_key(sql) {
            self.insert(sql.into(), analysis);
        }
    }

    /// [`Analyzer::analyze`] without the cache.
    pub fn analyze_uncached(&self, sql: &str) -> Analysis {
        let policy = self.policy;
        let mut redact = |text: &str, tokens: Option<Vec<Tok>>, parsed: bool| match (policy, tokens)
        {
            (TextPolicy::Constants, _) => redact::redact_constants(text).0,
            (TextPolicy::Secrets, Some(tokens)) => {
                redact::redact_secrets_known(text, tokens, parsed).0
            }
            (TextPolicy::Secrets, None) => redact::redact_secrets(text).0,
        };
        statement::analyze(sql, &self.names, &mut redact)
    }

    /// The claims of a startup packet's parameters (`options` with `-c`
    /// settings, or a user setting as a parameter of its own).
    pub fn startup_claims(&self, params: &[(&str, &str)]) -> Vec<Claim> {
        claims::startup_claims(&self.names, params)
    }

    /// Lookups answered from the cache, and analyses run, so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Texts cached now.
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&mut self, key: Box<str>, analysis: Arc<Analysis>) {
        if self.young.len() >= self.capacity / 2 {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, analysis);
    }
}
