//! The configuration a command runs with: the sandbox's (`latchkey dev`),
//! or the one an operator command points at.

use std::path::Path;

use anyhow::{Context, Result, bail};
use latchkey_gateway::config::Config;

use crate::cli::Location;

/// The Google Cloud project the dev sandbox's documents are in.
pub(crate) const DEV_PROJECT: &str = "demo";

/// The file in the dev sandbox's data directory that holds the secret its
/// Gogs webhook receiver checks signatures with (generated on first start).
pub(crate) const GOGS_SECRET_FILE: &str = "webhook-gogs.secret";

/// The dev sandbox's config: everything embedded.
pub(crate) fn dev_config(
    data: &Path,
    listen: std::net::SocketAddr,
    firestore_emulator: Option<&str>,
    example_app: Option<std::net::SocketAddr>,
    cgit_app: Option<std::net::SocketAddr>,
) -> Result<Config> {
    let data_str = data.display().to_string().replace('\\', "/");
    let text = format!(
        r#"
[server]
listen = "{listen}"
data_dir = "{data_str}"

[keys]
master_key = {{ file = "{data_str}/master.key" }}

[dev_issuer]
enabled = true

[git.upstreams.local]
local_root = "repos"
"#
    );
    // Documents: the embedded store, or Google's emulator when one is
    // given; either way `(default)` is environment `dev` and `prod` is
    // `prod`, and a signed Gogs push writes `pushes/{commit}` (the rule
    // `record-pushes`, as Latchkey itself, decided like any caller).
    let backend = match firestore_emulator {
        Some(hostport) => format!(
            "backend = \"firestore\"\n\n[firestore]\nemulator = {}\n",
            toml::Value::String(hostport.to_owned())
        ),
        None => "backend = \"embedded\"\n".to_owned(),
    };
    let text = format!(
        "{text}\n[documents]\nproject = \"{DEV_PROJECT}\"\n\
         databases = {{ \"(default)\" = \"dev\", \"prod\" = \"prod\" }}\n\
         record_values = [\"flags\", \"pushes\"]\n{backend}\n\
         [webhooks.gogs]\nsecret = {{ file = \"{data_str}/{GOGS_SECRET_FILE}\" }}\n\n\
         [[rules]]\nname = \"record-pushes\"\non = \"push\"\n\
         [rules.write_document]\ndatabase = \"(default)\"\npath = \"pushes/{{commit}}\"\n\
         fields = {{ repository = \"{{repository}}\", pusher = \"{{pusher.login}}\", branch = \"{{branch}}\" }}\n"
    );
    // The example app (`crate::dev_app`): a page that shows the identity
    // it was sent, behind a browser sign-in with the dev provider.
    let text = match example_app {
        Some(addr) => format!(
            "{text}\n[[apps]]\nname = \"whoami\"\npath_prefix = \"/apps/whoami\"\n\
             upstream = \"http://{addr}\"\npreset = \"generic\"\n\
             headers = {{ \"X-User\" = \"user\", \"X-Email\" = \"email\", \"X-Groups\" = \"groups\" }}\n"
        ),
        None => text,
    };
    // cgit over the same repositories as the Git route (`crate::dev_cgit`),
    // when installed: one policy decides a clone and its pages.
    let text = match cgit_app {
        Some(addr) => format!(
            "{text}\n[[apps]]\nname = \"cgit\"\npath_prefix = \"{prefix}\"\n\
             upstream = \"http://{addr}\"\npreset = \"cgit\"\ngit_upstream = \"local\"\n",
            prefix = crate::dev_cgit::PREFIX
        ),
        None => text,
    };
    let mut config: Config = Config::parse(&text)?;
    // The master key file may not exist yet; `latchkey dev` generates it.
    if !data.join("master.key").exists() {
        config.keys.master_key = Default::default();
    }
    Ok(config)
}

/// Loads the config an operator command refers to.
pub(crate) fn locate(loc: &Location) -> Result<Config> {
    match &loc.config {
        Some(path) => Ok(Config::load(path)?),
        None => {
            if !loc.data.exists() {
                bail!(
                    "no data directory `{}`; pass `--data DIR` or `--config FILE`",
                    loc.data.display()
                );
            }
            dev_config(&loc.data, "127.0.0.1:8080".parse()?, None, None, None)
        }
    }
}

/// The file in a sandbox's data directory that holds the URL it serves on,
/// written by `latchkey dev` once it listens.
pub(crate) const URL_FILE: &str = "url";

/// Where the sandbox is when nothing says otherwise: `latchkey dev`'s
/// default `--listen`.
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The URL the sandbox in `data` recorded, if it recorded one.
pub(crate) fn sandbox_url(data: &Path) -> Result<Option<String>> {
    let path = data.join(URL_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|u| !u.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    }
}

/// The gateway a client command talks to: `--url` or `LATCHKEY_URL` when
/// given, else the URL the sandbox in `data` recorded, else [`DEFAULT_URL`].
/// Without a trailing `/`.
pub(crate) fn gateway_url(explicit: Option<&str>, data: &Path) -> Result<String> {
    let url = match explicit.filter(|u| !u.is_empty()) {
        Some(u) => u.to_owned(),
        None => sandbox_url(data)?.unwrap_or_else(|| DEFAULT_URL.to_owned()),
    };
    Ok(url.trim_end_matches('/').to_owned())
}

/// Records `url` in `path` atomically (a temporary file renamed over it), so
/// a command reading it never sees half a URL.
pub(crate) fn write_url_file(path: &Path, url: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{URL_FILE}.{}.tmp", std::process::id()));
    let result =
        std::fs::write(&tmp, format!("{url}\n")).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write `{}`", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_comes_from_the_flag_then_the_sandbox_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(gateway_url(None, d).unwrap(), DEFAULT_URL);
        write_url_file(&d.join(URL_FILE), "http://127.0.0.1:18080").unwrap();
        assert_eq!(gateway_url(None, d).unwrap(), "http://127.0.0.1:18080");
        assert_eq!(
            gateway_url(Some("http://gw.example/"), d).unwrap(),
            "http://gw.example"
        );
        // Only the URL file is left behind.
        let names: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [URL_FILE]);
    }
}
