//! The receive-pack request's command section (`gitprotocol-pack(5)`,
//! "Reference Update Request"): shallow lines, ref-update commands with the
//! capability list after the first NUL, an optional push certificate, and
//! push options. Pure: no I/O.

use crate::GitError;
use crate::pktline::{Pkt, PktParse, parse_pkt};

/// Hard bound on the command section, push options included.
pub const MAX_COMMAND_SECTION: usize = 1024 * 1024;
/// Hard bound on the number of ref updates in one push.
pub const MAX_COMMANDS: usize = 10_000;
/// Hard bound on the number of push options in one push.
pub const MAX_PUSH_OPTIONS: usize = 1_000;

/// What a push does to one ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefOp {
    /// The old id is all zeros.
    Create,
    /// Both ids are real objects.
    Update,
    /// The new id is all zeros.
    Delete,
}

impl RefOp {
    /// `create`, `update` or `delete`, as policies see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// What kind of ref is pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// `refs/heads/...`.
    Branch,
    /// `refs/tags/...`.
    Tag,
    /// Anything else under `refs/` (notes, pull-request refs, ...).
    Other,
}

impl RefKind {
    /// `branch`, `tag` or `other`, as policies see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Branch => "branch",
            Self::Tag => "tag",
            Self::Other => "other",
        }
    }

    fn of(name: &str) -> Self {
        if name.starts_with("refs/heads/") {
            Self::Branch
        } else if name.starts_with("refs/tags/") {
            Self::Tag
        } else {
            Self::Other
        }
    }
}

/// One `old new ref` command of a push.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefUpdate {
    /// The id the client believes the ref has (lowercase hex; zeros when creating).
    pub old: String,
    /// The id the ref should get (lowercase hex; zeros when deleting).
    pub new: String,
    /// The full ref name, e.g. `refs/heads/main`.
    pub name: String,
    /// Create, update or delete.
    pub op: RefOp,
    /// Branch, tag or other.
    pub kind: RefKind,
}

impl RefUpdate {
    /// The ref name without `refs/heads/` or `refs/tags/` (the full name for
    /// other refs).
    pub fn short_name(&self) -> &str {
        self.name
            .strip_prefix("refs/heads/")
            .or_else(|| self.name.strip_prefix("refs/tags/"))
            .unwrap_or(&self.name)
    }
}

/// The result of parsing the front of a receive-pack request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandsParse {
    /// More bytes are needed to finish the command section.
    Incomplete,
    /// The command section is complete.
    Complete {
        /// The ref updates, in request order (unsigned commands first, then
        /// those in a push certificate).
        updates: Vec<RefUpdate>,
        /// The capabilities the client asked for.
        capabilities: Vec<String>,
        /// Push options (`git push -o`), when the client sent any.
        push_options: Vec<String>,
        /// Whether the commands came in a push certificate (`git push
        /// --signed`). Latchkey does not check the signature; the upstream
        /// may.
        signed: bool,
        /// Bytes of the (decompressed) body that the section used; the pack
        /// follows.
        consumed: usize,
    },
}

fn protocol(msg: impl Into<String>) -> GitError {
    GitError::Protocol(msg.into())
}

fn too_large() -> GitError {
    GitError::TooLarge(format!(
        "the push command section is larger than {MAX_COMMAND_SECTION} bytes; push fewer refs at once"
    ))
}

fn is_hex_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_zero_id(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

/// Printable, truncated form of untrusted bytes for error messages.
fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out: String = s
        .chars()
        .take(80)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if s.chars().count() > 80 {
        out.push_str("...");
    }
    out
}

/// A conservative version of `git check-ref-format` for names a push may
/// update: everything git itself would refuse is refused here too, so a
/// policy never sees one spelling while the upstream applies another.
pub fn validate_ref_name(name: &str) -> Result<(), GitError> {
    let bad = |why: &str| {
        protocol(format!(
            "invalid ref name `{}`: {why}",
            show(name.as_bytes())
        ))
    };
    if !name.starts_with("refs/") {
        return Err(bad("a pushed ref must start with `refs/`"));
    }
    if name.len() > 1024 {
        return Err(bad("longer than 1024 bytes"));
    }
    if name.ends_with('/') || name.ends_with('.') {
        return Err(bad("may not end with `/` or `.`"));
    }
    if name.contains("..") || name.contains("@{") || name.contains("//") {
        return Err(bad("may not contain `..`, `@{` or `//`"));
    }
    if name
        .bytes()
        .any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b))
    {
        return Err(bad(
            "may not contain spaces, control characters or any of ~^:?*[\\",
        ));
    }
    for component in name.split('/') {
        if component.starts_with('.') || component.ends_with(".lock") || component == "@" {
            return Err(bad(
                "a component may not start with `.`, end with `.lock` or be `@`",
            ));
        }
    }
    Ok(())
}

/// Parses one `old SP new SP refname` command (no newline, no NUL).
fn parse_command(line: &[u8]) -> Result<RefUpdate, GitError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| protocol(format!("command is not UTF-8: `{}`", show(line))))?;
    let mut parts = text.splitn(3, ' ');
    let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(protocol(format!(
            "expected `old new ref`, got `{}`",
            show(line)
        )));
    };
    if !is_hex_id(old) || !is_hex_id(new) || old.len() != new.len() {
        return Err(protocol(format!(
            "expected two object ids of the same hash, got `{}`",
            show(line)
        )));
    }
    validate_ref_name(name)?;
    let (old, new) = (old.to_ascii_lowercase(), new.to_ascii_lowercase());
    let op = if is_zero_id(&new) {
        RefOp::Delete
    } else if is_zero_id(&old) {
        RefOp::Create
    } else {
        RefOp::Update
    };
    Ok(RefUpdate {
        kind: RefKind::of(name),
        name: name.to_owned(),
        old,
        new,
        op,
    })
}

/// Commands inside a push certificate, read as git's `queue_commands_from_cert`
/// reads them: every line after the first blank line and before the start of
/// the signature is a command. Git takes the *last* line that starts with a
/// signature armor as the signature's start (`parse_signed_buffer`), so a
/// certificate with more than one armor line, or any other `-----BEGIN` line,
/// is refused: the lines between two armors would be commands to git.
fn cert_commands(cert: &[u8], updates: &mut Vec<RefUpdate>) -> Result<(), GitError> {
    let Some(blank) = cert.windows(2).position(|w| w == b"\n\n") else {
        return Err(protocol(
            "malformed push certificate: no blank line after the header",
        ));
    };
    let body_start = blank + 2;
    // Every line ends with `\n` (checked as the certificate was read).
    let mut line_start = 0usize;
    let mut signature_start: Option<usize> = None;
    for line in cert.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"-----BEGIN") {
            if signature_start.is_some() {
                return Err(protocol(
                    "push certificate has more than one armor line; git would read the lines between them as commands",
                ));
            }
            if !SIGNATURE_ARMORS.iter().any(|a| line.starts_with(a)) {
                return Err(protocol(format!(
                    "push certificate has an unknown armor line `{}`",
                    show(line)
                )));
            }
            if line_start < body_start {
                return Err(protocol(
                    "push certificate's signature starts before its commands",
                ));
            }
            signature_start = Some(line_start);
        }
        line_start += line.len();
    }
    let end = signature_start.unwrap_or(cert.len());
    for line in cert[body_start..end].split_inclusive(|&b| b == b'\n') {
        // Git parses an empty line as a command too, and dies on it.
        updates.push(parse_command(chomp(line))?);
    }
    Ok(())
}

/// The lines git's `get_format_by_sig` takes as the start of a signature
/// (OpenPGP, X.509 and SSH formats).
const SIGNATURE_ARMORS: [&[u8]; 4] = [
    b"-----BEGIN PGP SIGNATURE-----",
    b"-----BEGIN PGP MESSAGE-----",
    b"-----BEGIN SIGNED MESSAGE-----",
    b"-----BEGIN SSH SIGNATURE-----",
];

fn chomp(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

fn too_many_updates() -> GitError {
    GitError::TooLarge(format!(
        "more than {MAX_COMMANDS} ref updates in one push; push fewer refs at once"
    ))
}

/// Parses the command section at the front of a (decompressed) receive-pack
/// request body. Returns [`CommandsParse::Incomplete`] until the section's
/// flush-pkt (and push options, if announced) are in `buf`.
///
/// INVARIANT: every command git's `read_head_info` would queue from these
/// bytes is in `updates`. Where git reads bytes differently from a plain
/// reading (a line is a C string to git: it ends at its first NUL), the
/// section is refused rather than guessed at:
/// - a NUL is allowed only once, on the first line, before the capability
///   list (which itself may not contain another NUL);
/// - certificate lines carry no NUL and end with exactly one newline, so the
///   certificate git assembles is byte for byte the one parsed here;
/// - a certificate may not be mixed with unsigned commands, appear twice or be
///   cut short by a flush-pkt, and its signature must start at its single armor
///   line (see [`cert_commands`]).
///
/// Whether a certificate is acceptable at all is the caller's choice: see
/// `signed` in [`CommandsParse::Complete`].
pub fn parse_receive_pack_commands(buf: &[u8]) -> Result<CommandsParse, GitError> {
    let mut pos = 0usize;
    let mut updates = Vec::new();
    let mut capabilities: Vec<String> = Vec::new();
    let mut cert: Option<Vec<u8>> = None;
    let mut first_line = true;

    // Reads the next pkt-line, enforcing the section bound.
    let next = |pos: usize| -> Result<Option<(Pkt<'_>, usize)>, GitError> {
        match parse_pkt(&buf[pos..]).map_err(|e| protocol(e.to_string()))? {
            PktParse::Incomplete => {
                if buf.len() > MAX_COMMAND_SECTION {
                    Err(too_large())
                } else {
                    Ok(None)
                }
            }
            PktParse::Complete { pkt, consumed } => {
                if pos + consumed > MAX_COMMAND_SECTION {
                    Err(too_large())
                } else {
                    Ok(Some((pkt, consumed)))
                }
            }
        }
    };

    loop {
        let Some((pkt, used)) = next(pos)? else {
            return Ok(CommandsParse::Incomplete);
        };
        pos += used;
        let raw = match pkt {
            Pkt::Flush => break,
            Pkt::Data(line) => line,
            Pkt::Delim | Pkt::ResponseEnd => {
                return Err(protocol("unexpected delimiter in the push command list"));
            }
        };
        // git's packet reader strips one trailing newline, then treats the
        // line as a C string.
        let mut line = chomp(raw);
        let is_first = std::mem::replace(&mut first_line, false);
        if line.len() > 8 && line.starts_with(b"shallow ") {
            // git reads the id and ignores what follows; insisting on exactly
            // an id (and no NUL) leaves nothing for the two readings to differ on.
            let id = std::str::from_utf8(&line[8..]).unwrap_or("");
            if !is_hex_id(id) {
                return Err(protocol(format!("invalid shallow line `{}`", show(raw))));
            }
            first_line = is_first;
            continue;
        }
        if let Some(nul) = line.iter().position(|&b| b == 0) {
            if !is_first {
                return Err(protocol(
                    "a capability list is allowed only on the first command line",
                ));
            }
            let caps = &line[nul + 1..];
            if caps.contains(&0) {
                return Err(protocol("the capability list contains a NUL byte"));
            }
            let caps =
                std::str::from_utf8(caps).map_err(|_| protocol("capability list is not UTF-8"))?;
            for cap in caps.split(' ').filter(|c| !c.is_empty()) {
                if !capabilities.iter().any(|c| c == cap) {
                    capabilities.push(cap.to_owned());
                }
            }
            line = &line[..nul];
        }
        if line == b"push-cert" {
            if cert.is_some() {
                return Err(protocol("more than one push certificate in one push"));
            }
            if !updates.is_empty() {
                return Err(protocol(
                    "a push certificate may not follow unsigned commands",
                ));
            }
            let body = cert.insert(Vec::new());
            loop {
                let Some((pkt, used)) = next(pos)? else {
                    return Ok(CommandsParse::Incomplete);
                };
                pos += used;
                match pkt {
                    Pkt::Data(b"push-cert-end\n") => break,
                    Pkt::Data(l) => {
                        if l.contains(&0) {
                            return Err(protocol("a push certificate line contains a NUL byte"));
                        }
                        if l.iter().position(|&b| b == b'\n') != l.len().checked_sub(1) {
                            return Err(protocol(
                                "each push certificate line must end with exactly one newline",
                            ));
                        }
                        body.extend_from_slice(l);
                    }
                    Pkt::Flush => {
                        return Err(protocol(
                            "the push certificate ended without `push-cert-end`",
                        ));
                    }
                    Pkt::Delim | Pkt::ResponseEnd => {
                        return Err(protocol("unexpected delimiter in a push certificate"));
                    }
                }
            }
            continue;
        }
        if cert.is_some() {
            return Err(protocol(
                "unsigned commands may not follow a push certificate",
            ));
        }
        updates.push(parse_command(line)?);
        if updates.len() > MAX_COMMANDS {
            return Err(too_many_updates());
        }
    }
    let signed = cert.is_some();
    if let Some(cert) = &cert {
        cert_commands(cert, &mut updates)?;
        if updates.is_empty() {
            return Err(protocol("the push certificate carries no command"));
        }
        if updates.len() > MAX_COMMANDS {
            return Err(too_many_updates());
        }
    }

    // receive-pack reads push options only when there are commands.
    let mut push_options = Vec::new();
    if !updates.is_empty() && capabilities.iter().any(|c| c == "push-options") {
        loop {
            let Some((pkt, used)) = next(pos)? else {
                return Ok(CommandsParse::Incomplete);
            };
            pos += used;
            match pkt {
                Pkt::Data(l) => {
                    if push_options.len() >= MAX_PUSH_OPTIONS {
                        return Err(GitError::TooLarge(format!(
                            "more than {MAX_PUSH_OPTIONS} push options"
                        )));
                    }
                    push_options.push(String::from_utf8_lossy(chomp(l)).into_owned());
                }
                _ => break,
            }
        }
    }
    Ok(CommandsParse::Complete {
        updates,
        capabilities,
        push_options,
        signed,
        consumed: pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::pkt_line;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn body(lines: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            if l.is_empty() {
                out.extend_from_slice(b"0000");
            } else {
                out.extend_from_slice(&pkt_line(l));
            }
        }
        out
    }

    fn complete(buf: &[u8]) -> (Vec<RefUpdate>, Vec<String>, Vec<String>, usize) {
        match parse_receive_pack_commands(buf).unwrap() {
            CommandsParse::Complete {
                updates,
                capabilities,
                push_options,
                consumed,
                ..
            } => (updates, capabilities, push_options, consumed),
            CommandsParse::Incomplete => panic!("incomplete"),
        }
    }

    /// Captured with `GIT_TRACE_PACKET` from `git push` (git 2.47) of a new
    /// branch, then the PACK header follows.
    #[test]
    fn parses_a_real_push() {
        let first = format!(
            "{Z} {A} refs/heads/feature\0 report-status-v2 side-band-64k object-format=sha1 agent=git/2.47.3"
        );
        let mut buf = body(&[first.as_bytes(), b""]);
        let section = buf.len();
        buf.extend_from_slice(b"PACK\0\0\0\x02");
        let (updates, caps, opts, consumed) = complete(&buf);
        assert_eq!(consumed, section);
        assert_eq!(
            caps,
            [
                "report-status-v2",
                "side-band-64k",
                "object-format=sha1",
                "agent=git/2.47.3"
            ]
        );
        assert!(opts.is_empty());
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].name, "refs/heads/feature");
        assert_eq!(updates[0].op, RefOp::Create);
        assert_eq!(updates[0].kind, RefKind::Branch);
        assert_eq!(updates[0].short_name(), "feature");
    }

    #[test]
    fn classifies_ops_and_kinds() {
        let l1 = format!("{A} {B} refs/heads/main\0report-status");
        let l2 = format!("{A} {Z} refs/tags/v1\n");
        let l3 = format!("{Z} {B} refs/notes/commits\n");
        let (u, caps, _, _) = complete(&body(&[l1.as_bytes(), l2.as_bytes(), l3.as_bytes(), b""]));
        assert_eq!(caps, ["report-status"]);
        assert_eq!(
            u.iter()
                .map(|u| (u.op, u.kind, u.short_name()))
                .collect::<Vec<_>>(),
            [
                (RefOp::Update, RefKind::Branch, "main"),
                (RefOp::Delete, RefKind::Tag, "v1"),
                (RefOp::Create, RefKind::Other, "refs/notes/commits"),
            ]
        );
    }

    #[test]
    fn sha256_ids_and_uppercase_hex() {
        let old = "A".repeat(64);
        let new = "b".repeat(64);
        let l = format!("{old} {new} refs/heads/x\0object-format=sha256");
        let (u, ..) = complete(&body(&[l.as_bytes(), b""]));
        assert_eq!(u[0].old, "a".repeat(64));
        assert_eq!(u[0].op, RefOp::Update);
        let mixed = format!("{A} {} refs/heads/x", "b".repeat(64));
        assert!(matches!(
            parse_receive_pack_commands(&body(&[mixed.as_bytes(), b""])),
            Err(GitError::Protocol(_))
        ));
    }

    #[test]
    fn incomplete_until_flush_and_options() {
        let l = format!("{A} {B} refs/heads/main\0report-status push-options");
        let full = body(&[l.as_bytes(), b"", b"ci.skip\n", b"reason=x", b""]);
        for cut in 0..full.len() {
            assert_eq!(
                parse_receive_pack_commands(&full[..cut]).unwrap(),
                CommandsParse::Incomplete,
                "cut {cut}"
            );
        }
        let (_, _, opts, consumed) = complete(&full);
        assert_eq!(opts, ["ci.skip", "reason=x"]);
        assert_eq!(consumed, full.len());
    }

    #[test]
    fn skips_shallow_lines() {
        let s = format!("shallow {A}");
        let l = format!("{A} {B} refs/heads/main\0report-status");
        let (u, ..) = complete(&body(&[s.as_bytes(), l.as_bytes(), b""]));
        assert_eq!(u.len(), 1);
        let bad = body(&[b"shallow xyz", b""]);
        assert!(parse_receive_pack_commands(&bad).is_err());
    }

    #[test]
    fn reads_commands_inside_a_push_certificate() {
        let c1 = format!("{A} {B} refs/heads/main\n");
        let c2 = format!("{Z} {B} refs/tags/v2\n");
        let buf = body(&[
            b"push-cert\0report-status side-band-64k",
            b"certificate version 0.1\n",
            b"pusher Alice <a@example.com> 1700000000 +0000\n",
            b"pushee http://example.com/acme/app.git\n",
            b"nonce 1700000000-abc\n",
            b"\n",
            c1.as_bytes(),
            c2.as_bytes(),
            b"-----BEGIN PGP SIGNATURE-----\n",
            b"abc\n",
            b"-----END PGP SIGNATURE-----\n",
            b"push-cert-end\n",
            b"",
        ]);
        let (u, caps, ..) = complete(&buf);
        assert_eq!(caps, ["report-status", "side-band-64k"]);
        assert_eq!(
            u.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            ["refs/heads/main", "refs/tags/v2"]
        );
        let no_blank = body(&[
            b"push-cert\0report-status",
            b"certificate version 0.1\n",
            b"push-cert-end\n",
            b"",
        ]);
        assert!(parse_receive_pack_commands(&no_blank).is_err());
    }

    fn refused(lines: &[&[u8]]) -> String {
        match parse_receive_pack_commands(&body(lines)) {
            Err(GitError::Protocol(m)) => m,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    /// Regression (issue 11.1): git reads each line as a C string, so bytes
    /// after a NUL in a certificate line are invisible to it.
    #[test]
    fn refuses_what_git_would_read_differently() {
        let c = format!("{A} {B} refs/heads/main\n");
        let head: [&[u8]; 3] = [
            b"push-cert\0report-status",
            b"certificate version 0.1\n",
            b"\n",
        ];
        let with = |extra: &[&[u8]]| -> Vec<Vec<u8>> {
            head.iter()
                .map(|l| l.to_vec())
                .chain(extra.iter().map(|l| l.to_vec()))
                .collect()
        };
        let run = |lines: Vec<Vec<u8>>| {
            let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
            refused(&refs)
        };
        let m = run(with(&[
            b"x\n\0\n\n-----BEGIN PGP SIGNATURE-----\n",
            c.as_bytes(),
            b"push-cert-end\n",
            b"",
        ]));
        assert!(m.contains("NUL"), "{m}");
        let m = run(with(&[
            b"-----BEGIN PGP SIGNATURE-----\n",
            c.as_bytes(),
            b"-----BEGIN PGP SIGNATURE-----\n",
            b"push-cert-end\n",
            b"",
        ]));
        assert!(m.contains("more than one armor line"), "{m}");
        let m = run(with(&[b"-----BEGIN FOO-----\n", b"push-cert-end\n", b""]));
        assert!(m.contains("unknown armor line"), "{m}");
        let m = run(with(&[
            c.as_bytes(),
            b"push-cert-end\n\0",
            b"push-cert-end\n",
            b"",
        ]));
        assert!(m.contains("NUL"), "{m}");
        let m = run(with(&[c.as_bytes(), b"", b"push-cert-end\n", b""]));
        assert!(m.contains("without `push-cert-end`"), "{m}");
        let m = run(with(&[
            b"half a line",
            b" and the rest\n",
            b"push-cert-end\n",
            b"",
        ]));
        assert!(m.contains("exactly one newline"), "{m}");
        // An empty line among the certificate's commands: git dies on it.
        let m = run(with(&[c.as_bytes(), b"\n", b"push-cert-end\n", b""]));
        assert!(m.contains("expected `old new ref`"), "{m}");
        let m = run(with(&[
            b"-----BEGIN PGP SIGNATURE-----\n",
            b"push-cert-end\n",
            b"",
        ]));
        assert!(m.contains("carries no command"), "{m}");
        // Certificates and unsigned commands do not mix; one certificate only.
        let plain = format!("{A} {B} refs/heads/x\0report-status");
        let m = refused(&[
            plain.as_bytes(),
            b"push-cert",
            b"a\n",
            b"\n",
            c.as_bytes(),
            b"push-cert-end\n",
            b"",
        ]);
        assert!(m.contains("may not follow unsigned"), "{m}");
        let later = format!("{A} {B} refs/heads/x");
        let m = run(with(&[
            c.as_bytes(),
            b"push-cert-end\n",
            later.as_bytes(),
            b"",
        ]));
        assert!(m.contains("may not follow a push certificate"), "{m}");
        // A capability list only on the first line, with no second NUL.
        let second = format!("{A} {B} refs/heads/y\0push-options");
        let m = refused(&[plain.as_bytes(), second.as_bytes(), b""]);
        assert!(m.contains("only on the first"), "{m}");
        let two_nuls = format!("{A} {B} refs/heads/y\0report-status\0push-options");
        let m = refused(&[two_nuls.as_bytes(), b""]);
        assert!(m.contains("NUL"), "{m}");
        // The shallow id is exactly an id.
        let m = refused(&[format!("shallow {A}\0x").as_bytes(), b""]);
        assert!(m.contains("invalid shallow line"), "{m}");
    }

    #[test]
    fn a_signed_push_says_so() {
        let c = format!("{A} {B} refs/heads/main\n");
        let buf = body(&[
            b"push-cert\0report-status",
            b"certificate version 0.1\n",
            b"\n",
            c.as_bytes(),
            b"-----BEGIN SSH SIGNATURE-----\n",
            b"-----END SSH SIGNATURE-----\n",
            b"push-cert-end\n",
            b"",
        ]);
        match parse_receive_pack_commands(&buf).unwrap() {
            CommandsParse::Complete {
                signed, updates, ..
            } => {
                assert!(signed);
                assert_eq!(updates.len(), 1);
            }
            CommandsParse::Incomplete => panic!("incomplete"),
        }
        let plain = format!("{A} {B} refs/heads/main\0report-status");
        match parse_receive_pack_commands(&body(&[plain.as_bytes(), b""])).unwrap() {
            CommandsParse::Complete { signed, .. } => assert!(!signed),
            CommandsParse::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn empty_probe_is_complete_with_no_updates() {
        let (u, caps, _, consumed) = complete(b"0000");
        assert!(u.is_empty() && caps.is_empty());
        assert_eq!(consumed, 4);
    }

    #[test]
    fn rejects_malformed_commands() {
        for l in [
            format!("{A} {B}"),
            format!("{A}  refs/heads/x"),
            format!("{A} {B} HEAD"),
            format!("{A} {B} refs/heads/../main"),
            format!("{A} {B} refs/heads//main"),
            format!("{A} {B} refs/heads/main.lock"),
            format!("{A} {B} refs/heads/ma in"),
            format!("{A} {B} refs/heads/main/"),
            format!("{A} {B} refs/heads/.hidden"),
            format!("{A} {B} refs/heads/x@{{1}}"),
            format!("zz{} {B} refs/heads/x", &A[2..]),
        ] {
            let r = parse_receive_pack_commands(&body(&[l.as_bytes(), b""]));
            assert!(matches!(r, Err(GitError::Protocol(_))), "{l:?}: {r:?}");
        }
        assert!(parse_receive_pack_commands(b"0001").is_err());
        assert!(parse_receive_pack_commands(b"00040000").is_err());
        assert!(parse_receive_pack_commands(b"zzzz").is_err());
        let e = parse_receive_pack_commands(&body(&[b"\xff\xfe"])).unwrap_err();
        assert!(e.to_string().starts_with("git protocol error:"), "{e}");
    }

    #[test]
    fn bounds_the_section() {
        let l = format!("{A} {B} refs/heads/{}\n", "x".repeat(900));
        let mut buf = Vec::new();
        while buf.len() <= MAX_COMMAND_SECTION {
            buf.extend_from_slice(&pkt_line(l.as_bytes()));
        }
        assert!(matches!(
            parse_receive_pack_commands(&buf),
            Err(GitError::TooLarge(_))
        ));
        // An incomplete buffer that is already too big is refused too.
        let mut big = b"fff0".to_vec();
        big.resize(MAX_COMMAND_SECTION + 10, b'a');
        let mut buf2 = buf[..MAX_COMMAND_SECTION - 100].to_vec();
        buf2.extend_from_slice(&big);
        assert!(parse_receive_pack_commands(&buf2).is_err());
    }
}
