//! The configuration a command runs with: the sandbox's (`latchkey dev`),
//! or the one an operator command points at.

use std::path::Path;

use anyhow::{Result, bail};
use latchkey_gateway::config::Config;

use crate::cli::Location;

/// The dev sandbox's config: everything embedded.
pub(crate) fn dev_config(
    data: &Path,
    listen: std::net::SocketAddr,
    firestore_emulator: Option<&str>,
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
    let text = match firestore_emulator {
        Some(hostport) => format!(
            "{text}\n[firestore]\nemulator = {}\ndatabases = {{ \"(default)\" = \"dev\" }}\n",
            toml::Value::String(hostport.to_owned())
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
            dev_config(&loc.data, "127.0.0.1:8080".parse()?, None)
        }
    }
}
