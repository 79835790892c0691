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
//!
//! Behind the exact texts, a second cache of the same size is keyed on a
//! text's shape (its constants' values scanned out, see `shape`): a text
//! missing from the first whose shape was analyzed before takes that
//! analysis with its own span and stored text (redacted again when it may
//! hold a secret; under [`TextPolicy::Constants`] the stored text is the
//! shape's anyway). That is what makes the simple protocol's texts, new
//! literals each time, cost a scan instead of a parse.
//!
//! Each text is read in a `standard_conforming_strings` mode (the
//! session's, as the server last reported it). A text without a backslash
//! reads the same in both and is analyzed once; one with a backslash is
//! analyzed in both (see `reading`), has no shape, and is cached per mode
//! (its analysis follows the expected mode's statements): an analysis made
//! for one mode is never handed to a lookup in the other.

use std::collections::HashMap;
use std::sync::Arc;

use pgtrail_core::config::IdentityConfig;

use crate::claims::{self, Claim, Names};
use crate::statement::{self, Analysis};
use crate::strings::{self, StandardStrings};
use crate::token::{self, Tok};
use crate::{literal, reading, redact, shape};

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
    texts: Generations,
    /// Texts with a backslash read with `standard_conforming_strings` off.
    texts_off: Generations,
    shapes: Generations,
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
            texts: Generations::new(capacity),
            texts_off: Generations::new(capacity),
            shapes: Generations::new(capacity),
            hits: 0,
            misses: 0,
        }
    }

    /// What the statements of `sql` are (see [`Analysis`]), read with
    /// `standard_conforming_strings` on.
    pub fn analyze(&mut self, sql: &str) -> Arc<Analysis> {
        self.analyze_in(sql, StandardStrings::On)
    }

    /// What the statements of `sql` are, read in `mode` (and in the other
    /// mode too when that could read differently: see [`Analysis::ambiguous`]).
    pub fn analyze_in(&mut self, sql: &str, mode: StandardStrings) -> Arc<Analysis> {
        if let Some(found) = self.cached(sql, mode) {
            return found;
        }
        let analysis = Arc::new(self.analyze_uncached_in(sql, mode));
        self.store(sql, mode, Arc::clone(&analysis));
        analysis
    }

    /// The exact-text generations a text read in `mode` is cached in.
    fn texts_for(&mut self, sql: &str, mode: StandardStrings) -> &mut Generations {
        if mode == StandardStrings::Off && strings::mode_matters(sql) {
            &mut self.texts_off
        } else {
            &mut self.texts
        }
    }

    /// The cached analysis of `sql` read in `mode`, or of its shape, if any
    /// (a hit counts as in [`Analyzer::analyze`]; a miss is not counted:
    /// the caller analyzes with [`Analyzer::analyze_uncached_in`], outside any
    /// lock it holds, and hands the result to [`Analyzer::store`]).
    pub fn cached(&mut self, sql: &str, mode: StandardStrings) -> Option<Arc<Analysis>> {
        if let Some(found) = self.texts_for(sql, mode).get(sql) {
            self.hits += 1;
            return Some(found);
        }
        if sql.len() > MAX_CACHED_TEXT {
            return None;
        }
        let template = self.shapes.get(&shape::key(sql)?)?;
        let found = self.reshape(&template, sql)?;
        self.hits += 1;
        Some(Arc::new(found))
    }

    /// Caches `analysis` as the analysis of `sql` read in `mode` (a miss,
    /// counted), and of its shape, unless the text is longer than
    /// [`MAX_CACHED_TEXT`].
    pub fn store(&mut self, sql: &str, mode: StandardStrings, analysis: Arc<Analysis>) {
        self.misses += 1;
        if sql.len() > MAX_CACHED_TEXT {
            return;
        }
        // Only a parse's one statement is a shape's (see `shape`; a text
        // with a backslash has none).
        if analysis.parsed && analysis.statements.len() == 1 {
            if let Some(key) = shape::key(sql) {
                self.shapes.put(key.into(), Arc::clone(&analysis));
            }
        }
        self.texts_for(sql, mode).put(sql.into(), analysis);
    }

    /// The analysis of `sql` from `template`, the analysis of another text
    /// of its shape: the same but for the span and the stored text.
    fn reshape(&self, template: &Analysis, sql: &str) -> Option<Analysis> {
        let mut analysis = template.clone();
        let [statement] = analysis.statements.as_mut_slice() else {
            return None;
        };
        statement.span = statement::trimmed(sql, 0..sql.len());
        let text = sql.get(statement.span.clone())?;
        statement.sql = match self.policy {
            // Every constant is a `$n` already: the shape's text is this one's.
            TextPolicy::Constants => std::mem::take(&mut statement.sql),
            // No secret name, no credential: the text is stored as written.
            TextPolicy::Secrets if !literal::mentions_secret(text) => text.to_string(),
            TextPolicy::Secrets => redact::redact_secrets_known(text, token::scan(text)?, true).0,
        };
        Some(analysis)
    }

    /// [`Analyzer::analyze`] without the cache.
    pub fn analyze_uncached(&self, sql: &str) -> Analysis {
        self.analyze_uncached_in(sql, StandardStrings::On)
    }

    /// [`Analyzer::analyze_in`] without the cache.
    pub fn analyze_uncached_in(&self, sql: &str, mode: StandardStrings) -> Analysis {
        if !strings::mode_matters(sql) {
            // Read alike in both modes (or, holding `U&'…'`, an error when
            // off, which runs nothing): read `on`, so the one cache entry
            // is the same whichever session made it.
            return strings::under(StandardStrings::On, || self.analyze_once(sql));
        }
        let suspects = strings::multibyte_suspects(sql);
        if !suspects.is_empty() {
            return self.analyze_multibyte(sql, mode, &suspects);
        }
        let expected = strings::under(mode, || self.analyze_once(sql));
        let other = strings::under(mode.other(), || self.analyze_once(sql));
        if other == expected {
            return expected;
        }
        reading::ambiguous(expected, vec![other], self.stored_whole(sql))
    }

    /// A text with backslashes that may be the second bytes of characters
    /// (`strings::multibyte_suspects`): read in both modes with every
    /// choice of which of them are backslashes (a byte chosen not to be
    /// one reads as a letter, so spans stay the same), up to
    /// [`reading::MAX_SUSPECTS`]; past that, the text is unreadable. When
    /// every reading is the expected one but for the stored text, that is
    /// the analysis; else they are merged as for
    /// `standard_conforming_strings`, with the text withheld where a
    /// reading could hide a secret or a constant.
    fn analyze_multibyte(&self, sql: &str, mode: StandardStrings, suspects: &[usize]) -> Analysis {
        let expected = strings::under(mode, || self.analyze_once(sql));
        if suspects.len() > reading::MAX_SUSPECTS {
            let other = strings::under(mode.other(), || self.analyze_once(sql));
            return reading::unreadable(expected, other, self.stored_multibyte(sql));
        }
        let mut readings = Vec::new();
        for choice in 0..1u32 << suspects.len() {
            let mut text = sql.as_bytes().to_vec();
            for (bit, &at) in suspects.iter().enumerate() {
                if choice & 1 << bit != 0 {
                    text[at] = b'x';
                }
            }
            // Replacing an ASCII byte by another keeps the text UTF-8.
            let Ok(text) = String::from_utf8(text) else {
                continue;
            };
            for reading_mode in [mode, mode.other()] {
                if choice == 0 && reading_mode == mode {
                    continue;
                }
                let analysis = strings::under(reading_mode, || self.analyze_once(&text));
                if !reading::same_but_text(&analysis, &expected) {
                    readings.push(analysis);
                }
            }
        }
        let stored = self.stored_multibyte(sql);
        if readings.is_empty() {
            let mut analysis = expected;
            if stored == redact::WITHHELD {
                for statement in &mut analysis.statements {
                    statement.sql = stored.clone();
                }
            }
            return analysis;
        }
        let mut analysis = reading::ambiguous(expected, readings, stored);
        analysis.encoding_ambiguous = true;
        analysis
    }

    /// What a text with multibyte suspects stores: as written when it can
    /// hold no secret and constants are kept; else nothing, since which of
    /// its bytes are literals depends on a reading the proxy cannot know.
    fn stored_multibyte(&self, sql: &str) -> String {
        let text = &sql[statement::trimmed(sql, 0..sql.len())];
        if self.policy == TextPolicy::Secrets && !literal::mentions_secret(text) {
            return text.to_string();
        }
        redact::WITHHELD.to_string()
    }

    /// What an ambiguous text's statements store (see `reading`): the text
    /// as written when it cannot hold a secret, else what both readings
    /// redact it to if they agree, else nothing.
    fn stored_whole(&self, sql: &str) -> String {
        let text = &sql[statement::trimmed(sql, 0..sql.len())];
        if self.policy == TextPolicy::Secrets && !literal::mentions_secret(text) {
            return text.to_string();
        }
        // Both redact in both modes and withhold unless they agree.
        match self.policy {
            TextPolicy::Secrets => redact::redact_secrets(text).0,
            TextPolicy::Constants => redact::redact_constants(text).0,
        }
    }

    /// The analysis of `sql` in the thread's mode.
    fn analyze_once(&self, sql: &str) -> Analysis {
        let policy = self.policy;
        let mut redact = |text: &str, tokens: Option<Vec<Tok>>, parsed: bool| match (policy, tokens)
        {
            (TextPolicy::Constants, _) => redact::redact_constants_in_mode(text).0,
            (TextPolicy::Secrets, Some(tokens)) => {
                redact::redact_secrets_known(text, tokens, parsed).0
            }
            (TextPolicy::Secrets, None) => redact::redact_secrets_in_mode(text).0,
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
        self.texts.len() + self.texts_off.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Two generations of at most `capacity / 2` entries each (see the module
/// documentation).
#[derive(Debug)]
struct Generations {
    capacity: usize,
    young: HashMap<Box<str>, Arc<Analysis>>,
    old: HashMap<Box<str>, Arc<Analysis>>,
}

impl Generations {
    fn new(capacity: usize) -> Generations {
        Generations {
            capacity: capacity.max(2),
            young: HashMap::new(),
            old: HashMap::new(),
        }
    }

    /// The entry of `key`, moved to the young generation if it was old.
    fn get(&mut self, key: &str) -> Option<Arc<Analysis>> {
        if let Some(found) = self.young.get(key) {
            return Some(Arc::clone(found));
        }
        let (key, found) = self.old.remove_entry(key)?;
        self.insert(key, Arc::clone(&found));
        Some(found)
    }

    /// Adds `key` unless the young generation has it.
    fn put(&mut self, key: Box<str>, analysis: Arc<Analysis>) {
        if !self.young.contains_key(&key) {
            self.insert(key, analysis);
        }
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    fn insert(&mut self, key: Box<str>, analysis: Arc<Analysis>) {
        if self.young.len() >= self.capacity / 2 {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, analysis);
    }
}
