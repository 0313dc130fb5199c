//! Combines the three views of the proxy into one [`Health`]: its log lines (reasons), its
//! readiness endpoint (the truth about ready), and systemd's state (a crash loop is a
//! failure even before the log says why).

use std::time::{Duration, Instant};

use super::classify::{Class, Classifier, Stage};
use super::follow::Follower;
use super::journal::Journal;
use super::probe::{Probe, Prober};
use super::verdict::{self, CertDir};
use super::{push_evidence, Failure, Health, State};
use crate::service::UnitState;

/// Automatic restarts during one wait that make a crash loop.
pub const CRASH_LOOP: u32 = 3;

/// How often the readiness endpoint is probed while waiting.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// How often systemd is asked while waiting.
pub const UNIT_EVERY: Duration = Duration::from_secs(1);

/// Something the monitor saw, for callers that show progress as it happens.
#[derive(Debug)]
pub enum Event<'a> {
    /// A classified line of istio.log, istio.err.log or the unit's journal.
    Line {
        /// What it says.
        class: Class,
        /// The line, verbatim (cut to a bound).
        text: &'a str,
    },
    /// The health changed.
    Changed(&'a Health),
    /// A wait begins.
    Waiting {
        /// For at most this long.
        limit: Duration,
        /// Probing this URL.
        url: &'a str,
    },
}

/// Reads the service's state from systemd (`None`: unknown right now).
pub type UnitView = Box<dyn FnMut() -> Option<UnitState>>;

/// Starts following the unit's journal from a Unix second (`None`: no journal here).
pub type JournalStart = Box<dyn FnMut(i64) -> Option<Journal>>;

/// The monitor of a root's proxy: its logs (from their current ends), `ready_url`, and
/// systemd's view and the unit's journal (from now) when the service is live there; the
/// OUTPUT_CERTS directory of the installed cluster.env for the token verdict. The error,
/// when the logs cannot be followed, is for the caller to report; the monitor then works
/// from the probe alone.
pub fn for_root(
    root: &crate::root::Root,
    ready_url: &str,
    client: Result<crate::net::Client, String>,
) -> (Monitor, Option<String>) {
    let logs: Vec<std::path::PathBuf> = [crate::layout::ISTIO_LOG, crate::layout::ISTIO_ERR_LOG]
        .iter()
        .filter_map(|p| root.resolve(std::path::Path::new(p)).ok())
        .collect();
    let (follower, problem) = match Follower::new(&logs) {
        Ok(f) => (Some(f), None),
        Err(e) => (
            None,
            Some(format!(
                "cannot follow {}: {e}; readiness is still probed, but failure reasons will be unknown",
                crate::layout::ISTIO_LOG
            )),
        ),
    };
    let (sc, mode) = crate::service::Systemctl::for_root(root);
    let live = mode == crate::service::Mode::Live;
    let unit = live.then(|| -> UnitView { Box::new(move || sc.show().ok()) });
    let mut m = Monitor::new(follower, Prober::with(ready_url, client), unit)
        .with_cert_dir(CertDir::for_root(root));
    if live {
        m = m.with_journal(Box::new(Journal::start));
    }
    (m, problem)
}

/// Watches one proxy.
pub struct Monitor {
    follower: Option<Follower>,
    /// Starts the journal follower (at [`Monitor::with_journal`] and every mark).
    journal_start: Option<JournalStart>,
    journal: Option<Journal>,
    /// OUTPUT_CERTS, for whether a missing token is final.
    cert_dir: Option<CertDir>,
    classifier: Classifier,
    prober: Prober,
    unit: Option<UnitView>,
    health: Health,
    /// NRestarts when the wait began.
    baseline: Option<u32>,
    /// Evidence per failure kind seen, most recent last.
    evidence: Vec<(Failure, Vec<String>)>,
    /// All failure lines, most recent last (for kinds with no lines of their own).
    recent: Vec<String>,
    /// Unix time of the last state change.
    since: i64,
    /// Probe again right away (a progress line suggests it may be ready).
    probe_now: bool,
}

impl Monitor {
    /// A monitor. Without a follower, only the probe and systemd are used (reasons are
    /// then unknown); without a unit view, crash loops are seen only in the log.
    pub fn new(follower: Option<Follower>, prober: Prober, unit: Option<UnitView>) -> Self {
        Monitor {
            follower,
            journal_start: None,
            journal: None,
            cert_dir: None,
            classifier: Classifier::new(),
            prober,
            unit,
            health: Health::unknown(),
            baseline: None,
            evidence: Vec::new(),
            recent: Vec::new(),
            since: crate::timefmt::now(),
            probe_now: true,
        }
    }

    /// Also follows the unit's journal, from now and again from every [`Monitor::mark`].
    pub fn with_journal(mut self, mut start: JournalStart) -> Self {
        self.journal = start(crate::timefmt::now());
        self.journal_start = Some(start);
        self
    }

    /// Judges a missing token by the certificate in `dir` (without one: always final).
    pub fn with_cert_dir(mut self, dir: CertDir) -> Self {
        self.cert_dir = Some(dir);
        self
    }

    /// The log follower's descriptor (readable when the logs may have news).
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.follower.as_ref().map(Follower::fd)
    }

    /// The current health.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Unix time of the last state change.
    pub fn since(&self) -> i64 {
        self.since
    }

    /// Forget lines written so far (the service is being (re)started) and what they said.
    pub fn mark(&mut self) {
        if let Some(f) = &mut self.follower {
            if let Err(e) = f.mark() {
                tracing::warn!(error = %e, "cannot re-position the log follower");
            }
        }
        if let Some(start) = &mut self.journal_start {
            // The old follower ends first: one journalctl at a time.
            self.journal = None;
            self.journal = start(crate::timefmt::now());
        }
        self.set(Health {
            state: State::Starting,
            ..Health::unknown()
        });
        self.evidence.clear();
        self.recent.clear();
        self.baseline = None;
    }

    fn set(&mut self, h: Health) {
        if h.state != self.health.state {
            self.since = crate::timefmt::now();
        }
        self.health = h;
    }

    fn on_line(&mut self, class: Class, text: &str) {
        let mut h = self.health.clone();
        match class {
            Class::Ready => {
                h.state = State::Ready;
                h.failure = None;
                h.evidence.clear();
            }
            Class::Progress(stage) => {
                h.stage = Some(stage);
                if matches!(h.state, State::Unknown | State::Starting) {
                    h.state = State::Starting;
                }
                if stage == Stage::XdsConnected {
                    self.probe_now = true;
                }
            }
            // Never handed over (read_lines drops them); nothing to change.
            Class::Benign => {}
            Class::Failure(f) => {
                match self.evidence.iter_mut().find(|(k, _)| *k == f) {
                    Some((_, v)) => push_evidence(v, text),
                    None => {
                        let mut v = Vec::new();
                        push_evidence(&mut v, text);
                        self.evidence.push((f, v));
                    }
                }
                push_evidence(&mut self.recent, text);
                if h.state != State::Failed {
                    let keep = match h.failure {
                        // A known kind is more telling than an unknown error line.
                        Some(old) => f == Failure::UnknownError && old != Failure::UnknownError,
                        None => false,
                    };
                    let ctx = match (&self.cert_dir, f) {
                        (Some(d), Failure::TokenMissing) => d.context(),
                        _ => verdict::Context::default(),
                    };
                    let last = verdict::is_final(f, text, &ctx);
                    if !keep || last {
                        h.failure = Some(f);
                    }
                    h.state = if last { State::Failed } else { State::Degraded };
                }
                h.evidence = self.evidence_for(h.failure);
            }
        }
        self.set(h);
    }

    fn evidence_for(&self, f: Option<Failure>) -> Vec<String> {
        f.and_then(|f| self.evidence.iter().find(|(k, _)| *k == f))
            .map_or_else(|| self.recent.clone(), |(_, v)| v.clone())
    }

    fn on_unit(&mut self, u: &UnitState) {
        let mut h = self.health.clone();
        h.service = Some(u.describe());
        let base = *self.baseline.get_or_insert(u.restarts);
        h.restarts = u.restarts.saturating_sub(base);
        if h.state != State::Ready && h.state != State::Failed {
            let dead = match u.active.as_str() {
                _ if u.load == "not-found" => Some(Failure::NotInstalled),
                "failed" => Some(Failure::ServiceFailed),
                "inactive" | "deactivating" => Some(Failure::ServiceFailed),
                _ if h.restarts >= CRASH_LOOP => Some(Failure::CrashLoop),
                _ => None,
            };
            if let Some(f) = dead {
                h.state = State::Failed;
                // The log's reason, if it has one, says more than "failed".
                let cause = h.failure.filter(|c| *c != Failure::UnknownError);
                h.failure = Some(f);
                h.evidence = self.evidence_for(cause.or(Some(f)));
                if h.evidence.is_empty() {
                    h.evidence = self.recent.clone();
                }
                if h.evidence.is_empty() {
                    h.evidence.push(format!(
                        "systemd: {} is {}, {} restarts",
                        crate::service::UNIT,
                        u.describe(),
                        h.restarts
                    ));
                }
            }
        }
        self.set(h);
    }

    fn on_probe(&mut self, p: &Probe) {
        let mut h = self.health.clone();
        match p {
            Probe::Ready => {
                // Restarts are counted from the last time it was fine.
                self.baseline = None;
                h.restarts = 0;
                h.state = State::Ready;
                h.failure = None;
                h.evidence.clear();
            }
            _ if h.state == State::Ready => {
                h.state = State::Degraded;
                h.failure = Some(Failure::NotReady);
                h.evidence = vec![p.describe(self.prober.url())];
            }
            _ => {}
        }
        self.set(h);
    }

    /// New classified lines of the logs, then of the journal (benign ones left out).
    fn read_lines(&mut self) -> Vec<(Class, String)> {
        let mut lines: Vec<(Class, String)> = Vec::new();
        let c = &self.classifier;
        let mut take = |bytes: &[u8]| match c.classify(bytes) {
            None | Some(Class::Benign) => {}
            Some(class) => {
                let t = String::from_utf8_lossy(bytes);
                lines.push((class, t.chars().take(super::EVIDENCE_LINE).collect()));
            }
        };
        if let Some(j) = &mut self.journal {
            j.poll(&mut take);
        }
        if let Some(f) = &mut self.follower {
            let r = f.poll(|l| take(l.bytes));
            if let Err(e) = r {
                tracing::warn!(error = %e, "reading the istio logs failed; health from the probe only");
                self.follower = None;
            }
        }
        lines
    }

    /// One round: new log lines, then (when asked) systemd and the probe. Returns
    /// whether the health changed.
    pub fn step(&mut self, probe: bool, unit: bool, on: &mut dyn FnMut(Event<'_>)) -> bool {
        let probed = self.wants_probe(probe).then(|| self.prober.probe());
        self.step_with(probed, unit, on)
    }

    /// Whether a round should probe: when due, or right after [`Monitor::mark`].
    pub fn wants_probe(&self, due: bool) -> bool {
        due || self.probe_now
    }

    /// The prober, for callers that probe themselves (the daemon, asynchronously) and
    /// hand the result to [`Monitor::step_with`].
    pub fn prober(&self) -> &Prober {
        &self.prober
    }

    /// [`Monitor::step`] with the probe already done (`None`: not probed this round).
    pub fn step_with(
        &mut self,
        probed: Option<Probe>,
        unit: bool,
        on: &mut dyn FnMut(Event<'_>),
    ) -> bool {
        let before = self.health.clone();
        for (class, text) in self.read_lines() {
            self.on_line(class, &text);
            on(Event::Line { class, text: &text });
        }
        if unit && self.health.state != State::Ready {
            if let Some(view) = &mut self.unit {
                if let Some(u) = view() {
                    self.on_unit(&u);
                }
            }
        }
        // Probed even when failed: a long-running watcher (the daemon) must see a
        // proxy that recovered (istiod back, a fresh bundle).
        if let Some(p) = probed {
            self.probe_now = false;
            self.on_probe(&p);
            if p == Probe::Ready {
                // Show the lines that led here (they may have arrived during the
                // probe); ready stands whatever they say.
                for (class, text) in self.read_lines() {
                    on(Event::Line { class, text: &text });
                }
            }
        }
        let changed = before != self.health;
        if changed {
            on(Event::Changed(&self.health));
        }
        changed
    }

    /// Waits until the proxy is ready, fails for a final reason, or `timeout` passes;
    /// then the health is ready or failed (a transient reason seen last becomes the
    /// reason for the timeout).
    pub fn wait(&mut self, timeout: Duration, on: &mut dyn FnMut(Event<'_>)) -> Health {
        on(Event::Waiting {
            limit: timeout,
            url: self.prober.url(),
        });
        let deadline = Instant::now() + timeout;
        let mut next_probe = Instant::now();
        let mut next_unit = Instant::now();
        loop {
            let now = Instant::now();
            let probe = now >= next_probe;
            let unit = now >= next_unit;
            self.step(probe, unit, on);
            if probe {
                next_probe = now + PROBE_EVERY;
            }
            if unit {
                next_unit = now + UNIT_EVERY;
            }
            if matches!(self.health.state, State::Ready | State::Failed) {
                return self.health.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let mut h = self.health.clone();
                h.state = State::Failed;
                let f = h.failure.unwrap_or(Failure::NotReady);
                h.failure = Some(f);
                h.evidence = self.evidence_for(Some(f));
                if f == Failure::NotReady {
                    h.evidence = self.recent.clone();
                }
                self.set(h);
                on(Event::Changed(&self.health));
                return self.health.clone();
            }
            let mut wake = next_probe.min(deadline);
            if self.unit.is_some() {
                wake = wake.min(next_unit);
            }
            let d = wake.saturating_duration_since(now);
            match &self.follower {
                Some(f) => {
                    if f.wait(Some(d)).is_err() {
                        std::thread::sleep(d);
                    }
                }
                None => std::thread::sleep(d),
            }
        }
    }
}

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;
