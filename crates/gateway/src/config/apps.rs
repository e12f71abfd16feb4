//! `[[apps]]`: web apps behind Latchkey (Gogs, Gitea, Backstage, any app
//! that reads the signed-in user from a header).
//!
//! Only the shape and the load-time checks live here; routing, headers and
//! the proxy are `targets::apps`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// One `[[apps]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// `[a-z0-9-]+`: the policy resource `App::"name"` and the default
    /// audience `app:name`.
    pub name: String,
    /// Serve the app on its own host name (matched against `Host` or
    /// `:authority`, port ignored, case-insensitive). Exactly one of `host`
    /// and `path_prefix`.
    pub host: Option<String>,
    /// Serve the app under a path of the gateway (`/apps/gogs` matches
    /// `/apps/gogs` and `/apps/gogs/...`, never `/apps/gogsx`).
    pub path_prefix: Option<String>,
    /// Forward without the prefix (default). Set `false` when the app is
    /// itself configured to live under the prefix (Gogs' `ROOT_URL` with a
    /// sub-path).
    #[serde(default = "yes")]
    pub strip_prefix: bool,
    /// `http://` or `https://` base URL of the app.
    pub upstream: String,
    /// PEM file of the CA that signed an `https://` upstream's certificate;
    /// the system roots when unset.
    pub ca_file: Option<PathBuf>,
    /// Which identity headers the app reads.
    #[serde(default)]
    pub preset: AppPreset,
    /// For `gogs`/`gitea`/`cgit`: the `[git.upstreams]` entry that serves the same
    /// repositories, so a repository page is decided on the same
    /// `Repository::"<git_upstream>/<owner>/<repo>"` as a clone.
    pub git_upstream: Option<String>,
    /// Which of the principal's fields becomes the app's user name.
    #[serde(default)]
    pub user_claim: UserClaim,
    /// The Bearer-token audience and the identity assertion's `aud`;
    /// `app:<name>` by default.
    pub audience: Option<String>,
    /// `generic` only: header name → principal field.
    #[serde(default)]
    pub headers: BTreeMap<String, IdentityField>,
    /// Cookie names the app keeps its own session in, cleared with
    /// Latchkey's at sign-out; the preset's when unset.
    pub app_cookies: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

/// The identity headers an app reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppPreset {
    /// Gogs' reverse-proxy authentication: `X-WEBAUTH-USER`.
    Gogs,
    /// Gitea's: `X-WEBAUTH-USER`, `X-WEBAUTH-EMAIL`, `X-WEBAUTH-FULLNAME`.
    Gitea,
    /// Backstage's `oauth2Proxy` provider: `X-Forwarded-User`,
    /// `X-Forwarded-Email`, `X-Forwarded-Preferred-Username`.
    Backstage,
    /// cgit, the Git web UI (Debian's `cgit`): read-only pages of the
    /// repositories a local `[git.upstreams]` entry serves. No identity
    /// header (cgit has no users); every `/{owner}/{repo}/...` page is
    /// also decided as `git.read` of that repository.
    Cgit,
    /// The `headers` map, and the assertion.
    #[default]
    Generic,
}

impl AppPreset {
    /// The preset's name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gogs => "gogs",
            Self::Gitea => "gitea",
            Self::Backstage => "backstage",
            Self::Cgit => "cgit",
            Self::Generic => "generic",
        }
    }

    /// Whether the app serves Git repositories under `/{owner}/{repo}`.
    pub fn is_git_forge(self) -> bool {
        matches!(self, Self::Gogs | Self::Gitea)
    }

    /// Whether the app's pages are repositories of a `git_upstream`, so
    /// it must name one: the Git forges and cgit.
    pub fn serves_repositories(self) -> bool {
        self.is_git_forge() || self == Self::Cgit
    }

    /// The app's own session cookies when `app_cookies` is unset: Gogs'
    /// and Gitea's `[session] COOKIE_NAME` defaults.
    pub fn default_cookies(self) -> &'static [&'static str] {
        match self {
            Self::Gogs => &["i_like_gogs"],
            Self::Gitea => &["i_like_gitea"],
            Self::Backstage | Self::Cgit | Self::Generic => &[],
        }
    }
}

/// Which field of the principal is the user name an app sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserClaim {
    /// The `preferred_username` attribute when the identity carries one
    /// (a browser session from an OIDC provider that sends it), else the
    /// principal id (a Latchkey token's `sub`).
    #[default]
    PreferredUsername,
    /// Always the principal id (`sub`).
    Id,
    /// The e-mail address; a principal without one is refused.
    Email,
}

/// A principal field a `generic` app's header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityField {
    /// The user name chosen by `user_claim`.
    User,
    /// The principal id.
    Id,
    /// The e-mail address (empty when unknown: the header is not sent).
    Email,
    /// The groups, comma-separated.
    Groups,
    /// `user`, `workload`, `agent` or `service`.
    Kind,
    /// The issuer the identity came from.
    Issuer,
    /// The display name (`name` attribute), when known.
    Name,
}

/// A cookie to clear when the browser's user changes: the app's own
/// session, which would otherwise outlive Latchkey's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCookie {
    /// The app's name.
    pub app: String,
    /// The cookie's name.
    pub name: String,
    /// The path the app sets it on: `/` for a host app and for a prefix app
    /// whose prefix is stripped (the app thinks it is at `/`); the prefix
    /// when it is not stripped.
    pub path: String,
    /// The host it lives on, for a host app (clear it there); `None`: the
    /// gateway's own host.
    pub host: Option<String>,
}

/// Gateway routes no app prefix may shadow.
pub const RESERVED_PREFIXES: &[&str] = &[
    "/git",
    "/v1",
    "/admin",
    "/oauth2",
    "/.well-known",
    "/hooks",
    "/login",
    "/callback",
    "/logout",
    "/dev-idp",
    "/readyz",
    "/google.firestore.v1.Firestore",
    "/metrics",
];

/// Headers an app's `headers` map may not name: Latchkey sets or strips them
/// itself, or they are the hop's own.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "cookie",
    "authorization",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "content-length",
    "x-latchkey-assertion",
];

impl AppConfig {
    /// The Bearer-token audience and the assertion's `aud`.
    pub fn audience(&self) -> String {
        self.audience
            .clone()
            .unwrap_or_else(|| format!("app:{}", self.name))
    }

    /// The app's own session cookies.
    pub fn cookie_names(&self) -> Vec<String> {
        match &self.app_cookies {
            Some(c) => c.clone(),
            None => self
                .preset
                .default_cookies()
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
        }
    }

    /// Where the app's cookies live (see [`AppCookie`]).
    pub fn cookies(&self) -> Vec<AppCookie> {
        let path = match (&self.path_prefix, self.strip_prefix) {
            (Some(p), false) => p.clone(),
            _ => "/".to_owned(),
        };
        self.cookie_names()
            .into_iter()
            .map(|name| AppCookie {
                app: self.name.clone(),
                name,
                path: path.clone(),
                host: self.host.clone(),
            })
            .collect()
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header name as nginx, Apache and WSGI read it: lower-case with `_` as
/// `-` (they map both to the same CGI variable).
pub(crate) fn cgi_form(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_prefix(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    !rest.is_empty()
        && rest.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        })
}

/// Whether `a` is `b` or a path-segment prefix of it (or the other way).
fn prefixes_overlap(a: &str, b: &str) -> bool {
    let under = |short: &str, long: &str| {
        long == short
            || long
                .strip_prefix(short)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    under(a, b) || under(b, a)
}

/// Checks every `[[apps]]` entry, lower-cases hosts, and returns the
/// audiences the token endpoint must know.
pub(crate) fn validate(
    apps: &mut [AppConfig],
    public_host: Option<&str>,
    git_upstreams: &BTreeMap<String, super::GitUpstreamConfig>,
) -> Result<Vec<String>, ConfigError> {
    let mut audiences = Vec::new();
    for (i, app) in apps.iter_mut().enumerate() {
        let key = format!("apps[{i}]");
        if !valid_name(&app.name) {
            return Err(invalid(
                format!("{key}.name"),
                format!(
                    "`{}` is not an app name; use lower-case letters, digits and `-` (at most 63)",
                    latchkey_core::echo(&app.name)
                ),
            ));
        }
        let key = format!("apps.{}", app.name);
        match (&mut app.host, &app.path_prefix) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &key,
                    "set either `host` or `path_prefix`, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    &key,
                    "set `host` (the app's own host name) or `path_prefix` (a path of the gateway)",
                ));
            }
            (Some(host), None) => {
                *host = host.to_ascii_lowercase();
                if !valid_host(host) {
                    return Err(invalid(
                        format!("{key}.host"),
                        format!(
                            "`{}` is not a host name; give the name alone, without scheme, port or path (e.g. `gogs.example.com`)",
                            latchkey_core::echo(host)
                        ),
                    ));
                }
                if public_host.is_some_and(|p| p.eq_ignore_ascii_case(host)) {
                    return Err(invalid(
                        format!("{key}.host"),
                        format!(
                            "`{host}` is the host of `server.public_url`, where the gateway's own routes live; give the app a host of its own or use `path_prefix`"
                        ),
                    ));
                }
            }
            (None, Some(prefix)) => {
                if !valid_prefix(prefix) {
                    return Err(invalid(
                        format!("{key}.path_prefix"),
                        format!(
                            "`{}` is not a path prefix; write `/` and segments of letters, digits, `-`, `.`, `_` or `~`, without a trailing `/` (e.g. `/apps/gogs`)",
                            latchkey_core::echo(prefix)
                        ),
                    ));
                }
                if let Some(r) = RESERVED_PREFIXES.iter().find(|r| {
                    prefixes_overlap(prefix, &r.to_ascii_lowercase())
                        || prefixes_overlap(&prefix.to_ascii_lowercase(), r)
                }) {
                    return Err(invalid(
                        format!("{key}.path_prefix"),
                        format!(
                            "`{prefix}` overlaps the gateway's own route `{r}`; choose another prefix (e.g. `/apps/{}`)",
                            app.name
                        ),
                    ));
                }
            }
        }
        let url = url::Url::parse(&app.upstream).map_err(|e| {
            invalid(
                format!("{key}.upstream"),
                format!("`{}` is not a URL: {e}", latchkey_core::echo(&app.upstream)),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(
                format!("{key}.upstream"),
                "must be an `http://` or `https://` URL with a host",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(invalid(
                format!("{key}.upstream"),
                "give the base URL only, without credentials, query or fragment",
            ));
        }
        if app.ca_file.is_some() && url.scheme() != "https" {
            return Err(invalid(
                format!("{key}.ca_file"),
                "only an `https://` upstream uses a CA file",
            ));
        }
        if app.preset.serves_repositories() {
            match &app.git_upstream {
                None => {
                    return Err(invalid(
                        format!("{key}.git_upstream"),
                        format!(
                            "a `{}` app names the `[git.upstreams]` entry that serves its repositories, so its repository pages are decided like clones of them",
                            app.preset.as_str()
                        ),
                    ));
                }
                Some(g) if !git_upstreams.contains_key(g) => {
                    let known: Vec<&str> = git_upstreams.keys().map(String::as_str).collect();
                    return Err(invalid(
                        format!("{key}.git_upstream"),
                        format!(
                            "no `[git.upstreams.{}]` is configured (known: {})",
                            latchkey_core::echo(g),
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
                Some(g)
                    if app.preset == AppPreset::Cgit
                        && git_upstreams.get(g).is_some_and(|u| u.local_root.is_none()) =>
                {
                    return Err(invalid(
                        format!("{key}.git_upstream"),
                        format!(
                            "`[git.upstreams.{g}]` is an HTTP upstream; cgit reads repositories from a folder, so name an upstream with `local_root` (the folder cgit's `scan-path` lists)"
                        ),
                    ));
                }
                Some(_) => {}
            }
        } else if app.git_upstream.is_some() {
            return Err(invalid(
                format!("{key}.git_upstream"),
                "only a `gogs`, `gitea` or `cgit` app serves repositories",
            ));
        }
        if app.preset != AppPreset::Generic && !app.headers.is_empty() {
            return Err(invalid(
                format!("{key}.headers"),
                format!(
                    "the `{}` preset sends its own headers; `headers` is for `preset = \"generic\"`",
                    app.preset.as_str()
                ),
            ));
        }
        for name in app.headers.keys() {
            let lower = cgi_form(name);
            if !is_token(name)
                || FORBIDDEN_HEADERS.iter().any(|f| cgi_form(f) == lower)
                || lower.starts_with("x-forwarded-")
            {
                return Err(invalid(
                    format!("{key}.headers"),
                    format!(
                        "`{}` cannot carry identity: it is not a header name, or Latchkey sets or strips it itself; use a name of your own such as `X-User`",
                        latchkey_core::echo(name)
                    ),
                ));
            }
        }
        for c in app.cookie_names() {
            if !is_token(&c) || c == "latchkey" || c == "__Host-latchkey" {
                return Err(invalid(
                    format!("{key}.app_cookies"),
                    format!(
                        "`{}` is not a cookie name the app can own",
                        latchkey_core::echo(&c)
                    ),
                ));
            }
        }
        let aud = app.audience();
        if aud.trim().is_empty() || aud.contains(char::is_whitespace) {
            return Err(invalid(
                format!("{key}.audience"),
                "an audience is a non-empty word without spaces",
            ));
        }
        audiences.push(aud);
    }
    for (i, a) in apps.iter().enumerate() {
        for b in &apps[..i] {
            let key = format!("apps.{}", a.name);
            if a.name == b.name {
                return Err(invalid(&key, "two apps have this name; names are unique"));
            }
            if a.host.is_some() && a.host == b.host {
                return Err(invalid(
                    format!("{key}.host"),
                    format!("app `{}` has the same host; give each app its own", b.name),
                ));
            }
            if let (Some(pa), Some(pb)) = (&a.path_prefix, &b.path_prefix)
                && prefixes_overlap(&pa.to_ascii_lowercase(), &pb.to_ascii_lowercase())
            {
                return Err(invalid(
                    format!("{key}.path_prefix"),
                    format!(
                        "`{pa}` overlaps the prefix `{pb}` of app `{}`; one request would match both",
                        b.name
                    ),
                ));
            }
        }
    }
    Ok(audiences)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const GIT: &str = "[git.upstreams.forge]\nurl = \"http://127.0.0.1:3000\"\n";

    fn err(apps: &str) -> String {
        Config::parse(&format!(
            "[server]\npublic_url = \"https://gw.example.com\"\n{GIT}{apps}"
        ))
        .unwrap_err()
        .to_string()
    }

    fn ok(apps: &str) -> Config {
        Config::parse(&format!(
            "[server]\npublic_url = \"https://gw.example.com\"\n{GIT}{apps}"
        ))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_gogs_app_loads_with_its_defaults() {
        let c = ok(r#"
[[apps]]
name = "gogs"
host = "Gogs.Example.com"
upstream = "http://127.0.0.1:3000"
preset = "gogs"
git_upstream = "forge"

[[apps]]
name = "portal"
path_prefix = "/apps/portal"
upstream = "https://backstage.internal"
preset = "backstage"
"#);
        assert_eq!(c.apps[0].host.as_deref(), Some("gogs.example.com"));
        assert_eq!(c.apps[0].audience(), "app:gogs");
        assert!(c.tokens.audiences.contains(&"app:gogs".to_owned()));
        assert!(c.tokens.audiences.contains(&"app:portal".to_owned()));
        assert_eq!(
            c.app_cookies(),
            vec![AppCookie {
                app: "gogs".into(),
                name: "i_like_gogs".into(),
                path: "/".into(),
                host: Some("gogs.example.com".into()),
            }]
        );
    }

    #[test]
    fn bad_apps_are_refused_at_load_with_what_to_fix() {
        let app = |extra: &str| {
            format!("[[apps]]\nname = \"a\"\nupstream = \"http://127.0.0.1:1\"\n{extra}\n")
        };
        for (toml, needle) in [
            (
                app(""),
                "set `host` (the app's own host name) or `path_prefix`",
            ),
            (
                app("host = \"a.example.com\"\npath_prefix = \"/a\""),
                "either `host` or `path_prefix`, not both",
            ),
            (
                app("path_prefix = \"/git\""),
                "overlaps the gateway's own route `/git`",
            ),
            (
                app("path_prefix = \"/login/x\""),
                "overlaps the gateway's own route `/login`",
            ),
            (
                app("path_prefix = \"/Admin\""),
                "overlaps the gateway's own route `/admin`",
            ),
            (app("path_prefix = \"/apps/\""), "is not a path prefix"),
            (app("path_prefix = \"/\""), "is not a path prefix"),
            (
                app("host = \"gw.example.com\""),
                "is the host of `server.public_url`",
            ),
            (app("host = \"a.example.com:443\""), "is not a host name"),
            (
                app("host = \"a.example.com\"\npreset = \"gogs\""),
                "names the `[git.upstreams]` entry",
            ),
            (
                app("host = \"a.example.com\"\npreset = \"gitea\"\ngit_upstream = \"nope\""),
                "no `[git.upstreams.nope]` is configured (known: forge)",
            ),
            (
                app(
                    "host = \"a.example.com\"\npreset = \"gogs\"\ngit_upstream = \"forge\"\nheaders = { \"X-User\" = \"user\" }",
                ),
                "`headers` is for `preset = \"generic\"`",
            ),
            (
                app("host = \"a.example.com\"\nheaders = { \"X_Forwarded_User\" = \"user\" }"),
                "cannot carry identity",
            ),
            (
                app("host = \"a.example.com\"\nheaders = { \"Cookie\" = \"user\" }"),
                "cannot carry identity",
            ),
            (
                app("host = \"a.example.com\"\npreset = \"cgit\""),
                "names the `[git.upstreams]` entry",
            ),
            (
                app("host = \"a.example.com\"\npreset = \"cgit\"\ngit_upstream = \"forge\""),
                "cgit reads repositories from a folder",
            ),
            (
                app("host = \"a.example.com\"\napp_cookies = [\"latchkey\"]"),
                "is not a cookie name the app can own",
            ),
            (
                app("host = \"a.example.com\"\nca_file = \"ca.pem\""),
                "only an `https://` upstream",
            ),
            (
                "[[apps]]\nname = \"Gogs\"\nhost = \"a.example.com\"\nupstream = \"http://x\"\n"
                    .to_owned(),
                "is not an app name",
            ),
            (
                "[[apps]]\nname = \"a\"\nhost = \"a.example.com\"\nupstream = \"ftp://x\"\n"
                    .to_owned(),
                "must be an `http://` or `https://` URL",
            ),
            (
                format!(
                    "{}{}",
                    app("path_prefix = \"/apps/a\""),
                    "[[apps]]\nname = \"b\"\nupstream = \"http://x\"\npath_prefix = \"/apps/a/b\"\n"
                ),
                "overlaps the prefix `/apps/a` of app `a`",
            ),
            (
                format!(
                    "{}{}",
                    app("host = \"a.example.com\""),
                    "[[apps]]\nname = \"b\"\nupstream = \"http://x\"\nhost = \"A.example.com\"\n"
                ),
                "app `a` has the same host",
            ),
            (
                format!(
                    "{}{}",
                    app("host = \"a.example.com\""),
                    "[[apps]]\nname = \"a\"\nupstream = \"http://x\"\nhost = \"b.example.com\"\n"
                ),
                "two apps have this name",
            ),
        ] {
            let e = err(&toml);
            assert!(e.contains(needle), "{toml}\n=> {e}");
        }
        // `/apps/gogsx` does not collide with `/apps/gogs`.
        let both = format!(
            "{}[[apps]]\nname = \"b\"\nupstream = \"http://x\"\npath_prefix = \"/apps/ax\"\n",
            app("path_prefix = \"/apps/a\"")
        );
        assert_eq!(ok(&both).apps.len(), 2);
    }

    #[test]
    fn a_cgit_app_names_a_local_git_upstream() {
        let c = Config::parse(
            r#"
[server]
public_url = "https://gw.example.com"

[git.upstreams.local]
local_root = "repos"

[[apps]]
name = "cgit"
path_prefix = "/apps/cgit"
upstream = "http://127.0.0.1:8080"
preset = "cgit"
git_upstream = "local"
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.apps[0].preset, AppPreset::Cgit);
        assert!(c.apps[0].cookies().is_empty());
        assert!(c.tokens.audiences.contains(&"app:cgit".to_owned()));
    }

    #[test]
    fn overlap_is_by_segment() {
        assert!(prefixes_overlap("/apps/gogs", "/apps/gogs"));
        assert!(prefixes_overlap("/apps/gogs", "/apps/gogs/x"));
        assert!(prefixes_overlap("/apps", "/apps/gogs"));
        assert!(!prefixes_overlap("/apps/gogs", "/apps/gogsx"));
        assert!(prefixes_overlap("/git", "/git/x"));
        assert!(!prefixes_overlap("/gitea", "/git"));
    }

    #[test]
    fn prefixes_and_hosts() {
        assert!(valid_prefix("/apps/gogs"));
        for bad in [
            "", "/", "apps", "/apps/", "/a//b", "/a/../b", "/a/./b", "/a%2fb", "/a b",
        ] {
            assert!(!valid_prefix(bad), "{bad}");
        }
        assert!(valid_host("gogs.example.com"));
        for bad in [
            "",
            "gogs.example.com:443",
            "http://x",
            "a..b",
            "-a.b",
            "a/b",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
