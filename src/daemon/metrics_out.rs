//! Where the daemon's metrics go after every publish: `vmagent.prom` in `[metrics]
//! textfile_dir` (for node_exporter's textfile collector) and the `/metrics` server on
//! `[metrics] listen` ([`super::metrics_http`]). The rendering is `crate::metrics`'s;
//! the counters it renders live here, in memory.

use std::path::{Path, PathBuf};

use super::metrics_http::Server;
use crate::config::MetricsConfig;
use crate::fsx;
use crate::metrics::{self, Counters};
use crate::root::Root;
use crate::status::StatusFile;

/// The daemon's metrics: counters, and the outputs they are rendered to.
#[derive(Default)]
pub(super) struct Metrics {
    /// Counted since the daemon started.
    pub(super) counters: Counters,
    /// The last rendering, and whether it reached the textfile.
    last: Option<(String, bool)>,
    /// The last textfile error logged (logged again only when it changes).
    textfile_error: Option<String>,
    server: Option<Server>,
}

impl Metrics {
    /// Applies `new` (at start: `old` is `None`; on a reload, the config before):
    /// starts, moves or stops the server, and removes the file from a textfile_dir no
    /// longer configured (node_exporter would keep serving it, frozen).
    pub(super) fn configure(
        &mut self,
        root: &Root,
        old: Option<&MetricsConfig>,
        new: &MetricsConfig,
    ) {
        if old.map(|o| &o.listen) != Some(&new.listen) {
            self.server = None;
            if let Some(addr) = new.listen_addr() {
                let body = self
                    .last
                    .as_ref()
                    .map(|(t, _)| t.clone())
                    .unwrap_or_default();
                match Server::start(addr, body) {
                    Ok(s) => {
                        tracing::info!(address = %s.addr, "metrics: serving http://{}/metrics", s.addr);
                        self.server = Some(s);
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "metrics: cannot listen on {addr} (metrics.listen): {e}; free the port or choose another address, then reload (`systemctl reload vmagent`)"
                    ),
                }
            }
        }
        if let Some(o) = old {
            if o.textfile_dir != new.textfile_dir {
                if let Some(p) = o.textfile_dir.as_deref().and_then(|d| file_path(root, d)) {
                    let _ = fsx::remove_if_exists(&p);
                }
                // Written again to the new place at the next publish.
                self.last = None;
            }
        }
    }

    /// Renders `doc` and the counters; writes the textfile and updates the server when
    /// the rendering changed (or the last write failed).
    pub(super) fn publish(&mut self, root: &Root, cfg: &MetricsConfig, doc: &StatusFile) {
        if cfg.textfile_dir.is_none() && self.server.is_none() {
            return;
        }
        let text = metrics::render(doc, &self.counters);
        if matches!(&self.last, Some((t, true)) if *t == text) {
            return;
        }
        if let Some(s) = &self.server {
            s.update(&text);
        }
        let written = match &cfg.textfile_dir {
            Some(dir) => match write_textfile(root, dir, &text) {
                Ok(()) => {
                    self.textfile_error = None;
                    true
                }
                Err(e) => {
                    if self.textfile_error.as_ref() != Some(&e) {
                        tracing::warn!("metrics: {e}");
                        self.textfile_error = Some(e);
                    }
                    false
                }
            },
            None => true,
        };
        self.last = Some((text, written));
    }
}

/// Host path of `vmagent.prom` in the textfile directory `dir` (a system path).
fn file_path(root: &Root, dir: &Path) -> Option<PathBuf> {
    root.resolve(dir).ok().map(|d| d.join(metrics::FILE_NAME))
}

/// Writes `text` as `dir/vmagent.prom` (0644: the status is no secret) atomically: the
/// temp file is hidden and not `*.prom`, so node_exporter never reads a half file.
fn write_textfile(root: &Root, dir: &Path, text: &str) -> Result<(), String> {
    let Some(path) = file_path(root, dir) else {
        return Err(format!(
            "metrics.textfile_dir {} cannot be resolved inside the root; fix metrics.textfile_dir",
            dir.display()
        ));
    };
    let host_dir = path.parent().unwrap_or(Path::new("/"));
    if !host_dir.is_dir() {
        return Err(format!(
            "{}: no such directory (metrics.textfile_dir); install prometheus-node-exporter (it makes /var/lib/prometheus/node-exporter) or create it",
            dir.display()
        ));
    }
    metrics::write_file(&path, text).map_err(|e| {
        format!(
            "cannot write {} (metrics.textfile_dir): {e}; make the directory writable by root",
            path.display()
        )
    })
}
