//! The `/git/{upstream}/{owner}/{repo}.git/{endpoint}` URL layout. Pure.

use latchkey_core::{ResourceKind, ResourceRef};

use crate::GitError;

/// The two smart-HTTP services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Clone and fetch.
    UploadPack,
    /// Push.
    ReceivePack,
}

impl Service {
    /// The service name as it appears in URLs and content types,
    /// e.g. `git-upload-pack`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UploadPack => "git-upload-pack",
            Self::ReceivePack => "git-receive-pack",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "git-upload-pack" => Some(Self::UploadPack),
            "git-receive-pack" => Some(Self::ReceivePack),
            _ => None,
        }
    }
}

/// Which smart-HTTP endpoint a request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET info/refs?service=...`: the ref advertisement.
    InfoRefs(Service),
    /// `POST git-upload-pack`: fetch negotiation and pack download.
    UploadPack,
    /// `POST git-receive-pack`: ref updates and pack upload.
    ReceivePack,
}

impl Endpoint {
    /// The service this endpoint belongs to.
    pub fn service(self) -> Service {
        match self {
            Self::InfoRefs(s) => s,
            Self::UploadPack => Service::UploadPack,
            Self::ReceivePack => Service::ReceivePack,
        }
    }

    /// The path below the repository, e.g. `info/refs` or `git-receive-pack`.
    pub fn path(self) -> &'static str {
        match self {
            Self::InfoRefs(_) => "info/refs",
            Self::UploadPack => "git-upload-pack",
            Self::ReceivePack => "git-receive-pack",
        }
    }

    /// The query string Latchkey sends upstream (never the caller's own).
    pub fn query(self) -> Option<String> {
        match self {
            Self::InfoRefs(s) => Some(format!("service={}", s.as_str())),
            _ => None,
        }
    }

    /// The content type of a successful response.
    pub fn response_content_type(self) -> String {
        match self {
            Self::InfoRefs(s) => format!("application/x-{}-advertisement", s.as_str()),
            other => format!("application/x-{}-result", other.service().as_str()),
        }
    }

    /// The content type a POST request to this endpoint must carry.
    pub fn request_content_type(self) -> Option<String> {
        match self {
            Self::InfoRefs(_) => None,
            other => Some(format!(
                "application/x-{}-request",
                other.service().as_str()
            )),
        }
    }
}

/// A parsed `/git/{upstream}/{owner}/{repo}.git/{endpoint}` request path:
/// which upstream, which repository, which endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GitRoute {
    /// The configured upstream's name.
    pub upstream: String,
    /// The repository owner (user or organisation).
    pub owner: String,
    /// The repository name, without `.git`.
    pub repo: String,
    /// The endpoint asked for.
    pub endpoint: Endpoint,
    /// Whether the upstream resolves owner and repository names without
    /// regard to case (Gogs, Gitea, GitHub and GitLab do): then policy sees
    /// them in lowercase, so `acme/Secret` is decided as `acme/secret`, the
    /// repository the upstream will serve. See [`GitRoute::for_upstream`].
    pub case_insensitive: bool,
}

/// Longest upstream, owner or repository name accepted.
const MAX_SEGMENT: usize = 100;

/// Dumb-HTTP endpoints, recognised only to give a helpful refusal.
fn is_dumb_path(rest: &str) -> bool {
    rest == "HEAD"
        || rest == "info/refs"
        || rest.starts_with("objects/")
        || rest.starts_with("info/")
        || rest == "description"
        || rest == "config"
}

fn check_segment(path: &str, seg: &str) -> Result<(), GitError> {
    let invalid = |reason| GitError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if seg.is_empty() {
        return Err(invalid("empty path segment"));
    }
    if seg.starts_with('.') {
        return Err(invalid("a path segment may not start with `.`"));
    }
    if seg.len() > MAX_SEGMENT {
        return Err(invalid("a path segment is longer than 100 characters"));
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid(
            "names may only contain ASCII letters, digits, `-`, `_` and `.`",
        ));
    }
    Ok(())
}

impl GitRoute {
    /// Parses the path after `/git/` and the query string.
    ///
    /// Only the three smart-HTTP endpoints are accepted; dumb-HTTP paths,
    /// unknown services, `..` and empty segments are refused.
    pub fn parse(path_after_git_prefix: &str, query: Option<&str>) -> Result<GitRoute, GitError> {
        let path = path_after_git_prefix
            .strip_prefix('/')
            .unwrap_or(path_after_git_prefix);
        let invalid = |reason| GitError::InvalidPath {
            path: path.to_owned(),
            reason,
        };
        let mut parts = path.splitn(4, '/');
        let (Some(upstream), Some(owner), Some(repo_git), Some(rest)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("missing upstream, owner, repository or endpoint"));
        };
        check_segment(path, upstream)?;
        check_segment(path, owner)?;
        let repo = repo_git.strip_suffix(".git").unwrap_or(repo_git);
        check_segment(path, repo)?;
        if rest
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(invalid("empty, `.` or `..` path segment"));
        }

        let endpoint = match rest {
            "git-upload-pack" => Endpoint::UploadPack,
            "git-receive-pack" => Endpoint::ReceivePack,
            "info/refs" => {
                let service =
                    query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("service=")));
                match service {
                    None => {
                        return Err(GitError::DumbHttp {
                            path: rest.to_owned(),
                        });
                    }
                    Some(s) => match Service::parse(s) {
                        Some(s) => Endpoint::InfoRefs(s),
                        None => {
                            return Err(GitError::UnsupportedService {
                                service: s.chars().take(64).collect(),
                            });
                        }
                    },
                }
            }
            r if is_dumb_path(r) => {
                return Err(GitError::DumbHttp {
                    path: r.chars().take(200).collect(),
                });
            }
            _ => return Err(invalid("unknown git endpoint")),
        };
        Ok(GitRoute {
            upstream: upstream.to_owned(),
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            endpoint,
            case_insensitive: false,
        })
    }

    /// This route as `upstream` reads it: an HTTP upstream (Gogs, Gitea)
    /// finds repositories whatever the case of their names, a local
    /// directory does not.
    pub fn for_upstream(mut self, upstream: &crate::Upstream) -> Self {
        self.case_insensitive = matches!(upstream, crate::Upstream::Http { .. });
        self
    }

    fn decided_name(&self, name: &str) -> String {
        if self.case_insensitive {
            name.to_ascii_lowercase()
        } else {
            name.to_owned()
        }
    }

    /// The repository name policy decides on. On an HTTP upstream it is in
    /// lowercase, and a wiki (`app.wiki`, which Gogs and Gitea serve with
    /// the permissions of `app`) is decided as its repository, so a policy
    /// on `app` also covers `app.wiki.git`.
    fn decided_repo(&self) -> String {
        let name = self.decided_name(&self.repo);
        match name.strip_suffix(".wiki") {
            Some(base) if self.case_insensitive && !base.is_empty() => base.to_owned(),
            _ => name,
        }
    }

    /// `upstream/owner/repo`, the repository's resource id (owner and
    /// repository in lowercase when the upstream ignores case, a wiki as
    /// its repository).
    pub fn repository_id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.upstream,
            self.decided_name(&self.owner),
            self.decided_repo()
        )
    }

    /// The repository as a policy resource (kind `Repository`, id
    /// `upstream/owner/repo`, attributes `upstream`, `owner`, `name`).
    pub fn repository_resource(&self) -> ResourceRef {
        ResourceRef::new(ResourceKind::Repository, self.repository_id())
            .with_attr("upstream", self.upstream.clone())
            .with_attr("owner", self.decided_name(&self.owner))
            .with_attr("name", self.decided_repo())
    }

    /// The path below an upstream's base: `/owner/repo.git/endpoint`.
    pub fn upstream_path(&self) -> String {
        format!("/{}/{}.git/{}", self.owner, self.repo, self.endpoint.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_endpoints() {
        let r = GitRoute::parse(
            "local/acme/app.git/info/refs",
            Some("service=git-upload-pack"),
        )
        .unwrap();
        assert_eq!(r.upstream, "local");
        assert_eq!(r.owner, "acme");
        assert_eq!(r.repo, "app");
        assert_eq!(r.endpoint, Endpoint::InfoRefs(Service::UploadPack));
        let r = GitRoute::parse("/local/acme/app/git-receive-pack", None).unwrap();
        assert_eq!(r.endpoint, Endpoint::ReceivePack);
        assert_eq!(r.repo, "app");
        let r = GitRoute::parse("local/acme/app.git/git-upload-pack", None).unwrap();
        assert_eq!(r.endpoint, Endpoint::UploadPack);
        assert_eq!(r.upstream_path(), "/acme/app.git/git-upload-pack");
        let r = GitRoute::parse(
            "local/acme/app.git/info/refs",
            Some("x=1&service=git-receive-pack"),
        )
        .unwrap();
        assert_eq!(r.endpoint, Endpoint::InfoRefs(Service::ReceivePack));
        assert_eq!(r.endpoint.query().unwrap(), "service=git-receive-pack");
    }

    /// Gogs and Gitea look repositories up by their lowercased names, so a
    /// policy on `acme/secret` must also decide `acme/SECRET.git`.
    #[test]
    fn http_upstreams_decide_names_in_lowercase() {
        let http = crate::Upstream::Http {
            base_url: "http://gogs.internal:3000/".into(),
            credential: None,
            tls: None,
        };
        let local = crate::Upstream::Local {
            root: std::path::PathBuf::from("/srv/git"),
        };
        let r = GitRoute::parse("gogs/Acme/SECRET.git/git-upload-pack", None).unwrap();
        let via_http = r.clone().for_upstream(&http);
        assert_eq!(via_http.repository_id(), "gogs/acme/secret");
        let res = via_http.repository_resource();
        assert_eq!(res.attributes["owner"], "acme");
        assert_eq!(res.attributes["name"], "secret");
        // The request still goes upstream as the caller spelled it.
        assert_eq!(via_http.upstream_path(), "/Acme/SECRET.git/git-upload-pack");
        // A directory on a case-sensitive disk is another repository.
        assert_eq!(r.for_upstream(&local).repository_id(), "gogs/Acme/SECRET");
        // A wiki is decided as its repository (Gogs and Gitea give it the
        // repository's permissions) but still goes upstream as the wiki.
        let wiki = GitRoute::parse("gogs/acme/Secret.wiki.git/git-receive-pack", None)
            .unwrap()
            .for_upstream(&http);
        assert_eq!(wiki.repository_id(), "gogs/acme/secret");
        assert_eq!(wiki.repository_resource().attributes["name"], "secret");
        assert_eq!(
            wiki.upstream_path(),
            "/acme/Secret.wiki.git/git-receive-pack"
        );
        let only_wiki = GitRoute::parse("gogs/acme/.wiki.git/git-upload-pack", None);
        assert!(only_wiki.is_err());
        let local_wiki = GitRoute::parse("local/acme/app.wiki.git/git-upload-pack", None)
            .unwrap()
            .for_upstream(&local);
        assert_eq!(local_wiki.repository_id(), "local/acme/app.wiki");
    }

    #[test]
    fn refuses_dumb_http_with_a_hint() {
        for (p, q) in [
            ("local/acme/app.git/info/refs", None),
            ("local/acme/app.git/HEAD", None),
            ("local/acme/app.git/objects/ab/cdef", None),
            ("local/acme/app.git/objects/info/packs", None),
        ] {
            let e = GitRoute::parse(p, q).unwrap_err();
            assert!(matches!(e, GitError::DumbHttp { .. }), "{p}: {e}");
            assert!(
                e.to_string().contains(
                    "dumb HTTP is not supported; use a git client that speaks smart HTTP"
                )
            );
        }
    }

    #[test]
    fn refuses_bad_services_and_paths() {
        let e = GitRoute::parse(
            "local/acme/app.git/info/refs",
            Some("service=git-upload-archive"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported git service `git-upload-archive`; only `git-upload-pack` and `git-receive-pack` are served"
        );
        for p in [
            "local/acme/../git-upload-pack",
            "local//app.git/git-upload-pack",
            "local/acme/app.git//git-upload-pack",
            "local/acme/app.git/../git-upload-pack",
            "local/acme/.git/git-upload-pack",
            "local/acme/app.git",
            "local/acme/a%2fb.git/git-upload-pack",
            "local/acme/app.git/git-upload-archive",
            "",
        ] {
            let e = GitRoute::parse(p, None).unwrap_err();
            assert!(matches!(e, GitError::InvalidPath { .. }), "{p}: {e}");
        }
    }

    #[test]
    fn repository_resource_has_attributes() {
        let r = GitRoute::parse("gitea/acme/app.git/git-upload-pack", None).unwrap();
        let res = r.repository_resource();
        assert_eq!(res.kind, ResourceKind::Repository);
        assert_eq!(res.id, "gitea/acme/app");
        assert_eq!(res.attributes["upstream"], "gitea");
        assert_eq!(res.attributes["owner"], "acme");
        assert_eq!(res.attributes["name"], "app");
    }
}
