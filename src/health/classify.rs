//! The classifier of istio.log / istio.err.log / journal lines, applying the table in
//! [`super::rules`], built from Istio's real log lines (pilot-agent, its
//! sds/xdsproxy/cache scopes, istio-iptables and Envoy).
//!
//! Lines look like `2024-08-15T09:51:42.705907Z<TAB>warn<TAB>sds<TAB>failed to warm
//! certificate: ...` (or JSON with `--log_as_json`); rules match literals anywhere in the
//! line, so both forms classify alike. Speed: one Aho-Corasick (SIMD) pass per line finds
//! whether any anchor occurs at all; only those lines are checked rule by rule.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use memchr::memmem;

pub use super::rules::{Class, Rule, Stage, RULES};

/// Applies [`RULES`] to lines.
pub struct Classifier {
    /// Every anchor of every rule: a line without one is not looked at further. `None`
    /// only if the automaton could not be built (it is a static table, so never in
    /// practice); lines are then checked rule by rule, slower but alike.
    anchors: Option<AhoCorasick>,
    /// Per rule: its anchors, withs and nots as prepared finders.
    rules: Vec<Prepared>,
}

struct Prepared {
    class: Class,
    any: Vec<memmem::Finder<'static>>,
    with: Vec<memmem::Finder<'static>>,
    not: Vec<memmem::Finder<'static>>,
}

fn finders(v: &'static [&'static str]) -> Vec<memmem::Finder<'static>> {
    v.iter()
        .map(|s| memmem::Finder::new(s.as_bytes()))
        .collect()
}

/// Every anchor of the table, in table order (the benchmark's grep pattern list).
pub fn anchors() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = RULES.iter().flat_map(|r| r.any.iter().copied()).collect();
    v.dedup();
    v
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Classifier {
    /// Builds the classifier from [`RULES`].
    pub fn new() -> Self {
        let anchors = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostFirst)
            .build(anchors())
            .map_err(|e| tracing::error!(error = %e, "log classifier: falling back to rule-by-rule matching"))
            .ok();
        Classifier {
            anchors,
            rules: RULES
                .iter()
                .map(|r| Prepared {
                    class: r.class,
                    any: finders(r.any),
                    with: finders(r.with),
                    not: finders(r.not),
                })
                .collect(),
        }
    }

    /// Whether the line contains any anchor at all (the fast path).
    pub fn is_candidate(&self, line: &[u8]) -> bool {
        match &self.anchors {
            Some(a) => a.is_match(line),
            None => self
                .rules
                .iter()
                .any(|r| r.any.iter().any(|f| f.find(line).is_some())),
        }
    }

    /// What `line` says, if anything.
    pub fn classify(&self, line: &[u8]) -> Option<Class> {
        if !self.is_candidate(line) {
            return None;
        }
        let has = |fs: &[memmem::Finder<'static>]| fs.iter().any(|f| f.find(line).is_some());
        self.rules
            .iter()
            .find(|r| has(&r.any) && (r.with.is_empty() || has(&r.with)) && !has(&r.not))
            .map(|r| r.class)
    }
}
