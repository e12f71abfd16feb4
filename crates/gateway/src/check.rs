//! `latchkey serve --check [--online]`: every piece start-up needs, checked
//! one by one without starting, so an operator sees all that is wrong in
//! one run (start-up stops at the first). Offline it reads every local path
//! and secret; online it also fetches each issuer's discovery document and
//! keys and reaches each upstream. Nothing here prints: the binary renders
//! the list.

use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::probe::{ProbeKind, dir_exists};

/// How long one online probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One checked component: what it is, and either what was found (`Ok`) or
/// what failed and how to fix it (`Err`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentCheck {
    /// `policies`, `master key`, `git upstream gogs`, `issuer okta`, ...
    pub component: String,
    /// The detail of a pass, or what failed and the fix.
    pub result: Result<String, String>,
}

impl ComponentCheck {
    fn new(component: impl Into<String>, result: Result<String, String>) -> Self {
        Self {
            component: component.into(),
            result,
        }
    }
}

/// Checks everything `config` needs; with `online`, also its peers.
pub async fn run(config: &Config, online: bool) -> Vec<ComponentCheck> {
    let mut out = Vec::new();
    let dev = &config.dev_issuer;
    if dev.enabled {
        out.push(ComponentCheck::new(
            "dev issuer",
            if dev.allow_in_serve {
                Ok(
                    "enabled in `serve` (DEV ONLY: it mints any identity); never in production"
                        .into(),
                )
            } else {
                Err("`dev_issuer.enabled` is for `latchkey dev` only; \
                     set `dev_issuer.allow_in_serve = true` to run it anyway"
                    .into())
            },
        ));
    }
    out.push(ComponentCheck::new(
        "data directory",
        writable_dir(&config.server.data_dir).map_err(|e| format!("{e}; check `server.data_dir`")),
    ));
    out.push(ComponentCheck::new(
        "master key",
        crate::load_master_key(config, false)
            .map(|_| "loaded".to_owned())
            .map_err(|e| e.to_string()),
    ));
    let policy_dir = config.policy_dir();
    out.push(ComponentCheck::new(
        "policies",
        latchkey_policy::PolicyEngine::load(&policy_dir)
            .map(|engine| {
                let n = engine.policy_count();
                let noun = if n == 1 { "policy" } else { "policies" };
                format!("{n} {noun} in {}", policy_dir.display())
            })
            .map_err(|e| format!("{e}; check `policy.dir`")),
    ));
    if let Some(tls) = &config.server.tls {
        out.push(ComponentCheck::new(
            "tls",
            crate::tls_server_config(tls)
                .map(|_| format!("certificate {}", tls.cert_file.display()))
                .map_err(|e| format!("{e}; check `server.tls`")),
        ));
    }
    for source in latchkey_events::Source::ALL {
        if let Some(w) = config.webhooks.get(source) {
            let key = format!("webhooks.{source}.secret");
            out.push(ComponentCheck::new(
                format!("webhooks {source}"),
                match w.secret.load(&key) {
                    Ok(Some(_)) => Ok("secret loaded".into()),
                    Ok(None) => Err(format!("`{key}` is required")),
                    Err(e) => Err(e.to_string()),
                },
            ));
        }
    }
    let http = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .connect_timeout(PROBE_TIMEOUT)
        .build();
    let http = match http {
        Ok(h) => Some(h),
        Err(e) => {
            out.push(ComponentCheck::new(
                "http client",
                Err(format!("cannot build an HTTP client: {e}")),
            ));
            None
        }
    };
    let http = http.as_ref().filter(|_| online);
    for (name, up) in &config.git.upstreams {
        let key = format!("git.upstreams.{name}");
        let result = match (&up.url, &up.local_root) {
            (_, Some(root)) => dir_exists(root).map_err(|e| {
                    format!(
                        "{e}; check `{key}.local_root` (a directory of bare repositories `owner/repo.git`)"
                    )
                }),
            (Some(url), None) => match up.password.load(&format!("{key}.password")) {
                Err(e) => Err(e.to_string()),
                Ok(_) => match http {
                    Some(h) => ProbeKind::Http(url.clone()).run(h, PROBE_TIMEOUT)
                        .await
                        .map(|d| format!("{url} {d}"))
                        .map_err(|e| format!("{e}; check `{key}.url`")),
                    None => Ok(format!("{url} (not contacted; `--online` reaches it)")),
                },
            },
            (None, None) => Err(format!("set `{key}.url` or `{key}.local_root`")),
        };
        out.push(ComponentCheck::new(format!("git upstream {name}"), result));
    }
    if let Some(w) = &config.audit.witness {
        if let Some(file) = &w.file {
            let dir = file
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            out.push(ComponentCheck::new(
                "audit witness file",
                writable_dir(dir)
                    .map(|_| format!("{}", file.display()))
                    .map_err(|e| format!("{e}; check `audit.witness.file`")),
            ));
        }
        if let (Some(url), Some(h)) = (&w.url, http) {
            out.push(ComponentCheck::new(
                "audit witness url",
                ProbeKind::Http(url.clone())
                    .run(h, PROBE_TIMEOUT)
                    .await
                    .map(|d| format!("{url} {d}"))
                    .map_err(|e| format!("{e}; check `audit.witness.url`")),
            ));
        }
    }
    if let Some(fs) = &config.firestore {
        let local = crate::check_firestore(config)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let result = match (local, http) {
            (Err(e), _) => Err(e),
            (Ok(()), None) => Ok(match &fs.emulator {
                Some(e) => format!("emulator {e} (not contacted; `--online` reaches it)"),
                None => format!("{} (not contacted; `--online` reaches it)", fs.endpoint),
            }),
            (Ok(()), Some(h)) => match &fs.emulator {
                Some(hostport) => ProbeKind::Tcp(hostport.clone())
                    .run(h, PROBE_TIMEOUT)
                    .await
                    .map(|d| format!("emulator {hostport} {d}"))
                    .map_err(|e| format!("{e}; check `firestore.emulator`")),
                None => ProbeKind::Http(fs.endpoint.clone())
                    .run(h, PROBE_TIMEOUT)
                    .await
                    .map(|d| format!("{} {d}", fs.endpoint))
                    .map_err(|e| format!("{e}; check `firestore.endpoint`")),
            },
        };
        out.push(ComponentCheck::new("firestore", result));
    }
    if let Some(docs) = &config.documents
        && docs.backend == crate::config::DocumentsBackend::Embedded
    {
        out.push(ComponentCheck::new(
            "documents",
            Ok("embedded (documents live in the state store)".to_owned()),
        ));
    }
    for (i, issuer) in config.issuers.iter().enumerate() {
        let component = format!("issuer {}", issuer.issuer);
        let result = match http {
            None => Ok(format!(
                "`{}` (keys not fetched; `--online` fetches them)",
                issuer.name
            )),
            Some(h) => latchkey_identity::fetch_issuer_keys(h, issuer)
                .await
                .map(|n| {
                    let noun = if n == 1 { "key" } else { "keys" };
                    format!(
                        "`{}`: discovery document and {n} {noun} fetched",
                        issuer.name
                    )
                })
                .map_err(|e| {
                    format!("{e}; check `issuers[{i}].issuer` and that it is reachable from here")
                }),
        };
        out.push(ComponentCheck::new(component, result));
    }
    out
}

/// Whether `dir` is (or can be created as) a directory this process can
/// write: a scratch file is created in it, or in the nearest existing
/// ancestor when it does not exist yet, and removed.
fn writable_dir(dir: &Path) -> Result<String, String> {
    let mut probe_in = dir;
    let exists = loop {
        match std::fs::metadata(probe_in) {
            Ok(m) if m.is_dir() => break probe_in == dir,
            Ok(_) => return Err(format!("`{}` is not a directory", probe_in.display())),
            Err(_) => match probe_in.parent() {
                Some(p) if !p.as_os_str().is_empty() => probe_in = p,
                _ => {
                    probe_in = Path::new(".");
                    break false;
                }
            },
        }
    };
    let scratch = probe_in.join(format!(".latchkey-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&scratch)
        .map_err(|e| format!("cannot write in `{}`: {e}", probe_in.display()))?;
    let _ = std::fs::remove_file(&scratch);
    Ok(if exists {
        format!("{} (writable)", dir.display())
    } else {
        format!("{} (will be created)", dir.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_local_root_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\ndata_dir = {:?}\n[keys]\nmaster_key = {{ value = \"q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=\" }}\n\
             [git.upstreams.local]\nlocal_root = {:?}\n",
            dir.path().join("data").display().to_string(),
            dir.path().join("nowhere").display().to_string(),
        );
        let config = Config::parse(&text).unwrap();
        let checks = run(&config, false).await;
        let git = checks
            .iter()
            .find(|c| c.component == "git upstream local")
            .unwrap();
        let err = git.result.clone().unwrap_err();
        assert!(
            err.contains("nowhere") && err.contains("local_root"),
            "{err}"
        );
        let data = checks
            .iter()
            .find(|c| c.component == "data directory")
            .unwrap();
        assert!(
            data.result.as_ref().unwrap().contains("will be created"),
            "{data:?}"
        );
    }
}
