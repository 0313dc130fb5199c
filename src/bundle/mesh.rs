//! mesh.yaml: the mesh config istioctl writes (`defaultConfig:` ProxyConfig).
//!
//! Parsed with serde-saphyr under a small budget, so an alias bomb or a deeply nested
//! document fails fast instead of exhausting memory.

use std::collections::BTreeSet;

use serde_json::Value;

use super::env_keys;
use super::hosts::is_hostname;
use super::MemberError;

/// What vmagent needs from mesh.yaml.
#[derive(Debug, Clone, Default)]
pub struct Mesh {
    /// `defaultConfig.discoveryAddress` (host:port), if present.
    pub discovery_address: Option<String>,
    /// Keys of `defaultConfig.proxyMetadata` (istioctl copies them into cluster.env).
    pub proxy_metadata_keys: BTreeSet<String>,
}

/// Parses and validates mesh.yaml; the warnings say what pilot-agent will not use.
pub fn parse(data: &[u8]) -> Result<(Mesh, Vec<String>), MemberError> {
    let text =
        std::str::from_utf8(data).map_err(|_| MemberError::new("not valid UTF-8 text".into()))?;
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 100_000,
            max_aliases: 64,
            max_anchors: 64,
            max_depth: 64,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 10_000,
        },
        with_snippet: false,
    };
    let doc: Value = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| MemberError::new(format!("not valid YAML: {}", first_line(&e.to_string()))))?;
    let doc = match doc {
        Value::Null => Value::Object(serde_json::Map::new()), // empty file: all defaults
        d => d,
    };
    let Value::Object(top) = doc else {
        return Err(MemberError::new(
            "must be a YAML mapping (the mesh config istioctl writes, starting with 'defaultConfig:')".into(),
        ));
    };
    let mut mesh = Mesh::default();
    let Some(dc) = top.get("defaultConfig") else {
        let warning = no_default_config(&top, &mut mesh);
        return Ok((mesh, vec![warning]));
    };
    let Value::Object(dc) = dc else {
        return Err(MemberError::new("'defaultConfig' must be a mapping".into()));
    };
    if let Some(addr) = dc.get("discoveryAddress") {
        let Value::String(addr) = addr else {
            return Err(MemberError::new(
                "'defaultConfig.discoveryAddress' must be a string host:port".into(),
            ));
        };
        check_host_port(addr)
            .map_err(|r| MemberError::new(format!("'defaultConfig.discoveryAddress' {r}")))?;
        mesh.discovery_address = Some(addr.clone());
    }
    match dc.get("proxyMetadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(pm)) => {
            check_proxy_metadata(pm)?;
            mesh.proxy_metadata_keys = pm.keys().cloned().collect();
        }
        Some(_) => {
            return Err(MemberError::new(
                "'defaultConfig.proxyMetadata' must be a mapping".into(),
            ))
        }
    }
    Ok((mesh, Vec::new()))
}

/// istioctl 1.8 wrote the ProxyConfig itself (istioctl/cmd/workload.go at 1.8.0:
/// `ToYAML(meshConfig.DefaultConfig)`), and an empty mesh.yaml is valid too. pilot-agent
/// reads the file as a MeshConfig and ignores unknown top-level fields
/// (pkg/util/protomarshal ApplyJSON retries with AllowUnknownFields), so nothing in it
/// reaches the proxy: it runs with the defaults. Its proxyMetadata keys still count as
/// known for cluster.env (istioctl copied them there).
fn no_default_config(top: &serde_json::Map<String, Value>, mesh: &mut Mesh) -> String {
    if let Some(Value::Object(pm)) = top.get("proxyMetadata") {
        mesh.proxy_metadata_keys = pm.keys().cloned().collect();
    }
    let ignored = [
        "discoveryAddress",
        "proxyMetadata",
        "meshId",
        "readinessProbe",
    ]
    .into_iter()
    .filter(|k| top.contains_key(*k))
    .collect::<Vec<_>>();
    let what = if ignored.is_empty() {
        String::new()
    } else {
        format!(
            " Its top-level {} (the form istioctl 1.8 wrote) is ignored by pilot-agent.",
            ignored.join(", ")
        )
    };
    format!(
        "bundle member 'mesh.yaml' has no 'defaultConfig': the proxy runs with Istio's defaults (discovery address istiod.istio-system.svc:15012).{what} Move the settings under 'defaultConfig:' or regenerate the bundle with a current istioctl"
    )
}

/// proxyMetadata is a string map (ProxyConfig.proxy_metadata): pilot-agent does not start
/// when a value is anything else (pilot/cmd/pilot-agent/config/config.go
/// `getMeshConfig` fails on the file), e.g. an unquoted `true`. The values reach the
/// proxy's metadata like cluster.env's, so they get the same checks.
fn check_proxy_metadata(pm: &serde_json::Map<String, Value>) -> Result<(), MemberError> {
    for (k, v) in pm {
        let field = format!("'defaultConfig.proxyMetadata.{k}'");
        match v {
            Value::String(v) => env_keys::check_value(k, v)
                .map_err(|r| MemberError::new(format!("{field}: {r}")))?,
            other => {
                let shown = serde_json::to_string(other).unwrap_or_default();
                let fix = match other {
                    Value::Null => format!("{k}: \"\""),
                    _ => format!("{k}: {}", serde_json::to_string(&shown).unwrap_or_default()),
                };
                return Err(MemberError::new(format!(
                    "{field} is {shown}, not a string: pilot-agent cannot read such a mesh config and does not start; quote it ({fix})"
                )));
            }
        }
    }
    Ok(())
}

fn check_host_port(addr: &str) -> Result<(), String> {
    let bad = || format!("'{addr}' is not host:port (e.g. istiod.istio-system.svc:15012)");
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        (None, p)
    } else {
        let (h, p) = addr.rsplit_once(':').ok_or_else(bad)?;
        (Some(h), p)
    };
    if let Some(h) = host {
        if h.parse::<std::net::Ipv4Addr>().is_err() && !is_hostname(h) {
            return Err(bad());
        }
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_istioctl_mesh() {
        let (m, w) = parse(b"defaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n  proxyMetadata:\n    ISTIO_META_DNS_CAPTURE: \"true\"\n").unwrap();
        assert_eq!(
            m.discovery_address.as_deref(),
            Some("istiod.istio-system.svc:15012")
        );
        assert!(m.proxy_metadata_keys.contains("ISTIO_META_DNS_CAPTURE"));
        assert!(w.is_empty());
    }

    #[test]
    fn warns_without_default_config() {
        let (m, w) = parse(
            b"discoveryAddress: istiod.istio-system.svc:15012\nproxyMetadata:\n  ISTIO_META_X: a\n",
        )
        .unwrap();
        assert!(m.discovery_address.is_none());
        assert!(m.proxy_metadata_keys.contains("ISTIO_META_X"));
        assert!(
            w[0].contains("no 'defaultConfig'") && w[0].contains("discoveryAddress, proxyMetadata"),
            "{w:?}"
        );
        for empty in [&b"{}\n"[..], b"", b"# nothing\n"] {
            let (_, w) = parse(empty).unwrap();
            assert_eq!(w.len(), 1);
        }
    }

    #[test]
    fn rejects_bad_documents() {
        for bad in [
            &b"- a\n- b\n"[..],
            b"defaultConfig: 3\n",
            b"defaultConfig:\n  discoveryAddress: istiod\n",
            b"defaultConfig:\n  discoveryAddress: 'a b:1'\n",
            b"defaultConfig:\n  discoveryAddress: istiod:99999\n",
            b"defaultConfig:\n  proxyMetadata:\n    ISTIO_META_DNS_CAPTURE: true\n",
            b"defaultConfig:\n  proxyMetadata:\n    ISTIO_META_X:\n",
            b"defaultConfig:\n  proxyMetadata:\n    ISTIO_META_POD_PORTS: '\"[]\"'\n",
            b"key: [unclosed\n",
            b"a: &a [x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e]\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
