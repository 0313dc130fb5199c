//! The table of real lines for tests/classify.rs: pilot-agent's (text and
//! `--log_as_json`), Envoy's in istio.err.log (Istio's format and Envoy's default),
//! istio-iptables' and iptables' in the unit's journal, and the legacy node agent's.
//! Every row names the istio/istio source file its text comes from (for Envoy's and
//! iptables' own words: the istio/istio file that passes them on, and theirs).

use vmagent::health::classify::{Class, Stage};
use vmagent::health::Failure;

pub const TS: &str = "2024-08-15T09:51:42.705907Z";

/// One row: the line, what it must classify to, its form and its source.
pub struct Row {
    pub line: String,
    pub want: Option<Class>,
    pub form: &'static str,
    pub src: &'static str,
}

#[derive(Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    /// An agent line in both forms: text (`<ts>\t<level>\t[<scope>\t]<msg>[\t<k=v ...>]`)
    /// and JSON (`--log_as_json`: keys level, time, scope, msg, then the k=v fields).
    pub fn agent(
        &mut self,
        src: &'static str,
        (level, scope): (&str, &str),
        msg: &str,
        kv: &str,
        want: Option<Class>,
    ) {
        let mut text = format!("{TS}\t{level}\t");
        if !scope.is_empty() {
            text.push_str(scope);
            text.push('\t');
        }
        text.push_str(msg);
        if !kv.is_empty() {
            text.push('\t');
            text.push_str(kv);
        }
        self.rows.push(Row {
            line: text,
            want,
            form: "agent text",
            src,
        });

        let mut obj = serde_json::Map::new();
        obj.insert("level".into(), level.into());
        obj.insert("time".into(), TS.into());
        if !scope.is_empty() {
            obj.insert("scope".into(), scope.into());
        }
        obj.insert("msg".into(), msg.into());
        for pair in kv.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("k=v");
            obj.insert(k.into(), v.into());
        }
        self.rows.push(Row {
            line: serde_json::Value::Object(obj).to_string(),
            want,
            form: "agent json",
            src,
        });
    }

    /// A line as it is (Envoy's istio.err.log, the journal's `-o cat` text).
    pub fn raw(&mut self, src: &'static str, line: &str, want: Option<Class>) {
        self.rows.push(Row {
            line: line.to_string(),
            want,
            form: "raw",
            src,
        });
    }

    /// Distinct lines (a text/JSON pair counts once).
    pub fn distinct(&self) -> usize {
        self.rows.iter().filter(|r| r.form != "agent json").count()
    }
}

pub fn f(k: Failure) -> Option<Class> {
    Some(Class::Failure(k))
}

pub fn p(s: Stage) -> Option<Class> {
    Some(Class::Progress(s))
}

pub const READY: Option<Class> = Some(Class::Ready);
pub const BENIGN: Option<Class> = Some(Class::Benign);

/// Envoy in istio.err.log, Istio's format (pkg/envoy/proxy.go's --log-format):
/// `<ts>\t<level>\tenvoy <logger> <file:line>\t<msg>\tthread=N`.
pub fn envoy(level: &str, logger: &str, msg: &str) -> String {
    format!("{TS}\t{level}\tenvoy {logger} external/envoy/source/extensions/config_subscription/grpc/grpc_stream.h:152\t{msg}\tthread=14")
}

/// Envoy's own default format: `[<date> <time>][<pid>][<level>][<logger>] <msg>`.
pub fn envoy_default(level: &str, logger: &str, msg: &str) -> String {
    format!("[2024-08-15 09:51:42.705][12][{level}][{logger}] [source/server/server.cc:131] {msg}")
}

// Sources, named once (istio/istio paths unless said).
const STATUS: &str = "pilot/cmd/pilot-agent/status/server.go";
const READY_PROBE: &str = "pilot/cmd/pilot-agent/status/ready/probe.go";
const ENVOY_AGENT: &str = "pkg/envoy/agent.go";
const ENVOY_PROXY: &str = "pkg/envoy/proxy.go";
const SECRETCACHE: &str = "security/pkg/nodeagent/cache/secretcache.go";
const SDS: &str = "security/pkg/nodeagent/sds/sdsservice.go";
const CITADEL: &str = "security/pkg/nodeagent/caclient/providers/citadel/client.go";
const CA_SERVER: &str = "security/pkg/server/ca/server.go";
const TOKEN: &str = "security/pkg/credentialfetcher/plugin/token.go";
const XDS_PROXY: &str = "pkg/istio-agent/xds_proxy.go";
const XDS_DELTA: &str = "pkg/istio-agent/xds_proxy_delta.go";
const XDS_AUTH: &str = "pilot/pkg/xds/auth.go";
const AUTOREG: &str = "pilot/pkg/autoregistration/controller.go";
const GRPC_TLS: &str = "pilot/pkg/grpc/tls.go";
const FILE: &str = "pkg/file/file.go (via security/pkg/nodeagent/cache/secretcache.go)";
const DNS: &str = "pkg/dns/client/proxy.go";
const NODEAGENT_VM: &str = "security/pkg/nodeagent/vm/nodeagent.go (Istio 1.0)";
const IPT: &str = "tools/istio-iptables/pkg/dependencies/implementation_linux.go";
const IPT_ERR: &str = "tools/istio-iptables/pkg/dependencies/implementation.go";
const IPT_RUN: &str = "tools/istio-iptables/pkg/capture/run.go";
const ENVOY_ADS: &str =
    "pkg/envoy/proxy.go (Envoy's source/extensions/config_subscription/grpc/grpc_stream.h)";
const ENVOY_NACK: &str =
    "pkg/envoy/proxy.go (Envoy's source/extensions/config_subscription/grpc/grpc_mux_impl.cc)";
const ENVOY_MAIN: &str = "pkg/envoy/proxy.go (Envoy's source/server/server.cc)";
const KLOG: &str = "pkg/log/klog.go (passing on client-go's reflector)";
const WASM: &str = "pkg/wasm/convert.go (pkg/wasm/cache.go)";
const OPTIONS: &str = "pilot/cmd/pilot-agent/app/cmd.go";
const DNS_SERVER: &str = "pkg/dns/client/dns.go";
const OLD_EPOCH: &str = "pkg/envoy/agent.go (Istio <= 1.9)";
const OLD_CACHE: &str = "security/pkg/nodeagent/cache/secretcache.go (Istio <= 1.8)";
const SYNTHETIC: &str = "synthetic look-alike (no Istio source)";
const IPTABLES: &str =
    "tools/istio-iptables/pkg/dependencies/implementation_linux.go (iptables' own stderr)";
const HEALTH: &str = "pkg/istio-agent/health/health_check.go";
const ADS: &str = "pilot/pkg/xds/discovery.go";
const AGENT: &str = "pkg/istio-agent/agent.go";

const fn lv(level: &'static str, scope: &'static str) -> (&'static str, &'static str) {
    (level, scope)
}

#[path = "rows_identity.rs"]
mod rows_identity;
#[path = "rows_network.rs"]
mod rows_network;
#[path = "rows_other.rs"]
mod rows_other;

pub fn table() -> Table {
    let mut t = Table::default();
    rows_identity::add(&mut t);
    rows_network::add(&mut t);
    rows_other::add(&mut t);
    t
}
