//! receive-pack results: building Latchkey's own rejection body, and reading
//! the upstream's report-status as it streams past. Pure: no I/O.

use crate::commands::{MAX_COMMANDS, RefUpdate};
use crate::pktline::{Band, MAX_PKT_LEN, Pkt, PktParse, parse_pkt, write_pkt_line, write_sideband};

/// One refused intent, as git is shown it: per ref in report-status, or
/// for the whole request. The gateway's refusal is rendered into these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefDenial {
    /// The refused ref (`refs/heads/main`), or `""` for a read or for a
    /// refusal that covers the whole request.
    pub ref_name: String,
    /// A safe sentence naming the policy, e.g. `denied by policy protect-main`.
    pub message: String,
}

impl RefDenial {
    /// A refusal of one ref.
    pub fn for_ref(ref_name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            ref_name: ref_name.into(),
            message: message.into(),
        }
    }

    /// A refusal of the whole request.
    pub fn whole(message: impl Into<String>) -> Self {
        Self {
            ref_name: String::new(),
            message: message.into(),
        }
    }
}

/// The sideband framing a client asked for.
fn sideband_max(caps: &[String]) -> Option<usize> {
    if caps.iter().any(|c| c == "side-band-64k") {
        Some(MAX_PKT_LEN)
    } else if caps.iter().any(|c| c == "side-band") {
        Some(1000)
    } else {
        None
    }
}

/// Whether the client asked receive-pack for a per-ref report.
pub fn wants_report_status(caps: &[String]) -> bool {
    caps.iter()
        .any(|c| c == "report-status" || c == "report-status-v2")
}

/// Keeps a message on one line and free of control characters.
fn one_line(msg: &str) -> String {
    let s: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect();
    s.trim().to_owned()
}

/// Message given to refs refused only because another ref in the same push was.
pub const OTHER_REF_DENIED: &str = "other ref denied in the same push";

/// A complete receive-pack (or upload-pack) result body that refuses the
/// request, so the git client prints `! [remote rejected] main (denied by
/// policy protect-main)` and `remote: latchkey: ...`.
///
/// For receive-pack every ref is rejected as soon as one is refused: a push
/// is all or nothing, and no pack byte reaches the upstream. Refused refs
/// carry their own message, the others [`OTHER_REF_DENIED`]. A refusal with
/// an empty ref name applies to every ref. For upload-pack the body is a
/// single `ERR` pkt-line.
pub fn rejection_response(
    service_is_receive_pack: bool,
    updates: &[RefUpdate],
    refusals: &[RefDenial],
    client_caps: &[String],
) -> Vec<u8> {
    let summary = refusals
        .iter()
        .map(|r| one_line(&r.message))
        .filter(|m| !m.is_empty())
        .fold(Vec::<String>::new(), |mut acc, m| {
            if !acc.contains(&m) {
                acc.push(m);
            }
            acc
        })
        .join("; ");
    let summary = if summary.is_empty() {
        "denied by policy".to_owned()
    } else {
        summary
    };
    if !service_is_receive_pack {
        return pkt_line_vec(format!("ERR latchkey: {summary}\n").as_bytes());
    }

    let whole = refusals.iter().find(|r| r.ref_name.is_empty());
    let mut report = Vec::new();
    write_pkt_line(&mut report, b"unpack ok\n");
    for u in updates {
        let msg = refusals
            .iter()
            .find(|r| r.ref_name == u.name)
            .or(whole)
            .map(|r| one_line(&r.message))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| OTHER_REF_DENIED.to_owned());
        write_pkt_line(&mut report, format!("ng {} {msg}\n", u.name).as_bytes());
    }
    report.extend_from_slice(b"0000");

    match sideband_max(client_caps) {
        None => report,
        Some(max) => {
            let mut out = Vec::new();
            write_sideband(
                &mut out,
                Band::Progress,
                format!("latchkey: {summary}\n").as_bytes(),
                max,
            );
            write_sideband(&mut out, Band::Data, &report, max);
            out.extend_from_slice(b"0000");
            out
        }
    }
}

fn pkt_line_vec(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    write_pkt_line(&mut v, data);
    v
}

/// An `info/refs` advertisement body that makes git stop with
/// `fatal: remote error: latchkey: <msg>`. Send it with status 200 and
/// content type `application/x-<service>-advertisement`.
pub fn error_for_info_refs(service: crate::route::Service, msg: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_pkt_line(
        &mut out,
        format!("# service={}\n", service.as_str()).as_bytes(),
    );
    out.extend_from_slice(b"0000");
    write_pkt_line(
        &mut out,
        format!("ERR latchkey: {}", one_line(msg)).as_bytes(),
    );
    out
}

/// The status of one ref in a receive-pack report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefStatus {
    /// The full ref name.
    pub name: String,
    /// Whether the upstream applied the update.
    pub ok: bool,
    /// The upstream's reason for `ng`.
    pub reason: Option<String>,
}

/// What an upstream's receive-pack said about a push.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// `ok`, or the unpack error text; `None` if no unpack line was seen.
    pub unpack: Option<String>,
    /// Per-ref status, in report order.
    pub refs: Vec<RefStatus>,
    /// A fatal error the upstream sent on side-band 3.
    pub fatal: Option<String>,
    /// Whether the report's closing flush-pkt was seen.
    pub complete: bool,
}

impl PushReport {
    /// Refs the upstream says it updated.
    pub fn updated_refs(&self) -> impl Iterator<Item = &str> {
        self.refs.iter().filter(|r| r.ok).map(|r| r.name.as_str())
    }
}

/// Reads a receive-pack response as it streams past, without holding more
/// than one pkt-line, to learn the report-status. It never alters or delays
/// the bytes: the caller forwards each chunk and also feeds it here.
#[derive(Debug)]
pub struct ReportStatusTap {
    sideband: bool,
    outer: Vec<u8>,
    inner: Vec<u8>,
    report: PushReport,
    /// Set when the stream stopped making sense; parsing stops, forwarding
    /// does not.
    broken: Option<String>,
}

impl ReportStatusTap {
    /// A tap for a response that is side-band framed (`sideband`) or not.
    pub fn new(sideband: bool) -> Self {
        Self {
            sideband,
            outer: Vec::new(),
            inner: Vec::new(),
            report: PushReport::default(),
            broken: None,
        }
    }

    /// A tap for the response to a request that asked for `caps`.
    pub fn for_capabilities(caps: &[String]) -> Self {
        Self::new(sideband_max(caps).is_some())
    }

    /// Feeds the next chunk of the response.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.broken.is_some() || self.report.complete {
            return;
        }
        let mut rest = chunk;
        while !rest.is_empty() && self.broken.is_none() && !self.report.complete {
            // Take only what the current pkt-line needs, so the buffer never
            // holds more than one pkt-line.
            let need = if self.outer.len() < 4 {
                4 - self.outer.len()
            } else {
                match parse_pkt(&self.outer) {
                    Ok(PktParse::Incomplete) => {
                        let len = pkt_len(&self.outer).unwrap_or(4);
                        len.saturating_sub(self.outer.len()).max(1)
                    }
                    _ => 0,
                }
            };
            let take = need.min(rest.len());
            self.outer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.drain_outer();
        }
    }

    fn drain_outer(&mut self) {
        loop {
            let outer = std::mem::take(&mut self.outer);
            let parsed = parse_pkt(&outer);
            match parsed {
                Ok(PktParse::Incomplete) => {
                    self.outer = outer;
                    return;
                }
                Err(e) => {
                    self.broken = Some(e.to_string());
                    return;
                }
                Ok(PktParse::Complete { pkt, consumed }) => {
                    if self.sideband {
                        match pkt {
                            Pkt::Data([1, payload @ ..]) => {
                                self.inner.extend_from_slice(payload);
                                self.drain_inner();
                            }
                            Pkt::Data([2, ..]) => {}
                            Pkt::Data([3, msg @ ..]) => {
                                self.report.fatal = Some(one_line(&String::from_utf8_lossy(msg)));
                            }
                            Pkt::Flush => {
                                if !self.report.complete {
                                    self.broken = Some("stream ended before the report".into());
                                }
                            }
                            _ => self.broken = Some("unexpected side-band packet".into()),
                        }
                    } else {
                        self.handle_report_pkt(pkt);
                    }
                    self.outer = outer[consumed..].to_vec();
                    if self.outer.is_empty() {
                        return;
                    }
                }
            }
        }
    }

    fn drain_inner(&mut self) {
        let mut pos = 0;
        while self.broken.is_none() && !self.report.complete {
            let inner = &self.inner[pos..];
            match parse_pkt(inner) {
                Ok(PktParse::Incomplete) => break,
                Err(e) => {
                    self.broken = Some(e.to_string());
                    break;
                }
                Ok(PktParse::Complete { pkt, consumed }) => {
                    let pkt = match pkt {
                        Pkt::Data(d) => OwnedPkt::Data(d.to_vec()),
                        Pkt::Flush => OwnedPkt::Flush,
                        _ => OwnedPkt::Other,
                    };
                    pos += consumed;
                    self.handle_owned(pkt);
                }
            }
        }
        self.inner.drain(..pos.min(self.inner.len()));
        if self.inner.len() > MAX_PKT_LEN {
            self.broken = Some("report pkt-line too long".into());
        }
    }

    fn handle_report_pkt(&mut self, pkt: Pkt<'_>) {
        let owned = match pkt {
            Pkt::Data(d) => OwnedPkt::Data(d.to_vec()),
            Pkt::Flush => OwnedPkt::Flush,
            _ => OwnedPkt::Other,
        };
        self.handle_owned(owned);
    }

    fn handle_owned(&mut self, pkt: OwnedPkt) {
        match pkt {
            OwnedPkt::Flush => self.report.complete = true,
            OwnedPkt::Other => self.broken = Some("unexpected delimiter in report".into()),
            OwnedPkt::Data(line) => {
                let line = String::from_utf8_lossy(&line);
                let line = line.strip_suffix('\n').unwrap_or(&line);
                if let Some(status) = line.strip_prefix("unpack ") {
                    self.report.unpack = Some(one_line(status));
                } else if let Some(name) = line.strip_prefix("ok ") {
                    self.push_ref(RefStatus {
                        name: name.to_owned(),
                        ok: true,
                        reason: None,
                    });
                } else if let Some(rest) = line.strip_prefix("ng ") {
                    let (name, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                    self.push_ref(RefStatus {
                        name: name.to_owned(),
                        ok: false,
                        reason: Some(one_line(reason)),
                    });
                } else if line.starts_with("option ") {
                    // report-status-v2 detail about the previous ref; not needed.
                } else {
                    self.broken = Some("unexpected line in report".into());
                }
            }
        }
    }

    fn push_ref(&mut self, status: RefStatus) {
        if self.report.refs.len() < MAX_COMMANDS {
            self.report.refs.push(status);
        }
    }

    /// Whether the report's closing flush has been seen.
    pub fn is_complete(&self) -> bool {
        self.report.complete
    }

    /// Why parsing stopped early, if it did.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// The report so far.
    pub fn report(&self) -> &PushReport {
        &self.report
    }

    /// The report, consuming the tap.
    pub fn into_report(self) -> PushReport {
        self.report
    }
}

enum OwnedPkt {
    Data(Vec<u8>),
    Flush,
    Other,
}

fn pkt_len(buf: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(buf.get(..4)?).ok()?;
    usize::from_str_radix(s, 16).ok()
}

/// Parses a whole receive-pack response body at once (for tests and small
/// buffered bodies).
pub fn parse_report_status(body: &[u8], sideband: bool) -> PushReport {
    let mut tap = ReportStatusTap::new(sideband);
    tap.feed(body);
    tap.into_report()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{RefKind, RefOp};

    fn upd(name: &str) -> RefUpdate {
        RefUpdate {
            old: "1".repeat(40),
            new: "2".repeat(40),
            name: name.into(),
            op: RefOp::Update,
            kind: RefKind::Branch,
        }
    }

    fn caps(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rejection_without_sideband() {
        let body = rejection_response(
            true,
            &[upd("refs/heads/main"), upd("refs/heads/dev")],
            &[RefDenial::for_ref(
                "refs/heads/main",
                "denied by policy protect-main",
            )],
            &caps(&["report-status"]),
        );
        assert_eq!(
            body,
            b"000eunpack ok\n0035ng refs/heads/main denied by policy protect-main\n\
0038ng refs/heads/dev other ref denied in the same push\n0000"
                .as_slice()
        );
        let report = parse_report_status(&body, false);
        assert!(report.complete);
        assert_eq!(report.unpack.as_deref(), Some("ok"));
        assert_eq!(
            report.refs[0].reason.as_deref(),
            Some("denied by policy protect-main")
        );
        assert!(report.refs.iter().all(|r| !r.ok));
    }

    #[test]
    fn rejection_with_sideband_round_trips_through_the_tap() {
        let body = rejection_response(
            true,
            &[upd("refs/heads/main")],
            &[RefDenial::whole(
                "denied by policy protect-main\nsecond line",
            )],
            &caps(&["report-status-v2", "side-band-64k"]),
        );
        assert!(body.starts_with(b"0039\x02latchkey: denied by policy protect-main second line\n"));
        assert!(body.ends_with(b"0000"));
        // Feed byte by byte: the tap must cope with any chunking.
        let mut tap = ReportStatusTap::new(true);
        for b in &body {
            tap.feed(std::slice::from_ref(b));
        }
        assert!(tap.broken().is_none(), "{:?}", tap.broken());
        let r = tap.into_report();
        assert!(r.complete);
        assert_eq!(r.refs.len(), 1);
        assert_eq!(r.refs[0].name, "refs/heads/main");
    }

    #[test]
    fn upload_pack_rejection_and_info_refs_error() {
        let body = rejection_response(false, &[], &[RefDenial::whole("denied by policy p")], &[]);
        assert_eq!(body, b"0025ERR latchkey: denied by policy p\n");
        let body = error_for_info_refs(crate::route::Service::UploadPack, "denied by policy p");
        assert_eq!(
            body,
            b"001e# service=git-upload-pack\n00000024ERR latchkey: denied by policy p".as_slice()
        );
    }

    /// Captured from `git http-backend` (git 2.47) answering a push of two
    /// refs with side-band-64k and report-status-v2, one rejected by a hook.
    #[test]
    fn reads_a_real_sideband_report() {
        let mut inner = Vec::new();
        write_pkt_line(&mut inner, b"unpack ok\n");
        write_pkt_line(&mut inner, b"ok refs/heads/feature\n");
        write_pkt_line(&mut inner, b"option refname refs/heads/feature\n");
        write_pkt_line(
            &mut inner,
            b"ng refs/heads/main pre-receive hook declined\n",
        );
        inner.extend_from_slice(b"0000");
        let mut body = Vec::new();
        write_sideband(&mut body, Band::Progress, b"hook says no\n", 65520);
        write_sideband(&mut body, Band::Data, &inner, 65520);
        body.extend_from_slice(b"0000");
        for split in 0..body.len() {
            let mut tap = ReportStatusTap::new(true);
            tap.feed(&body[..split]);
            tap.feed(&body[split..]);
            let r = tap.report();
            assert!(r.complete, "split {split}");
            assert_eq!(r.updated_refs().collect::<Vec<_>>(), ["refs/heads/feature"]);
            assert_eq!(
                r.refs[1].reason.as_deref(),
                Some("pre-receive hook declined")
            );
        }
    }

    #[test]
    fn tap_survives_garbage() {
        let mut tap = ReportStatusTap::new(true);
        tap.feed(b"zzzzzzzz");
        assert!(tap.broken().is_some());
        tap.feed(b"0000");
        assert!(!tap.is_complete());
        let mut tap = ReportStatusTap::new(true);
        tap.feed(b"0008\x03bad");
        assert_eq!(tap.report().fatal.as_deref(), Some("bad"));
    }
}
