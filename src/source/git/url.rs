//! Repository URLs whose credentials never show.
//!
//! A URL may carry a user and password (`https://user:token@host/repo`).
//! [`RepoUrl`] parses them out once: libgit2 and every message see the URL
//! without them, messages mark where they were with `****`, libgit2's own
//! messages are scrubbed of them (and of the token from [`TOKEN_ENV`]), and
//! they are handed over only to the credentials callback of a fetch.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// Environment variable holding an HTTPS token (sent as the password).
pub const TOKEN_ENV: &str = "RELAYCTL_GIT_TOKEN";
/// Environment variable naming the user sent with the token (default `x-access-token`).
pub const USERNAME_ENV: &str = "RELAYCTL_GIT_USERNAME";

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
    /// The user and password the URL carried (the password empty when it had
    /// none), for the credentials callback of a fetch alone.
    pub(super) fn userpass(&self) -> Option<(&str, &str)> {
        self.0.credentials.as_ref().map(|c| {
            let password = c.password.as_ref().map(|p| p.as_str()).unwrap_or("");
            (c.user.as_str(), password)
        })
    }

    pub(super) fn scrub(&self, text: &str) -> String {
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
    pub(super) fn cache_key(&self) -> String {
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
}
