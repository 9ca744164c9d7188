//! Starts one etcd and N kube-apiservers in a directory and waits until all
//! are ready. Shared by the test environment ([`crate::KubeEnv`]) and the
//! `kube-env up` binary; only the process [`Lifetime`] differs.
//!
//! Directory layout:
//!
//! ```text
//! ROOT/kubeconfig             contexts mgmt, cluster-1, …; credentials embedded
//! ROOT/etcd/                  etcd data;  ROOT/etcd.log
//! ROOT/<context>/             ca.crt, apiserver.{crt,key}, sa.{key,pub}, apiserver.log
//! ```

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::ClientConfig;

use crate::Error;
use crate::binaries::Binaries;
use crate::kubeconfig;
use crate::pki::{self, CertAndKey, ClusterCa, MAX_GROUPS};
use crate::probe;
use crate::process::{self, Lifetime};

/// How long one etcd or apiserver start may take. Generous: three
/// apiservers starting at once on two cores take a while, and other test
/// binaries may be starting theirs.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How often a start is retried after losing a port race.
const PORT_ATTEMPTS: u32 = 5;
const POLL: Duration = Duration::from_millis(100);

/// The context name of cluster `index`: `mgmt` for 0, else `cluster-<index>`.
pub fn context_name(index: usize) -> String {
    if index == 0 {
        "mgmt".to_owned()
    } else {
        format!("cluster-{index}")
    }
}

/// One apiserver of the environment and the keys to talk to it.
pub struct Cluster {
    context: String,
    port: u16,
    server: String,
    ca: ClusterCa,
    admin: CertAndKey,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("context", &self.context)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Context (and cluster) name in the kubeconfig: `mgmt`, `cluster-1`, …
    pub fn context(&self) -> &str {
        &self.context
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The apiserver's secure port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// This cluster's CA certificate (PEM): it signed the serving cert and
    /// every client cert this cluster accepts.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The admin client certificate (`CN=admin`, `O=system:masters`).
    pub fn admin(&self) -> &CertAndKey {
        &self.admin
    }

    /// Signs a client certificate for `user` in `groups` (at most
    /// [`MAX_GROUPS`]) with this cluster's CA. The user has no RBAC
    /// permissions until a test grants some.
    pub fn mint_client_cert(&self, user: &str, groups: &[&str]) -> Result<CertAndKey, Error> {
        if groups.len() > MAX_GROUPS {
            return Err(Error::TooManyGroups {
                user: user.to_owned(),
                count: groups.len(),
            });
        }
        self.ca
            .client_cert(user, groups)
            .map_err(|source| Error::GenerateCerts {
                cluster: self.context.clone(),
                source,
            })
    }

    /// A kubeconfig with one context, named like this cluster, for `user`.
    pub(crate) fn kubeconfig_for(&self, user: &str, client: &CertAndKey) -> String {
        kubeconfig::render(&[kubeconfig::Entry {
            context: &self.context,
            user: user.to_owned(),
            server: &self.server,
            ca_pem: self.ca.cert_pem(),
            client,
        }])
    }
}

/// A started process and where its output goes.
#[derive(Debug)]
pub(crate) struct Proc {
    /// `etcd`, `kube-apiserver mgmt`, …
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

/// A running environment: clusters in context order, processes in start
/// order (etcd first).
#[derive(Debug)]
pub(crate) struct Launched {
    pub(crate) clusters: Vec<Cluster>,
    pub(crate) procs: Vec<Proc>,
    pub(crate) kubeconfig: PathBuf,
}

/// Stops every process it holds unless disarmed: a failed launch leaves
/// nothing running.
struct Guard(Vec<Proc>);

impl Drop for Guard {
    fn drop(&mut self) {
        stop_all(&mut self.0);
    }
}

/// Stops processes started by [`launch`]: the apiservers together, then etcd
/// (an apiserver whose etcd is gone hangs in its shutdown).
pub(crate) fn stop_all(procs: &mut [Proc]) {
    let grace = Duration::from_secs(5);
    let (etcd, apiservers): (Vec<_>, Vec<_>) = procs.iter_mut().partition(|p| p.name == "etcd");
    for group in [apiservers, etcd] {
        for proc in &group {
            let _ = process::signal_group(proc.child.id(), libc::SIGTERM);
        }
        for proc in group {
            process::stop_child(&mut proc.child, grace);
        }
    }
}

/// Starts etcd and `apiservers` apiservers under `root` and waits for them.
pub(crate) fn launch(
    bins: &Binaries,
    root: &Path,
    apiservers: usize,
    lifetime: Lifetime,
) -> Result<Launched, Error> {
    let mut guard = Guard(Vec::new());
    // Distinct per environment, so that even a port race that points our
    // apiservers at a foreign etcd could not mix their objects with ours.
    let env_id = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );

    let mut plans = Vec::with_capacity(apiservers);
    for index in 0..apiservers {
        plans.push(ApiserverFiles::generate(root, &context_name(index))?);
    }

    let (etcd, etcd_port) = start_etcd(bins, root, lifetime)?;
    guard.0.push(etcd);

    let clusters = start_apiservers(bins, plans, etcd_port, &env_id, lifetime, &mut guard.0)?;

    if let Some(status) = guard.0[0].child.try_wait().ok().flatten() {
        let etcd = &guard.0[0];
        return Err(Error::ExitedEarly {
            what: etcd.name.clone(),
            status,
            log: etcd.log.clone(),
            tail: log_tail(&etcd.log),
        });
    }

    let kubeconfig_path = root.join("kubeconfig");
    let entries: Vec<_> = clusters
        .iter()
        .map(|c| kubeconfig::Entry {
            context: &c.context,
            user: format!("{}-admin", c.context),
            server: &c.server,
            ca_pem: c.ca.cert_pem(),
            client: &c.admin,
        })
        .collect();
    write_private(&kubeconfig_path, &kubeconfig::render(&entries))?;

    Ok(Launched {
        clusters,
        procs: std::mem::take(&mut guard.0),
        kubeconfig: kubeconfig_path,
    })
}

/// The files of one apiserver, written before it starts.
struct ApiserverFiles {
    context: String,
    dir: PathBuf,
    ca: ClusterCa,
    admin: CertAndKey,
    tls: Arc<ClientConfig>,
}

impl ApiserverFiles {
    fn generate(root: &Path, context: &str) -> Result<Self, Error> {
        let certs = |source| Error::GenerateCerts {
            cluster: context.to_owned(),
            source,
        };
        let ca = ClusterCa::generate(context).map_err(certs)?;
        let serving = ca.serving_cert().map_err(certs)?;
        let admin = ca
            .client_cert("admin", &["system:masters"])
            .map_err(certs)?;
        let (sa_key, sa_pub) = pki::service_account_key().map_err(certs)?;

        let dir = root.join(context);
        create_dir(&dir)?;
        write_private(&dir.join("ca.crt"), ca.cert_pem())?;
        write_private(&dir.join("apiserver.crt"), &serving.cert_pem)?;
        write_private(&dir.join("apiserver.key"), &serving.key_pem)?;
        write_private(&dir.join("sa.key"), &sa_key)?;
        write_private(&dir.join("sa.pub"), &sa_pub)?;

        let tls = probe::tls_client(ca.cert_pem(), &admin).map_err(|source| Error::TlsClient {
            cluster: context.to_owned(),
            source,
        })?;
        Ok(Self {
            context: context.to_owned(),
            dir,
            ca,
            admin,
            tls,
        })
    }

    fn command(&self, bins: &Binaries, port: u16, etcd_port: u16, env_id: &str) -> Command {
        let d = |name: &str| self.dir.join(name).display().to_string();
        let mut cmd = Command::new(bins.kube_apiserver());
        cmd.args([
            // As controller-runtime's envtest runs it …
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            "--allow-privileged=true".to_owned(),
            "--disable-admission-plugins=ServiceAccount".to_owned(),
            format!("--cert-dir={}", d("cert")),
            "--authorization-mode=RBAC".to_owned(),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--service-account-issuer=https://127.0.0.1:{port}/"),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            // … with our own PKI, one etcd for all, and no endpoint
            // reconciler (no controller-manager, several apiservers).
            format!("--client-ca-file={}", d("ca.crt")),
            format!("--tls-cert-file={}", d("apiserver.crt")),
            format!("--tls-private-key-file={}", d("apiserver.key")),
            format!("--etcd-prefix=/relayctl-kube-env/{env_id}/{}", self.context),
            "--advertise-address=127.0.0.1".to_owned(),
            "--endpoint-reconciler-type=none".to_owned(),
        ]);
        cmd
    }
}

fn start_etcd(bins: &Binaries, root: &Path, lifetime: Lifetime) -> Result<(Proc, u16), Error> {
    let data = root.join("etcd");
    let log = root.join("etcd.log");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let client = port()?;
        let peer = port()?;
        if data.exists() {
            fs::remove_dir_all(&data).map_err(|source| Error::Dir {
                path: data.clone(),
                source,
            })?;
        }
        create_dir(&data)?;
        let mut cmd = Command::new(bins.etcd());
        cmd.args([
            "--name=relayctl-kube-env".to_owned(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls=http://127.0.0.1:{client}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster=relayctl-kube-env=http://127.0.0.1:{peer}"),
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ]);
        let mut proc = spawn_logged(cmd, "etcd", &log, lifetime)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if probe::etcd_healthy(client) {
                // A foreign etcd on a raced port would answer too; ours
                // would then exit with "address already in use".
                thread::sleep(POLL);
                if proc.child.try_wait().ok().flatten().is_none() {
                    return Ok((proc, client));
                }
            }
            if let Some(status) = proc.child.try_wait().ok().flatten() {
                if lost_port_race(&log) && attempt < PORT_ATTEMPTS {
                    break;
                }
                return Err(Error::ExitedEarly {
                    what: proc.name,
                    status,
                    tail: log_tail(&log),
                    log,
                });
            }
            if Instant::now() > deadline {
                process::stop_child(&mut proc.child, Duration::from_secs(5));
                return Err(not_ready(&proc));
            }
            thread::sleep(POLL);
        }
    }
}

fn start_apiservers(
    bins: &Binaries,
    plans: Vec<ApiserverFiles>,
    etcd_port: u16,
    env_id: &str,
    lifetime: Lifetime,
    procs: &mut Vec<Proc>,
) -> Result<Vec<Cluster>, Error> {
    struct Starting {
        port: u16,
        proc_index: usize,
        attempt: u32,
        ready: bool,
    }
    let spawn_one = |plan: &ApiserverFiles, port: u16| {
        let cmd = plan.command(bins, port, etcd_port, env_id);
        let log = plan.dir.join("apiserver.log");
        spawn_logged(
            cmd,
            &format!("kube-apiserver {}", plan.context),
            &log,
            lifetime,
        )
    };

    let mut starting = Vec::with_capacity(plans.len());
    for plan in &plans {
        let port = port()?;
        procs.push(spawn_one(plan, port)?);
        starting.push(Starting {
            port,
            proc_index: procs.len() - 1,
            attempt: 1,
            ready: false,
        });
    }

    let deadline = Instant::now() + READY_TIMEOUT;
    while starting.iter().any(|s| !s.ready) {
        for (plan, s) in plans
            .iter()
            .zip(starting.iter_mut())
            .filter(|(_, s)| !s.ready)
        {
            let proc = &mut procs[s.proc_index];
            let exited = proc.child.try_wait().ok().flatten();
            match exited {
                None => {
                    if let Ok((200, _)) = probe::apiserver_get(&plan.tls, s.port, "/readyz") {
                        s.ready = true;
                    }
                }
                Some(_) if lost_port_race(&proc.log) && s.attempt < PORT_ATTEMPTS => {
                    s.attempt += 1;
                    s.port = port()?;
                    *proc = spawn_one(plan, s.port)?;
                }
                Some(status) => {
                    return Err(Error::ExitedEarly {
                        what: proc.name.clone(),
                        status,
                        log: proc.log.clone(),
                        tail: log_tail(&proc.log),
                    });
                }
            }
        }
        if starting.iter().all(|s| s.ready) {
            break;
        }
        if Instant::now() > deadline
            && let Some(s) = starting.iter().find(|s| !s.ready)
        {
            return Err(not_ready(&procs[s.proc_index]));
        }
        thread::sleep(POLL);
    }

    Ok(plans
        .into_iter()
        .zip(starting)
        .map(|(plan, s)| Cluster {
            context: plan.context,
            port: s.port,
            server: format!("https://127.0.0.1:{}", s.port),
            ca: plan.ca,
            admin: plan.admin.clone(),
        })
        .collect())
}

fn spawn_logged(cmd: Command, name: &str, log: &Path, lifetime: Lifetime) -> Result<Proc, Error> {
    let mut cmd = cmd;
    let file = File::create(log).map_err(|source| Error::WriteFile {
        path: log.to_owned(),
        source,
    })?;
    let err_file = file.try_clone().map_err(|source| Error::WriteFile {
        path: log.to_owned(),
        source,
    })?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err_file));
    let child = process::spawn(cmd, lifetime).map_err(|source| Error::Spawn {
        what: name.to_owned(),
        source,
    })?;
    Ok(Proc {
        name: name.to_owned(),
        child,
        log: log.to_owned(),
    })
}

fn port() -> Result<u16, Error> {
    process::free_port().map_err(|source| Error::FreePort { source })
}

fn lost_port_race(log: &Path) -> bool {
    fs::read_to_string(log).is_ok_and(|text| text.contains("address already in use"))
}

fn not_ready(proc: &Proc) -> Error {
    Error::NotReady {
        what: proc.name.clone(),
        seconds: READY_TIMEOUT.as_secs(),
        log: proc.log.clone(),
        tail: log_tail(&proc.log),
    }
}

/// The last 20 lines of a log, for error messages.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

pub(crate) fn create_dir(path: &Path) -> Result<(), Error> {
    fs::create_dir_all(path).map_err(|source| Error::Dir {
        path: path.to_owned(),
        source,
    })
}

/// Writes a file readable only by its owner (it may hold private keys).
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let write = || -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(dir)?;
        tmp.write_all(contents.as_bytes())?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|source| Error::WriteFile {
        path: path.to_owned(),
        source,
    })
}
