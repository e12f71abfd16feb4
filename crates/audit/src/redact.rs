//! Token-shaped strings never reach the log. Pure code, no I/O.
//!
//! Whatever a caller sends can end up in an event: a revocation's `value`, a
//! refusal's detail quoting a claim, a path. A bearer token there would give
//! anyone who can read the log the caller's credential. So every event is
//! scanned as the JSON that is written, and anything that looks like a JWT
//! (three or more base64url segments joined by `.`, the first of which
//! decodes to a JSON object) is replaced by `jti:<jti>` when its payload
//! names a plain `jti`, else by `sha256:<hex of the token>`. JWE (five
//! segments) is covered the same way.
//!
//! Scanning the serialized JSON covers every field, present and future, at
//! once. Base64url characters and `.` are never escaped in JSON, so a token
//! in a string appears verbatim; escapes (`\n`, `\u00XX`) end a run so they
//! cannot hide one.

use std::fmt::Write as _;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Decodes tried per run of base64url characters: a bound on the work an
/// event can cause, generous for what clients send by mistake (a token, perhaps
/// behind a few glued characters), not a hiding place worth having: whoever
/// hides a token on purpose holds it already.
const MAX_DECODE_ATTEMPTS: usize = 64;

/// The longest `jti` recorded as such; longer ones are hashed with the token.
const MAX_JTI: usize = 128;

/// `json` with every token-shaped string replaced, or `None` when it holds none.
pub(crate) fn redact_tokens(json: &str) -> Option<String> {
    let bytes = json.as_bytes();
    let mut out: Option<String> = None;
    // Everything before `copied` is already in `out`.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' {
            // `\uXXXX` or a two-byte escape: not part of any run.
            i += if bytes.get(i + 1) == Some(&b'u') {
                6
            } else {
                2
            };
            continue;
        }
        if !is_run_byte(b) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_run_byte(bytes[i]) {
            i += 1;
        }
        let run = &json[start..i];
        if let Some((from, replacement)) = find_token(run) {
            let out = out.get_or_insert_with(|| String::with_capacity(json.len()));
            out.push_str(&json[copied..start + from]);
            out.push_str(&replacement);
            copied = i;
        }
    }
    let mut out = out?;
    out.push_str(&json[copied..]);
    Some(out)
}

fn is_run_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// In a run of base64url characters and dots: where a token starts (it runs
/// to the end of the run) and what replaces it.
fn find_token(run: &str) -> Option<(usize, String)> {
    if run.bytes().filter(|&b| b == b'.').count() < 2 {
        return None;
    }
    let mut seg_start = 0;
    let mut attempts = 0usize;
    for seg in run.split('.') {
        let rest_dots = run[seg_start + seg.len()..]
            .bytes()
            .filter(|&b| b == b'.')
            .count();
        if rest_dots < 2 {
            return None;
        }
        // A JSON object in base64url starts with `e` (`{` is 0x7b); try each
        // `e` so that characters glued in front cannot hide a token.
        //
        // INVARIANT: the work per run is linear in its length: at most
        // `MAX_DECODE_ATTEMPTS` decodes, and only where the bytes can start a
        // JSON object (`{"`, `{ `, `{\n`, `{}` encode as `ey`, `ew`, `e3`).
        for (p, _) in seg.match_indices('e') {
            let next = seg.as_bytes().get(p + 1).copied();
            if !matches!(next, Some(b'y' | b'w' | b'3')) {
                continue;
            }
            attempts += 1;
            if attempts > MAX_DECODE_ATTEMPTS {
                return None;
            }
            if json_object(&seg[p..]).is_some() {
                let from = seg_start + p;
                return Some((from, replacement(&run[from..])));
            }
        }
        seg_start += seg.len() + 1;
    }
    None
}

fn json_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn replacement(token: &str) -> String {
    let jti = token
        .split('.')
        .nth(1)
        .and_then(json_object)
        .and_then(|claims| match claims.get("jti") {
            Some(Value::String(jti)) => Some(jti.clone()),
            _ => None,
        })
        .filter(|jti| {
            !jti.is_empty()
                && jti.len() <= MAX_JTI
                && jti
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':'))
        });
    match jti {
        Some(jti) => format!("jti:{jti}"),
        None => {
            let d = digest::digest(&digest::SHA256, token.as_bytes());
            let mut out = String::from("sha256:");
            for b in d.as_ref() {
                let _ = write!(out, "{b:02x}");
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.{}",
            b64(r#"{"alg":"EdDSA","kid":"k1"}"#),
            b64(claims),
            b64("not really a signature, but secret")
        )
    }

    fn json_of(s: &str) -> String {
        serde_json::to_string(&serde_json::json!({ "value": s })).unwrap()
    }

    #[test]
    fn a_token_with_a_jti_is_recorded_as_its_jti() {
        let t = jwt(r#"{"sub":"alice","jti":"0f8e-42_a"}"#);
        let out = redact_tokens(&json_of(&t)).unwrap();
        assert_eq!(out, r#"{"value":"jti:0f8e-42_a"}"#);
    }

    #[test]
    fn a_token_without_a_usable_jti_is_recorded_as_a_hash() {
        for claims in [
            r#"{"sub":"alice"}"#,
            r#"{"jti":"has \"quotes\" and spaces"}"#,
            r#"{"jti":12}"#,
        ] {
            let t = jwt(claims);
            let out = redact_tokens(&json_of(&t)).unwrap();
            let d = digest::digest(&digest::SHA256, t.as_bytes());
            assert_eq!(out, format!(r#"{{"value":"sha256:{}"}}"#, hex::encode(d)));
        }
        // An empty signature (`alg: none`) and a payload that is not JSON.
        let t = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("junk"));
        assert!(redact_tokens(&json_of(&t)).unwrap().contains("sha256:"));
    }

    #[test]
    fn tokens_inside_text_escapes_and_nested_fields_are_found() {
        let t = jwt(r#"{"jti":"abc"}"#);
        let text = format!("refused: token `{t}`\nand Bearer {t}, also x{t}");
        let json = serde_json::to_string(&serde_json::json!({
            "outcome": { "detail": text },
            "context": { "list": [format!("\t{t}")], "path": format!("/git/x/{t}/app.git") },
        }))
        .unwrap();
        let out = redact_tokens(&json).unwrap();
        assert!(!out.contains(t.split('.').nth(2).unwrap()), "{out}");
        assert_eq!(out.matches("jti:abc").count(), 5, "{out}");
        assert!(serde_json::from_str::<Value>(&out).is_ok());
    }

    #[test]
    fn whatever_surrounds_a_token_it_is_removed_and_the_json_stays_valid() {
        let t = jwt(r#"{"sub":"alice"}"#);
        let sig = t.rsplit('.').next().unwrap().to_owned();
        let glue = [
            "", "x", "e", "ey", ".", "..", "a.b.", "\n", "\"", "\\", "\u{e9}", " ", "=", "%2E",
            "é", "\u{0}", "-_", "eyJ",
        ];
        for before in glue {
            for after in glue {
                let text = format!("{before}{t}{after}");
                let json =
                    serde_json::to_string(&serde_json::json!({ "v": text, "n": 1 })).unwrap();
                let out = redact_tokens(&json).unwrap_or(json);
                assert!(!out.contains(&sig), "{before:?} {after:?}: {out}");
                let v: Value = serde_json::from_str(&out).unwrap();
                assert_eq!(v["n"], 1);
            }
        }
    }

    #[test]
    fn jwe_is_covered() {
        let jwe = format!(
            "{}.{}.{}.{}.{}",
            b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#),
            b64("key"),
            b64("iv"),
            b64("ciphertext"),
            b64("tag")
        );
        let out = redact_tokens(&json_of(&jwe)).unwrap();
        assert!(out.starts_with(r#"{"value":"sha256:"#), "{out}");
    }

    #[test]
    fn ordinary_values_are_untouched() {
        for s in [
            "example.com.au",
            "v1.2.3",
            "refs/heads/main",
            "gitea/acme/app:refs/heads/release-1.2.3",
            "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef",
            "a.b.c.d.e",
            "eyJub3QganNvbg.eyJ4.eyJ5",
        ] {
            assert_eq!(redact_tokens(&json_of(s)), None, "{s}");
        }
    }

    /// The scan is linear: a long run full of would-be object starts costs
    /// at most `MAX_DECODE_ATTEMPTS` decodes, and its output is still the
    /// input (nothing token-shaped in it).
    #[test]
    fn adversarial_runs_are_bounded_and_left_alone() {
        let run = format!("{}.{}.{}", "ey".repeat(200_000), "ew".repeat(1000), "e3");
        let json = serde_json::json!({ "detail": run }).to_string();
        assert_eq!(redact_tokens(&json), None);
    }

    /// Mixed, mutated inputs: never a panic, always valid JSON out, and the
    /// token's signature never survives.
    #[test]
    fn mutated_events_stay_json_and_lose_the_token() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","kid":"k1"}"#);
        let claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","jti":"AAAAAAAAAAAAAAAAAAAAAA"}"#);
        let signature = "c2lnbmF0dXJlLXRoYXQtbXVzdC1ub3QtbGVhaw";
        let token = format!("{header}.{claims}.{signature}");
        let pieces = ["x", ".", "\\", "\"", "\n", " ", "é", "ey", "=", &token];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..8 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(pieces[(state % pieces.len() as u64) as usize]);
            }
            text.push_str(&token);
            let json = serde_json::json!({ "value": text }).to_string();
            let out = redact_tokens(&json).unwrap_or_else(|| json.clone());
            assert!(serde_json::from_str::<Value>(&out).is_ok(), "{out}");
            assert!(!out.contains(signature), "{out}");
        }
    }
}
