//! How a plan looks to people (text, with unified diffs) and to programs (JSON).
//! Secrets (the token, private keys) are only ever described as "changed".

use std::fmt;

use serde::Serialize;

use super::{Action, Ids, Plan, What};

/// A stable, serialisable description of one action.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ActionView {
    /// `create-dir`, `create-symlink`, `create-file`, `replace-file`, `set-meta`, `remove`.
    pub action: &'static str,
    /// System path.
    pub path: String,
    /// One-line detail (mode, owner, reason).
    pub detail: String,
    /// Unified diff of a text file (absent for secrets and non-text changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

fn owner(o: &Option<Ids>) -> &'static str {
    o.map(|i| i.label).unwrap_or("owner unmanaged")
}

fn is_secret(what: &What) -> bool {
    matches!(what, What::Member(m) if m.secret()) || *what == What::TokenStore
}

impl Action {
    /// The view of this action; `diff` adds unified diffs for text files.
    pub fn view(&self, diff: bool) -> ActionView {
        match self {
            Action::CreateDir {
                path,
                mode,
                owner: o,
            } => ActionView {
                action: "create-dir",
                path: path.clone(),
                detail: format!("{mode:04o} {}", owner(o)),
                diff: None,
            },
            Action::CreateSymlink { path, target } => ActionView {
                action: "create-symlink",
                path: path.clone(),
                detail: format!("-> {target} (as the istio-sidecar package does)"),
                diff: None,
            },
            Action::WriteFile {
                path,
                what,
                content,
                old,
                mode,
                owner: o,
            } => {
                let label = match what {
                    What::Member(m) => format!("from {}", m.name()),
                    What::Hosts { adopted } if !adopted.is_empty() => {
                        format!("managed block, {} existing line(s) adopted", adopted.len())
                    }
                    What::Hosts { .. } => "managed block".into(),
                    What::State => "vmagent state".into(),
                    What::TmpfilesRule => "boot rule: puts the token back after a reboot".into(),
                    What::LogrotateRule => "logrotate rule for the proxy's logs".into(),
                    What::TokenStore => "boot copy of istio-token".into(),
                };
                let owner_s = match o {
                    Some(i) if i.label == "unchanged" => "owner unchanged",
                    _ => owner(o),
                };
                let secret = is_secret(what);
                let detail = match (old, secret) {
                    (Some(_), true) => format!(
                        "{label}, {mode:04o} {owner_s}, content changed (secret, not shown)"
                    ),
                    _ => format!("{label}, {mode:04o} {owner_s}"),
                };
                let diff = (diff
                    && !secret
                    && matches!(
                        what,
                        What::Member(_)
                            | What::Hosts { .. }
                            | What::TmpfilesRule
                            | What::LogrotateRule
                    ))
                .then(|| unified(path, old.as_deref(), content))
                .flatten();
                ActionView {
                    action: if old.is_some() {
                        "replace-file"
                    } else {
                        "create-file"
                    },
                    path: path.clone(),
                    detail,
                    diff,
                }
            }
            Action::SetMeta {
                path,
                from,
                mode,
                owner: o,
            } => {
                let mut parts = Vec::new();
                if from.mode != *mode {
                    parts.push(format!("mode {:04o} -> {mode:04o}", from.mode));
                }
                if let Some(i) = o {
                    if (i.uid, i.gid) != (from.uid, from.gid) {
                        parts.push(format!("owner {}:{} -> {}", from.uid, from.gid, i.label));
                    }
                }
                ActionView {
                    action: "set-meta",
                    path: path.clone(),
                    detail: parts.join(", "),
                    diff: None,
                }
            }
            Action::Remove { path, reason } => ActionView {
                action: "remove",
                path: path.clone(),
                detail: reason.clone(),
                diff: None,
            },
        }
    }
}

fn unified(path: &str, old: Option<&[u8]>, new: &[u8]) -> Option<String> {
    let old = std::str::from_utf8(old.unwrap_or_default()).ok()?;
    let new = std::str::from_utf8(new).ok()?;
    let d = similar::TextDiff::from_lines(old, new);
    let text = d
        .unified_diff()
        .context_radius(2)
        .header(&format!("{path} (current)"), &format!("{path} (planned)"))
        .to_string();
    (!text.is_empty()).then_some(text)
}

impl Plan {
    /// Views of every action.
    pub fn views(&self, diff: bool) -> Vec<ActionView> {
        self.steps.iter().map(|s| s.action.view(diff)).collect()
    }
}

/// Renders a plan as text; `{:#}` adds diffs.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for v in self.views(f.alternate()) {
            writeln!(f, "  {:<14} {}  ({})", v.action, v.path, v.detail)?;
            if let Some(d) = v.diff {
                for line in d.lines() {
                    writeln!(f, "      {line}")?;
                }
            }
        }
        Ok(())
    }
}
