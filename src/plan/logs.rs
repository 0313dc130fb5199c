//! The logrotate rule for the sidecar's logs (`[logs]`): the istio-sidecar package
//! installs none, so istio.log and istio.err.log grow for as long as the VM lives.

use super::{PlanError, Planner, What};
use crate::fsx::Kind;
use crate::layout;

/// How the sidecar's logs are rotated (`[logs]` of the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate a log once it is larger than this many MiB.
    pub size_mib: u64,
    /// Rotated copies kept.
    pub count: u32,
}

/// The logrotate rule for istio.log and istio.err.log. `copytruncate`: pilot-agent and
/// Envoy keep both files open (istio-start.sh appends to them with `>>`, so after the
/// truncation they write at the new end, from 0), and renaming them away would leave
/// the proxy writing into the rotated file. `delaycompress`: the newest copy stays
/// plain for a person reading it.
pub fn logrotate_rule(r: Rotation) -> String {
    format!(
        "# Installed by vmagent (`vmagent uninstall` removes it). Size and count: [logs] in\n\
         # /etc/vmagent/config.toml, then apply again. copytruncate: the proxy keeps the\n\
         # logs open, so they are copied and truncated in place, never moved.\n\
         {} {} {{\n\
         \tsize {}M\n\
         \trotate {}\n\
         \tcopytruncate\n\
         \tmissingok\n\
         \tnotifempty\n\
         \tcompress\n\
         \tdelaycompress\n\
         }}\n",
        layout::ISTIO_LOG,
        layout::ISTIO_ERR_LOG,
        r.size_mib,
        r.count
    )
}

impl Planner<'_> {
    /// The logrotate rule, where logrotate is installed (its /etc/logrotate.d exists):
    /// elsewhere the rule would do nothing and its directory would be left behind.
    pub(super) fn logrotate(&mut self, r: Rotation) -> Result<(), PlanError> {
        let s = layout::LOGROTATE_RULE;
        let (_, dir) = self.lstat(layout::LOGROTATE_DIR, true)?;
        if !dir.is_some_and(|m| m.kind == Kind::Dir) {
            self.plan.warnings.push(format!(
                "logrotate is not installed ({} is missing), so {} grows without bound: install it (`apt-get install logrotate` or `dnf install logrotate`) and apply again, or set [logs] rotate = false",
                layout::LOGROTATE_DIR,
                layout::ISTIO_LOG
            ));
            return Ok(());
        }
        self.file(
            s.path,
            What::LogrotateRule,
            logrotate_rule(r).into_bytes(),
            s.mode,
            self.owner(s.owner),
        )
    }
}
