//! What a forwarded request did: the input of the gateway's record step.

use crate::commands::RefUpdate;
use crate::report::PushReport;
use crate::route::GitRoute;

/// What happened once a request was forwarded: the record step's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitOutcome {
    /// The request's route (upstream, repository, endpoint).
    pub route: GitRoute,
    /// The HTTP status sent to the client (502/504 when the upstream failed).
    pub status: u16,
    /// For pushes: the ref updates the client asked for.
    pub updates: Vec<RefUpdate>,
    /// For pushes: what the upstream reported per ref (`None` when the
    /// response carried no report, e.g. the client did not ask for one, or
    /// the upstream failed before answering).
    pub report: Option<PushReport>,
    /// Request body bytes sent upstream.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// Why the exchange did not finish cleanly (upstream error, client
    /// disconnect); `None` when it did. Safe to log, never sent to clients.
    pub error: Option<String>,
}

impl GitOutcome {
    /// Refs the upstream's report-status names that no decision covered: the
    /// backstop for a parser difference. Empty in a healthy push; anything
    /// here means the upstream acted on a command Latchkey did not see, and
    /// the gateway raises an integrity alarm.
    pub fn undecided_refs(&self) -> Vec<&str> {
        let Some(report) = &self.report else {
            return Vec::new();
        };
        let mut out: Vec<&str> = Vec::new();
        for status in &report.refs {
            let name = status.name.as_str();
            if !self.updates.iter().any(|u| u.name == name) && !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }
}
