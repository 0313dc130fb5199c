//! Scenarios s10 and s11 of the VM test (issue 14): the `kubernetes` token provider
//! against a TokenRequest server in the guest (tests/vm/guest/tokenserver.py on
//! 127.0.0.1:[`PORT`], TLS with a [`TestCa`] certificate made here). The guest side is
//! tests/vm/guest/boot2-token.sh (s10, and s11's set-up before the reboot) and boot3.sh
//! (s11 after it); this file puts the server's PEMs and the credential into the seed and
//! judges the facts.
//!
//! s10: a bundle whose token expires 60 s after the guest made it, installed, then the
//! provider configured and the daemon started: past that exp the proxy is still ready
//! and the installed token is one the server issued, with a later exp, 0600 istio-proxy,
//! copied to the boot copy, and neither token nor credential in the daemon's journal.
//! s11: the reboot with that expired token in the boot copy and the cache: the server
//! issued a token in this boot before vmagent's READY=1 and before istio.service left
//! inactive, and that token is the one installed.

use std::fs;
use std::path::Path;

use super::common::server::TestCa;
use super::{check_status_ready, proxy_up, Check, Results};

/// The guest's TokenRequest server port (beside the package server's).
pub const PORT: u16 = 8766;

/// Writes `seed/token/` (the CA, the server's certificate and key, the bearer
/// credential) and returns the `params.env` lines for it.
pub fn seed(seed: &Path) -> String {
    let dir = seed.join("token");
    fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new();
    fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    fs::write(dir.join("server.pem"), &ca.leaf_pem.0).unwrap();
    fs::write(dir.join("server-key.pem"), &ca.leaf_pem.1).unwrap();
    // A credential per run: nothing to guess, and greppable in the guest's journal.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    fs::write(
        dir.join("credential"),
        format!("vmtest-credential-{stamp:x}\n"),
    )
    .unwrap();
    format!("TOKEN_PORT={PORT}\n")
}

/// One line of the server's log: `issued sha256=.. iat=.. exp=.. sub=.. boot=..
/// uptime=.. unix=..` or `refused status=.. why=.. boot=.. ...`.
struct Issued {
    sha256: String,
    boot: String,
    uptime: f64,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn issued(r: &Results, sc: &str) -> Vec<Issued> {
    r.all(sc, "server_log")
        .iter()
        .filter(|l| l.starts_with("issued "))
        .filter_map(|l| {
            Some(Issued {
                sha256: field(l, "sha256")?.to_string(),
                boot: field(l, "boot")?.to_string(),
                uptime: field(l, "uptime")?.parse().ok()?,
            })
        })
        .collect()
}

fn int(r: &Results, sc: &str, key: &str) -> Option<i64> {
    r.get(sc, key).trim().parse().ok()
}

/// The server saw nothing but well-formed, authorized TokenRequests.
fn no_refusals(c: &mut Check, r: &Results, sc: &str) {
    let refused: Vec<&str> = r
        .all(sc, "server_log")
        .into_iter()
        .filter(|l| l.starts_with("refused "))
        .collect();
    c.that(sc, refused.is_empty(), || {
        format!("the TokenRequest server refused requests: {refused:?}")
    });
}

/// The installed token (`token`, `token_sha256`, `token_exp` facts) is 0600
/// istio-proxy's and one of `from`; returns its exp.
fn installed_from(c: &mut Check, r: &Results, sc: &str, from: &[&Issued]) -> Option<i64> {
    c.eq(
        sc,
        "installed token (mode owner group)",
        r.get(sc, "token"),
        &format!("600 {}", r.get("s1", "proxy_ids")),
    );
    let sha = r.get(sc, "token_sha256");
    c.that(sc, from.iter().any(|i| i.sha256 == sha), || {
        format!(
            "the installed token (sha256 {sha}) is not one the TokenRequest server issued ({:?})",
            from.iter().map(|i| &i.sha256).collect::<Vec<_>>()
        )
    });
    c.eq(
        sc,
        "boot copy (/var/lib/vmagent/istio-token) = installed token",
        r.get(sc, "boot_copy_sha256"),
        sha,
    );
    for (what, key) in [
        ("token text", "journal_jwt"),
        ("credential", "journal_credential"),
    ] {
        c.eq(
            sc,
            &format!("journal lines of vmagent.service with the {what}"),
            r.get(sc, key),
            "0",
        );
    }
    int(r, sc, "token_exp")
}

/// s10: a bundle token that expires in 60 s, the daemon with the kubernetes provider.
pub fn stays_ready(r: &Results, c: &mut Check) {
    let sc = "s10";
    for step in ["server", "stop", "apply", "config", "start"] {
        let s = r.step(sc, step);
        c.that(sc, s.rc == Some(0), || format!("step {step}: {}", s.show()));
    }
    c.eq(
        sc,
        "vmtest-tokenserver.service",
        r.get(sc, "server_active"),
        "active",
    );
    let (iat, exp) = (
        int(r, sc, "bundle_token_iat"),
        int(r, sc, "bundle_token_exp"),
    );
    c.that(
        sc,
        matches!((iat, exp), (Some(i), Some(e)) if e - i == 60),
        || format!("the bundle's token should live 60 s: iat {iat:?}, exp {exp:?}"),
    );
    c.eq(
        sc,
        "token installed by the apply = the bundle's 60 s token",
        r.get(sc, "applied.token_sha256"),
        r.get(sc, "bundle_token_sha256"),
    );
    let now = int(r, sc, "now");
    c.that(
        sc,
        matches!((now, exp), (Some(n), Some(e)) if n > e + 20),
        || format!("the checks ran at {now:?}, want past the bundle token's exp {exp:?} + 20 s"),
    );
    let probes: u32 = r.get(sc, "probes_after_exp").parse().unwrap_or(0);
    c.that(sc, probes >= 5, || {
        format!("only {probes} readiness probes after the bundle token expired, want >= 5")
    });
    c.eq(
        sc,
        "probes after the bundle token's exp that were not 200 (time:code)",
        r.get(sc, "probes_not_ready"),
        "",
    );
    check_status_ready(c, r, sc);
    proxy_up(c, r, sc, "");
    // The refresh needs no restart: pilot-agent reads the token file for every CA
    // request (FINDINGS.md 10: every refresh used to restart the proxy).
    c.eq(
        sc,
        "istio MainPID across the token refresh",
        r.get(sc, "pid"),
        r.get(sc, "started.pid"),
    );
    no_refusals(c, r, sc);
    let all = issued(r, sc);
    c.that(sc, !all.is_empty(), || {
        "the TokenRequest server issued no token".into()
    });
    let from: Vec<&Issued> = all.iter().collect();
    let got = installed_from(c, r, sc, &from);
    c.that(
        sc,
        matches!((got, exp), (Some(g), Some(e)) if g > e),
        || format!("installed token exp {got:?}, want later than the bundle token's {exp:?}"),
    );
}

/// s11: the reboot with an expired boot copy and cache.
pub fn reboot_expired(r: &Results, c: &mut Check) {
    let sc = "s11";
    let bundle_sha = r.get("s10", "bundle_token_sha256");
    c.eq(
        sc,
        "boot copy before the reboot = the 60 s bundle token",
        r.get(sc, "before.boot_copy_sha256"),
        bundle_sha,
    );
    c.eq(
        sc,
        "token cache before the reboot = the 60 s bundle token",
        r.get(sc, "before.cache_sha256"),
        bundle_sha,
    );
    let (now, exp) = (int(r, sc, "before.now"), int(r, sc, "before.boot_copy_exp"));
    c.that(
        sc,
        matches!((now, exp), (Some(n), Some(e)) if n > e),
        || format!("the boot copy had not expired before the reboot: now {now:?}, exp {exp:?}"),
    );
    // The premise: the tmpfiles.d rule put the expired copy on /run before vmagent ran.
    c.eq(
        sc,
        "token on /run before vmagent and istio started",
        r.get(sc, "token_early"),
        "present",
    );
    c.eq(
        sc,
        "that early token = the expired boot copy",
        r.get(sc, "token_early_sha256"),
        bundle_sha,
    );
    c.eq(
        sc,
        "vmtest-tokenserver.service",
        r.get(sc, "server_active"),
        "active",
    );
    check_status_ready(c, r, sc);
    proxy_up(c, r, sc, "");
    c.eq(
        sc,
        "systemctl is-active vmagent",
        r.get(sc, "vmagent_active"),
        "active",
    );
    // Started once: the restored token carries the identity istio started with.
    c.eq(
        sc,
        "istio.service starts in this boot",
        r.get(sc, "starts"),
        "1",
    );
    no_refusals(c, r, sc);
    let boot = r.get(sc, "boot_id");
    let all = issued(r, sc);
    let this_boot: Vec<&Issued> = all.iter().filter(|i| i.boot == boot).collect();
    let first_us = this_boot.first().map(|i| i.uptime * 1e6);
    let ready = r.num(sc, "vmagent_ready_us");
    let istio = r.num(sc, "istio_inactive_exit_us");
    c.that(
        sc,
        matches!((first_us, ready, istio), (Some(f), Some(v), Some(i)) if f > 0.0 && f <= v && v <= i),
        || {
            format!(
                "want a token issued in this boot before vmagent's READY=1, and READY=1 before istio.service started \
                 (monotonic us): first issue {first_us:?}, vmagent ready {ready:?}, istio left inactive {istio:?}"
            )
        },
    );
    let got = installed_from(c, r, sc, &this_boot);
    let now = int(r, sc, "now");
    c.that(
        sc,
        matches!((got, now), (Some(g), Some(n)) if g > n),
        || format!("installed token exp {got:?} is not in the future (now {now:?})"),
    );
}
