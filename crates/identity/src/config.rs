use std::collections::BTreeMap;

use latchkey_core::PrincipalKind;
use serde::Deserialize;

use crate::keys::{DEFAULT_ALGORITHMS, SUPPORTED_ALGORITHMS, is_forbidden_alg};
use crate::preset::check_pin;
use crate::{CiPreset, ConfigError};

/// The `CiClaims` fields a `ci_claims` entry may fill.
pub const CI_CLAIM_FIELDS: &[&str] = &[
    "system",
    "pipeline",
    "build",
    "job_id",
    "branch",
    "commit",
    "step",
    "environment",
];

/// One trusted external OIDC issuer: a `[[issuers]]` table in latchkey.toml.
///
/// With `preset = "buildkite" | "github-actions"` the issuer URL, `kind =
/// "workload"`, the `ci_claims` mapping, `ci_system` and `attribute_claims`
/// default to that CI system's (see [`CiPreset`]); anything set explicitly
/// wins (entries of `ci_claims` are merged over the preset's).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "RawIssuerConfig")]
pub struct IssuerConfig {
    /// Short name used in principals, audit records and errors.
    pub name: String,
    /// The issuer URL; must equal the token's `iss` exactly.
    pub issuer: String,
    /// The token's `aud` must contain at least one of these.
    pub audiences: Vec<String>,
    /// What kind of principal this issuer's tokens become.
    #[serde(default = "default_kind")]
    pub kind: PrincipalKind,
    /// The claim that becomes the principal's id.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// The claim holding group names (an array of strings or one string).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// The claim holding the e-mail address.
    #[serde(default = "default_email_claim")]
    pub email_claim: Option<String>,
    /// Claims that must match (exactly or by glob) for the token to be accepted.
    #[serde(default)]
    pub bound_claims: BTreeMap<String, ClaimMatch>,
    /// `CiClaims` field name to token claim name.
    #[serde(default)]
    pub ci_claims: BTreeMap<String, String>,
    /// Signature algorithms accepted from this issuer.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Where to fetch keys; when set, discovery is skipped.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Marks Latchkey's built-in development issuer (`latchkey dev`).
    #[serde(default)]
    pub dev: bool,
    /// The CI system preset the defaults came from, if any; it also turns on
    /// the preset's safety checks in [`IssuerConfig::validate`].
    pub preset: Option<CiPreset>,
    /// A constant `CiClaims::system` for this issuer's principals (a preset
    /// sets it to its name).
    pub ci_system: Option<String>,
    /// Token claims copied into `Principal::attributes` (audit and policy
    /// context).
    pub attribute_claims: Vec<String>,
    /// Browser sign-in and `latchkey login` with this issuer, when set
    /// (`login = true`).
    pub login: Option<LoginClient>,
    /// Whether `login = true` was written (client settings without it are
    /// refused by [`IssuerConfig::validate`]).
    pub login_requested: bool,
}

/// How Latchkey signs people in with an issuer (`login = true` in its
/// `[[issuers]]` table): the gateway's own client for the browser flow,
/// and optionally a public client for `latchkey login`.
///
/// Their client ids are accepted as audiences of the issuer's ID tokens
/// (an ID token's `aud` is the client it was issued to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginClient {
    /// The gateway's client id (a confidential client when a secret is set).
    pub client_id: String,
    /// Where its secret comes from; `None` for a public client with PKCE.
    pub client_secret: Option<SecretRef>,
    /// A public client for `latchkey login` (device grant or loopback
    /// redirect); published at `/oauth2/login-providers`.
    pub cli_client_id: Option<String>,
    /// The scopes asked for.
    pub scopes: Vec<String>,
}

/// Where a secret comes from: inline (discouraged), an environment
/// variable, or a file. Read by the gateway at start, not by this crate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The value itself.
    pub value: Option<String>,
    /// The name of an environment variable holding it.
    pub env: Option<String>,
    /// A file holding it.
    pub file: Option<std::path::PathBuf>,
}

/// The scopes browser sign-in asks for unless `scopes` says otherwise.
pub const DEFAULT_LOGIN_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

/// `[[issuers]]` as written, before preset defaults are applied.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuerConfig {
    name: String,
    #[serde(default)]
    issuer: Option<String>,
    audiences: Vec<String>,
    #[serde(default)]
    preset: Option<CiPreset>,
    #[serde(default)]
    kind: Option<PrincipalKind>,
    #[serde(default)]
    subject_claim: Option<String>,
    #[serde(default)]
    groups_claim: Option<String>,
    #[serde(default)]
    email_claim: Option<String>,
    #[serde(default)]
    bound_claims: BTreeMap<String, ClaimMatch>,
    #[serde(default)]
    ci_claims: BTreeMap<String, String>,
    #[serde(default)]
    ci_system: Option<String>,
    #[serde(default)]
    attribute_claims: Vec<String>,
    #[serde(default)]
    algorithms: Option<Vec<String>>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    dev: bool,
    #[serde(default)]
    login: bool,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<SecretRef>,
    #[serde(default)]
    cli_client_id: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

impl From<RawIssuerConfig> for IssuerConfig {
    fn from(raw: RawIssuerConfig) -> Self {
        let mut cfg = match raw.preset {
            Some(p) => IssuerConfig::with_preset(raw.name, p, raw.audiences),
            None => IssuerConfig::new(raw.name, String::new(), raw.audiences),
        };
        if let Some(i) = raw.issuer {
            cfg.issuer = i;
        }
        if let Some(k) = raw.kind {
            cfg.kind = k;
        }
        if let Some(s) = raw.subject_claim {
            cfg.subject_claim = s;
        }
        cfg.groups_claim = raw.groups_claim;
        if raw.email_claim.is_some() {
            cfg.email_claim = raw.email_claim;
        }
        cfg.bound_claims = raw.bound_claims;
        cfg.ci_claims.extend(raw.ci_claims);
        if raw.ci_system.is_some() {
            cfg.ci_system = raw.ci_system;
        }
        for a in raw.attribute_claims {
            if !cfg.attribute_claims.contains(&a) {
                cfg.attribute_claims.push(a);
            }
        }
        if let Some(a) = raw.algorithms {
            cfg.algorithms = a;
        }
        cfg.jwks_uri = raw.jwks_uri;
        cfg.dev = raw.dev;
        if raw.login
            || raw.client_id.is_some()
            || raw.client_secret.is_some()
            || raw.cli_client_id.is_some()
        {
            // `validate` refuses client settings without `login = true`, and
            // `login = true` without a client id (an empty one here).
            let login = LoginClient {
                client_id: raw.client_id.unwrap_or_default(),
                client_secret: raw.client_secret,
                cli_client_id: raw.cli_client_id,
                scopes: raw.scopes.unwrap_or_else(|| {
                    DEFAULT_LOGIN_SCOPES
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect()
                }),
            };
            for id in std::iter::once(&login.client_id).chain(&login.cli_client_id) {
                if !id.is_empty() && !cfg.audiences.contains(id) {
                    cfg.audiences.push(id.clone());
                }
            }
            // What apps and audit want to show of a person who signed in.
            for claim in ["preferred_username", "name"] {
                if !cfg.attribute_claims.iter().any(|a| a == claim) {
                    cfg.attribute_claims.push(claim.to_owned());
                }
            }
            cfg.login_requested = raw.login;
            cfg.login = Some(login);
        }
        cfg
    }
}

/// The patterns a bound claim must match: one, or any of several.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ClaimMatch {
    /// A single exact value or glob.
    One(String),
    /// Any of these exact values or globs.
    Any(Vec<String>),
}

impl ClaimMatch {
    /// The patterns, in order.
    pub fn patterns(&self) -> &[String] {
        match self {
            Self::One(p) => std::slice::from_ref(p),
            Self::Any(v) => v,
        }
    }
}

fn default_kind() -> PrincipalKind {
    PrincipalKind::User
}
fn default_subject_claim() -> String {
    "sub".into()
}
fn default_email_claim() -> Option<String> {
    Some("email".into())
}
fn default_algorithms() -> Vec<String> {
    DEFAULT_ALGORITHMS.iter().map(|s| (*s).to_owned()).collect()
}

impl IssuerConfig {
    /// A config with the defaults for everything but name, issuer and audiences.
    pub fn new(name: impl Into<String>, issuer: impl Into<String>, audiences: Vec<String>) -> Self {
        Self {
            name: name.into(),
            issuer: issuer.into(),
            audiences,
            kind: default_kind(),
            subject_claim: default_subject_claim(),
            groups_claim: None,
            email_claim: default_email_claim(),
            bound_claims: BTreeMap::new(),
            ci_claims: BTreeMap::new(),
            algorithms: default_algorithms(),
            jwks_uri: None,
            dev: false,
            preset: None,
            ci_system: None,
            attribute_claims: Vec::new(),
            login: None,
            login_requested: false,
        }
    }

    /// A workload issuer with a CI preset's defaults: the vendor's issuer URL
    /// (replace `issuer` to point elsewhere, e.g. at a test provider), its
    /// claim mapping and `ci_system`. Pin the organisation in
    /// `bound_claims` before use: [`IssuerConfig::validate`] insists.
    pub fn with_preset(name: impl Into<String>, preset: CiPreset, audiences: Vec<String>) -> Self {
        let mut cfg = Self::new(name, preset.issuer_url(), audiences);
        cfg.kind = PrincipalKind::Workload;
        cfg.email_claim = None;
        cfg.ci_claims = preset.ci_claims();
        cfg.ci_system = Some(preset.as_str().to_owned());
        cfg.attribute_claims = preset
            .attribute_claims()
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        cfg.preset = Some(preset);
        cfg
    }

    /// Checks a preset issuer's safety rules: the organisation pinned in
    /// `bound_claims`, no pattern on Buildkite's `sub`.
    fn validate_preset(&self, preset: CiPreset) -> Result<(), ConfigError> {
        let err = |field: &str, reason: String| ConfigError::new(&self.name, field, reason);
        if self.kind != PrincipalKind::Workload {
            return Err(err(
                "kind",
                format!(
                    "preset `{preset}` issues CI workload identities; remove `kind` or set it to `workload`"
                ),
            ));
        }
        if !preset.allows_sub_match() && self.bound_claims.contains_key("sub") {
            return Err(err(
                "bound_claims",
                format!(
                    "`sub` cannot be bound for preset `{preset}`: its `sub` embeds the commit; \
                     bind typed claims such as `pipeline_slug` and `build_branch` instead"
                ),
            ));
        }
        let pins = preset.required_pins();
        let mut pinned = false;
        for claim in pins {
            if let Some(m) = self.bound_claims.get(*claim) {
                for p in m.patterns() {
                    check_pin(claim, p).map_err(|r| err("bound_claims", r))?;
                }
                pinned = true;
            }
        }
        if !pinned {
            let keys: Vec<String> = pins.iter().map(|p| format!("`{p}`")).collect();
            return Err(err(
                "bound_claims",
                format!(
                    "preset `{preset}` needs your organisation pinned with {}: every {} customer shares the issuer `{}`",
                    keys.join(" or "),
                    match preset {
                        CiPreset::Buildkite => "Buildkite",
                        CiPreset::GithubActions => "GitHub",
                    },
                    preset.issuer_url()
                ),
            ));
        }
        Ok(())
    }

    /// Checks the configuration, naming the field that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &str, reason: String| ConfigError::new(&self.name, field, reason);
        if self.name.trim().is_empty() {
            return Err(err("name", "must not be empty".into()));
        }
        if self.issuer.is_empty() {
            return Err(err(
                "issuer",
                "is required (the URL in the tokens' `iss`), unless a `preset` supplies it".into(),
            ));
        }
        check_url(&self.issuer).map_err(|r| err("issuer", r))?;
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.is_empty()) {
            return Err(err(
                "audiences",
                "list at least one non-empty audience (usually your client id)".into(),
            ));
        }
        if self.subject_claim.is_empty() {
            return Err(err("subject_claim", "must not be empty".into()));
        }
        if self.groups_claim.as_deref() == Some("") {
            return Err(err(
                "groups_claim",
                "must not be empty; omit it instead".into(),
            ));
        }
        if self.email_claim.as_deref() == Some("") {
            return Err(err("email_claim", "must not be empty".into()));
        }
        if let Some(login) = &self.login {
            if !self.login_requested {
                return Err(err(
                    "login",
                    "`client_id`, `client_secret` and `cli_client_id` are for sign-in; add `login = true` or remove them".into(),
                ));
            }
            if login.client_id.is_empty() {
                return Err(err(
                    "client_id",
                    "`login = true` needs the client id Latchkey was registered with at this provider".into(),
                ));
            }
            if self.kind != PrincipalKind::User {
                return Err(err(
                    "login",
                    "only issuers of people (`kind = \"user\"`) can be used to sign in".into(),
                ));
            }
            if !login.scopes.iter().any(|s| s == "openid") {
                return Err(err("scopes", "must include `openid`".into()));
            }
        }
        for (claim, m) in &self.bound_claims {
            if claim.is_empty()
                || m.patterns().is_empty()
                || m.patterns().iter().any(String::is_empty)
            {
                return Err(err(
                    "bound_claims",
                    format!("claim `{claim}` needs at least one non-empty pattern"),
                ));
            }
        }
        for (field, claim) in &self.ci_claims {
            if !CI_CLAIM_FIELDS.contains(&field.as_str()) {
                return Err(err(
                    "ci_claims",
                    format!(
                        "unknown field `{field}`; use one of {}",
                        CI_CLAIM_FIELDS.join(", ")
                    ),
                ));
            }
            if claim.is_empty() {
                return Err(err(
                    "ci_claims",
                    format!("`{field}` maps to an empty claim name"),
                ));
            }
        }
        if self.algorithms.is_empty() {
            return Err(err("algorithms", "list at least one algorithm".into()));
        }
        for alg in &self.algorithms {
            if is_forbidden_alg(alg) {
                return Err(err(
                    "algorithms",
                    format!(
                        "`{alg}` is never accepted from external issuers; use asymmetric algorithms such as RS256 or ES256"
                    ),
                ));
            }
            if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
                return Err(err(
                    "algorithms",
                    format!(
                        "`{alg}` is not supported; use some of {}",
                        SUPPORTED_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        if let Some(uri) = &self.jwks_uri {
            check_url(uri).map_err(|r| err("jwks_uri", r))?;
        }
        if self.ci_system.as_deref() == Some("") {
            return Err(err(
                "ci_system",
                "must not be empty; omit it instead".into(),
            ));
        }
        if let Some(a) = self
            .attribute_claims
            .iter()
            .find(|a| a.is_empty() || a.as_str() == "client_id")
        {
            return Err(err(
                "attribute_claims",
                format!("`{a}` cannot be copied into attributes; remove it"),
            ));
        }
        if let Some(p) = self.preset {
            self.validate_preset(p)?;
        }
        Ok(())
    }
}

/// Checks that `s` is an absolute http(s) URL.
pub(crate) fn check_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL ({e})"))?;
    match u.scheme() {
        "https" | "http" => {}
        other => return Err(format!("scheme `{other}` is not allowed; use https")),
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{s}` has no host"));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> IssuerConfig {
        IssuerConfig::new("okta", "https://acme.okta.com", vec!["latchkey".into()])
    }

    #[test]
    fn defaults_from_toml() {
        let c: IssuerConfig = toml_like(
            r#"{"name":"gh","issuer":"https://token.actions.githubusercontent.com","audiences":["latchkey"],
                "kind":"workload","bound_claims":{"repository":"acme/*","ref":["refs/heads/main","refs/tags/*"]},
                "ci_claims":{"commit":"sha"}}"#,
        );
        assert_eq!(c.subject_claim, "sub");
        assert_eq!(c.email_claim.as_deref(), Some("email"));
        assert_eq!(c.kind, PrincipalKind::Workload);
        assert_eq!(c.algorithms, default_algorithms());
        assert_eq!(c.bound_claims["ref"].patterns().len(), 2);
        assert_eq!(c.bound_claims["repository"].patterns(), ["acme/*"]);
        c.validate().unwrap();
    }

    fn toml_like(json: &str) -> IssuerConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn validation_names_the_field() {
        type Mutate = Box<dyn Fn(&mut IssuerConfig)>;
        let cases: Vec<(Mutate, &str)> = vec![
            (Box::new(|c| c.name.clear()), "name"),
            (Box::new(|c| c.issuer = "ftp://x".into()), "issuer"),
            (Box::new(|c| c.issuer = "not a url".into()), "issuer"),
            (Box::new(|c| c.audiences.clear()), "audiences"),
            (
                Box::new(|c| c.algorithms = vec!["HS256".into()]),
                "algorithms",
            ),
            (
                Box::new(|c| c.algorithms = vec!["none".into()]),
                "algorithms",
            ),
            (
                Box::new(|c| c.algorithms = vec!["ES512".into()]),
                "algorithms",
            ),
            (Box::new(|c| c.algorithms.clear()), "algorithms"),
            (
                Box::new(|c| {
                    c.ci_claims.insert("sha".into(), "x".into());
                }),
                "ci_claims",
            ),
            (
                Box::new(|c| {
                    c.bound_claims.insert("r".into(), ClaimMatch::Any(vec![]));
                }),
                "bound_claims",
            ),
            (
                Box::new(|c| c.jwks_uri = Some("file:///etc/passwd".into())),
                "jwks_uri",
            ),
            (Box::new(|c| c.subject_claim.clear()), "subject_claim"),
        ];
        for (mutate, field) in cases {
            let mut c = base();
            mutate(&mut c);
            let e = c.validate().unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().contains(&format!("`{field}`")), "{e}");
        }
    }

    #[test]
    fn hs_rejected_message() {
        let mut c = base();
        c.algorithms = vec!["HS256".into()];
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "issuer `okta`: invalid `algorithms`: `HS256` is never accepted from external issuers; use asymmetric algorithms such as RS256 or ES256"
        );
    }
}
