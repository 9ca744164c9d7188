//! Manifests from a Git repository: fetch into a cache, read one commit.
//!
//! The repository is fetched (never checked out) into a bare clone under the
//! cache directory, `<cache>/<digest of the URL>/repo.git`, which later runs
//! reuse and only fetch into. A `--ref` is resolved as a branch, then a tag,
//! then a commit. The manifests are read straight from the commit's tree, so a
//! half-written checkout cannot exist. So that relative `file:` sources in the
//! manifests resolve, the commit's tree is also exported once to
//! `<cache>/<digest>/trees/<commit>/` — written to a temporary folder and
//! renamed into place, so it is complete or absent.
//!
//! Credentials never reach a message: [`RepoUrl`] keeps the user and password
//! of a URL apart from the URL that libgit2 sees and that messages show, and
//! hands them over only in the credentials callback, as it does with the token
//! from `RELAYCTL_GIT_TOKEN` and the SSH agent.

use std::cell::Cell;
use std::fmt;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use git2::{
    AutotagOption, Cred, CredentialType, FetchOptions, FetchPrune, ObjectType, Oid,
    RemoteCallbacks, Repository, Tree,
};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::config::ManifestFile;

/// Environment variable holding an HTTPS token (sent as the password).
pub const TOKEN_ENV: &str = "RELAYCTL_GIT_TOKEN";
/// Environment variable naming the user sent with the token (default `x-access-token`).
pub const USERNAME_ENV: &str = "RELAYCTL_GIT_USERNAME";

/// How many exported trees are kept per repository (the newest ones).
const KEPT_TREES: usize = 5;

/// A repository URL (or local path) whose credentials never show.
///
/// `Display` and `Debug` print `https://****@host/repo.git` when the URL holds
/// a user or password; [`RepoUrl::without_credentials`] drops them entirely.
#[derive(Clone, PartialEq, Eq)]
pub struct RepoUrl(std::sync::Arc<UrlParts>);

#[derive(PartialEq, Eq)]
struct UrlParts {
    /// What libgit2 is given and labels show: no password, no HTTPS user.
    remote: String,
    /// For messages: credentials replaced by `****`.
    shown: String,
    /// User and password from the URL, percent-decoded.
    credentials: Option<UrlCredentials>,
}

#[derive(Clone, PartialEq, Eq)]
struct UrlCredentials {
    user: Zeroizing<String>,
    password: Option<Zeroizing<String>>,
}

/// The URL given is empty.
#[derive(Debug, thiserror::Error)]
#[error("the repository URL is empty")]
pub struct EmptyUrl;

impl FromStr for RepoUrl {
    type Err = EmptyUrl;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(EmptyUrl);
        }
        if let Some((scheme, rest)) = text.split_once("://") {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            if let Some(at) = authority.rfind('@') {
                let (userinfo, host) = (&authority[..at], &authority[at + 1..]);
                let (user, password) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (userinfo, None),
                };
                let http = matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https");
                if http || password.is_some() {
                    let kept_user = if http {
                        String::new()
                    } else {
                        format!("{user}@")
                    };
                    return Ok(Self::new(UrlParts {
                        remote: format!("{scheme}://{kept_user}{host}{path}"),
                        shown: format!("{scheme}://****@{host}{path}"),
                        credentials: Some(UrlCredentials {
                            user: Zeroizing::new(percent_decode(user)),
                            password: password.map(|p| Zeroizing::new(percent_decode(p))),
                        }),
                    }));
                }
            }
            return Ok(Self::plain(text.to_owned()));
        }
        // `user:password@host:path` is no valid scp-like address; never show it.
        if let Some(at) = text.find('@')
            && let Some((user, password)) = text[..at].split_once(':')
            && !user.contains('/')
        {
            return Ok(Self::new(UrlParts {
                remote: text[at + 1..].to_owned(),
                shown: format!("****@{}", &text[at + 1..]),
                credentials: Some(UrlCredentials {
                    user: Zeroizing::new(percent_decode(user)),
                    password: Some(Zeroizing::new(percent_decode(password))),
                }),
            }));
        }
        let scp_like = text
            .find(':')
            .is_some_and(|colon| !text[..colon].contains('/'));
        if !scp_like && let Ok(absolute) = std::fs::canonicalize(text) {
            return Ok(Self::plain(absolute.display().to_string()));
        }
        Ok(Self::plain(text.to_owned()))
    }
}

impl RepoUrl {
    fn new(parts: UrlParts) -> Self {
        Self(std::sync::Arc::new(parts))
    }

    fn plain(url: String) -> Self {
        Self::new(UrlParts {
            remote: url.clone(),
            shown: url,
            credentials: None,
        })
    }

    /// The URL with user and password removed (the SSH user is kept): what the
    /// source annotation and saved plans record.
    pub fn without_credentials(&self) -> &str {
        &self.0.remote
    }

    /// Whether the URL carried a user or password.
    pub fn has_credentials(&self) -> bool {
        self.0.credentials.is_some()
    }

    /// Replaces any credential in `text` (a libgit2 message) by `****`.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        let mut secrets: Vec<String> = Vec::new();
        if let Some(c) = &self.0.credentials {
            if let Some(p) = &c.password {
                secrets.push(p.to_string());
            }
            if !self.0.remote.contains(c.user.as_str()) {
                secrets.push(c.user.to_string());
            }
        }
        if let Ok(token) = std::env::var(TOKEN_ENV) {
            secrets.push(token);
        }
        for secret in secrets.iter().filter(|s| s.len() >= 3) {
            out = out.replace(secret.as_str(), "****");
        }
        out
    }

    /// Folder name in the cache: a digest of the credential-free URL.
    fn cache_key(&self) -> String {
        let digest = Sha256::digest(self.0.remote.as_bytes());
        hex::encode(&digest[..8])
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.shown)
    }
}

impl fmt::Debug for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoUrl({:?})", self.0.shown)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// A libgit2 failure, with any credential scrubbed from its message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GitCause(String);

/// Reading manifests from Git failed. Every message names the remote
/// (credentials replaced by `****`) and the ref or commit.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The cache folder cannot be created or written.
    #[error("cannot prepare the git cache `{path}`")]
    Cache {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The cached clone cannot be opened or created.
    #[error("cannot open the cached clone of `{remote}` at `{path}`")]
    Open {
        /// The repository.
        remote: RepoUrl,
        /// The cache folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: GitCause,
    },
    /// Fetching failed (network, authentication, not a repository).
    #[error("cannot fetch `{reference}` from `{remote}`")]
    Fetch {
        /// The repository.
        remote: RepoUrl,
        /// The ref asked for.
        reference: String,
        /// Why.
        #[source]
        source: GitCause,
    },
    /// The ref is no branch, tag or commit of the repository.
    #[error("`{reference}` is not a branch, tag or commit of `{remote}`")]
    UnknownRef {
        /// The repository.
        remote: RepoUrl,
        /// The ref asked for.
        reference: String,
    },
    /// The `--path` is not a relative path inside the repository.
    #[error("`--path {path}` must be a relative path inside the repository")]
    BadPath {
        /// The path.
        path: PathBuf,
    },
    /// The `--path` does not exist at the commit.
    #[error("`{path}` does not exist at {commit} of `{remote}` (ref `{reference}`)")]
    NoSuchPath {
        /// The repository.
        remote: RepoUrl,
        /// The ref asked for.
        reference: String,
        /// The commit.
        commit: String,
        /// The path in the repository.
        path: PathBuf,
    },
    /// Reading a tree or blob of the commit failed.
    #[error("cannot read `{path}` at {commit} of `{remote}`")]
    Read {
        /// The repository.
        remote: RepoUrl,
        /// The commit.
        commit: String,
        /// The path in the repository.
        path: PathBuf,
        /// Why.
        #[source]
        source: GitCause,
    },
    /// A manifest is not UTF-8.
    #[error("manifest `{path}` at {commit} is not UTF-8 text")]
    NotUtf8 {
        /// The commit.
        commit: String,
        /// The path in the repository.
        path: PathBuf,
    },
    /// Exporting the commit's tree to the cache failed.
    #[error("cannot export {commit} of `{remote}` to `{path}`")]
    Export {
        /// The repository.
        remote: RepoUrl,
        /// The commit.
        commit: String,
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where to read manifests in a repository, and where to cache it.
#[derive(Debug, Clone)]
pub struct GitSource {
    /// The repository.
    pub url: RepoUrl,
    /// Branch, tag or commit.
    pub reference: String,
    /// Folder (or file) inside the repository; empty for the root.
    pub path: PathBuf,
    /// Root of the cache (`~/.cache/relayctl/git` by default).
    pub cache: PathBuf,
    /// Read exactly this commit (a saved plan's, or the one a run started with).
    pub commit: Option<String>,
}

/// What was read from a commit.
#[derive(Debug)]
pub struct GitRead {
    /// The manifests, paths under `root`.
    pub files: Vec<ManifestFile>,
    /// The full commit id.
    pub commit: String,
    /// The exported tree: manifest paths minus this prefix are paths in the repository.
    pub root: PathBuf,
}

/// The default cache root: `$XDG_CACHE_HOME/relayctl/git`, else
/// `~/.cache/relayctl/git`, else `.relayctl/cache/git`.
pub fn default_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        });
    match base {
        Some(base) => base.join("relayctl").join("git"),
        None => PathBuf::from(".relayctl/cache/git"),
    }
}

impl GitSource {
    /// This source pinned to `commit`.
    pub fn at_commit(&self, commit: &str) -> Self {
        Self {
            commit: Some(commit.to_owned()),
            ..self.clone()
        }
    }

    /// The cache folder of this repository.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache.join(self.url.cache_key())
    }

    /// Fetches (unless the pinned commit is cached already), resolves the ref
    /// and reads every manifest below `path` at the commit.
    pub fn read(&self) -> Result<GitRead, GitError> {
        let subdir = normalize(&self.path)?;
        let dir = self.cache_dir();
        let repo = self.open_or_init(&dir)?;
        let pinned = self.commit.as_ref().map(|commit| {
            Oid::from_str(commit)
                .ok()
                .filter(|oid| repo.find_commit(*oid).is_ok())
        });
        let commit_id = match pinned {
            Some(Some(oid)) => {
                tracing::debug!(remote = %self.url, commit = %oid, "commit already cached; not fetching");
                oid
            }
            _ => {
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
                self.fetch(&repo, &refspecs)?;
                let mut found = resolve(&repo, wanted);
                if found.is_none() && wanted.len() == 40 && Oid::from_str(wanted).is_ok() {
                    // A commit no branch or tag reaches (a pull request's head
                    // from a fork): servers that allow it hand it out by id.
                    if self.fetch(&repo, &[wanted.to_owned()]).is_ok() {
                        found = resolve(&repo, wanted);
                    }
                }
                let oid = found.ok_or_else(|| GitError::UnknownRef {
                    remote: self.url.clone(),
                    reference: wanted.to_owned(),
                })?;
                tracing::info!(remote = %self.url, reference = %wanted, commit = %oid, "fetched");
                oid
            }
        };
        let commit_text = commit_id.to_string();
        let read_err = |path: &Path, e: git2::Error| GitError::Read {
            remote: self.url.clone(),
            commit: commit_text.clone(),
            path: path.to_path_buf(),
            source: GitCause(self.url.scrub(e.message())),
        };
        let commit = repo
            .find_commit(commit_id)
            .map_err(|e| read_err(Path::new("."), e))?;
        let tree = commit.tree().map_err(|e| read_err(Path::new("."), e))?;
        let root = self.export(&repo, &tree, &dir, &commit_text)?;

        let mut blobs: Vec<(PathBuf, Oid)> = Vec::new();
        if subdir.as_os_str().is_empty() {
            collect(&repo, &tree, Path::new(""), &mut blobs)
                .map_err(|e| read_err(Path::new("."), e))?;
        } else {
            let entry = tree.get_path(&subdir).map_err(|_| GitError::NoSuchPath {
                remote: self.url.clone(),
                reference: self.reference.clone(),
                commit: commit_text.clone(),
                path: subdir.clone(),
            })?;
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let sub = repo
                        .find_tree(entry.id())
                        .map_err(|e| read_err(&subdir, e))?;
                    collect(&repo, &sub, &subdir, &mut blobs).map_err(|e| read_err(&subdir, e))?;
                }
                Some(ObjectType::Blob) => blobs.push((subdir.clone(), entry.id())),
                _ => {
                    return Err(GitError::NoSuchPath {
                        remote: self.url.clone(),
                        reference: self.reference.clone(),
                        commit: commit_text.clone(),
                        path: subdir.clone(),
                    });
                }
            }
        }
        blobs.sort();
        let mut files = Vec::with_capacity(blobs.len());
        for (path, oid) in blobs {
            let blob = repo.find_blob(oid).map_err(|e| read_err(&path, e))?;
            let text =
                String::from_utf8(blob.content().to_vec()).map_err(|_| GitError::NotUtf8 {
                    commit: commit_text.clone(),
                    path: path.clone(),
                })?;
            files.push(ManifestFile {
                path: root.join(&path),
                text,
            });
        }
        Ok(GitRead {
            files,
            commit: commit_text,
            root,
        })
    }

    /// Whether `commit` descends from (or is) `ancestor`; `None` when the cache
    /// cannot tell (an object is missing).
    pub fn descends_from(&self, commit: &str, ancestor: &str) -> Option<bool> {
        if commit == ancestor {
            return Some(true);
        }
        let repo = Repository::open_bare(self.cache_dir().join("repo.git")).ok()?;
        let (c, a) = (Oid::from_str(commit).ok()?, Oid::from_str(ancestor).ok()?);
        repo.find_commit(a).ok()?;
        repo.graph_descendant_of(c, a).ok()
    }

    fn open_or_init(&self, dir: &Path) -> Result<Repository, GitError> {
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

    /// Exports `tree` to `<dir>/trees/<commit>` unless it is there already.
    fn export(
        &self,
        repo: &Repository,
        tree: &Tree<'_>,
        dir: &Path,
        commit: &str,
    ) -> Result<PathBuf, GitError> {
        let trees = dir.join("trees");
        let target = trees.join(commit);
        let export_err = |path: &Path, source| GitError::Export {
            remote: self.url.clone(),
            commit: commit.to_owned(),
            path: path.to_path_buf(),
            source,
        };
        if target.is_dir() {
            return Ok(target);
        }
        create_private_dir(&trees).map_err(|e| export_err(&trees, e))?;
        let tmp = trees.join(format!(".tmp-{commit}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        create_private_dir(&tmp).map_err(|e| export_err(&tmp, e))?;
        if let Err(e) = write_tree(repo, tree, &tmp) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(export_err(&target, e));
        }
        if let Err(e) = std::fs::rename(&tmp, &target) {
            let _ = std::fs::remove_dir_all(&tmp);
            // Another run exported the same commit first.
            if !target.is_dir() {
                return Err(export_err(&target, e));
            }
        }
        prune_trees(&trees, commit);
        Ok(target)
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
        if let Some(c) = &url.0.credentials {
            let password = c.password.as_ref().map(|p| p.as_str()).unwrap_or("");
            return Cred::userpass_plaintext(&c.user, password);
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

/// `--path` as a clean relative path (`.` and `./x/` allowed, `..` not).
fn normalize(path: &Path) -> Result<PathBuf, GitError> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => {
                return Err(GitError::BadPath {
                    path: path.to_path_buf(),
                });
            }
        }
    }
    Ok(out)
}

/// Every `*.yaml` / `*.yml` blob below `tree` (hidden entries, symlinks and
/// submodules skipped), as `(path in the repository, blob id)`.
fn collect(
    repo: &Repository,
    tree: &Tree<'_>,
    prefix: &Path,
    out: &mut Vec<(PathBuf, Oid)>,
) -> Result<(), git2::Error> {
    for entry in tree.iter() {
        let Ok(name) = entry.name() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = prefix.join(name);
        match entry.kind() {
            Some(ObjectType::Tree) => collect(repo, &repo.find_tree(entry.id())?, &path, out)?,
            Some(ObjectType::Blob)
                if entry.filemode() != 0o120000
                    && matches!(
                        path.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml")
                    ) =>
            {
                out.push((path, entry.id()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes `tree` below `dir` (files 0600, folders 0700; symlinks and
/// submodules skipped).
fn write_tree(repo: &Repository, tree: &Tree<'_>, dir: &Path) -> std::io::Result<()> {
    let git = |e: git2::Error| std::io::Error::other(e.message().to_owned());
    for entry in tree.iter() {
        let Ok(name) = entry.name() else { continue };
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name == ".git" {
            continue;
        }
        let path = dir.join(name);
        match entry.kind() {
            Some(ObjectType::Tree) => {
                create_private_dir(&path)?;
                write_tree(repo, &repo.find_tree(entry.id()).map_err(git)?, &path)?;
            }
            Some(ObjectType::Blob) if entry.filemode() != 0o120000 => {
                let blob = repo.find_blob(entry.id()).map_err(git)?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path)?;
                file.write_all(blob.content())?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Keeps the newest [`KEPT_TREES`] exported trees (and `current`).
fn prune_trees(trees: &Path, current: &str) {
    let Ok(entries) = std::fs::read_dir(trees) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.') && name != current
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort();
    let excess = found.len().saturating_sub(KEPT_TREES - 1);
    for (_, path) in found.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_credentials_are_kept_out_of_display_debug_and_remote() {
        let url: RepoUrl = "https://user:s3cret@example.com/org/repo.git"
            .parse()
            .unwrap();
        assert_eq!(url.to_string(), "https://****@example.com/org/repo.git");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(
            url.without_credentials(),
            "https://example.com/org/repo.git"
        );
        assert!(url.has_credentials());
        assert_eq!(url.scrub("bad s3cret here"), "bad **** here");
    }

    #[test]
    fn an_https_token_as_user_is_redacted_too() {
        let url: RepoUrl = "https://ghp_abcdef@github.com/o/r".parse().unwrap();
        assert_eq!(url.to_string(), "https://****@github.com/o/r");
        assert_eq!(url.without_credentials(), "https://github.com/o/r");
    }

    #[test]
    fn ssh_users_are_not_secrets_but_passwords_are() {
        let url: RepoUrl = "ssh://git@example.com/o/r.git".parse().unwrap();
        assert_eq!(url.to_string(), "ssh://git@example.com/o/r.git");
        assert!(!url.has_credentials());
        let url: RepoUrl = "ssh://git:pw123@example.com/o/r.git".parse().unwrap();
        assert_eq!(url.to_string(), "ssh://****@example.com/o/r.git");
        assert_eq!(url.without_credentials(), "ssh://git@example.com/o/r.git");
        let url: RepoUrl = "git@github.com:o/r.git".parse().unwrap();
        assert_eq!(url.to_string(), "git@github.com:o/r.git");
    }

    #[test]
    fn percent_encoded_credentials_are_decoded() {
        assert_eq!(percent_decode("p%40ss%3Aword"), "p@ss:word");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn paths_must_stay_inside_the_repository() {
        assert_eq!(
            normalize(Path::new("./a/b/")).unwrap(),
            PathBuf::from("a/b")
        );
        assert_eq!(normalize(Path::new(".")).unwrap(), PathBuf::new());
        assert!(normalize(Path::new("../x")).is_err());
        assert!(normalize(Path::new("/etc")).is_err());
    }
}
