//! Local overrides (`[overrides]` in the config) and the SSH lock-out guard, merged into
//! the desired state before planning, so every apply, and the daemon's drift repair
//! (which runs the same apply), installs the bundle *with* them and reverts only what
//! neither the bundle nor the overrides ask for.
//!
//! Overrides are checked by the bundle's own rules ([`cluster_env::check_assignment`],
//! [`hosts::parse`]) and refused like an invalid bundle (exit 2), naming the config
//! file. The merged cluster.env is rendered `KEY='literal'` (istioctl's quoting) and
//! parsed back with the bundle's parser, so it keeps the strict grammar the root shell
//! sources; changed lines carry a ` # (local override)` / ` # (lock-out guard: P)`
//! comment, which shows in the plan's diff and in the installed file. Without
//! overrides or guard ports the bundle's cluster.env is installed byte for byte.

pub mod capture;
pub mod sshd;

use std::collections::BTreeMap;
use std::path::Path;

use crate::bundle::{cluster_env, hosts, Bundle, Member};
use crate::config::{ConfigError, OverridesConfig};
use crate::root::Root;

/// The plan's and `config show`'s mark for a value from the config.
pub const LOCAL: &str = "(local override)";

/// Validated overrides.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// Keys to set, with the file that set each.
    pub set: Vec<(String, String, String)>,
    /// Keys to remove.
    pub unset: Vec<String>,
    /// Extra hosts entries.
    pub hosts: Vec<hosts::Entry>,
    /// The files that set `unset` and `hosts`.
    unset_from: String,
    hosts_from: String,
}

/// Checks `[overrides]` by the bundle's rules; the error names the file and the item.
pub fn validate(cfg: &OverridesConfig) -> Result<Local, ConfigError> {
    let refuse = |item: &str, reason: String| ConfigError {
        path: cfg.origin(item),
        reason: format!(
            "[overrides] {item}: {}; fix or remove it, then run the command again",
            crate::bundle::printable(&reason, 512)
        ),
    };
    let mut local = Local {
        unset_from: cfg.origin("unset"),
        hosts_from: cfg.origin("hosts"),
        ..Local::default()
    };
    for (k, v) in &cfg.set {
        let item = format!("set.{k}");
        cluster_env::check_assignment(k, v).map_err(|r| refuse(&item, r))?;
        if cfg.unset.contains(k) {
            return Err(refuse(
                &item,
                format!("{k} is both set and unset; keep one"),
            ));
        }
        local.set.push((k.clone(), v.clone(), cfg.origin(&item)));
    }
    for k in &cfg.unset {
        cluster_env::check_key_name(k).map_err(|r| refuse("unset", r))?;
        local.unset.push(k.clone());
    }
    if !cfg.hosts.is_empty() {
        if let Some(bad) = cfg.hosts.iter().find(|l| l.contains(['\n', '\r'])) {
            return Err(refuse(
                "hosts",
                format!("'{bad}' has a line break; give one line per item"),
            ));
        }
        let (entries, _) = hosts::parse(cfg.hosts.join("\n").as_bytes()).map_err(|e| {
            let reason = match e.line {
                Some(n) => format!("item {n}: {}", e.reason),
                None => e.reason,
            };
            refuse("hosts", reason)
        })?;
        local.hosts = entries;
    }
    Ok(local)
}

/// What the merge did, for the plan's notes and warnings.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// One line per override or guard port in force.
    pub notes: Vec<String>,
    /// The guard was off or could not act.
    pub warnings: Vec<String>,
}

/// The guard's inputs: whether it is on, sshd's ports now, and the ports an earlier
/// apply's guard excluded (kept while sshd restarts).
#[derive(Debug, Clone, Default)]
pub struct GuardInput {
    /// On (`--no-lockout-guard` / `lockout_guard = false`: off).
    pub on: bool,
    /// Ports sshd listens on.
    pub sshd: Vec<u16>,
    /// Ports marked in the installed cluster.env.
    pub marked: Vec<u16>,
}

/// Merges `local` and the guard into `bundle`'s cluster.env and hosts (pure).
pub fn merge(
    bundle: &mut Bundle,
    local: &Local,
    guard: &GuardInput,
) -> Result<Merged, ConfigError> {
    let mut vars: Vec<(String, String)> = bundle
        .cluster_env
        .vars
        .iter()
        .map(|v| (v.key.clone(), v.value.clone()))
        .collect();
    let mut marks: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut out = Merged::default();
    let mut removed = false;
    for k in &local.unset {
        let had = vars.iter().any(|(key, _)| key == k);
        removed |= had;
        vars.retain(|(key, _)| key != k);
        let what = if had {
            "removed"
        } else {
            "not in the bundle; stays unset"
        };
        out.notes.push(format!(
            "cluster.env {k}: {what} {LOCAL}, from {}",
            local.unset_from
        ));
    }
    for (k, v, from) in &local.set {
        match vars.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => {
                if let Some(w) = dropped_exclusions(k, &slot.1, v, from) {
                    out.warnings.push(w);
                }
                slot.1 = v.clone();
            }
            None => vars.push((k.clone(), v.clone())),
        }
        marks.entry(k.clone()).or_default().push(LOCAL.into());
        out.notes.push(format!(
            "cluster.env {k}={} {LOCAL}, from {from}",
            crate::bundle::env_keys::shell_quote(v)
        ));
    }
    guard_ports(&mut vars, &mut marks, &mut out, guard);
    for e in &local.hosts {
        if !bundle.hosts.contains(e) {
            bundle.hosts.push(e.clone());
        }
        out.notes.push(format!(
            "/etc/hosts line '{}' {LOCAL}, from {}",
            e.line(),
            local.hosts_from
        ));
    }
    if marks.is_empty() && !removed {
        return Ok(out); // the bundle's cluster.env, byte for byte
    }
    let text = render(&vars, &marks);
    let (env, _) =
        cluster_env::parse(text.as_bytes(), &bundle.mesh.proxy_metadata_keys).map_err(|e| {
            ConfigError {
                path: crate::config::PATH.into(),
                reason: format!(
                    "[overrides]: the merged cluster.env is invalid ({}); fix the overrides",
                    e.reason
                ),
            }
        })?;
    bundle.cluster_env = env;
    bundle.files.insert(Member::ClusterEnv, text.into_bytes());
    Ok(out)
}

/// The lock-out guard's part of the merge: sshd's captured ports (and those an earlier
/// guard excluded) join ISTIO_LOCAL_EXCLUDE_PORTS, or a warning says what is captured.
fn guard_ports(
    vars: &mut Vec<(String, String)>,
    marks: &mut BTreeMap<String, Vec<String>>,
    out: &mut Merged,
    input: &GuardInput,
) {
    const EXCLUDE: &str = "ISTIO_LOCAL_EXCLUDE_PORTS";
    let get = |k: &str| {
        vars.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let inbound = capture::Inbound::of(
        get("ISTIO_INBOUND_PORTS"),
        get(EXCLUDE),
        get("ISTIO_CUSTOM_IP_TABLES"),
    );
    let shown = get("ISTIO_INBOUND_PORTS").unwrap_or("").to_string();
    let mut candidates = input.sshd.clone();
    if input.on {
        candidates.extend(&input.marked);
    }
    let g = capture::guard(&inbound, &candidates);
    for p in &g.listed {
        out.warnings.push(format!(
            "sshd listens on port {p}, which ISTIO_INBOUND_PORTS='{shown}' lists, so SSH to this VM goes through Envoy and an exclusion cannot help; remove {p} from ISTIO_INBOUND_PORTS (in the bundle, or with [overrides] set)"
        ));
    }
    if g.exclude.is_empty() {
        return;
    }
    let list = g
        .exclude
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if !input.on {
        out.warnings.push(format!(
            "sshd listens on port {list}, which ISTIO_INBOUND_PORTS='*' captures: SSH to this VM will go through Envoy and may lock you out; add it to ISTIO_LOCAL_EXCLUDE_PORTS (with [overrides] set) or leave the lock-out guard on"
        ));
        return;
    }
    let value = capture::with_ports(get(EXCLUDE), &g.exclude);
    match vars.iter_mut().find(|(key, _)| key == EXCLUDE) {
        Some(slot) => slot.1 = value,
        None => vars.push((EXCLUDE.into(), value)),
    }
    marks
        .entry(EXCLUDE.into())
        .or_default()
        .push(format!("{}{list})", capture::MARK));
    out.notes.push(format!(
        "lock-out guard: sshd listens on port {list}, which ISTIO_INBOUND_PORTS='*' would capture; added to ISTIO_LOCAL_EXCLUDE_PORTS (turn off with --no-lockout-guard, or lockout_guard = false in [overrides])"
    ));
}

/// An override of ISTIO_LOCAL_EXCLUDE_PORTS replaces the whole list: say which of the
/// bundle's exclusions (ssh 22, the agent's 15020/15021, Envoy's 15090) it drops.
fn dropped_exclusions(key: &str, bundle: &str, value: &str, from: &str) -> Option<String> {
    if key != "ISTIO_LOCAL_EXCLUDE_PORTS" {
        return None;
    }
    let kept: Vec<&str> = value.split(',').map(str::trim).collect();
    let dropped: Vec<&str> = bundle
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !kept.contains(p))
        .collect();
    (!dropped.is_empty()).then(|| format!(
        "[overrides] set.ISTIO_LOCAL_EXCLUDE_PORTS in {from} replaces the bundle's list and drops {}, so inbound traffic to those ports is captured; add them to the override to keep them excluded",
        dropped.join(",")
    ))
}

/// `KEY='value'` lines, marked ones with their comment.
fn render(vars: &[(String, String)], marks: &BTreeMap<String, Vec<String>>) -> String {
    let mut s = String::from(
        "# The bundle's cluster.env with this VM's local overrides (vmagent: `vmagent config show`)\n",
    );
    for (k, v) in vars {
        s.push_str(&format!("{k}={}", crate::bundle::env_keys::shell_quote(v)));
        if let Some(m) = marks.get(k) {
            s.push_str(&format!(" # {}", m.join(" ")));
        }
        s.push('\n');
    }
    s
}

/// `config show`'s summary of the overrides in force, one comment line each.
pub fn describe(cfg: &OverridesConfig, local: &Local) -> String {
    let mut s = String::new();
    if !cfg.is_empty() {
        s.push_str(
            "# local overrides, merged into every apply and kept by the daemon's drift repair:\n",
        );
    }
    for (k, v, from) in &local.set {
        let v = crate::bundle::env_keys::shell_quote(v);
        s.push_str(&format!("#   cluster.env {k}={v} {LOCAL}, from {from}\n"));
    }
    for k in &local.unset {
        s.push_str(&format!(
            "#   cluster.env {k} unset {LOCAL}, from {}\n",
            local.unset_from
        ));
    }
    for e in &local.hosts {
        s.push_str(&format!(
            "#   /etc/hosts {} {LOCAL}, from {}\n",
            e.line(),
            local.hosts_from
        ));
    }
    let guard = if cfg.lockout_guard { "on" } else { "off" };
    s.push_str(&format!("# lock-out guard: {guard}\n"));
    s
}

/// The I/O edge: validates the config's overrides, reads sshd's ports (the host's
/// /proc: sockets belong to the running kernel, also under `--root`) and the guard
/// ports marked in the installed cluster.env, and merges. Unreadable sockets do not
/// stop the apply: a warning says the guard could not look.
pub fn prepare(
    root: &Root,
    cfg: &OverridesConfig,
    guard_on: bool,
    bundle: &mut Bundle,
) -> Result<Merged, ConfigError> {
    let local = validate(cfg)?;
    let on = guard_on && cfg.lockout_guard;
    let mut warnings = Vec::new();
    let sshd = match crate::sockets::listeners(Path::new("/proc")) {
        Ok(l) => sshd::ports(&l, &sshd::activated_ports(root)),
        Err(e) => {
            warnings.push(format!("lock-out guard: cannot read the listening sockets in /proc ({e}); sshd's ports were not checked"));
            Vec::new()
        }
    };
    let marked = crate::layout::file_for(Member::ClusterEnv)
        .and_then(|f| root.resolve_parent(Path::new(f.path)).ok())
        .and_then(|host| crate::fsx::read_file(&host, 1 << 20).ok().flatten())
        .map(|d| capture::marked_ports(&String::from_utf8_lossy(&d)))
        .unwrap_or_default();
    let mut m = merge(bundle, &local, &GuardInput { on, sshd, marked })?;
    m.warnings.extend(warnings);
    Ok(m)
}

#[cfg(test)]
mod tests;
