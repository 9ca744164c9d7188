//! Fixtures shared by the CLI integration tests: a scratch copy of an
//! example with its own state directory, the binary run against it, direct
//! access to the directory backend, and a scan of everything the binary
//! printed for every key and token in the state.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // each test binary uses a part; helpers fail loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use relayctl::backend::Backend as _;
use relayctl::backend::directory::DirectoryBackend;
use relayctl::observed::SecretObject;
use relayctl::plan::{Action, Write};
use relayctl::secret::SecretBytes;

pub const BIN: &str = env!("CARGO_BIN_EXE_relayctl");
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One run's result.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A scratch copy of an example with its own state directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// Everything the CLI printed, for the leak scan.
    pub transcript: std::cell::RefCell<String>,
}

impl Fixture {
    pub fn example(scenario: &str) -> Self {
        let fixture = Self::empty();
        copy_dir(
            &Path::new(ROOT).join("examples/clusters").join(scenario),
            &fixture.config(),
        );
        if matches!(scenario, "custom" | "external") {
            let status = Command::new(Path::new(ROOT).join("examples/clusters/make-material.sh"))
                .arg(fixture.config().join("material"))
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        }
        if scenario == "gloo" {
            fixture.install_gloo_management_server();
        }
        fixture
    }

    pub fn empty() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        Self {
            dir,
            transcript: Default::default(),
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn write_config(&self, name: &str, text: &str) {
        std::fs::write(self.config().join(name), text).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(self.state())
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        let mut transcript = self.transcript.borrow_mut();
        transcript.push_str(&run.stdout);
        transcript.push_str(&run.stderr);
        run
    }

    pub fn apply(&self) -> Run {
        let run = self.run(&["apply", "config", "--auto-approve"]);
        assert_eq!(run.code, 0, "apply failed:\n{}\n{}", run.stdout, run.stderr);
        run
    }

    pub fn plan_code(&self) -> (i32, Run) {
        let run = self.run(&["plan", "config", "--detailed-exitcode"]);
        (run.code, run)
    }

    pub fn backend(&self, cluster: &str) -> DirectoryBackend {
        DirectoryBackend::new(self.state().join(cluster))
    }

    pub fn secret(&self, cluster: &str, name: &str) -> Option<SecretObject> {
        let names = vec![name.to_owned()];
        self.backend(cluster)
            .observe("gloo-mesh", "prod", &names)
            .unwrap()
            .secrets
            .remove(name)
    }

    /// Replaces a Secret on disk the way a person or another tool would.
    pub fn put(&self, cluster: &str, object: SecretObject) {
        let current = self.secret(cluster, &object.name).map(|s| s.version);
        let action = if current.is_some() {
            Action::Update
        } else {
            Action::Create
        };
        self.backend(cluster)
            .write(&Write {
                action,
                object,
                precondition: current,
                chained: false,
            })
            .unwrap();
    }

    pub fn file(&self, cluster: &str, name: &str) -> PathBuf {
        self.state()
            .join(cluster)
            .join("gloo-mesh")
            .join(format!("{name}.yaml"))
    }

    /// What the management server writes at install in `gloo` mode: its own
    /// root, signing CA and token, without relayctl's labels.
    pub fn install_gloo_management_server(&self) {
        use relayctl::pki::{self, CaRequest, Issuer, OsKeySource};
        let now = time::OffsetDateTime::now_utc();
        let keys = OsKeySource;
        let root = pki::issue_root(
            &CaRequest {
                common_name: "gloo-root".into(),
                validity: relayctl::model::Duration::from_hours(87_600),
                key: Default::default(),
            },
            &keys,
            now,
        )
        .unwrap();
        let issuer = Issuer::from_issued(&root).unwrap();
        let signing = pki::issue_intermediate(
            &CaRequest {
                common_name: "gloo-signing".into(),
                validity: relayctl::model::Duration::from_hours(43_800),
                key: Default::default(),
            },
            &issuer,
            &keys,
            now,
        )
        .unwrap();
        let plain = |name: &str, data: Vec<(&str, Vec<u8>)>| SecretObject {
            namespace: "gloo-mesh".into(),
            name: name.into(),
            labels: Default::default(),
            annotations: Default::default(),
            data: data
                .into_iter()
                .map(|(k, v)| (k.to_owned(), SecretBytes::new(v)))
                .collect(),
            version: String::new(),
        };
        self.put(
            "mgmt",
            plain(
                "relay-root-tls-secret",
                vec![
                    ("ca.crt", root.cert_pem.clone().into_bytes()),
                    ("tls.key", root.key.to_pkcs8_pem().expose().to_vec()),
                ],
            ),
        );
        self.put(
            "mgmt",
            plain(
                "relay-tls-signing-secret",
                vec![
                    ("tls.crt", signing.cert_pem.clone().into_bytes()),
                    ("tls.key", signing.key.to_pkcs8_pem().expose().to_vec()),
                    ("ca.crt", root.cert_pem.clone().into_bytes()),
                ],
            ),
        );
        self.put(
            "mgmt",
            plain(
                "relay-identity-token-secret",
                vec![("token", b"gloo-generated-token-0123456789abcdef".to_vec())],
            ),
        );
    }

    /// Every key and token in the state, in every form it could leak in.
    pub fn secret_needles(&self) -> Vec<String> {
        let mut needles = Vec::new();
        for entry in walk(&self.state()) {
            if entry.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let cluster = entry
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let name = entry.file_stem().unwrap().to_str().unwrap().to_owned();
            let Some(secret) = self.secret(&cluster, &name) else {
                continue;
            };
            for (key, value) in &secret.data {
                // `tls.key`, the rotation record's `*-root.key` and
                // `*-signing.key`, and tokens.
                if !key.ends_with(".key") && key != "token" {
                    continue;
                }
                let raw = value.expose();
                needles.push(base64::engine::general_purpose::STANDARD.encode(raw));
                let text = String::from_utf8_lossy(raw).into_owned();
                if key == "token" {
                    needles.push(text);
                } else {
                    for line in text
                        .lines()
                        .filter(|l| !l.starts_with("-----") && l.len() >= 24)
                    {
                        needles.push(line.to_owned());
                    }
                    if let Ok(block) = pem::parse(raw) {
                        needles.push(hex::encode(block.contents()));
                    }
                }
            }
        }
        needles
    }

    pub fn assert_no_leak(&self, extra_files: &[PathBuf]) {
        let mut haystack = self.transcript.borrow().clone();
        for file in extra_files {
            haystack.push_str(&std::fs::read_to_string(file).unwrap());
        }
        let needles = self.secret_needles();
        assert!(
            needles.len() >= 4,
            "the scan must look for real secrets, found {}",
            needles.len()
        );
        for needle in needles {
            assert!(
                !haystack.contains(&needle),
                "secret material leaked into the output: {}…",
                &needle[..needle.len().min(12)]
            );
        }
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path))
            } else {
                out.push(path)
            }
        }
    }
    out
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}
