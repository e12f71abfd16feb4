//! Reading a witness's checkpoints for `latchkey audit verify --witness`.

use anyhow::{Context, Result, bail};
use latchkey_audit::Checkpoint;

/// The most a witness answer may hold (a checkpoint line is about 400 bytes;
/// this is years of checkpoints every ten seconds, not unbounded).
const MAX_WITNESS_BYTES: usize = 1 << 30;

/// The checkpoints held by a witness file, or served by a witness URL on GET.
pub(crate) async fn load(source: &str) -> Result<Vec<Checkpoint>> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        let response = reqwest::Client::new()
            .get(source)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await
            .context("the witness did not answer")?;
        if !response.status().is_success() {
            bail!(
                "the witness answered {}; it should answer GET with the checkpoints it holds",
                response.status()
            );
        }
        let body = response
            .bytes()
            .await
            .context("reading the witness's answer")?;
        if body.len() > MAX_WITNESS_BYTES {
            bail!("the witness's answer is larger than {MAX_WITNESS_BYTES} bytes");
        }
        String::from_utf8(body.to_vec()).context("the witness's answer is not UTF-8")?
    } else {
        std::fs::read_to_string(source).context("cannot read the file")?
    };
    parse(&text)
}

/// A JSON array of checkpoints, or one checkpoint per line.
fn parse(text: &str) -> Result<Vec<Checkpoint>> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text).context("the witness's JSON array is not checkpoints");
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("line {} is not a checkpoint", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CP: &str = r#"{"v":2,"n":1,"prev":"00","seq":0,"hash":"00","log_bytes":0,"time_ms":1,"key_id":"audit-1","sig":"x"}"#;

    #[test]
    fn json_lines_and_arrays_are_read() {
        assert_eq!(parse(&format!("{CP}\n\n{CP}\n")).unwrap().len(), 2);
        assert_eq!(parse(&format!(" [{CP},{CP}]")).unwrap().len(), 2);
        assert_eq!(parse("").unwrap().len(), 0);
        let err = parse(&format!("{CP}\nnot json\n")).unwrap_err();
        assert_eq!(err.to_string(), "line 2 is not a checkpoint");
    }
}
