//! `vmagent doctor`'s text report: one line per section with its verdict, the facts
//! seen indented below it, and what to do when it is not ok.

use crate::doctor::{Report, Verdict};

/// The human report.
pub fn doctor_text(r: &Report) -> String {
    let mut out = format!("vmagent doctor {} (root {}, {})\n", r.vmagent, r.root, r.at);
    for s in &r.sections {
        let tag = match s.verdict {
            Verdict::Ok => "ok",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Unknown => "??",
        };
        out.push_str(&format!("[{tag:^4}] {}: {}\n", s.kind.name(), s.summary));
        for d in &s.details {
            out.push_str(&format!("       {d}\n"));
        }
        if let Some(h) = &s.hint {
            out.push_str(&format!("       -> {h}\n"));
        }
    }
    let failed: Vec<&str> = r
        .sections
        .iter()
        .filter(|s| s.verdict == Verdict::Fail)
        .map(|s| s.kind.name())
        .collect();
    if failed.is_empty() {
        out.push_str("no failed checks\n");
    } else {
        out.push_str(&format!(
            "failed: {} (exit {})\n",
            failed.join(", "),
            r.exit_code
        ));
    }
    out
}
