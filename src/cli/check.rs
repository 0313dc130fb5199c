//! `vmagent check BUNDLE [--online]`: the signature (`[trust]`), the bundle, and with
//! `--online` the preflight's checks.

use super::{fail, CheckArgs};
use crate::report::{self, CommandResult, Document, Format};
use crate::run::{self, exit};

pub(super) fn check(c: CheckArgs) -> u8 {
    // The signature before the members (a bundle nobody trusts is not parsed).
    let signer = match run::check_trust(&c.root, &c.bundle) {
        Ok(crate::trust::Verdict::Signed(s)) => Some(s),
        Ok(_) => None,
        Err(e) => return fail(Document::new("check"), &e, c.output),
    };
    if c.online {
        return check_online(c);
    }
    match run::check(&c.bundle, c.allow_expired_token) {
        Ok(b) => {
            match c.output {
                Format::Json => {
                    let mut d = Document::new("check").with_bundle(&b);
                    d.result = CommandResult::Valid;
                    d.warnings = b.warnings.clone();
                    d.signed_by = signer;
                    d.print_json();
                }
                Format::Text => {
                    for w in &b.warnings {
                        report::info_line(&format!("warning: {w}"));
                    }
                    if let Some(s) = &signer {
                        report::out(&format!("signed by {s}\n"));
                    }
                    report::out(&format!(
                        "bundle {} is valid: {}\n",
                        c.bundle.display(),
                        report::bundle_line(&b)
                    ));
                    if !b.packages.is_empty() {
                        let names: Vec<&str> = b.packages.iter().map(|p| p.name.as_str()).collect();
                        report::out(&format!("packages in bundle: {}\n", names.join(", ")));
                    }
                }
            }
            exit::OK
        }
        Err(e) => fail(Document::new("check"), &e, c.output),
    }
}

fn check_online(c: CheckArgs) -> u8 {
    let (b, r) = match run::check_online(&c.bundle, &c.root, c.allow_expired_token) {
        Ok(x) => x,
        Err(e) => return fail(Document::new("check"), &e, c.output),
    };
    let code = r.exit_code();
    match c.output {
        Format::Json => {
            let mut d = Document::new("check").with_bundle(&b);
            d.result = match code {
                exit::OK => CommandResult::Valid,
                _ => CommandResult::Error,
            };
            d.exit_code = code;
            d.warnings = b.warnings.clone();
            d.error = (code != exit::OK).then(|| r.failure_lines().join("; "));
            d.preflight = Some(r);
            d.print_json();
        }
        Format::Text => {
            for w in &b.warnings {
                report::info_line(&format!("warning: {w}"));
            }
            report::out(&format!(
                "bundle {} is valid: {}\n",
                c.bundle.display(),
                report::bundle_line(&b)
            ));
            for check in &r.checks {
                report::out(&format!("{}\n", check.line()));
            }
            for line in r.failure_lines() {
                report::err_line(&format!("error: {line}"));
            }
        }
    }
    code
}
