//! Unit tests of the configuration: drop-ins, validation, `config show`; compiled only
//! under `#[cfg(test)]` (the parent declares the module so).

use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("etc/vmagent")).unwrap();
    std::fs::write(t.path().join("etc/vmagent/config.toml"), text).unwrap();
    Config::load(&Root::new(t.path()).unwrap())
}

#[test]
fn defaults_and_overrides() {
    let c = load("[package]\nversion = \"1.24.1\"\n[download]\nattempts = 2\n").unwrap();
    assert_eq!(c.package.version.as_deref(), Some("1.24.1"));
    assert_eq!(c.download.attempts, 2);
    assert_eq!(c.download.idle_timeout_secs, 30);
}

fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
    let t = tempfile::tempdir().unwrap();
    for (p, text) in files {
        let h = t.path().join(p.trim_start_matches('/'));
        std::fs::create_dir_all(h.parent().unwrap()).unwrap();
        std::fs::write(h, text).unwrap();
    }
    let r = Root::new(t.path()).unwrap();
    (t, r)
}

#[test]
fn drop_ins_merge_in_name_order_key_by_key() {
    let (_t, r) = root_with(&[
        ("/etc/vmagent/config.toml", "[package]\nversion = \"1.0.0\"\nurl = \"https://a/{version}\"\n[health]\nwait_secs = 5\n"),
        ("/etc/vmagent/config.d/20-b.toml", "[package]\nversion = \"3.0.0\"\n"),
        ("/etc/vmagent/config.d/10-a.toml", "[package]\nversion = \"2.0.0\"\n[source]\nbundle = \"/etc/vmagent/bundle.tar\"\n"),
        ("/etc/vmagent/config.d/README", "not toml, ignored"),
    ]);
    let (c, used) = Config::load_files(&r).unwrap();
    assert_eq!(
        c.package.version.as_deref(),
        Some("3.0.0"),
        "later file wins"
    );
    assert_eq!(
        c.package.url.as_deref(),
        Some("https://a/{version}"),
        "other keys kept"
    );
    assert_eq!(c.health.wait_secs, 5);
    assert_eq!(c.source.bundle.as_deref(), Some("/etc/vmagent/bundle.tar"));
    let names: Vec<String> = used
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into())
        .collect();
    assert_eq!(names, ["config.toml", "10-a.toml", "20-b.toml"]);
}

#[test]
fn show_fills_in_defaults_applied_at_use() {
    let shown = Config::default().show();
    for want in [
        "blob.istio.io",
        "state_dir = \"/var/lib/vmagent\"",
        "cache_dir = \"/var/cache/vmagent\"",
    ] {
        assert!(shown.contains(want), "{want}:\n{shown}");
    }
}

#[test]
fn paths_must_be_absolute_and_plain() {
    for bad in ["var/lib/x", "/", "/var/../etc"] {
        let (_t, r) = root_with(&[(
            "/etc/vmagent/config.toml",
            &format!("[paths]\nstate_dir = \"{bad}\"\n"),
        )]);
        let e = Config::load(&r).unwrap_err().to_string();
        assert!(
            e.contains("paths.state_dir must be an absolute path"),
            "{bad}: {e}"
        );
    }
    let (_t, r) = root_with(&[(
        "/etc/vmagent/config.toml",
        "[paths]\nstate_dir = \"/srv/vmagent/state\"\ncache_dir = \"/srv/vmagent/cache\"\n",
    )]);
    let c = Config::load(&r).unwrap();
    let located = c.locate(r);
    assert_eq!(located.state_dir(), Path::new("/srv/vmagent/state"));
    assert_eq!(located.cache_dir(), Path::new("/srv/vmagent/cache"));
}

#[test]
fn system_directories_are_refused_with_the_file_and_key() {
    for key in ["state_dir", "cache_dir"] {
        let toml = format!("[paths]\n{key} = \"/var/lib\"\n");
        let (_t, r) = root_with(&[("/etc/vmagent/config.toml", &toml)]);
        let e = Config::load(&r).unwrap_err();
        assert!(e.path.ends_with("etc/vmagent/config.toml"), "{e}");
        let want = format!("paths.{key} = '/var/lib' is a system directory");
        assert!(e.reason.contains(&want), "{e}");
    }
}

#[test]
fn a_bad_drop_in_is_named() {
    let (_t, r) = root_with(&[
        (
            "/etc/vmagent/config.toml",
            "[package]\nversion = \"1.0.0\"\n",
        ),
        (
            "/etc/vmagent/config.d/50-x.toml",
            "[daemon]\ndrift_interval_secs = \"often\"\n",
        ),
    ]);
    let e = Config::load(&r).unwrap_err();
    assert!(e.path.ends_with("config.d/50-x.toml"), "{e}");
    assert!(e.reason.contains("drift_interval_secs"), "{e}");
    let (_t, r) = root_with(&[(
        "/etc/vmagent/config.d/60-y.toml",
        "[source]\nbundel = \"x\"\n",
    )]);
    let e = Config::load(&r).unwrap_err();
    assert!(
        e.path.ends_with("60-y.toml") && e.reason.contains("bundel"),
        "{e}"
    );
}

#[test]
fn show_redacts_headers() {
    let (_t, r) = root_with(&[(
        "/etc/vmagent/config.toml",
        "[source]\nbundle = \"https://b/x.tar\"\nheaders = { Authorization = \"Bearer s3cret\" }\n",
    )]);
    let shown = Config::load(&r).unwrap().show();
    assert!(
        !shown.contains("s3cret") && shown.contains("<redacted>"),
        "{shown}"
    );
    assert!(
        shown.contains("poll_interval_secs = 60"),
        "defaults shown: {shown}"
    );
}

#[test]
fn show_redacts_url_secrets() {
    let (_t, r) = root_with(&[(
        "/etc/vmagent/config.toml",
        "[source]\nbundle = \"https://vmuser:pa55word@b.example/x.tar?access_token=S3cr3tTok&x=1\"\n\
         [package]\nurl = \"https://m.example/{version}/p.{format}?X-Amz-Signature=S1g\"\n\
         [health]\nreport_url = \"https://r:R3pw@fleet.example/h?token=R3tok\"\n",
    )]);
    let shown = Config::load(&r).unwrap().show();
    for secret in ["vmuser", "pa55word", "S3cr3tTok", "S1g", "R3pw", "R3tok"] {
        assert!(!shown.contains(secret), "{secret}:\n{shown}");
    }
    for kept in [
        "https://***@b.example/x.tar?access_token=***&x=1",
        "https://m.example/{version}/p.{format}?X-Amz-Signature=***",
        "https://***@fleet.example/h?token=***",
    ] {
        assert!(shown.contains(kept), "{kept}:\n{shown}");
    }
}

#[test]
fn unknown_keys_and_wrong_types_are_refused() {
    let e = load("[package]\nversoin = \"1\"\n").unwrap_err();
    assert!(e.reason.contains("versoin"), "{e}");
    let e = load("[download]\nattempts = \"many\"\n").unwrap_err();
    assert!(e.to_string().contains("attempts"), "{e}");
    assert!(load("[package]\nsha256 = \"abc\"\n").is_err());
}

/// Every number has a range: out of it is one line naming the file, the key, the value
/// and the range (a huge interval used to overflow `Instant + Duration` in the daemon).
#[test]
fn numbers_out_of_range_name_file_key_value_and_range() {
    // TOML integers are i64: the largest one a file can hold.
    let huge = i64::MAX.to_string();
    let cases: [(&str, &str, &str, &str); 11] = [
        ("source", "poll_interval_secs", &huge, "1 to 86400"),
        ("source", "poll_interval_secs", "0", "1 to 86400"),
        ("daemon", "drift_interval_secs", &huge, "1 to 86400"),
        ("daemon", "probe_interval_secs", "86401", "1 to 86400"),
        ("daemon", "token_warn_percent", "101", "1 to 100"),
        ("health", "wait_secs", &huge, "0 to 86400"),
        ("download", "connect_timeout_secs", &huge, "1 to 3600"),
        ("download", "idle_timeout_secs", "0", "1 to 3600"),
        ("download", "attempts", "0", "1 to 100"),
        ("download", "attempts", "4294967295", "1 to 100"),
        ("download", "backoff_ms", &huge, "0 to 3600000"),
    ];
    for (section, key, value, range) in cases {
        let (_t, r) = root_with(&[(
            "/etc/vmagent/config.d/50-x.toml",
            &format!("[{section}]\n{key} = {value}\n"),
        )]);
        let e = Config::load(&r).unwrap_err().to_string();
        let want = format!("{section}.{key} = {value} is out of range: allowed {range}");
        assert!(e.contains(&want) && e.contains("50-x.toml"), "{want}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
    // The bounds themselves are accepted.
    load("[source]\npoll_interval_secs = 86400\n[health]\nwait_secs = 0\n").unwrap();
}

#[test]
fn identity_warn_secs_are_bounded_each_and_in_number() {
    assert_eq!(load("").unwrap().daemon.identity_warn_secs, [86_400, 3_600]);
    assert_eq!(
        load("[daemon]\nidentity_warn_secs = [600]\n")
            .unwrap()
            .daemon
            .identity_warn_secs,
        [600]
    );
    for (value, want) in [
        (
            "[59]",
            "daemon.identity_warn_secs = 59 is out of range: allowed 60 to 2592000",
        ),
        (
            "[3600, 2592001]",
            "daemon.identity_warn_secs = 2592001 is out of range",
        ),
        ("[60,60,60,60,60,60,60,60,60]", "at most 8"),
    ] {
        let e = load(&format!("[daemon]\nidentity_warn_secs = {value}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{value}: {e}");
    }
}

#[test]
fn token_section_shapes_are_checked_per_file_and_keys_merge() {
    let c = load("").unwrap();
    assert_eq!(c.token.provider, ProviderKind::Bundle);
    assert_eq!((c.token.refresh_at, c.token.duration_secs), (0.5, 3600));
    for (text, says) in [
        ("[token]\nprovider = \"vault\"\n", "provider"),
        ("[token]\nserver = \"http://k8s:6443\"\n", "https://"),
        ("[token]\nrefresh_at = 0.99\n", "token.refresh_at"),
        ("[token]\nduration_secs = 60\n", "token.duration_secs"),
        ("[token]\ncommand = [\"helper\"]\n", "absolute program path"),
        (
            "[token]\ncredential_file = \"cred\"\n",
            "token.credential_file",
        ),
        ("[token]\nprovder = \"file\"\n", "provder"),
    ] {
        let e = load(text).unwrap_err().to_string();
        assert!(e.contains(says), "{text:?}: {e}");
    }
    // A drop-in may name the provider while the main file holds its keys.
    let (_t, r) = root_with(&[
        (
            "/etc/vmagent/config.toml",
            "[token]\npath = \"/run/t/istio-token\"\n",
        ),
        (
            "/etc/vmagent/config.d/50-token.toml",
            "[token]\nprovider = \"file\"\n",
        ),
    ]);
    let c = Config::load(&r).unwrap();
    assert_eq!(c.token.provider, ProviderKind::File);
    assert_eq!(
        c.token.path.as_deref(),
        Some(Path::new("/run/t/istio-token"))
    );
    // The server URL is shown redacted.
    let c = load("[token]\nserver = \"https://user:pw@k8s:6443/?token=abc\"\n").unwrap();
    assert!(
        !c.show().contains("pw@") && !c.show().contains("abc"),
        "{}",
        c.show()
    );
}
