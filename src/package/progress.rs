//! Download progress: a bar on a terminal, a line every few seconds elsewhere.

use std::io::{self, IsTerminal};
use std::time::{Duration, Instant};

use crate::text::err_line;

/// A bar on a terminal; on anything else (cloud-init logs) a line every few seconds.
pub(super) struct Progress {
    url: String,
    bar: Option<indicatif::ProgressBar>,
    last: Instant,
    total: Option<u64>,
}

impl Progress {
    pub(super) fn new(url: &str) -> Self {
        Progress {
            url: url.to_string(),
            bar: None,
            last: Instant::now(),
            total: None,
        }
    }

    pub(super) fn start(&mut self, have: u64, total: Option<u64>) {
        self.total = total;
        if self.bar.is_none() && io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::with_draw_target(
                total,
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message("downloading istio-sidecar");
            self.bar = Some(bar);
        }
        if let Some(b) = &self.bar {
            b.set_position(have);
        } else {
            err_line(&format!("downloading {} ({})", self.url, mib(total)));
        }
        self.last = Instant::now();
    }

    pub(super) fn update(&mut self, have: u64) {
        if let Some(b) = &self.bar {
            b.set_position(have);
        } else if self.last.elapsed() >= Duration::from_secs(5) {
            self.last = Instant::now();
            err_line(&format!(
                "downloading {}: {} of {}",
                self.url,
                mib(Some(have)),
                mib(self.total)
            ));
        }
    }

    pub(super) fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

fn mib(n: Option<u64>) -> String {
    match n {
        Some(n) => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
        None => "size unknown".into(),
    }
}
