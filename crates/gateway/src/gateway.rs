//! The running gateway: everything `serve` and `dev` start, the pipeline,
//! and each target's state; start-up, upkeep and shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use latchkey_audit::{AuditConfig, AuditLog, AuditSigner};
use latchkey_core::SharedClock;
use latchkey_identity::{DevIssuer, IssuerConfig, IssuerSet};
use latchkey_policy::PolicyEngine;
use latchkey_store::{SharedStore, Store};
use latchkey_tokens::{
    KeySchedule, Lifetimes, MasterKey, RevocationSet, SigningKeyRing, TokenIssuer, TokenVerifier,
};

use crate::config::Config;
use crate::pipeline::{AuditAction, Pipeline, RefusalLimiter, new_request_id, records};
use crate::probe::ProbeKind;
use crate::sessions::providers::{LoginProvider, Providers};
use crate::sessions::return_to::ReturnOrigins;
use crate::sessions::{SessionTimes, Sessions};
use crate::targets::admin::AdminState;
use crate::targets::documents::{Documents, DocumentsFront};
use crate::targets::git::GitTarget;
use crate::targets::readiness::{Probe, Readiness};
use crate::targets::signin::SignIn;
use crate::targets::tokens::TokenService;
use crate::targets::webhooks::Webhooks;
use latchkey_identity::oauth::ClientCredentials;

/// Why the gateway could not start. Every variant is fatal: Latchkey never
/// starts half-configured.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A configuration problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The state store could not be opened.
    #[error("state store: {0}")]
    Store(#[from] latchkey_store::StoreError),
    /// Signing keys could not be loaded.
    #[error("signing keys: {0}")]
    Keys(#[from] latchkey_tokens::TokenError),
    /// Policies did not load.
    #[error("policies: {0}")]
    Policy(#[from] latchkey_policy::PolicyError),
    /// The audit log could not be opened.
    #[error("audit log: {0}")]
    Audit(#[from] latchkey_audit::AuditError),
    /// An identity issuer could not be set up.
    #[error("identity: {0}")]
    Identity(#[from] latchkey_identity::IdentityError),
    /// A file or directory could not be prepared.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GatewayError {
    let what = what.into();
    move |source| GatewayError::Io { what, source }
}

/// How to start: `serve` and `dev` differ only in these.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// `latchkey dev`: allows the dev issuer and a generated master key.
    pub dev: bool,
}

/// How long shutdown waits for the witnesses to take the final checkpoint.
const WITNESS_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Builds the Firestore upstream from `[firestore]` as start-up would:
/// reads and checks a service-account key file and finds the root
/// certificates for Google's TLS, without contacting anyone. For
/// `latchkey serve --check`; `Ok(false)` when `[firestore]` is not set.
pub fn check_firestore(config: &Config) -> Result<bool, GatewayError> {
    let (Some(docs), Some(fs)) = (&config.documents, &config.firestore) else {
        return Ok(false);
    };
    let clock: latchkey_core::SharedClock = Arc::new(latchkey_core::SystemClock);
    DocumentsFront::firestore(docs.clone(), fs, clock, config.server.upstream_timeout).map_err(
        |message| crate::config::ConfigError::Invalid {
            key: "firestore".into(),
            message,
        },
    )?;
    Ok(true)
}

/// Polls the store's key generation every [`KEY_WATCH_INTERVAL`] for as
/// long as the task runs (see [`Gateway::watch_keys`]).
pub fn spawn_key_watch(gw: Arc<Gateway>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEY_WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = gw.watch_keys().await {
                tracing::error!(error = %e, "signing key reload failed; retrying");
            }
        }
    })
}

/// Opens the signing keys of the gateway `config` describes, without
/// starting it: what `latchkey keys list|rotate` works on. A running
/// gateway on the same data directory learns of a rotation within
/// [`KEY_WATCH_INTERVAL`] and audits it.
pub async fn open_keyring(
    config: &Config,
    clock: SharedClock,
) -> Result<SigningKeyRing, GatewayError> {
    let master = load_master_key(config, false)?;
    let store = crate::cluster::open_store_for_command(config).await?;
    let schedule = KeySchedule {
        rotation_period: config.keys.rotation_period,
        publish_ahead: config.keys.publish_ahead,
        max_token_lifetime: config.tokens.max_lifetime,
    };
    Ok(SigningKeyRing::load(store, master, clock, schedule).await?)
}

/// Reads the master key from config, or in dev mode from (or into)
/// `{data}/master.key`.
pub fn load_master_key(config: &Config, dev: bool) -> Result<MasterKey, GatewayError> {
    if let Some(text) = config.keys.master_key.load("keys.master_key")? {
        return MasterKey::from_base64(&text).map_err(|e| {
            GatewayError::Config(crate::config::ConfigError::Secret {
                key: "keys.master_key".into(),
                message: e.to_string(),
            })
        });
    }
    let path = config.server.data_dir.join("master.key");
    if dev {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return MasterKey::from_base64(text.trim()).map_err(GatewayError::Keys);
        }
        let key = MasterKey::generate()?;
        write_private_file(&path, key.to_base64().as_bytes())?;
        return Ok(key);
    }
    Err(GatewayError::Config(crate::config::ConfigError::Secret {
        key: "keys.master_key".into(),
        message: "no master key: set `keys.master_key.env` or `keys.master_key.file` \
                  (32 random bytes, base64; `openssl rand -base64 32` makes one)"
            .into(),
    }))
}

/// Creates a directory (and missing parents) only its owner may enter,
/// whatever the umask. An existing directory is left as it is.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// Writes a file readable only by its owner.
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), GatewayError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .map_err(io_err(format!("cannot create `{}`", path.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_err(format!("cannot write `{}`", path.display())))
}

/// Everything a running gateway holds: the pipeline, and each target's
/// state (the router hands each route its own).
pub struct Gateway {
    pub(crate) config: Config,
    pub(crate) clock: SharedClock,
    pub(crate) store: SharedStore,
    pub(crate) keyring: Arc<SigningKeyRing>,
    pub(crate) revocations: Arc<RevocationSet>,
    pub(crate) policy_dir: PathBuf,
    pub(crate) public_url: String,
    /// Authenticate, authorize, record: shared by every target.
    pub(crate) pipe: Arc<Pipeline>,
    pub(crate) git: Arc<GitTarget>,
    pub(crate) documents: Arc<Documents>,
    pub(crate) tokens: Arc<TokenService>,
    pub(crate) admin: Arc<AdminState>,
    pub(crate) webhooks: Arc<Webhooks>,
    /// Browser sessions, for the sign-in routes and the app routes.
    pub(crate) sessions: Arc<Sessions>,
    /// `/login`, `/callback`, `/logout`.
    pub(crate) signin: Arc<SignIn>,
    /// `[[apps]]`: web apps behind Latchkey.
    pub(crate) apps: Arc<crate::targets::apps::Apps>,
    /// The audit witness tasks, given a moment at shutdown to deliver the
    /// final checkpoint.
    witnesses: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The store's key generation the keyring was last reloaded at; see
    /// [`Gateway::watch_keys`]. Serialised so two polls never audit twice.
    pub(crate) keys_seen: tokio::sync::Mutex<Option<u64>>,
    /// The revocation follower (a shared store only), stopped at shutdown.
    follower: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("public_url", &self.public_url)
            .field("policy_dir", &self.policy_dir)
            .finish_non_exhaustive()
    }
}

/// The store meta key of the last key generation whose rotations are in
/// the audit log (so a rotation made while no gateway ran is audited at
/// the next start, and once).
const KEYS_AUDITED_META: &str = "keys_generation_audited";

/// How often a running gateway polls the store's key generation, so a
/// rotation made by `latchkey keys rotate` takes effect within a second.
pub const KEY_WATCH_INTERVAL: Duration = Duration::from_millis(250);

impl Gateway {
    /// Opens the store, keys, policies and audit log, and sets up issuers.
    /// Fails closed: any missing piece is an error.
    pub async fn start(
        mut config: Config,
        opts: StartOptions,
        clock: SharedClock,
    ) -> Result<Arc<Self>, GatewayError> {
        let data = config.server.data_dir.clone();
        create_private_dir(&data).map_err(io_err(format!(
            "cannot create data directory `{}`",
            data.display()
        )))?;
        let public_url = config.server.public_url();

        if config.dev_issuer.enabled && !opts.dev && !config.dev_issuer.allow_in_serve {
            return Err(crate::config::ConfigError::Invalid {
                key: "dev_issuer.enabled".into(),
                message: "the development identity provider is for `latchkey dev` only; \
                          set `dev_issuer.allow_in_serve = true` to run it anyway"
                    .into(),
            }
            .into());
        }
        // Things an operator must not miss, logged loudly at start and shown
        // by `/admin/health` for as long as they hold.
        let mut warnings = Vec::new();
        if config.dev_issuer.enabled && !opts.dev {
            let warning = "the development identity provider is enabled in `serve` \
                           (`dev_issuer.allow_in_serve = true`): it mints any identity from a key in \
                           the data directory; never run it outside a sandbox";
            tracing::warn!("WARNING: {warning}");
            warnings.push(warning.to_owned());
        }

        let master = load_master_key(&config, opts.dev)?;
        let mut webhook_secrets = BTreeMap::new();
        for source in latchkey_events::Source::ALL {
            if let Some(w) = config.webhooks.get(source) {
                let key = format!("webhooks.{source}.secret");
                let secret =
                    w.secret
                        .load(&key)?
                        .ok_or_else(|| crate::config::ConfigError::Secret {
                            key: key.clone(),
                            message: "required: set `value`, `env` or `file`".into(),
                        })?;
                webhook_secrets.insert(source, secret.into_bytes());
            }
        }
        let opened = crate::cluster::open_store(&config, crate::cluster::StoreRole::Node).await?;
        let store: SharedStore = opened.store.clone();

        let dev_issuer = if config.dev_issuer.enabled {
            let issuer_url = format!("{public_url}/dev-idp");
            let mut dev =
                DevIssuer::load_or_create(&data.join("dev-issuer-key.pk8"), issuer_url.clone())?;
            if let Some(lifetime) = config.dev_issuer.id_token_lifetime {
                dev = dev.with_id_token_lifetime(lifetime);
            }
            if !config.issuers.iter().any(|i| i.issuer == issuer_url) {
                config.issuers.push(dev_issuer_config(&issuer_url));
            }
            Some(dev)
        } else {
            None
        };

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| GatewayError::Io {
                what: "cannot build HTTP client".into(),
                source: std::io::Error::other(e),
            })?;
        let issuers = Arc::new(IssuerSet::new(
            config.issuers.clone(),
            http.clone(),
            clock.clone(),
        )?);

        let schedule = KeySchedule {
            rotation_period: config.keys.rotation_period,
            publish_ahead: config.keys.publish_ahead,
            max_token_lifetime: config.tokens.max_lifetime,
        };
        let keyring = Arc::new(
            SigningKeyRing::load(store.clone(), master.clone(), clock.clone(), schedule).await?,
        );
        let revocations = Arc::new(RevocationSet::load(store.clone(), clock.clone()).await?);
        let token_issuer = TokenIssuer::new(
            public_url.clone(),
            keyring.clone(),
            revocations.clone(),
            clock.clone(),
            Lifetimes {
                default: config.tokens.default_lifetime,
                max: config.tokens.max_lifetime,
            },
        );
        let verifier = TokenVerifier::new(
            public_url.clone(),
            keyring.clone(),
            revocations.clone(),
            clock.clone(),
            config.tokens.cache_capacity,
        );

        let policy_dir = config.policy_dir();
        let policy = PolicyEngine::load(&policy_dir)?;

        let audit_signer = load_audit_signer(store.as_ref(), &master).await?;
        let audit_dir = data.join("audit");
        // Creates the directory (0700) and verifies the whole log; a log
        // that does not verify stops the start here.
        let audit = AuditLog::open(
            &audit_dir,
            audit_signer,
            Some(store.clone()),
            clock.clone(),
            AuditConfig {
                checkpoint_interval: config.audit.checkpoint_interval,
                witness: store_witnessed_checkpoints(store.as_ref()).await?,
                ..AuditConfig::default()
            },
        )
        .await?;
        if let Some((from, to)) = audit.unvouched_at_open() {
            // Records a crash left without a checkpoint are signed over now;
            // say so in the trail itself.
            let event = records::system(
                new_request_id(),
                AuditAction::AuditRecover,
                "unvouched_tail_signed".into(),
                Some(format!(
                    "records {from} to {to} had no checkpoint when the log was opened (the gateway did not shut down cleanly)"
                )),
                clock.unix_millis(),
            );
            audit.append(event).await?;
        }
        let shared = store.is_shared().then(|| store.clone());
        let witnesses =
            crate::witness::spawn(config.audit.witness.as_ref(), shared, &audit.checkpoints())
                .map_err(|e| GatewayError::Io {
                    what: "cannot build the audit witness's HTTP client".into(),
                    source: std::io::Error::other(e),
                })?;

        let mut probes = Vec::new();
        let mut git_upstreams = BTreeMap::new();
        for (name, up) in &config.git.upstreams {
            let upstream = match (&up.url, &up.local_root) {
                (Some(url), _) => {
                    let password = up
                        .password
                        .load(&format!("git.upstreams.{name}.password"))?;
                    let credential = match (&up.username, password) {
                        (Some(u), Some(p)) => Some(latchkey_git::BasicCredential {
                            username: u.clone(),
                            password: p,
                        }),
                        _ => None,
                    };
                    let tls = if url.starts_with("https://") {
                        let limits = latchkey_git::GitLimits {
                            connect_timeout: config
                                .server
                                .upstream_timeout
                                .min(std::time::Duration::from_secs(10)),
                            ..latchkey_git::GitLimits::default()
                        };
                        Some(
                            latchkey_git::GitTls::new(up.ca_file.as_deref(), &limits).map_err(
                                |e| crate::config::ConfigError::Invalid {
                                    key: format!("git.upstreams.{name}.ca_file"),
                                    message: e.to_string(),
                                },
                            )?,
                        )
                    } else {
                        None
                    };
                    latchkey_git::Upstream::Http {
                        base_url: url.trim_end_matches('/').to_owned(),
                        credential,
                        tls,
                    }
                }
                (None, Some(root)) => latchkey_git::Upstream::Local { root: root.clone() },
                (None, None) => continue,
            };
            probes.push(Probe {
                component: format!("git upstream {name}"),
                kind: match &upstream {
                    latchkey_git::Upstream::Http { base_url, .. } => {
                        ProbeKind::Http(base_url.clone())
                    }
                    latchkey_git::Upstream::Local { root } => ProbeKind::Dir(root.clone()),
                },
            });
            git_upstreams.insert(name.clone(), upstream);
        }
        let git_limits = latchkey_git::GitLimits {
            response_head_timeout: config.server.upstream_timeout,
            push_certificates: config.git.push_certificates,
            ..latchkey_git::GitLimits::default()
        };

        if let Some(fs) = &config.firestore {
            probes.push(Probe {
                component: "firestore".into(),
                kind: match &fs.emulator {
                    Some(hostport) => ProbeKind::Tcp(hostport.clone()),
                    None => ProbeKind::Http(fs.endpoint.clone()),
                },
            });
        }
        let documents_front = match (&config.documents, &config.firestore) {
            (None, _) => None,
            (Some(docs), _) if docs.backend == crate::config::DocumentsBackend::Embedded => {
                let rows: Arc<dyn latchkey_store::DocumentRows> = opened.documents.clone();
                Some(DocumentsFront::embedded(
                    docs.clone(),
                    Arc::new(latchkey_docstore::DocumentStore::new(rows, clock.clone())),
                ))
            }
            (Some(docs), Some(fs)) => Some(
                DocumentsFront::firestore(
                    docs.clone(),
                    fs,
                    clock.clone(),
                    config.server.upstream_timeout,
                )
                .map_err(|message| crate::config::ConfigError::Invalid {
                    key: "firestore".into(),
                    message,
                })?,
            ),
            (Some(_), None) => {
                return Err(crate::config::ConfigError::Invalid {
                    key: "documents.backend".into(),
                    message: "`firestore` needs a [firestore] table".into(),
                }
                .into());
            }
        };

        let limiter = RefusalLimiter::new(
            config.server.limits.unauthenticated_refusals,
            config.server.limits.unauthenticated_interval,
        );
        let metrics = Arc::new(crate::metrics::Metrics::new(issuers.clone(), audit.clone()));
        let follow_status = Arc::new(crate::cluster::FollowStatus::default());
        let follower = crate::cluster::spawn_revocation_follower(
            store.clone(),
            revocations.clone(),
            config.store.poll_interval,
            follow_status.clone(),
            metrics.clone(),
        );
        let pipe = Arc::new(Pipeline {
            revocation_view: crate::cluster::RevocationView {
                set: revocations.clone(),
                consistency: config.store.revocations,
                max_staleness: config.store.max_staleness,
                status: follow_status,
            },
            clock: clock.clone(),
            audit,
            policy,
            verifier,
            limiter,
            metrics,
        });
        let mut login_providers = Vec::new();
        for issuer in &config.issuers {
            let Some(login) = &issuer.login else { continue };
            let client_secret = match &login.client_secret {
                Some(r) => crate::config::SecretSource::from(r.clone())
                    .load(&format!("issuers.{}.client_secret", issuer.name))?,
                None => None,
            };
            login_providers.push(LoginProvider::new(
                issuer.name.clone(),
                issuer.issuer.clone(),
                ClientCredentials {
                    client_id: login.client_id.clone(),
                    client_secret,
                },
                login.cli_client_id.clone(),
                login.scopes.clone(),
            ));
        }
        let providers = Arc::new(Providers::new(
            login_providers,
            issuers.clone(),
            http.clone(),
            clock.clone(),
        ));
        let sessions = Arc::new(Sessions::new(
            store.clone(),
            master.clone(),
            clock.clone(),
            revocations.clone(),
            providers,
            pipe.clone(),
            SessionTimes {
                idle: config.sessions.idle_timeout,
                absolute: config.sessions.absolute_timeout,
            },
            public_url.starts_with("https://"),
        ));
        let signin = Arc::new(SignIn {
            pipe: pipe.clone(),
            sessions: sessions.clone(),
            master: master.clone(),
            clock: clock.clone(),
            public_url: public_url.clone(),
            return_origins: ReturnOrigins::new(
                std::iter::once(origin_of(&public_url))
                    .chain(host_app_origins(&config, &public_url))
                    .chain(config.sessions.return_origins.iter().cloned())
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str),
            ),
            app_cookies: config
                .app_cookies()
                .into_iter()
                .map(|c| (c.name, c.path))
                .collect(),
        });
        let documents_front = match documents_front {
            Some(front) if store.is_shared() => Some(front.share_transactions(store.clone())),
            other => other,
        };
        let documents = Arc::new(Documents::new(pipe.clone(), documents_front));
        let git = Arc::new(GitTarget {
            pipe: pipe.clone(),
            upstreams: git_upstreams,
            limits: git_limits,
        });
        let tokens = Arc::new(TokenService {
            pipe: pipe.clone(),
            issuers: issuers.clone(),
            token_issuer,
            keyring: keyring.clone(),
            dev_issuer,
            public_url: public_url.clone(),
            tokens: config.tokens.clone(),
            trust: config.trust.clone(),
        });
        let admin = Arc::new(AdminState {
            pipe: pipe.clone(),
            store: store.clone(),
            revocations: revocations.clone(),
            keyring: keyring.clone(),
            warnings,
            readiness: Readiness::new(issuers, probes, http),
        });
        let webhooks = Arc::new(Webhooks {
            pipe: pipe.clone(),
            store: store.clone(),
            revocations: revocations.clone(),
            documents: documents.clone(),
            secrets: webhook_secrets,
            settings: config.webhooks.clone(),
            rules: config.rules.clone(),
        });
        // The apps' identity assertions are Latchkey tokens for each app's
        // audience, signed with the same keys (verifiable with the JWKS).
        let assertion_issuer = TokenIssuer::new(
            public_url.clone(),
            keyring.clone(),
            revocations.clone(),
            clock.clone(),
            Lifetimes {
                default: config.tokens.default_lifetime,
                max: config.tokens.max_lifetime,
            },
        );
        let apps = Arc::new(crate::targets::apps::Apps::new(
            &config,
            pipe.clone(),
            assertion_issuer,
            sessions.clone(),
        )?);
        let gw = Arc::new(Self {
            keys_seen: tokio::sync::Mutex::new(None),
            follower: std::sync::Mutex::new(follower),
            apps,
            config,
            clock,
            store,
            keyring,
            revocations,
            policy_dir,
            public_url,
            pipe,
            git,
            documents,
            tokens,
            admin,
            webhooks,
            sessions,
            signin,
            witnesses: std::sync::Mutex::new(witnesses),
        });
        // Rotations made while no gateway ran (`latchkey keys rotate` on a
        // stopped gateway) are audited now, before the first request.
        gw.watch_keys().await?;
        Ok(gw)
    }

    /// The configuration the gateway runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// One poll of the store's key generation: when it moved (a rotation by
    /// the CLI, another node, or the schedule), reloads the keyring (the
    /// verifier then refuses tokens of removed keys, cached or not) and
    /// records each rotation not yet in the audit log. Run every
    /// [`KEY_WATCH_INTERVAL`] by [`spawn_key_watch`].
    ///
    /// Fails without marking anything seen when the store, the keys or the
    /// audit log fail, so the next poll tries again.
    pub async fn watch_keys(&self) -> Result<(), GatewayError> {
        let mut seen = self.keys_seen.lock().await;
        let generation = self.keyring.generation().await?;
        if *seen == Some(generation) {
            return Ok(());
        }
        self.keyring.reload().await?;
        let audited = match self.store.get_meta(KEYS_AUDITED_META).await? {
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0),
            None => 0,
        };
        if audited < generation {
            for rotation in self.keyring.rotations_between(audited, generation).await? {
                let event =
                    records::key_rotation(new_request_id(), &rotation, self.clock.unix_millis());
                self.pipe.audit.append(event).await?;
                tracing::info!(
                    kid = %rotation.kid,
                    mode = rotation.mode.as_str(),
                    retired = ?rotation.retired,
                    "signing keys reloaded after a rotation"
                );
            }
            self.store
                .put_meta(KEYS_AUDITED_META, generation.to_string().as_bytes())
                .await?;
        }
        *seen = Some(generation);
        Ok(())
    }

    /// The URL that is the `iss` of Latchkey tokens.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// `[server.limits]`, for the listener ([`crate::serve_with_limits`]).
    pub fn limits(&self) -> &crate::config::ServerLimits {
        &self.config.server.limits
    }

    /// The dev issuer, when enabled.
    pub fn dev_issuer(&self) -> Option<&DevIssuer> {
        self.tokens.dev_issuer.as_ref()
    }

    /// Reloads policies (on SIGHUP). A set that fails validation is not
    /// loaded; the old one stays, the error is returned and audited, and
    /// `/readyz` shows `policies` degraded until a reload succeeds.
    pub async fn reload_policies(&self) -> Result<(), latchkey_policy::PolicyError> {
        let result = self.pipe.policy.reload(&self.policy_dir);
        self.admin
            .readiness
            .record_reload(self.clock.unix_millis(), result.is_ok());
        let (status, detail) = match &result {
            Ok(_) => ("reloaded".to_owned(), None),
            Err(e) => ("reload_failed".to_owned(), Some(e.to_string())),
        };
        let event = records::system(
            new_request_id(),
            AuditAction::PolicyReload,
            status,
            detail,
            self.clock.unix_millis(),
        );
        if let Err(e) = self.pipe.audit.append(event).await {
            tracing::error!(error = %e, "audit append failed for policy reload");
        }
        result.map(|_| ())
    }

    /// Periodic upkeep: key rotation, revocation refresh, and the summaries
    /// of refusals not recorded one by one.
    pub async fn maintain(&self) {
        let now = self.clock.unix_millis();
        let limiter = &self.pipe.limiter;
        for s in limiter.drain_expired(now) {
            let event = records::suppressed(
                new_request_id(),
                &s,
                limiter.limit(),
                limiter.interval_ms(),
                now,
            );
            if let Err(e) = self.pipe.audit.append(event).await {
                tracing::error!(error = %e, "audit append failed for suppressed refusals");
            }
        }
        // Leader jobs: on a shared store one node at a time runs them
        // (the advisory lock spares work; each job is also safe when two
        // nodes run it at once, through row locks in its own transactions).
        if self.leads("keys").await
            && let Err(e) = self.keyring.maintain().await
        {
            tracing::error!(error = %e, "signing key maintenance failed");
        }
        if let Err(e) = self.watch_keys().await {
            tracing::error!(error = %e, "signing key reload failed");
        }
        // A shared store is followed through its change log instead.
        if !self.store.is_shared()
            && let Err(e) = self.revocations.refresh().await
        {
            tracing::error!(error = %e, "revocation refresh failed");
        }
        if self.leads("cleanup").await {
            self.sessions.prune().await;
        }
    }

    /// Whether this node runs the leader job `job` now (always, on a store
    /// one node owns). A store that cannot answer means no.
    async fn leads(&self, job: &str) -> bool {
        match self.store.lead(job).await {
            Ok(leads) => leads,
            Err(e) => {
                tracing::warn!(error = %e, job, "cannot take the leader lock; skipping the job");
                false
            }
        }
    }

    /// Rotates the signing key (see [`SigningKeyRing::rotate`] for the two
    /// modes) and audits the rotation before returning.
    pub async fn rotate_keys(
        &self,
        mode: latchkey_tokens::RotationMode,
    ) -> Result<latchkey_tokens::Rotation, GatewayError> {
        let rotation = self.keyring.rotate(mode).await?;
        self.watch_keys().await?;
        Ok(rotation)
    }

    /// Flushes the audit log, writes a final checkpoint, and gives the
    /// witnesses a few seconds to take it.
    pub async fn shutdown(&self) {
        if let Some(task) = self
            .follower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        if let Err(e) = self.pipe.audit.shutdown().await {
            tracing::error!(error = %e, "audit shutdown failed");
        }
        let witnesses =
            std::mem::take(&mut *self.witnesses.lock().unwrap_or_else(|p| p.into_inner()));
        for task in witnesses {
            if tokio::time::timeout(WITNESS_SHUTDOWN_WAIT, task)
                .await
                .is_err()
            {
                tracing::error!("the audit witness did not take the final checkpoint in time");
            }
        }
    }
}

/// `scheme://host[:port]` of a URL (the URL itself when it does not parse;
/// `server.public_url` is validated at load).
fn origin_of(url: &str) -> String {
    url::Url::parse(url).map_or_else(
        |_| url.trim_end_matches('/').to_owned(),
        |u| u.origin().ascii_serialization(),
    )
}

/// The origins of apps served on their own host name: the gateway's scheme
/// and port with the app's host (a browser may be sent back there after
/// signing in).
fn host_app_origins(config: &Config, public_url: &str) -> Vec<String> {
    let Ok(u) = url::Url::parse(public_url) else {
        return Vec::new();
    };
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    config
        .apps
        .iter()
        .filter_map(|a| a.host.as_ref())
        .map(|h| format!("{}://{}{port}", u.scheme(), h.to_ascii_lowercase()))
        .collect()
}

/// The issuer config for the built-in dev identity provider. `login = true`
/// adds its sign-in page's client ids (`latchkey-web`, `latchkey-cli`) to
/// the audiences, since an ID token's `aud` is the client it was issued to.
fn dev_issuer_config(issuer_url: &str) -> IssuerConfig {
    let text = format!(
        "name = \"dev\"\nissuer = \"{issuer_url}\"\naudiences = [\"latchkey\"]\n\
         groups_claim = \"groups\"\ndev = true\n\
         login = true\nclient_id = \"latchkey-web\"\ncli_client_id = \"latchkey-cli\"\n"
    );
    // The text above is fixed; a parse failure is a bug caught by tests.
    toml::from_str(&text).unwrap_or_else(|e| panic!("dev issuer config: {e}"))
}

/// The checkpoints this node published into a shared store (none on a
/// store one node owns), for the log's verification at open and for
/// `latchkey audit verify`.
pub async fn store_witnessed_checkpoints(
    store: &dyn Store,
) -> Result<Vec<latchkey_audit::Checkpoint>, GatewayError> {
    if !store.is_shared() {
        return Ok(Vec::new());
    }
    let rows = store.witnessed_audit_checkpoints(store.node()).await?;
    rows.iter()
        .map(|row| {
            serde_json::from_str(&row.json).map_err(|e| {
                GatewayError::from(latchkey_store::StoreError::Corrupt(format!(
                    "checkpoint {} of node `{}` in the shared store does not parse: {e}",
                    row.seq,
                    store.node()
                )))
            })
        })
        .collect()
}

const AUDIT_KEY_META: &str = "audit_signing_key";
const AUDIT_PUBLIC_META: &str = "audit_public_key";

/// The audit checkpoint key, decrypted with the master key; created (and
/// its public half recorded) on first use. For the gateway and for
/// `latchkey audit archive`, which signs the new log's first checkpoint.
pub async fn load_audit_signer(
    store: &dyn Store,
    master: &MasterKey,
) -> Result<AuditSigner, GatewayError> {
    let kid = "audit-1".to_owned();
    if let Some(ct) = store.get_meta(AUDIT_KEY_META).await? {
        let der = master.decrypt(&ct, AUDIT_KEY_META.as_bytes())?;
        return Ok(AuditSigner::from_pkcs8(kid, &der)?);
    }
    let der = AuditSigner::generate_pkcs8()?;
    let signer = AuditSigner::from_pkcs8(kid, &der)?;
    store
        .put_meta(AUDIT_PUBLIC_META, &signer.public_key())
        .await?;
    store
        .put_meta(
            AUDIT_KEY_META,
            &master.encrypt(&der, AUDIT_KEY_META.as_bytes())?,
        )
        .await?;
    Ok(signer)
}

/// The audit public key recorded in the store (for `latchkey audit verify`).
pub async fn audit_public_key(
    store: &dyn Store,
) -> Result<Option<Vec<u8>>, latchkey_store::StoreError> {
    store.get_meta(AUDIT_PUBLIC_META).await
}
