//! Audit and key output for people (tables) and tools (`--json`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use latchkey_core::SharedClock;
use latchkey_store::{AuditQuery, Store};

use crate::cli::{AuditArchiveArgs, AuditCommand, AuditQueryArgs, AuditTailArgs, AuditVerifyArgs};
use crate::config::locate;

/// Formats milliseconds since the epoch as RFC 3339 UTC (second precision).
pub(crate) fn fmt_time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// `n` and the noun in the number it needs: `1 policy`, `12 policies`.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Parses RFC 3339 or a duration before `now_ms` (`1h`) into ms since the
/// epoch. Pure, so `--since 1h` is tested against a fixed time.
fn parse_when(s: &str, now_ms: u64) -> Result<u64> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok((t.unix_timestamp().max(0) as u64) * 1000);
    }
    let ago = latchkey_gateway::config::parse_duration(s).map_err(|_| {
        anyhow::anyhow!("`{s}` is neither an RFC 3339 time nor a duration like `1h`")
    })?;
    Ok(now_ms.saturating_sub(ago.as_millis() as u64))
}

/// One line of the people-facing table for an event.
fn event_line(seq: u64, ev: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    let time = ev["time_ms"].as_u64().map(fmt_time).unwrap_or_default();
    let principal = match (&ev["principal"]["kind"], &ev["principal"]["id"]) {
        (serde_json::Value::String(k), serde_json::Value::String(i)) => format!("{k}:{i}"),
        _ => "-".into(),
    };
    let action = s(&ev["action"]);
    let resource = ev["resource"].as_str().unwrap_or("-").to_owned();
    let (verdict, why) = if ev["decision"].is_object() {
        let ids: Vec<String> = ev["decision"]["policy_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let policies = if ids.is_empty() {
            String::new()
        } else {
            format!(" [{}]", ids.join(","))
        };
        (
            s(&ev["decision"]["effect"]).to_uppercase(),
            format!("{}{}", s(&ev["decision"]["reason"]), policies),
        )
    } else if ev["outcome"].is_object() {
        let detail = ev["outcome"]["detail"]
            .as_str()
            .map(|d| format!(" {d}"))
            .unwrap_or_default();
        (
            "OUTCOME".into(),
            format!("{}{}", s(&ev["outcome"]["status"]), detail),
        )
    } else {
        ("EVENT".into(), String::new())
    };
    let mut extra = String::new();
    // A revocation, freeze or lift says what it applies to: the kind and
    // the value (a job id, a pipeline, a subject, a token id).
    let revoked = ev["context"]["revocation_kind"].as_str();
    if let (Some(kind), Some(value)) = (revoked, ev["context"]["value"].as_str()) {
        extra.push_str(&format!(" {kind}={}", latchkey_core::echo(value)));
    }
    for key in ["old", "new", "commit", "job_id"] {
        if key == "job_id" && revoked.is_some() {
            continue; // already shown as `job=...`
        }
        if let Some(v) = ev["context"][key].as_str() {
            let short = if v.len() > 12 && key != "job_id" {
                &v[..12]
            } else {
                v
            };
            extra.push_str(&format!(" {key}={short}"));
        }
    }
    format!("{seq:>6} {time} {verdict:<7} {principal:<24} {action:<14} {resource}{extra}  {why}")
}

pub(crate) async fn audit(cmd: AuditCommand, clock: SharedClock) -> Result<ExitCode> {
    match cmd {
        AuditCommand::Verify(args) => verify(args).await,
        AuditCommand::Archive(args) => archive(args, &clock).await,
        AuditCommand::Query(args) => query(args, &clock).await,
        AuditCommand::Tail(args) => tail(args).await,
    }
}

async fn verify(args: AuditVerifyArgs) -> Result<ExitCode> {
    let config = locate(&args.location)?;
    let data = &config.server.data_dir;
    let store = latchkey_gateway::open_store_for_command(&config).await?;
    let Some(public) = latchkey_gateway::audit_public_key(store.as_ref()).await? else {
        bail!(
            "no audit key recorded in `{}`; has the gateway run here?",
            data.display()
        );
    };
    let mut witness = Vec::new();
    for source in &args.witness {
        witness.extend(
            crate::witness::load(source)
                .await
                .with_context(|| format!("cannot read the witness `{source}`"))?,
        );
    }
    // On several nodes, the checkpoints this node published into the shared
    // store witness its log: a log cut short or rewritten no longer holds them.
    let shared_witness = latchkey_gateway::store_witnessed_checkpoints(store.as_ref())
        .await
        .context("cannot read this node's checkpoints from the shared store")?;
    let shared_witnessed = shared_witness.len();
    witness.extend(shared_witness);
    let index_max_seq = store
        .max_audit_seq()
        .await
        .context("cannot read the audit index")?
        .unwrap_or(0);
    let keys = [("audit-1".to_owned(), public)];
    let opts = latchkey_audit::VerifyOptions {
        keys: &keys,
        checkpoint_interval: config.audit.checkpoint_interval,
        index_max_seq: Some(index_max_seq),
        witness: &witness,
    };
    match latchkey_audit::verify_with(&data.join("audit"), &opts) {
        Ok(report) => {
            println!(
                "audit log intact: {}, {}, last record {}",
                count(report.records, "record", "records"),
                count(
                    report.checkpoints,
                    "signed checkpoint",
                    "signed checkpoints"
                ),
                report.last_seq
            );
            if report.unvouched > 0 {
                println!(
                    "note: {} not yet vouched for by a checkpoint \
                     (a running gateway signs one within {:?}; after a crash, at its next start)",
                    if report.unvouched == 1 {
                        "the last record is".to_owned()
                    } else {
                        format!("the last {} records are", report.unvouched)
                    },
                    config.audit.checkpoint_interval
                );
            }
            if store.is_shared() {
                println!(
                    "node `{}`: {} in the shared store match the log",
                    store.node(),
                    count(
                        shared_witnessed as u64,
                        "published checkpoint",
                        "published checkpoints"
                    )
                );
            }
            if !args.witness.is_empty() {
                println!(
                    "{} the log",
                    if report.witnessed == 1 {
                        "1 witnessed checkpoint matches".to_owned()
                    } else {
                        format!("{} witnessed checkpoints match", report.witnessed)
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(latchkey_audit::AuditError::Verify(f)) => {
            println!("AUDIT LOG TAMPERED: {f}");
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            println!("AUDIT LOG TAMPERED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Archives the log and starts a new one whose first record says so. The
/// index is cleared (it indexes the new log from now on; the archived log
/// stays readable with `latchkey audit verify` on a copy of its directory).
async fn archive(args: AuditArchiveArgs, clock: &SharedClock) -> Result<ExitCode> {
    let config = locate(&args.location)?;
    let data = &config.server.data_dir;
    let audit_dir = data.join("audit");
    let master = latchkey_gateway::load_master_key(&config, args.location.config.is_none())?;
    let store = latchkey_gateway::open_store_for_command(&config).await?;
    let signer = latchkey_gateway::load_audit_signer(store.as_ref(), &master).await?;
    let archived =
        latchkey_audit::archive(&audit_dir, clock.unix_millis()).map_err(|e| match e {
            latchkey_audit::AuditError::Locked { .. } => {
                anyhow::anyhow!("{e}; `latchkey audit archive` needs the gateway stopped")
            }
            other => other.into(),
        })?;
    store
        .clear_audit_index()
        .await
        .context("the log was archived but the audit index could not be cleared")?;
    let log = latchkey_audit::AuditLog::open(
        &audit_dir,
        signer,
        None,
        clock.clone(),
        latchkey_audit::AuditConfig {
            checkpoint_interval: config.audit.checkpoint_interval,
            ..latchkey_audit::AuditConfig::default()
        },
    )
    .await?;
    let mut event =
        latchkey_audit::AuditEvent::system("audit-archive", "audit.archive", clock.unix_millis());
    let archived_dir = archived.dir.display().to_string();
    event
        .context
        .insert("archived".into(), serde_json::json!(archived_dir));
    event.context.insert(
        "archived_last_seq".into(),
        serde_json::json!(archived.last_seq),
    );
    event.context.insert(
        "archived_last_hash".into(),
        serde_json::json!(archived.last_hash),
    );
    event.outcome = Some(latchkey_audit::Outcome::new("archived").with_detail(args.reason));
    log.append(event).await?;
    log.close().await?;
    println!(
        "archived the audit log (last record {}) to `{archived_dir}`; a new log starts with a record naming it",
        archived.last_seq
    );
    Ok(ExitCode::SUCCESS)
}

/// A running gateway indexes records a few milliseconds after they are
/// logged; waits (briefly) until the index holds what the log held when the
/// query started, and says so if it does not.
async fn wait_for_index(store: &dyn Store, audit_dir: &std::path::Path) {
    let logged = match latchkey_audit::last_logged_seq(audit_dir) {
        Ok(seq) => seq,
        Err(e) => {
            eprintln!("note: cannot read the audit log's tail ({e}); querying the index as it is");
            return;
        }
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let indexed = store.max_audit_seq().await.ok().flatten().unwrap_or(0);
        if indexed >= logged {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "note: the audit index holds records up to {indexed} but the log goes to {logged}; \
                 the gateway catches the index up when it runs (`latchkey audit tail` reads the log itself)"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn query(args: AuditQueryArgs, clock: &SharedClock) -> Result<ExitCode> {
    let config = locate(&args.location)?;
    let store = latchkey_gateway::open_store_for_command(&config).await?;
    let resource = match (&args.repo, &args.resource) {
        (Some(r), None) => Some(r.clone()),
        (None, r) => r.clone(),
        (Some(_), Some(_)) => bail!("use either `--repo` or `--resource`"),
    };
    let now_ms = clock.unix_millis();
    let when = |s: &String| parse_when(s, now_ms);
    let q = AuditQuery {
        principal: args.principal.clone(),
        resource,
        action: args.action.clone(),
        decision: args.decision.map(|d| d.as_str().to_owned()),
        commit: args.commit.clone(),
        since_ms: args.since.as_ref().map(when).transpose()?,
        until_ms: args.until.as_ref().map(when).transpose()?,
        limit: args.limit,
        newest: true,
        ..AuditQuery::default()
    };
    wait_for_index(store.as_ref(), &config.server.data_dir.join("audit")).await;
    let rows = store
        .query_audit(&q)
        .await
        .context("cannot query the audit index")?;
    for row in rows {
        let ev: serde_json::Value = serde_json::from_str(&row.event_json).unwrap_or_default();
        if args.json {
            let mut ev = ev;
            ev["seq"] = row.seq.into();
            if !row.node.is_empty() {
                ev["node"] = row.node.clone().into();
            }
            println!("{ev}");
        } else if row.node.is_empty() {
            println!("{}", event_line(row.seq, &ev));
        } else {
            // Several nodes: each record is `node` and its seq in that
            // node's chain.
            println!("{:<10} {}", row.node, event_line(row.seq, &ev));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tail(args: AuditTailArgs) -> Result<ExitCode> {
    let config = locate(&args.location)?;
    let dir = config.server.data_dir.join("audit");
    // Print the newest N, then follow the file.
    let mut last = 0u64;
    let mut recent = std::collections::VecDeque::new();
    for rec in latchkey_audit::read_records(&dir, 0)? {
        let rec = rec?;
        last = rec.seq;
        recent.push_back(rec);
        if recent.len() > args.lines {
            recent.pop_front();
        }
    }
    let print = |rec: &latchkey_audit::AuditRecord| {
        let ev = serde_json::to_value(&rec.event).unwrap_or_default();
        if args.json {
            let mut ev = ev;
            ev["seq"] = rec.seq.into();
            println!("{ev}");
        } else {
            println!("{}", event_line(rec.seq, &ev));
        }
    };
    recent.iter().for_each(print);
    if args.no_follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for rec in latchkey_audit::read_records(&dir, last)? {
            let rec = rec?;
            last = rec.seq;
            print(&rec);
        }
    }
}

pub(crate) fn print_keys(keys: &[latchkey_tokens::KeyInfo]) {
    println!(
        "{:<44} {:<8} {:<22} {:<22} {:<22}",
        "KID", "STATE", "SIGNS FROM", "SIGNS UNTIL", "PUBLISHED UNTIL"
    );
    for k in keys {
        println!(
            "{:<44} {:<8} {:<22} {:<22} {:<22}",
            k.kid,
            format!("{:?}", k.state).to_lowercase(),
            fmt_time(k.signs_from * 1000),
            fmt_time(k.signs_until * 1000),
            fmt_time(k.published_until * 1000)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_700_000_000_000;

    #[test]
    fn counts_use_the_noun_the_number_needs() {
        assert_eq!(count(1, "policy", "policies"), "1 policy");
        assert_eq!(count(0, "policy", "policies"), "0 policies");
        assert_eq!(count(12, "record", "records"), "12 records");
    }

    #[test]
    fn a_revocation_row_says_what_was_revoked() {
        let ev = serde_json::json!({
            "time_ms": NOW_MS,
            "principal": {"kind": "user", "id": "admin"},
            "action": "token.revoke",
            "outcome": {"status": "freeze", "detail": "leaked"},
            "context": {"revocation_kind": "job", "value": "0184-job", "mode": "freeze", "job_id": "0184-job"},
        });
        let line = event_line(7, &ev);
        assert!(line.contains(" job=0184-job "), "{line}");
        assert!(!line.contains("job_id="), "{line}");
        assert!(line.contains("freeze leaked"), "{line}");
        let ev = serde_json::json!({
            "action": "admin.lift",
            "outcome": {"status": "lifted"},
            "context": {"revocation_kind": "subject", "value": "user:mallory", "mode": "freeze"},
        });
        assert!(
            event_line(8, &ev).contains(" subject=user:mallory "),
            "{}",
            event_line(8, &ev)
        );
    }

    #[test]
    fn when_is_an_rfc3339_time_or_a_duration_before_now() {
        assert_eq!(
            parse_when("2023-11-14T22:13:20Z", NOW_MS).unwrap(),
            1_700_000_000_000
        );
        assert_eq!(parse_when("1h", NOW_MS).unwrap(), NOW_MS - 3_600_000);
        // Longer ago than the epoch is the epoch, not a wrapped-around time.
        assert_eq!(parse_when("1h", 5).unwrap(), 0);
        assert_eq!(
            parse_when("yesterday", NOW_MS).unwrap_err().to_string(),
            "`yesterday` is neither an RFC 3339 time nor a duration like `1h`"
        );
    }
}
