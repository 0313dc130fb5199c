//! Getting a checked token onto the machine: `vmagent token refresh` (one refresh by
//! hand, under the apply lock) and the hook in `run::apply`, which puts the provider's
//! token in place of the bundle's before planning, so an apply never installs a stale
//! bundle token over a fresh one. The last token is cached root-only in the state
//! directory; apply asks the provider only when neither the cached nor the installed
//! token is fresh, and keeps a still-valid token (with a warning) when the provider
//! fails, so a reconcile does not fail while the API server is down.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schedule::{self, Last, Lifetime};
use super::validate::{self, Identity};
use super::{Provider, ProviderError, MAX_TOKEN_BYTES};
use crate::bundle::cluster_env::{self, ClusterEnv};
use crate::bundle::token::Token;
use crate::bundle::{Bundle, Member};
use crate::config::{Config, TokenConfig};
use crate::root::Root;
use crate::{fsx, layout, timefmt};

/// The cache directory below the state directory, and the file in it.
pub const CACHE: (&str, &str) = ("token", "istio-token");

/// Where the token is installed (the layout's table).
pub fn token_path() -> &'static str {
    layout::file_for(Member::Token).map_or("/var/run/secrets/tokens/istio-token", |f| f.path)
}

/// The token apply installs.
#[derive(Debug, Clone)]
pub struct Fresh {
    /// The JWT, normalised.
    pub data: Vec<u8>,
    /// Its claims.
    pub token: Token,
    /// New from the provider: to be cached ([`remember`]).
    pub new: bool,
    /// Why an older token is kept.
    pub warning: Option<String>,
}

impl Fresh {
    /// Puts this token in place of the bundle's istio-token.
    pub fn substitute(&self, bundle: &mut Bundle) {
        bundle.files.insert(Member::Token, self.data.clone());
        bundle.token = self.token.clone();
        // The bundle's token findings (expired, expiring) are about a token not used.
        bundle
            .warnings
            .retain(|w| !w.starts_with("bundle member 'istio-token'"));
        bundle.warnings.extend(self.warning.clone());
    }
}

/// What `vmagent token refresh` did.
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// The provider's name.
    pub provider: &'static str,
    /// The token's subject.
    pub subject: String,
    /// Its `exp`.
    pub expires: i64,
    /// When it should be refreshed next.
    pub next_due: i64,
    /// Where it was installed (system path).
    pub path: &'static str,
}

/// The identity tokens must carry: `token.namespace` / `token.service_account`, else
/// POD_NAMESPACE / SERVICE_ACCOUNT of `env`. Both end up in a URL path: DNS names only.
pub fn identity(cfg: &TokenConfig, env: Option<&ClusterEnv>) -> Result<Identity, ProviderError> {
    let pick = |own: &Option<String>, key: &str| {
        own.clone()
            .or_else(|| env.and_then(|e| e.get(key)).map(str::to_string))
            .filter(|v| !v.is_empty())
    };
    let (Some(namespace), Some(service_account)) = (
        pick(&cfg.namespace, "POD_NAMESPACE"),
        pick(&cfg.service_account, "SERVICE_ACCOUNT"),
    ) else {
        return Err(ProviderError::Config("the workload's namespace and service account are unknown: cluster.env has no POD_NAMESPACE / SERVICE_ACCOUNT; set token.namespace and token.service_account".into()));
    };
    if !cluster_env::is_dns1123_label(&namespace)
        || !cluster_env::is_dns1123_subdomain(&service_account)
    {
        return Err(ProviderError::Config(
            "namespace or service account is not a valid Kubernetes name".into(),
        ));
    }
    Ok(Identity {
        namespace,
        service_account,
    })
}

/// The installed token's bytes, if any (an unreadable one counts as none: it is replaced).
fn installed(root: &Root) -> Result<Option<Vec<u8>>, ProviderError> {
    let host = root.resolve(Path::new(token_path()))?;
    Ok(fsx::read_file(&host, MAX_TOKEN_BYTES).ok().flatten())
}

fn cache_file(root: &Root) -> PathBuf {
    root.state_dir().join(CACHE.0).join(CACHE.1)
}

/// The cached token's bytes, if any.
fn cached(root: &Root) -> Result<Option<Vec<u8>>, ProviderError> {
    let Some(dir) = root.own_dir(&root.state_dir().join(CACHE.0))? else {
        return Ok(None);
    };
    Ok(fsx::read_file(&dir.join(CACHE.1), MAX_TOKEN_BYTES)
        .ok()
        .flatten())
}

/// Caches `fresh` when it is new (0600 root, in a 0700 directory of the state dir).
/// Call it under the apply lock (fixed temp names).
pub fn remember(root: &Root, fresh: &Fresh) -> Result<(), ProviderError> {
    if !fresh.new {
        return Ok(());
    }
    write_cache(root, &fresh.data)
}

fn write_cache(root: &Root, data: &[u8]) -> Result<(), ProviderError> {
    let dir = root.ensure_own_dir(&root.state_dir().join(CACHE.0), 0o700)?;
    let err = |source| ProviderError::Install {
        path: cache_file(root).display().to_string(),
        source,
    };
    fsx::write_atomic(&dir.join(CACHE.1), data, 0o600, None).map_err(err)?;
    fsx::sync_dir(&dir).map_err(err)
}

/// Rewrites the boot copy ([`crate::layout::TOKEN_STORE`], which the tmpfiles rule puts
/// back on /run at boot) when apply installed one; root-only like the cache.
fn write_boot_copy(root: &Root, data: &[u8]) -> Result<(), ProviderError> {
    let Some(state) = root.own_dir(root.state_dir())? else {
        return Ok(());
    };
    let store = state.join(crate::layout::TOKEN_STORE.path);
    if !store.is_file() {
        return Ok(());
    }
    let err = |source| ProviderError::Install {
        path: store.display().to_string(),
        source,
    };
    fsx::write_atomic(&store, data, 0o600, None).map_err(err)?;
    fsx::sync_dir(&state).map_err(err)
}

/// apply's token: the freshest valid one of the cache and the installed token when it
/// has not reached its refresh point, else the provider's. Writes nothing.
pub fn for_apply(
    provider: &Provider,
    root: &Root,
    cfg: &Config,
    bundle: &Bundle,
) -> Result<Fresh, ProviderError> {
    let now = timefmt::now();
    let who = identity(&cfg.token, Some(&bundle.cluster_env))?;
    let best = [cached(root)?, installed(root)?]
        .into_iter()
        .flatten()
        // Kept byte-for-byte: an existing token is never rewritten just to reformat it.
        .filter_map(|d| validate::check(&d, &who, now, None).ok().map(|t| (d, t)))
        .max_by_key(|(_, t)| t.exp);
    if let Some((data, token)) = &best {
        if schedule::is_fresh(Lifetime::of(token), now, cfg.token.refresh_at) {
            return Ok(Fresh {
                data: data.clone(),
                token: token.clone(),
                new: false,
                warning: None,
            });
        }
    }
    let got = provider.fetch(&who).and_then(|d| {
        let d = validate::normalise(&d);
        let floor = best.as_ref().and_then(|(_, t)| t.exp);
        validate::check(&d, &who, now, floor)
            .map(|t| (d, t))
            .map_err(|source| ProviderError::Rejected {
                provider: provider.name(),
                source,
            })
    });
    match (got, best) {
        (Ok((data, token)), _) => Ok(Fresh {
            data,
            token,
            new: true,
            warning: None,
        }),
        (Err(e), Some((data, token))) => Ok(Fresh {
            warning: Some(format!(
                "{e}; keeping the current token (valid until {})",
                timefmt::rfc3339(token.exp.unwrap_or(now))
            )),
            data,
            token,
            new: false,
        }),
        (Err(e), None) => Err(e),
    }
}

/// When the installed token should next be refreshed (Unix seconds; now when it is
/// missing or unreadable), with a provider configured; `None` without one.
pub fn next_due(root: &Root, cfg: &Config) -> Option<i64> {
    if cfg.token.provider == crate::config::ProviderKind::Bundle {
        return None;
    }
    let current = installed(root)
        .ok()
        .flatten()
        .and_then(|d| crate::bundle::token::claims(&d).ok())
        .and_then(|t| Lifetime::of(&t));
    Some(schedule::next_refresh(
        current,
        timefmt::now(),
        cfg.token.refresh_at,
        Last::Fine,
        &schedule::backoff(),
        0.0,
    ))
}

/// `vmagent token refresh`: one token from the provider, checked and installed at the
/// layout's token path (0600, istio-proxy) under the apply lock, and cached.
pub fn refresh(
    root: &Path,
    lock_timeout: Duration,
    waiting: impl FnOnce(),
) -> Result<Refreshed, ProviderError> {
    let root = Root::new(root)?;
    let cfg = Config::load(&root)?;
    refresh_with(&cfg.locate(root), &cfg, lock_timeout, waiting)
}

/// [`refresh`] with a root and config already loaded (the daemon's).
pub fn refresh_with(
    root: &Root,
    cfg: &Config,
    lock_timeout: Duration,
    waiting: impl FnOnce(),
) -> Result<Refreshed, ProviderError> {
    let root = root.clone();
    let provider = Provider::configured(cfg, &root)?.ok_or_else(|| {
        ProviderError::Config("provider = \"bundle\" (the default): the token comes from the bundle; set provider to \"file\", \"exec\" or \"kubernetes\" to refresh it".into())
    })?;
    let not_applied = |what: String| {
        ProviderError::NotReady(format!(
            "{what}: run `vmagent apply BUNDLE` first, then refresh the token"
        ))
    };
    let env = match (&cfg.token.namespace, &cfg.token.service_account) {
        (Some(_), Some(_)) => None,
        _ => {
            let sys = layout::file_for(Member::ClusterEnv)
                .map_or("/var/lib/istio/envoy/cluster.env", |f| f.path);
            let data = fsx::read_file(&root.resolve(Path::new(sys))?, 1 << 20)
                .ok()
                .flatten()
                .ok_or_else(|| not_applied(format!("{sys} is missing")))?;
            let (env, _) = cluster_env::parse(&data, &Default::default())
                .map_err(|e| not_applied(format!("{sys} is not valid: {}", e.reason)))?;
            Some(env)
        }
    };
    let who = identity(&cfg.token, env.as_ref())?;
    let dest = root.resolve(Path::new(token_path()))?;
    let parent = dest.parent().unwrap_or(Path::new("/")).to_path_buf();
    if !parent.is_dir() {
        return Err(not_applied(format!("{} is missing", parent.display())));
    }
    let owner = root
        .account(layout::PROXY_USER)?
        .ok_or_else(|| not_applied(format!("user {} does not exist", layout::PROXY_USER)))?;
    let state = root.ensure_own_dir(root.state_dir(), layout::STATE_MODE)?;
    let _lock = crate::apply::lock::acquire(&state.join("lock"), lock_timeout, waiting)?;
    let now = timefmt::now();
    let floor = installed(&root)?
        .and_then(|d| crate::bundle::token::claims(&d).ok())
        .and_then(|t| t.exp);
    let data = validate::normalise(&provider.fetch(&who)?);
    let token =
        validate::check(&data, &who, now, floor).map_err(|source| ProviderError::Rejected {
            provider: provider.name(),
            source,
        })?;
    let err = |source| ProviderError::Install {
        path: token_path().into(),
        source,
    };
    fsx::write_atomic(&dest, &data, 0o600, Some(owner)).map_err(err)?;
    fsx::sync_dir(&parent).map_err(err)?;
    // Installed: a cache failure only costs the next apply a provider call.
    if let Err(e) = write_cache(&root, &data) {
        tracing::warn!(error = %e, "cannot cache the token");
    }
    // The boot copy follows the token in force: else a reboot without the daemon would
    // bring back the older token it holds.
    if let Err(e) = write_boot_copy(&root, &data) {
        tracing::warn!(error = %e, "cannot update the boot copy of the token; a reboot restores the previous one until the next apply or refresh");
    }
    let next_due = schedule::next_refresh(
        Lifetime::of(&token),
        now,
        cfg.token.refresh_at,
        Last::Fine,
        &schedule::backoff(),
        0.0,
    );
    Ok(Refreshed {
        provider: provider.name(),
        subject: who.subject(),
        expires: token.exp.unwrap_or(now),
        next_due,
        path: token_path(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str) -> ClusterEnv {
        cluster_env::parse(text.as_bytes(), &Default::default())
            .unwrap()
            .0
    }

    #[test]
    fn identity_from_cluster_env_or_config() {
        let e = env("POD_NAMESPACE='vm-ns'\nSERVICE_ACCOUNT='vm-sa'\n");
        let mut cfg = TokenConfig::default();
        let who = identity(&cfg, Some(&e)).unwrap();
        assert_eq!(who.subject(), "system:serviceaccount:vm-ns:vm-sa");
        cfg.service_account = Some("other".into());
        assert_eq!(identity(&cfg, Some(&e)).unwrap().service_account, "other");
        assert!(matches!(
            identity(&TokenConfig::default(), None),
            Err(ProviderError::Config(_))
        ));
        // Both end up in a URL path: nothing but Kubernetes names.
        cfg.namespace = Some("../kube-system".into());
        assert!(matches!(
            identity(&cfg, Some(&e)),
            Err(ProviderError::Config(_))
        ));
    }
}
