//! What each subcommand does.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use latchkey_core::{SharedClock, SystemClock};
use latchkey_gateway::config::Config;
use latchkey_gateway::{Gateway, StartOptions};

use crate::cli::*;
use crate::client::{exchange, exchange_form};
use crate::config::{dev_config, locate};

pub(crate) async fn run(cli: Cli) -> Result<ExitCode> {
    init_logging(&cli.log, cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Dev(args) => match args.command {
            None => {
                dev(
                    args.data,
                    args.listen,
                    args.firestore_emulator,
                    args.id_token_lifetime,
                )
                .await
            }
            Some(DevCommand::Token(t)) => dev_token(&args.data, t, &clock()),
            Some(DevCommand::Repo(DevRepoCommand::Create { name })) => {
                let path = create_repo(&args.data.join("repos"), &name)?;
                println!("created {}", path.display());
                // The sandbox's own URL: `LATCHKEY_URL`, else the one it
                // recorded, else the address `--listen` names.
                let explicit = std::env::var("LATCHKEY_URL").ok().filter(|u| !u.is_empty());
                let base = match explicit {
                    Some(u) => u,
                    None => crate::config::sandbox_url(&args.data)?
                        .unwrap_or_else(|| format!("http://{}", args.listen)),
                };
                println!(
                    "clone URL: {}/git/local/{name}.git",
                    base.trim_end_matches('/')
                );
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Init(args) => crate::init::run(&args.dir),
        Command::Login(args) => crate::login::login(args).await,
        Command::Logout(args) => crate::login::logout(args).await,
        Command::Token(args) => token(args, clock()).await,
        Command::Audit(cmd) => crate::output::audit(cmd, clock()).await,
        Command::Policy(cmd) => policy(cmd),
        Command::Keys(cmd) => keys(cmd).await,
        Command::Documents(cmd) => crate::documents::run(cmd).await,
        Command::GitCredential(args) => crate::credential::run(args, clock()).await,
        Command::Ci(CiCommand::Token(args)) => crate::ci::token(args).await,
    }
}

/// Logs go to standard error: JSON lines for log shippers, or text that is
/// coloured only when a person is looking (a terminal) and did not ask for
/// no colour (`NO_COLOR`, <https://no-color.org>): escape codes in a file or
/// a pipe are noise.
fn init_logging(filter: &str, format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            builder
                .with_ansi(std::io::stderr().is_terminal() && !no_color)
                .try_init()
        }
    };
}

/// The real clock, made here and passed down: the binary is the one place
/// that chooses it, so every command below takes the time from the
/// `SharedClock` it is given, as the libraries do.
fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    if args.check {
        // Everything start-up needs, one line each, without binding the port.
        let checks = latchkey_gateway::check::run(&config, args.online).await;
        let mut failed = Vec::new();
        for c in &checks {
            match &c.result {
                Ok(detail) => println!("ok   {}: {detail}", c.component),
                Err(why) => {
                    println!("FAIL {}: {why}", c.component);
                    failed.push(c.component.as_str());
                }
            }
        }
        if !failed.is_empty() {
            eprintln!(
                "error: config `{}` failed {} {}: {}",
                args.config.display(),
                failed.len(),
                if failed.len() == 1 { "check" } else { "checks" },
                failed.join(", ")
            );
            return Ok(ExitCode::FAILURE);
        }
        println!(
            "config `{}` is valid{}",
            args.config.display(),
            if args.online {
                ""
            } else {
                " (peers not contacted; add `--online` to reach issuers and upstreams)"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let listen = config.server.listen;
    let tls = match &config.server.tls {
        Some(t) => Some(latchkey_gateway::tls_server_config(t)?),
        None => None,
    };
    let gw = Gateway::start(config, StartOptions { dev: false }, clock()).await?;
    run_server(gw, listen, tls, None).await
}

async fn dev(
    data: PathBuf,
    listen: std::net::SocketAddr,
    firestore_emulator: Option<String>,
    id_token_lifetime: Duration,
) -> Result<ExitCode> {
    // The data directory holds the master key, the store and the audit log:
    // only its owner may enter it, whatever the umask.
    latchkey_gateway::create_private_dir(&data)
        .with_context(|| format!("cannot create `{}`", data.display()))?;
    let policy_dir = data.join("policies");
    if !policy_dir.exists() {
        std::fs::create_dir_all(&policy_dir)?;
        // The policies, the group hierarchy they rely on (maintainers are
        // developers) and their tests (`latchkey policy test`).
        for (name, text) in crate::init::starter_files() {
            std::fs::write(policy_dir.join(name), text)?;
        }
    }
    // The secret a Gogs (or `curl` with `openssl dgst -hmac`, as the README
    // shows) signs the sandbox's push webhooks with; owner-only, like the
    // rest of the directory.
    let gogs_secret = data.join(crate::config::GOGS_SECRET_FILE);
    if !gogs_secret.exists() {
        use aws_lc_rs::rand::{SecureRandom, SystemRandom};
        let mut bytes = [0u8; 24];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("no randomness for the webhook secret"))?;
        crate::credential::write_private(&data, &gogs_secret, &hex::encode(bytes))?;
    }
    let repos = data.join("repos");
    if !repos.join("acme/app.git").exists() {
        create_repo(&repos, "acme/app")?;
    }
    let example_app = crate::dev_app::spawn(&format!("http://{listen}")).await?;
    let cgit_app = if crate::dev_cgit::installed() {
        Some(crate::dev_cgit::spawn(&data, &repos).await?)
    } else {
        None
    };
    let mut config = dev_config(
        &data,
        listen,
        firestore_emulator.as_deref(),
        Some(example_app),
        cgit_app,
    )?;
    config.dev_issuer.id_token_lifetime = Some(id_token_lifetime);
    let gw = Gateway::start(config, StartOptions { dev: true }, clock()).await?;
    let url = gw.public_url().to_owned();
    let banner = dev_banner(&url, &data, cgit_app.is_some());
    let url_file = data.join(crate::config::URL_FILE);
    run_server(gw, listen, None, Some((banner, url_file))).await
}

/// What `latchkey dev` prints once it listens: commands that work as pasted
/// in another terminal, whatever `--listen` and `--data` were. They find the
/// sandbox's URL in `DATA/url`; a non-default data directory is named
/// (absolute, quoted for `sh`) so they work from any directory.
fn dev_banner(url: &str, data: &Path, cgit: bool) -> String {
    let data_arg = if data == Path::new("latchkey-data") {
        String::new()
    } else {
        let abs = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
        format!(" --data {}", sh_word(&abs.display().to_string()))
    };
    let cgit_line = if cgit {
        format!(
            "\x20 {url}{}/ is cgit, the Git web UI, over the same repositories: a page is `git.read` of its repository.\n",
            crate::dev_cgit::PREFIX
        )
    } else {
        format!(
            "\x20 (install cgit, `apt-get install cgit`, for the Git web UI at {url}{}/)\n",
            crate::dev_cgit::PREFIX
        )
    };
    format!(
        "\nLatchkey dev sandbox on {url}\n\
         DEV ONLY: the built-in identity provider at {url}/dev-idp signs any identity you ask for.\n\
         Data: {data}   Policies: {data}/policies   Repositories: {data}/repos\n\n\
         In another terminal:\n\
         \x20 ID=$(latchkey dev token{data_arg} --user alice --group developers)\n\
         \x20 TOKEN=$(latchkey token{data_arg} --subject-token \"$ID\" --audience git)\n\
         \x20 git -c http.extraHeader=\"Authorization: Bearer $TOKEN\" clone {url}/git/local/acme/app.git\n\
         \x20 cd app && git commit --allow-empty -m hello\n\
         \x20 git -c http.extraHeader=\"Authorization: Bearer $TOKEN\" push origin HEAD:refs/heads/main   # denied: protect-main\n\
         \x20 git -c http.extraHeader=\"Authorization: Bearer $TOKEN\" push origin HEAD:refs/heads/feature # allowed\n\
         \x20 cd ..\n\
         \x20 latchkey audit tail{data_arg} --no-follow   # without --no-follow it keeps following\n\n\
         In a browser: {url}/apps/whoami/ (sign in as anyone in `developers`), then\n\
         \x20 {url}/apps/whoami/admin/ is denied by policy `app-admin-pages`; {url}/logout signs out.\n\
         {cgit_line}\
         From a terminal, once a day: latchkey login{data_arg}   (then git and latchkey token need no token pasted)\n",
        data = data.display(),
    )
}

/// `s` as one `sh` word: as is when it holds only safe characters, else in
/// single quotes.
fn sh_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%=,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Binds and serves. `sandbox` is the dev sandbox's banner and the file
/// its URL is recorded in, written once the port is bound (so a command
/// that reads it finds a sandbox that answers).
async fn run_server(
    gw: Arc<Gateway>,
    listen: std::net::SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    sandbox: Option<(String, PathBuf)>,
) -> Result<ExitCode> {
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, issuer = gw.public_url(), "latchkey listening");
    if let Some((banner, url_file)) = sandbox {
        crate::config::write_url_file(&url_file, gw.public_url())?;
        println!("{banner}");
    }
    // Rotations by `latchkey keys rotate` or another node, within a second.
    latchkey_gateway::spawn_key_watch(gw.clone());
    // Upkeep: key rotation and revocation refresh.
    let upkeep = gw.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            upkeep.maintain().await;
        }
    });
    // SIGHUP reloads policies; a failing set is not loaded.
    #[cfg(unix)]
    {
        let reload = gw.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match reload.reload_policies().await {
                    Ok(()) => tracing::info!("policies reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "policy reload failed; keeping the previous set")
                    }
                }
            }
        });
    }
    latchkey_gateway::serve_gateway(listener, gw.clone(), tls, shutdown)
        .await
        .context("server failed")?;
    gw.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is
/// called, not when the future is first polled: the server's accept loop may
/// not poll it for a while, and a SIGTERM before then would kill the process
/// without its final audit checkpoint.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
}

fn dev_token(data: &Path, args: DevTokenArgs, clock: &SharedClock) -> Result<ExitCode> {
    let key = data.join("dev-issuer-key.pk8");
    if !key.exists() {
        bail!(
            "no development identity provider key in `{}`: start the sandbox first with `latchkey dev`",
            data.display()
        );
    }
    let url = crate::config::gateway_url(args.url.as_deref(), data)?;
    let dev = latchkey_identity::DevIssuer::load_or_create(&key, format!("{url}/dev-idp"))?;
    let ttl = args.ttl;
    let email = args
        .email
        .unwrap_or_else(|| format!("{}@example.com", args.user));
    let token = dev.mint_id_token(
        &args.user,
        &args.groups,
        Some(&email),
        "latchkey",
        ttl,
        serde_json::Map::new(),
        clock.unix(),
    )?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// Creates `root/OWNER/NAME.git` as an empty bare repository with `main` as
/// its default branch.
pub(crate) fn create_repo(root: &Path, name: &str) -> Result<PathBuf> {
    let valid = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let Some((owner, repo)) = name.split_once('/') else {
        bail!("repository name `{name}` must be `OWNER/NAME`, e.g. `acme/app`");
    };
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    if !valid(owner) || !valid(repo) {
        bail!("repository name `{name}` may use letters, digits, `-`, `_` and `.` only");
    }
    let path = root.join(owner).join(format!("{repo}.git"));
    if path.exists() {
        bail!("repository `{}` already exists", path.display());
    }
    std::fs::create_dir_all(&path)?;
    let status = std::process::Command::new("git")
        .args(["init", "--quiet", "--bare", "--initial-branch=main"])
        .arg(&path)
        .status()
        .context("cannot run `git`; is it installed?")?;
    if !status.success() {
        bail!("`git init --bare {}` failed", path.display());
    }
    Ok(path)
}

/// `latchkey token`. The subject is `--subject-token`, else
/// `LATCHKEY_ID_TOKEN`, else the `latchkey login` sign-in for the gateway.
async fn token(args: TokenArgs, clock: SharedClock) -> Result<ExitCode> {
    let url = crate::config::gateway_url(args.url.as_deref(), &args.data)?;
    let env_token = std::env::var("LATCHKEY_ID_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let subject = match (args.subject_token.as_deref(), env_token) {
        (Some("-"), _) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim().to_owned()
        }
        (Some(t), _) => t.to_owned(),
        (None, Some(t)) => t,
        (None, None) => {
            let origin = crate::login::gateway_origin(&url)?;
            match crate::login::cached_id_token(&origin, &clock).await? {
                Some(t) => t,
                None => bail!(
                    "no identity token for {origin}: run `latchkey login --gateway {origin}`, or \
                     pass `--subject-token` (or set `LATCHKEY_ID_TOKEN`)"
                ),
            }
        }
    };
    let mut form = exchange_form(subject, &args.audience);
    if let Some(s) = &args.scope {
        form.push(("scope", s.clone()));
    }
    if let Some(a) = &args.actor_token {
        form.push(("actor_token", a.clone()));
        form.push((
            "actor_token_type",
            "urn:ietf:params:oauth:token-type:jwt".to_owned(),
        ));
    }
    if let Some(l) = args.lifetime {
        form.push(("lifetime", l.as_secs().to_string()));
    }
    let body = exchange(&url, &form).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        let tok = body["access_token"]
            .as_str()
            .context("the answer has no access_token")?;
        println!("{tok}");
    }
    Ok(ExitCode::SUCCESS)
}

fn policy(cmd: PolicyCommand) -> Result<ExitCode> {
    let dir_of = |pl: &PolicyLocation| -> Result<PathBuf> {
        if let Some(d) = &pl.dir {
            return Ok(d.clone());
        }
        let config = match &pl.location.config {
            Some(p) => Config::load(p)?,
            None => dev_config(
                &pl.location.data,
                "127.0.0.1:8080".parse()?,
                None,
                None,
                None,
            )?,
        };
        Ok(config.policy_dir())
    };
    match cmd {
        PolicyCommand::Schema => {
            print!("{}", latchkey_policy::SCHEMA);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Validate(pl) => {
            let dir = dir_of(&pl)?;
            let engine = latchkey_policy::PolicyEngine::load(&dir)?;
            println!(
                "{} in `{}` {} valid against the schema: {}",
                crate::output::count(engine.policy_count() as u64, "policy", "policies"),
                dir.display(),
                if engine.policy_count() == 1 {
                    "is"
                } else {
                    "are"
                },
                engine.policy_ids().join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Test { file, location } => {
            let dir = dir_of(&location)?;
            let engine = latchkey_policy::PolicyEngine::load(&dir)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read `{}`", file.display()))?;
            let report = latchkey_policy::run_policy_tests(&engine, &text)?;
            println!("{report}");
            Ok(if report.all_passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

async fn keys(cmd: KeysCommand) -> Result<ExitCode> {
    let (loc, rotate) = match cmd {
        KeysCommand::List(l) => (l, None),
        KeysCommand::Rotate(r) => (
            r.location,
            Some(if r.now {
                latchkey_tokens::RotationMode::Now
            } else {
                latchkey_tokens::RotationMode::Scheduled
            }),
        ),
    };
    let config = locate(&loc)?;
    let dev = loc.config.is_none();
    if dev && !config.server.data_dir.join("master.key").exists() {
        bail!(
            "no master key in `{}`: start the sandbox there first with `latchkey dev --data {}`",
            loc.data.display(),
            loc.data.display()
        );
    }
    let ring = latchkey_gateway::open_keyring(&config, clock()).await?;
    if let Some(mode) = rotate {
        let r = ring.rotate(mode).await?;
        let ticks = |kids: &[String]| {
            kids.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match mode {
            latchkey_tokens::RotationMode::Scheduled => println!(
                "rotated: `{}` is published now and signs from {} (after `keys.publish_ahead`); \
                 {} signs until then and stays published until its tokens expire",
                r.kid,
                crate::output::fmt_time(r.signs_from.saturating_mul(1000)),
                if r.retired.is_empty() {
                    "no key".to_owned()
                } else {
                    ticks(&r.retired)
                },
            ),
            latchkey_tokens::RotationMode::Now => println!(
                "rotated now: `{}` signs from now; removed {}: tokens they signed no longer verify",
                r.kid,
                if r.removed.is_empty() {
                    "no key".to_owned()
                } else {
                    ticks(&r.removed)
                },
            ),
        }
        println!(
            "a running gateway on this store reloads its keys and audits the rotation within a \
             second; a stopped one does so when it starts"
        );
    }
    crate::output::print_keys(&ring.keys());
    Ok(ExitCode::SUCCESS)
}
