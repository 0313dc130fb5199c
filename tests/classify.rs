//! `health::classify`: a table of real istio.log / istio.err.log lines (agent text and
//! `--log_as_json` forms, Envoy's two formats) with what each must classify to, look-alikes
//! that must not match (or must match another kind), and the invariants of the rule table
//! and of `Failure`.

use std::collections::{BTreeSet, HashSet};

use vmagent::health::classify::{anchors, Class, Classifier, Stage, RULES};
use vmagent::health::Failure;

#[path = "classify/table.rs"]
mod table;

use table::*;

fn show_class(c: Option<Class>) -> String {
    match c {
        None => "None".into(),
        Some(c) => format!("{c:?}"),
    }
}

#[test]
fn table_of_real_lines() {
    let c = Classifier::new();
    let t = table();
    let mut bad = Vec::new();
    for (i, r) in t.rows.iter().enumerate() {
        let got = c.classify(r.line.as_bytes());
        if got != r.want {
            bad.push(format!(
                "row {i} ({}, {}): want {}, got {}\n    line: {:?}",
                r.form,
                r.src,
                show_class(r.want),
                show_class(got),
                r.line
            ));
        }
        // The fast path agrees: a line that classifies is a candidate.
        if got.is_some() {
            assert!(
                c.is_candidate(r.line.as_bytes()),
                "row {i}: classified but not a candidate: {:?}",
                r.line
            );
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} rows misclassified:\n{}",
        bad.len(),
        t.rows.len(),
        bad.join("\n")
    );
}

#[test]
fn default_classifier_is_the_same_table() {
    let a = Classifier::new();
    let b = Classifier::default();
    for r in table().rows {
        assert_eq!(
            a.classify(r.line.as_bytes()),
            b.classify(r.line.as_bytes()),
            "{:?}",
            r.line
        );
    }
}

/// Every kind a log line can show has a row; the three that come from systemd or the
/// wait's timeout have none and no rule either.
#[test]
fn table_covers_every_log_failure_stage_and_ready() {
    let from_elsewhere = [
        Failure::NotReady,
        Failure::CrashLoop,
        Failure::ServiceFailed,
        Failure::NotInstalled,
    ];
    let t = table();
    let wanted: Vec<Class> = t.rows.iter().filter_map(|r| r.want).collect();
    for k in Failure::ALL {
        if from_elsewhere.contains(&k) {
            assert!(
                !RULES.iter().any(|r| r.class == Class::Failure(k)),
                "{k:?} comes from systemd / the timeout, yet a log rule yields it"
            );
            continue;
        }
        assert!(
            wanted.contains(&Class::Failure(k)),
            "no table row expects {k:?}"
        );
        assert!(
            RULES.iter().any(|r| r.class == Class::Failure(k)),
            "no rule yields {k:?}"
        );
    }
    for s in [
        Stage::AgentStarted,
        Stage::EnvoyStarting,
        Stage::CertificateReceived,
        Stage::XdsConnected,
    ] {
        assert!(
            wanted.contains(&Class::Progress(s)),
            "no table row expects {s:?}"
        );
        assert!(!s.describe().is_empty());
    }
    assert!(wanted.contains(&Class::Ready));
    // Every class a rule can yield is exercised by the table.
    for r in RULES {
        assert!(
            wanted.contains(&r.class),
            "rule {:?} yields {:?}, which no row expects",
            r.any,
            r.class
        );
    }
}

#[test]
fn failure_kinds_have_unique_names_codes_and_text() {
    let mut names = HashSet::new();
    let mut codes = HashSet::new();
    let mut kinds = HashSet::new();
    for k in Failure::ALL {
        assert!(kinds.insert(k), "{k:?} twice in ALL");
        assert!(!k.summary().trim().is_empty(), "{k:?}: empty summary");
        assert!(!k.hint().trim().is_empty(), "{k:?}: empty hint");
        let code = k.exit_code();
        assert!((10..=27).contains(&code), "{k:?}: exit code {code}");
        assert!(codes.insert(code), "{k:?}: exit code {code} used twice");
        let name = k.name();
        assert!(names.insert(name), "{k:?}: name {name} used twice");
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "{k:?}: name {name:?} is not kebab-case"
        );
        // The JSON form (status file, --json) is the same name.
        assert_eq!(
            serde_json::to_value(k).unwrap(),
            serde_json::Value::String(name.into()),
            "{k:?}"
        );
    }
    assert_eq!(codes.len(), 18);
    assert_eq!(
        codes,
        (10..=27).collect::<HashSet<u8>>(),
        "exit codes are 10..=27, each once"
    );
}

#[test]
fn anchors_are_the_rules_literals_without_duplicates() {
    let a = anchors();
    let set: BTreeSet<&str> = a.iter().copied().collect();
    assert_eq!(set.len(), a.len(), "duplicate anchors: {a:?}");
    let from_rules: BTreeSet<&str> = RULES.iter().flat_map(|r| r.any.iter().copied()).collect();
    assert_eq!(set, from_rules);
    for r in RULES {
        assert!(!r.any.is_empty(), "rule for {:?} has no anchor", r.class);
        for s in r.any.iter().chain(r.with).chain(r.not) {
            assert!(!s.is_empty(), "empty literal in rule for {:?}", r.class);
        }
    }
}

/// Every anchor classifies something: a line of just the anchor does, unless the rule
/// has a `with` condition, in which case the anchor plus that context does. And it yields
/// its own rule's class (no anchor is shadowed by an earlier rule).
#[test]
fn every_anchor_classifies_something() {
    let c = Classifier::new();
    let mut bad = Vec::new();
    for a in anchors() {
        let alone = c.classify(a.as_bytes());
        let rules: Vec<_> = RULES.iter().filter(|r| r.any.contains(&a)).collect();
        assert!(!rules.is_empty(), "anchor {a:?} belongs to no rule");
        if alone.is_none() {
            // Rejected only by a `with` condition: some rule with this anchor has one.
            if !rules.iter().any(|r| !r.with.is_empty()) {
                bad.push(format!(
                    "anchor {a:?} alone classifies to None, and its rules have no `with`"
                ));
            }
        }
        for r in rules {
            let line = match r.with.first() {
                None => a.to_string(),
                Some(w) => format!("{a} {w}"),
            };
            let got = c.classify(line.as_bytes());
            if got != Some(r.class) {
                bad.push(format!(
                    "anchor {a:?} (line {line:?}): want {:?}, got {}",
                    r.class,
                    show_class(got)
                ));
            }
            assert!(c.is_candidate(line.as_bytes()));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Each `with` literal alone is not enough: it must come with an anchor.
#[test]
fn with_context_alone_classifies_nothing_and_is_needed() {
    let c = Classifier::new();
    for r in RULES {
        for w in r.with {
            // Unless the context literal is itself some rule's anchor.
            if anchors().contains(w) {
                continue;
            }
            assert_eq!(
                c.classify(format!("{TS}\tinfo\t{w}").as_bytes()),
                None,
                "context {w:?} alone"
            );
        }
        if !r.with.is_empty() {
            for a in r.any {
                // The anchor alone at info level: the rule does not fire.
                let line = format!("{TS}\tinfo\t{a}");
                assert_ne!(
                    c.classify(line.as_bytes()),
                    Some(r.class),
                    "anchor {a:?} fired without any of {:?}",
                    r.with
                );
            }
        }
    }
}

#[test]
fn lines_without_anchor_are_not_candidates() {
    let c = Classifier::new();
    for l in [
        "",
        "2024-08-15T09:51:42.705907Z\tinfo\tads\tADS: new connection for node:sidecar~10.0.0.8~vm1.vm-ns~vm-ns.svc.cluster.local-1",
        "2024-08-15T09:51:42.705907Z\twarn\tProbe failure",
        "{\"level\":\"info\",\"msg\":\"ok\"}",
    ] {
        assert!(!c.is_candidate(l.as_bytes()), "{l:?}");
        assert_eq!(c.classify(l.as_bytes()), None, "{l:?}");
    }
}

#[test]
fn non_utf8_and_huge_lines_do_not_panic() {
    let c = Classifier::new();
    let mut l = b"\xff\xfe 2024\terror\t".to_vec();
    l.extend_from_slice(&[0x80; 1000]);
    assert_eq!(c.classify(&l), Some(Class::Failure(Failure::UnknownError)));
    let mut big = vec![b'x'; 1 << 20];
    big.extend_from_slice(b" open /etc/certs/key.pem: permission denied");
    assert_eq!(
        c.classify(&big),
        Some(Class::Failure(Failure::PermissionDenied))
    );
}

/// At least 80 real lines (a text/JSON pair counts once; synthetic look-alikes do not
/// count), each naming where it comes from.
#[test]
fn table_has_eighty_real_lines_with_sources() {
    let t = table();
    let real = t
        .rows
        .iter()
        .filter(|r| r.form != "agent json" && !r.src.starts_with("synthetic"))
        .count();
    println!(
        "{real} real lines, {} distinct, {} rows (text + JSON)",
        t.distinct(),
        t.rows.len()
    );
    assert!(
        real >= 80,
        "only {real} real lines ({} distinct)",
        t.distinct()
    );
    for r in &t.rows {
        assert!(
            r.src.starts_with("synthetic") || r.src.contains('/'),
            "row without a source file: {:?}",
            r.line
        );
    }
}

/// Benign lines are known, so the generic error rule never sees them.
#[test]
fn benign_lines_are_not_errors() {
    let c = Classifier::new();
    for r in table().rows.iter().filter(|r| r.want == BENIGN) {
        assert_eq!(c.classify(r.line.as_bytes()), BENIGN, "{:?}", r.line);
    }
    assert!(table().rows.iter().any(|r| r.want == BENIGN));
}
