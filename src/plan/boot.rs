//! What apply installs so the proxy comes back after a reboot without the daemon: a
//! root-only copy of the token in force in the state directory
//! ([`layout::TOKEN_STORE`]) and a systemd-tmpfiles rule ([`layout::TMPFILES_RULE`])
//! that copies it back onto the /run tmpfs at boot.
//!
//! Why tmpfiles.d and not an `ExecStartPre=+` drop-in or a oneshot unit:
//! systemd-tmpfiles-setup.service runs once the local file systems (and so the state
//! directory) are mounted and before sysinit.target, which every ordinary service,
//! istio.service included, is ordered after: the token is there before the proxy's
//! first start. The rule is declarative (no shell, nothing to enable, no
//! daemon-reload: systemd reads it at boot), and `C` copies only when the token is
//! absent, so a token the daemon or an apply put there is never overwritten, then sets
//! the mode and owner given on the line (systemd 252 applies both to the copy, also to
//! an existing file). The copy is made from a 0600 root file, so it is never readable
//! by others, not even before its owner is set.

use std::path::Path;

use super::{blocked, Ids, PlanError, Planner, What};
use crate::bundle::{Bundle, Member};
use crate::layout;

impl Planner<'_> {
    /// Plans the token's boot copy and the tmpfiles rule, when the bundle has a token
    /// (legacy bundles carry certificates instead). Both are rewritten whenever they
    /// differ, so the copy is always the token this apply installs.
    pub(super) fn boot(&mut self, bundle: &Bundle) -> Result<(), PlanError> {
        let (Some(token), Some(spec)) = (
            bundle.files.get(&Member::Token),
            layout::file_for(Member::Token),
        ) else {
            return Ok(());
        };
        let store = layout::token_store(self.root.state_dir());
        let rule = self.rule(spec.path, &store, self.owner(spec.owner), spec.mode)?;
        let s = layout::TOKEN_STORE;
        self.file(
            &store,
            What::TokenStore,
            token.clone(),
            s.mode,
            self.owner(s.owner),
        )?;
        let r = layout::TMPFILES_RULE;
        self.file(
            r.path,
            What::TmpfilesRule,
            rule.into_bytes(),
            r.mode,
            self.owner(r.owner),
        )
    }

    /// Where a system path really is inside the root (`/var/run/...` is `/run/...` on
    /// systemd machines; tmpfiles only warns about and rewrites `/var/run` lines).
    fn real(&self, sys: &str, follow: bool) -> Result<String, PlanError> {
        let host = self.host(sys, follow)?;
        let real = match host.strip_prefix(self.root.base()) {
            Ok(rel) => Path::new("/").join(rel).display().to_string(),
            Err(_) => sys.to_string(),
        };
        plain(&real)?;
        Ok(real)
    }

    /// The rule's text: the token's directories (as the layout makes them), then the
    /// token copied from `store` if absent.
    fn rule(
        &self,
        token: &str,
        store: &str,
        owner: Option<Ids>,
        mode: u32,
    ) -> Result<String, PlanError> {
        let ids = |o: Option<Ids>| match o {
            // Numbers the plan found in the root's passwd: no name lookup at boot.
            Some(i) if i.uid != u32::MAX => format!("{} {}", i.uid, i.gid),
            // A display-only plan made before the package creates the user.
            Some(_) => format!("{0} {0}", layout::PROXY_USER),
            None => "- -".into(),
        };
        plain(store)?;
        let mut out = String::from(
            "# Written by `vmagent apply`, removed by `vmagent uninstall`; rewritten by every\n\
             # apply. The istio-token lives on the /run tmpfs and is gone after a reboot: this\n\
             # puts vmagent's root-only copy of the token in force back before istio starts.\n",
        );
        for d in layout::DIRS
            .iter()
            .filter(|d| token.starts_with(&format!("{}/", d.path)))
        {
            let path = self.real(d.path, true)?;
            let who = ids(self.owner(d.owner));
            out.push_str(&format!("d {path} {:04o} {who} -\n", d.mode));
        }
        let path = self.real(token, false)?;
        out.push_str(&format!("C {path} {mode:04o} {} - {store}\n", ids(owner)));
        Ok(out)
    }
}

/// tmpfiles.d splits on whitespace, unquotes, unescapes and expands `%` specifiers:
/// a path with anything but plain characters is refused rather than escaped.
fn plain(path: &str) -> Result<(), PlanError> {
    let ok = path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b));
    if ok {
        return Ok(());
    }
    Err(blocked(
        layout::TMPFILES_RULE.path,
        format!("'{path}' cannot be named in a tmpfiles.d rule (only letters, digits and / . _ - + are safe there); move vmagent's state directory to such a path in its config, then re-run"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_go_into_the_rule() {
        assert!(plain("/var/lib/vmagent/istio-token").is_ok());
        for bad in ["relative", "/a b", "/a%n", "/a\"b", "/a\\x", "/a\nC /x"] {
            assert!(plain(bad).is_err(), "{bad:?}");
        }
    }
}
