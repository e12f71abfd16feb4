//! The front of an upload-pack request (`gitprotocol-v2(5)` and
//! `gitprotocol-pack(5)`): which command a fetch asks for, read before the
//! decision so that nothing reaches the upstream that was not decided.
//! Pure: no I/O.
//!
//! Every upload-pack command reads the repository the route names, so one
//! `git.read` decision covers it; the command goes into the decision's
//! context (`command`), and a request git would read as a command other than
//! the four below, or as two commands, is refused.

use crate::GitError;
use crate::pktline::{Pkt, PktParse, parse_pkt};

/// Bound on the part of a v2 request read before deciding (the command and
/// its capability lines).
pub const MAX_UPLOAD_PRELUDE: usize = 64 * 1024;

/// The protocol v2 commands upload-pack serves. All are reads.
pub const V2_COMMANDS: [&str; 4] = ["ls-refs", "fetch", "object-info", "bundle-uri"];

/// What the front of an upload-pack request says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadParse {
    /// More bytes are needed.
    Incomplete,
    /// The command, and the bytes of the request read so far that it used.
    Complete {
        /// `fetch` for protocol v0/v1; the v2 `command=` otherwise.
        command: String,
        /// Bytes used by the command and capability section.
        consumed: usize,
    },
}

fn protocol(msg: impl Into<String>) -> GitError {
    GitError::Protocol(msg.into())
}

/// Reads the command of an upload-pack request. `v2` says whether the
/// request's `Git-Protocol` header asks for protocol version 2 (as git
/// decides it: the header is what `git upload-pack` sees as
/// `GIT_PROTOCOL`). For v0/v1 the only command is `fetch` and nothing is
/// read.
///
/// INVARIANT: the command returned is the one `git upload-pack` runs: like
/// git's `process_request`, every line up to the first delimiter or flush
/// is a `command=` or a capability; a second `command=`, a NUL (git reads
/// lines as C strings) or an unknown command is refused.
pub fn parse_upload_pack_command(buf: &[u8], v2: bool) -> Result<UploadParse, GitError> {
    if !v2 {
        return Ok(UploadParse::Complete {
            command: "fetch".into(),
            consumed: 0,
        });
    }
    let mut pos = 0usize;
    let mut command: Option<String> = None;
    loop {
        let (pkt, used) = match parse_pkt(&buf[pos..]).map_err(|e| protocol(e.to_string()))? {
            PktParse::Incomplete => {
                if buf.len() > MAX_UPLOAD_PRELUDE {
                    return Err(GitError::TooLarge(format!(
                        "the fetch request's command section is larger than {MAX_UPLOAD_PRELUDE} bytes"
                    )));
                }
                return Ok(UploadParse::Incomplete);
            }
            PktParse::Complete { pkt, consumed } => (pkt, consumed),
        };
        pos += used;
        if pos > MAX_UPLOAD_PRELUDE {
            return Err(GitError::TooLarge(format!(
                "the fetch request's command section is larger than {MAX_UPLOAD_PRELUDE} bytes"
            )));
        }
        let line = match pkt {
            Pkt::Delim | Pkt::Flush => break,
            Pkt::ResponseEnd => return Err(protocol("unexpected response-end in a fetch request")),
            Pkt::Data(l) => l.strip_suffix(b"\n").unwrap_or(l),
        };
        if line.contains(&0) {
            return Err(protocol("a fetch request line contains a NUL byte"));
        }
        if let Some(name) = line.strip_prefix(b"command=") {
            if command.is_some() {
                return Err(protocol("a fetch request may name only one command"));
            }
            let name = std::str::from_utf8(name).unwrap_or("");
            if !V2_COMMANDS.contains(&name) {
                return Err(protocol(format!(
                    "unsupported protocol v2 command `{}`; upload-pack serves {}",
                    name.chars().take(40).collect::<String>().escape_debug(),
                    V2_COMMANDS.join(", ")
                )));
            }
            command = Some(name.to_owned());
        }
    }
    match command {
        Some(command) => Ok(UploadParse::Complete {
            command,
            consumed: pos,
        }),
        None => Err(protocol("a protocol v2 fetch request names no `command=`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::pkt_line;

    fn req(lines: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            match *l {
                b"" => out.extend_from_slice(b"0000"),
                b"|" => out.extend_from_slice(b"0001"),
                l => out.extend_from_slice(&pkt_line(l)),
            }
        }
        out
    }

    /// Shaped like `GIT_TRACE_PACKET` of `git -c protocol.version=2 fetch`.
    #[test]
    fn reads_the_v2_command() {
        let body = req(&[
            b"command=ls-refs\n",
            b"agent=git/2.47.3\n",
            b"object-format=sha1",
            b"|",
            b"peel\n",
            b"ref-prefix HEAD\n",
            b"",
        ]);
        match parse_upload_pack_command(&body, true).unwrap() {
            UploadParse::Complete { command, consumed } => {
                assert_eq!(command, "ls-refs");
                assert!(consumed < body.len());
            }
            UploadParse::Incomplete => panic!("incomplete"),
        }
        for cut in 0..20 {
            assert_eq!(
                parse_upload_pack_command(&body[..cut], true).unwrap(),
                UploadParse::Incomplete
            );
        }
        assert!(matches!(
            parse_upload_pack_command(b"", false).unwrap(),
            UploadParse::Complete { command, .. } if command == "fetch"
        ));
    }

    #[test]
    fn refuses_what_git_would_read_differently() {
        for (body, why) in [
            (
                req(&[b"command=fetch", b"command=ls-refs", b"|", b""]),
                "only one command",
            ),
            (
                req(&[b"command=push", b"|", b""]),
                "unsupported protocol v2 command",
            ),
            (req(&[b"command=fetch\0ls-refs", b"|", b""]), "NUL"),
            (req(&[b"agent=x", b"|", b""]), "names no `command=`"),
        ] {
            let e = parse_upload_pack_command(&body, true)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
