//! The /etc/hosts step of the plan: the bundle's entries merged into vmagent's block.

use super::{blocked, io_failed, Action, Ids, PlanError, Planner, What, READ_LIMIT, ROOT_IDS};
use crate::bundle::Bundle;
use crate::etc_hosts;
use crate::fsx::{self, Kind};
use crate::layout;

impl Planner<'_> {
    pub(super) fn hosts(&mut self, bundle: &Bundle) -> Result<(), PlanError> {
        let sys = layout::HOSTS;
        let (host, meta) = self.lstat(sys, false)?;
        let old = match meta.map(|m| m.kind) {
            None => None,
            Some(Kind::File) => {
                fsx::read_file(&host, READ_LIMIT).map_err(|e| io_failed(sys, "read", e))?
            }
            Some(_) => {
                return Err(blocked(
                    sys,
                    "is not a regular file; vmagent edits a regular /etc/hosts only".into(),
                ))
            }
        };
        let damaged = |r: String| {
            blocked(
                sys,
                format!("{r}; fix or remove the vmagent-managed block by hand, then re-run"),
            )
        };
        // No entries and no block of ours yet: /etc/hosts stays byte-for-byte as it is.
        if bundle.hosts.is_empty()
            && etc_hosts::without_block(old.as_deref().unwrap_or_default())
                .map_err(damaged)?
                .is_none()
        {
            return Ok(());
        }
        let merged =
            etc_hosts::merge(old.as_deref().unwrap_or_default(), &bundle.hosts).map_err(damaged)?;
        for (n, line) in &merged.conflicts {
            self.plan.warnings.push(format!(
                "{sys} line {n} ('{line}') maps a mesh name to another address and comes first; remove it, or the mesh entry may be ignored"
            ));
        }
        if old.as_deref() == Some(merged.content.as_slice()) {
            return Ok(());
        }
        for a in &merged.adopted {
            self.plan.notes.push(format!("{sys} line {} ('{}') already has a bundle entry: moved into the managed block instead of adding it twice (uninstall puts it back)", a.line, a.text.trim_end()));
        }
        // Keep the file's own mode and owner; a new file gets the usual 0644 root.
        let (mode, owner) = match meta {
            Some(m) => (
                m.mode,
                Some(Ids {
                    uid: m.uid,
                    gid: m.gid,
                    label: "unchanged",
                }),
            ),
            None => (0o644, Some(ROOT_IDS).filter(|_| !self.skip_owner)),
        };
        self.push(
            Action::WriteFile {
                path: sys.into(),
                what: What::Hosts {
                    adopted: merged.adopted,
                },
                content: merged.content,
                old,
                mode,
                owner,
            },
            host,
        );
        Ok(())
    }
}
