//! Command-line interface: argument definitions and dispatch to [`crate::run`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::package::Request as PackageRequest;
use crate::report::{self, CommandResult, Document, Format};
use crate::run::{self, exit, ApplyOptions, RunError};

mod check;
use check::check;

/// vmagent brings this VM into an Istio service mesh from an
/// `istioctl x workload entry configure` bundle, safely and idempotently.
#[derive(Debug, Parser)]
#[command(name = "vmagent", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// More log detail on stderr (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors and the result: no progress lines, no warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a bundle and install it: files, /etc/hosts, package, service.
    Apply(ApplyArgs),
    /// Validate a bundle only; touch nothing.
    Check(CheckArgs),
    /// Roll back an apply that was interrupted (e.g. killed); `apply` does this too.
    Recover(RecoverArgs),
    /// Show the proxy's health, why it is not ready, expiries, package, last apply.
    Status(StatusArgs),
    /// Check the installed state for a support ticket: service, health, identity,
    /// iptables, DNS capture (no secrets); exit 40 when a check fails.
    Doctor(StatusArgs),
    /// Keep this VM in the mesh: reconcile on bundle change and drift, watch health
    /// (run by vmagent.service).
    Daemon {
        /// Target root directory.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Take this VM out of the mesh: stop and disable istio, remove the sidecar package,
    /// vmagent's hosts block and the installed files (restoring files that existed
    /// before vmagent).
    Uninstall {
        #[command(flatten)]
        root: RootArgs,
        /// Also remove vmagent's state (/var/lib/vmagent), cache and status file.
        #[arg(long)]
        purge: bool,
        /// Print what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the merged configuration (config.toml + config.d/*.toml), secrets redacted.
    Config(ConfigArgs),
    /// The istio-token from the configured `[token]` provider.
    Token(TokenArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout.
    Man,
}

/// `vmagent config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do with the configuration.
    #[command(subcommand)]
    pub action: ConfigAction,
}

/// `vmagent config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the merged result with defaults filled in and secrets redacted.
    Show {
        /// Target root directory.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
}

/// `vmagent token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What to do with the token.
    #[command(subcommand)]
    pub action: TokenAction,
}

/// `vmagent token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Get one token from the provider now, check it and install it (exit 9 when the
    /// provider fails or its token is refused; the installed token is then unchanged).
    Refresh {
        #[command(flatten)]
        root: RootArgs,
    },
}

/// Largest value of the seconds flags (`--wait`, `--lock-timeout`): a day. More is a
/// typo, and would overflow the deadline arithmetic (`Instant + Duration` panics).
pub const MAX_FLAG_SECS: u64 = 86_400;

/// Where to work.
#[derive(Debug, Args)]
pub struct RootArgs {
    /// Target root directory (an image or test tree); every path is resolved inside it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Seconds to wait for another vmagent holding the lock (0 to 86400).
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(0..=MAX_FLAG_SECS))]
    pub lock_timeout: u64,
}

/// `vmagent apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The bundle: a .tar, .tar.gz/.tgz, or the directory istioctl wrote.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub root: RootArgs,
    /// Print the plan (with diffs) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not install the istio-sidecar package.
    #[arg(long, conflicts_with_all = ["package", "package_sha256", "istio_version"])]
    pub no_package: bool,
    /// The sidecar package: a local .deb/.rpm or an http(s) URL (default: a package in
    /// the bundle, else the configured URL template with --istio-version).
    #[arg(long, value_name = "PATH_OR_URL")]
    pub package: Option<String>,
    /// Expected sha256 of the package (default for URLs: the published URL.sha256).
    #[arg(long, value_name = "HEX")]
    pub package_sha256: Option<String>,
    /// Istio version for the package URL template (default: package.version in the config).
    #[arg(long, value_name = "VERSION")]
    pub istio_version: Option<String>,
    /// Extra CA certificate (PEM) trusted for package downloads, e.g. a private mirror's.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Do not touch the istio service (no enable, start or restart) and do not wait.
    #[arg(long, conflicts_with = "wait")]
    pub no_start: bool,
    /// Seconds to wait for the proxy to become ready (0: do not wait) [default: the
    /// config's health.wait_secs, 180; at most 86400].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=MAX_FLAG_SECS))]
    pub wait: Option<u64>,
    /// Do not manage owners (for when user istio-proxy does not exist and will not).
    #[arg(long)]
    pub skip_owner: bool,
    /// Accept a token that has expired (e.g. the workload certificate is still valid).
    #[arg(long)]
    pub allow_expired_token: bool,
    /// Do not exclude sshd's ports from inbound capture (the lock-out guard); the plan
    /// then warns. For every run, the daemon's too: `lockout_guard = false` in [overrides].
    #[arg(long)]
    pub no_lockout_guard: bool,
    /// Skip the online preflight (istiod reachable with this bundle's root certificate,
    /// clock, ports, address) that runs first when the root is `/`.
    #[arg(long)]
    pub no_preflight: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// `vmagent check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The bundle: a .tar, .tar.gz/.tgz, or the directory istioctl wrote.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Accept a token that has expired.
    #[arg(long)]
    pub allow_expired_token: bool,
    /// Also run the online preflight: reach istiod as the proxy will (DNS, TCP, TLS
    /// against the bundle's root certificate), clock, ports, advertised address.
    #[arg(long)]
    pub online: bool,
    /// The root whose configuration applies (`[trust]`; with --online, `[preflight]`
    /// and its istio-proxy account).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// `vmagent status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Target root directory.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// `vmagent recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub root: RootArgs,
    /// Roll nothing back: move a journal vmagent refused (damaged, or not one it wrote)
    /// and its backups aside into the state dir's discarded-<time>/ (inspect it first).
    #[arg(long)]
    pub discard_journal: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

fn waiting(path: &std::path::Path) -> impl FnOnce() + '_ {
    move || {
        report::err_line(&format!(
            "waiting for another vmagent to finish with {} ...",
            path.display()
        ))
    }
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> u8 {
    crate::logging::init(cli.verbose, cli.quiet);
    report::set_quiet(cli.quiet);
    match cli.command {
        Command::Apply(a) => apply(a),
        Command::Check(c) => check(c),
        Command::Recover(r) => recover(r),
        Command::Status(s) => status(s),
        Command::Doctor(d) => doctor(d),
        Command::Uninstall {
            root,
            purge,
            dry_run,
        } => {
            let opts = crate::uninstall::Options {
                root: root.root,
                purge,
                dry_run,
                lock_timeout: Duration::from_secs(root.lock_timeout),
            };
            match crate::uninstall::uninstall(&opts) {
                Ok(steps) if steps.is_empty() => {
                    report::out("nothing to uninstall\n");
                    exit::OK
                }
                Ok(steps) => {
                    for s in &steps {
                        report::out(&format!("  {s}\n"));
                    }
                    let verb = if dry_run { "would do" } else { "done" };
                    report::out(&format!("uninstall: {} step(s) {verb}\n", steps.len()));
                    exit::OK
                }
                Err(e) => fail(Document::new("uninstall"), &e, Format::Text),
            }
        }
        Command::Daemon { root } => crate::daemon::run(&crate::daemon::Options { root }),
        Command::Config(ConfigArgs {
            action: ConfigAction::Show { root },
        }) => config_show(&root),
        Command::Token(TokenArgs {
            action: TokenAction::Refresh { root },
        }) => token_refresh(&root),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "vmagent", &mut out);
            report::out(&String::from_utf8_lossy(&out));
            exit::OK
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => {
                    report::out(&String::from_utf8_lossy(&out));
                    exit::OK
                }
                Err(e) => {
                    report::err_line(&format!("error: cannot render the man page: {e}"));
                    exit::FAILED
                }
            }
        }
    }
}

fn token_refresh(r: &RootArgs) -> u8 {
    use crate::identity::provider;
    match provider::refresh(
        &r.root,
        Duration::from_secs(r.lock_timeout),
        waiting(&r.root),
    ) {
        Ok(t) => {
            report::out(&format!(
                "token refreshed by the {} provider for {}: installed at {}, expires {}, next refresh due {}\n",
                t.provider,
                t.subject,
                t.path,
                crate::timefmt::rfc3339(t.expires),
                crate::timefmt::rfc3339(t.next_due)
            ));
            exit::OK
        }
        Err(e) => {
            let kept = if e.is_transient() {
                "; the installed token is unchanged"
            } else {
                ""
            };
            report::err_line(&format!("error: {e}{kept}"));
            e.exit_code()
        }
    }
}

fn config_show(root: &std::path::Path) -> u8 {
    let r = crate::root::Root::new(root)
        .map_err(RunError::from)
        .and_then(|r| Ok(crate::config::Config::load_files(&r)?))
        .and_then(|(cfg, files)| {
            let local = crate::overrides::validate(&cfg.overrides)?;
            Ok((
                crate::overrides::describe(&cfg.overrides, &local),
                cfg,
                files,
            ))
        });
    match r {
        Ok((overrides, cfg, files)) => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            let from = if names.is_empty() {
                "no config files: all defaults".to_string()
            } else {
                names.join(", ")
            };
            report::out(&format!("# merged from: {from}\n{}{overrides}", cfg.show()));
            exit::OK
        }
        Err(e) => fail(Document::new("config"), &e, Format::Text),
    }
}

fn status(s: StatusArgs) -> u8 {
    let root = match crate::root::Root::new(&s.root) {
        Ok(r) => r,
        Err(e) => return fail(Document::new("status"), &RunError::Root(e), s.output),
    };
    let (url, note) = match crate::config::Config::load(&root) {
        Ok(c) => (c.health.ready_url, None),
        Err(e) => (
            crate::health::probe::DEFAULT_URL.to_string(),
            Some(e.to_string()),
        ),
    };
    let mut st = crate::status::current(&root, &url);
    st.unreadable.extend(note);
    match s.output {
        Format::Json => match serde_json::to_string_pretty(&st) {
            Ok(j) => report::out(&format!("{j}\n")),
            Err(e) => report::err_line(&format!("error: cannot render JSON: {e}")),
        },
        Format::Text => report::out(&report::status_text(&st)),
    }
    st.exit_code(crate::timefmt::now())
}

fn doctor(d: StatusArgs) -> u8 {
    match crate::doctor::run(&d.root) {
        Ok(r) => {
            match d.output {
                Format::Json => match serde_json::to_string_pretty(&r) {
                    Ok(j) => report::out(&format!("{j}\n")),
                    Err(e) => report::err_line(&format!("error: cannot render JSON: {e}")),
                },
                Format::Text => report::out(&report::doctor_text(&r)),
            }
            r.exit_code
        }
        Err(e) => fail(Document::new("doctor"), &RunError::Root(e), d.output),
    }
}

fn fail(doc: Document, e: &RunError, format: Format) -> u8 {
    report::err_line(&format!("error: {e}"));
    for line in e.detail_lines() {
        report::err_line(&format!("  | {line}"));
    }
    if format == Format::Json {
        doc.failed(e).print_json();
    }
    e.exit_code()
}

fn apply(a: ApplyArgs) -> u8 {
    let package = (!a.no_package).then(|| PackageRequest {
        package: a.package.clone(),
        sha256: a.package_sha256.as_ref().map(|s| s.to_ascii_lowercase()),
        istio_version: a.istio_version.clone(),
        ca_file: a.ca_file.clone(),
    });
    let opts = ApplyOptions {
        bundle: a.bundle.clone(),
        root: a.root.root.clone(),
        dry_run: a.dry_run,
        skip_owner: a.skip_owner,
        allow_expired_token: a.allow_expired_token,
        lock_timeout: Duration::from_secs(a.root.lock_timeout),
        package,
        start: !a.no_start,
        wait: a.wait.map(Duration::from_secs),
        config: None,
        status_file: true,
        lockout_guard: !a.no_lockout_guard,
        preflight: !a.no_preflight,
    };
    match run::apply(&opts, waiting(&a.root.root), &mut report::health_event) {
        Ok(o) => {
            match a.output {
                Format::Json => Document::from_outcome(&o, a.dry_run).print_json(),
                Format::Text => report::print_text(
                    &o,
                    &a.bundle.display().to_string(),
                    &a.root.root.display().to_string(),
                ),
            }
            o.exit_code()
        }
        Err(e) => fail(Document::new("apply"), &e, a.output),
    }
}

fn recover(r: RecoverArgs) -> u8 {
    if r.discard_journal {
        return discard_journal(r);
    }
    match run::recover(
        &r.root.root,
        Duration::from_secs(r.root.lock_timeout),
        waiting(&r.root.root),
    ) {
        Ok(found) => {
            match r.output {
                Format::Json => {
                    let mut d = Document::new("recover");
                    d.result = if found.is_some() {
                        CommandResult::Recovered
                    } else {
                        CommandResult::NothingToRecover
                    };
                    d.recovered = found.unwrap_or_default();
                    d.print_json();
                }
                Format::Text => match found {
                    Some(p) => report::out(&format!(
                        "rolled back an interrupted apply ({} paths restored)\n",
                        p.len()
                    )),
                    None => report::out("nothing to recover\n"),
                },
            }
            exit::OK
        }
        Err(e) => fail(Document::new("recover"), &e, r.output),
    }
}

fn discard_journal(r: RecoverArgs) -> u8 {
    match run::discard_journal(
        &r.root.root,
        Duration::from_secs(r.root.lock_timeout),
        waiting(&r.root.root),
    ) {
        Ok(aside) => {
            match r.output {
                Format::Json => {
                    let mut d = Document::new("recover");
                    d.result = if aside.is_some() {
                        CommandResult::JournalDiscarded
                    } else {
                        CommandResult::NothingToRecover
                    };
                    d.print_json();
                }
                Format::Text => match aside {
                    Some(p) => report::out(&format!(
                        "moved the undo journal and its backups to {}; nothing was rolled back: check the files it names, then apply again\n",
                        p.display()
                    )),
                    None => report::out("nothing to recover\n"),
                },
            }
            exit::OK
        }
        Err(e) => fail(Document::new("recover"), &e, r.output),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
