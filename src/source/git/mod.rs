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
//!
//! `url` keeps the credentials apart, `fetch` keeps the cached clone up to
//! date and resolves the ref, `export` writes a commit's tree to the cache;
//! this module reads the manifests of the commit.

mod export;
mod fetch;
mod url;

use std::path::{Component, Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Tree};

pub use self::url::{EmptyUrl, RepoUrl, TOKEN_ENV, USERNAME_ENV};
use crate::config::ManifestFile;

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
        let commit_id = self.fetch_commit(&repo)?;
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

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

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
