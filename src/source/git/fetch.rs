//! The cached clone: created once, fetched into, and asked for the commit.
//!
//! The repository is fetched (never checked out) into a bare clone at
//! `<cache>/<digest of the URL>/repo.git`, initialised beside and renamed into
//! place so a cache is complete or absent. A `--ref` is resolved as a branch,
//! then a tag, then a commit; a pinned commit already in the cache is read
//! without fetching. Credentials come from the URL, `RELAYCTL_GIT_TOKEN` or
//! the SSH agent, only in libgit2's credentials callback.

use std::cell::Cell;
use std::path::Path;

use git2::{
    AutotagOption, Cred, CredentialType, FetchOptions, FetchPrune, Oid, RemoteCallbacks, Repository,
};
use zeroize::Zeroizing;

use super::{GitCause, GitError, GitSource, RepoUrl, TOKEN_ENV, USERNAME_ENV, create_private_dir};

impl GitSource {
    /// The commit to read: the pinned one, without fetching, when the cache
    /// has it; else the pinned commit or the ref, fetched and resolved.
    pub(super) fn fetch_commit(&self, repo: &Repository) -> Result<Oid, GitError> {
        let pinned = self.commit.as_ref().and_then(|commit| {
            Oid::from_str(commit)
                .ok()
                .filter(|oid| repo.find_commit(*oid).is_ok())
        });
        if let Some(oid) = pinned {
            tracing::debug!(remote = %self.url, commit = %oid, "commit already cached; not fetching");
            return Ok(oid);
        }
        let wanted = self.commit.as_deref().unwrap_or(&self.reference);
        let mut refspecs = vec![
            "+refs/heads/*:refs/remotes/origin/*".to_owned(),
            "+refs/tags/*:refs/tags/*".to_owned(),
        ];
        if wanted == "HEAD" {
            refspecs.push("+HEAD:refs/remotes/origin/HEAD".to_owned());
        } else if wanted.starts_with("refs/")
            && !wanted.starts_with("refs/heads/")
            && !wanted.starts_with("refs/tags/")
        {
            // e.g. `refs/pull/7/head`, `refs/merge-requests/7/head`.
            refspecs.push(format!("+{wanted}:{wanted}"));
        }
        self.fetch(repo, &refspecs)?;
        let mut found = resolve(repo, wanted);
        if found.is_none() && wanted.len() == 40 && Oid::from_str(wanted).is_ok() {
            // A commit no branch or tag reaches (a pull request's head
            // from a fork): servers that allow it hand it out by id.
            if self.fetch(repo, &[wanted.to_owned()]).is_ok() {
                found = resolve(repo, wanted);
            }
        }
        let oid = found.ok_or_else(|| GitError::UnknownRef {
            remote: self.url.clone(),
            reference: wanted.to_owned(),
        })?;
        tracing::info!(remote = %self.url, reference = %wanted, commit = %oid, "fetched");
        Ok(oid)
    }

    /// The cached bare clone in `dir`, created on first use (initialised
    /// beside and renamed into place).
    pub(super) fn open_or_init(&self, dir: &Path) -> Result<Repository, GitError> {
        let cache_err = |path: &Path, source| GitError::Cache {
            path: path.to_path_buf(),
            source,
        };
        create_private_dir(dir).map_err(|e| cache_err(dir, e))?;
        let path = dir.join("repo.git");
        let open_err = |e: git2::Error| GitError::Open {
            remote: self.url.clone(),
            path: path.clone(),
            source: GitCause(self.url.scrub(e.message())),
        };
        if path.exists() {
            tracing::debug!(remote = %self.url, cache = %path.display(), "reusing the cached clone");
            return Repository::open_bare(&path).map_err(open_err);
        }
        // Initialise beside, then rename: a cache is complete or absent.
        let tmp = dir.join(format!("repo.git.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        Repository::init_bare(&tmp).map_err(open_err)?;
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_dir_all(&tmp);
            if !path.exists() {
                return Err(cache_err(&path, e));
            }
        }
        tracing::info!(remote = %self.url, cache = %path.display(), "created a cached clone");
        Repository::open_bare(&path).map_err(open_err)
    }

    fn fetch(&self, repo: &Repository, refspecs: &[String]) -> Result<(), GitError> {
        let fetch_err = |message: String| GitError::Fetch {
            remote: self.url.clone(),
            reference: self.reference.clone(),
            source: GitCause(self.url.scrub(&message)),
        };
        let mut remote = repo
            .remote_anonymous(self.url.without_credentials())
            .map_err(|e| fetch_err(e.message().to_owned()))?;
        let attempts = Cell::new(0u32);
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|_url, username, allowed| {
            credentials(&self.url, &attempts, username, allowed)
        });
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .prune(FetchPrune::On)
            .download_tags(AutotagOption::None);
        remote
            .fetch(refspecs, Some(&mut options), Some("relayctl fetch"))
            .map_err(|e| fetch_err(e.message().to_owned()))?;
        Ok(())
    }
}

/// Answers libgit2's credential requests: URL credentials, then the token
/// from the environment, then the SSH agent. Gives up after a rejection.
fn credentials(
    url: &RepoUrl,
    attempts: &Cell<u32>,
    username: Option<&str>,
    allowed: CredentialType,
) -> Result<Cred, git2::Error> {
    attempts.set(attempts.get() + 1);
    if attempts.get() > 3 {
        return Err(git2::Error::from_str(
            "authentication failed: the credentials were rejected",
        ));
    }
    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
        if attempts.get() > 1 {
            return Err(git2::Error::from_str(
                "authentication failed: the remote rejected the credentials",
            ));
        }
        if let Some((user, password)) = url.userpass() {
            return Cred::userpass_plaintext(user, password);
        }
        if let Some(token) = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Zeroizing::new)
        {
            let user = std::env::var(USERNAME_ENV)
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "x-access-token".to_owned());
            return Cred::userpass_plaintext(&user, &token);
        }
        return Err(git2::Error::from_str(&format!(
            "the remote asks for credentials and none were given; set `{TOKEN_ENV}`"
        )));
    }
    let user = username.unwrap_or("git");
    if allowed.contains(CredentialType::SSH_KEY) {
        return Cred::ssh_key_from_agent(user);
    }
    if allowed.contains(CredentialType::USERNAME) {
        return Cred::username(user);
    }
    Err(git2::Error::from_str(
        "the remote asks for an unsupported kind of credentials",
    ))
}

/// Resolves a branch, then a tag, then a (possibly abbreviated) commit id.
fn resolve(repo: &Repository, reference: &str) -> Option<Oid> {
    let candidates: Vec<String> = if let Some(branch) = reference.strip_prefix("refs/heads/") {
        vec![format!("refs/remotes/origin/{branch}")]
    } else if reference.starts_with("refs/") {
        vec![reference.to_owned()]
    } else {
        vec![
            format!("refs/remotes/origin/{reference}"),
            format!("refs/tags/{reference}"),
        ]
    };
    for name in candidates {
        if let Ok(r) = repo.find_reference(&name)
            && let Ok(commit) = r.peel_to_commit()
        {
            return Some(commit.id());
        }
    }
    let hex =
        (4..=40).contains(&reference.len()) && reference.chars().all(|c| c.is_ascii_hexdigit());
    if hex
        && let Ok(object) = repo.revparse_single(reference)
        && let Ok(commit) = object.peel_to_commit()
    {
        return Some(commit.id());
    }
    None
}
