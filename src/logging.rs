//! Logging: `tracing` events go to stderr as one line each, `message key=value ...`.
//! When stderr is the journal (systemd sets JOURNAL_STREAM to that stream's
//! device:inode) each line starts with its syslog priority (`<3>`, sd-daemon(3)), which
//! journald turns into the entry's PRIORITY; elsewhere with a word (`warning: ...`).
//! The fields stay in the message text, where `journalctl -u vmagent` shows them: a
//! structured journal entry would keep them only in fields the default view hides (the
//! VM test found "reconcile failed; retrying" without its error). `-v`/`-q` move the level; RUST_LOG,
//! when set, wins. Secrets are never passed to a log call: tokens are only ever
//! described by their claims.

use std::fmt;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Whether stderr is connected to the journal (systemd's documented check).
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(m) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino())
}

/// Sets up logging once per process. `verbose` counts `-v`; `quiet` is `-q`.
pub fn init(verbose: u8, quiet: bool) {
    let journal = stderr_is_journal();
    // On a terminal, vmagent's own report is the interface: warnings and errors only
    // (the report prints them already, so the default is errors). In the journal, info.
    let level = match (quiet, verbose, journal) {
        (true, _, _) => "error",
        (false, 0, false) => "error",
        (false, 0, true) | (false, 1, _) => "info",
        (false, 2, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(Plain { journal })
        .try_init();
}

/// `warning: message key=value` lines (or `<4>message key=value` for the journal), no
/// timestamps (the terminal, the caller's log or the journal has those).
struct Plain {
    journal: bool,
}

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let prefix = match (*event.metadata().level(), self.journal) {
            (Level::ERROR, false) => "error: ",
            (Level::WARN, false) => "warning: ",
            (Level::INFO, false) => "",
            (Level::DEBUG, false) => "debug: ",
            (Level::TRACE, false) => "trace: ",
            (Level::ERROR, true) => "<3>",
            (Level::WARN, true) => "<4>",
            (Level::INFO, true) => "<6>",
            (Level::DEBUG | Level::TRACE, true) => "<7>",
        };
        w.write_str(prefix)?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}
