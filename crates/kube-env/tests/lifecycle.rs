//! The environment's own promises: minted users are who they claim, private
//! environments clean up on drop, `up`/`down` start and stop exactly their
//! processes. Uses the built `kubectl`, like a human would.

use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::Command;

use relayctl_kube_env::{Error, KubeEnv};

fn kubectl(env_kubectl: &Path, kubeconfig: &Path, context: &str, args: &[&str]) -> String {
    let output = Command::new(env_kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", context])
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn listening(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[test]
fn minted_user_is_authenticated_with_its_name_and_both_groups() {
    let env = KubeEnv::shared(1);
    let path = env
        .user_kubeconfig("mgmt", "alice \"the tester\"", &["team-a", "team-b"])
        .expect("mint alice");
    let review = kubectl(
        &env.binaries().kubectl(),
        &path,
        "mgmt",
        &["auth", "whoami", "-o", "json"],
    );
    assert!(
        review.contains(r#""username": "alice \"the tester\"""#),
        "{review}"
    );
    for group in ["team-a", "team-b", "system:authenticated"] {
        assert!(
            review.contains(&format!("\"{group}\"")),
            "{group}: {review}"
        );
    }
    assert!(!review.contains("system:masters"), "{review}");

    let too_many = env.user_kubeconfig("mgmt", "bob", &["a", "b", "c"]);
    assert!(matches!(
        too_many,
        Err(Error::TooManyGroups { count: 3, .. })
    ));
    let unknown = env.user_kubeconfig("cluster-9", "bob", &[]);
    assert!(
        matches!(&unknown, Err(Error::UnknownContext { available, .. }) if available == "mgmt"),
        "{unknown:?}"
    );
}

#[test]
fn admin_context_is_system_masters() {
    let env = KubeEnv::shared(1);
    let review = kubectl(
        &env.binaries().kubectl(),
        env.kubeconfig(),
        "mgmt",
        &["auth", "whoami", "-o", "json"],
    );
    assert!(review.contains("\"system:masters\""), "{review}");
}

#[test]
fn private_env_stops_its_processes_and_removes_its_dir_on_drop() {
    let env = KubeEnv::start(1).expect("start a private kube-env");
    let port = env.clusters()[0].port();
    let dir = env.dir().to_owned();
    assert!(listening(port));
    assert!(dir.join("kubeconfig").is_file());
    drop(env);
    assert!(!listening(port), "apiserver still listens on {port}");
    assert!(!dir.exists(), "{} survived the drop", dir.display());
}

#[test]
fn up_and_down_start_and_stop_exactly_their_processes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("kenv");

    let running = relayctl_kube_env::up(2, &dir).expect("kube-env up");
    assert_eq!(running.contexts, ["mgmt", "cluster-1"]);
    assert_eq!(running.processes.len(), 3);
    let namespaces = kubectl(
        &running.binaries.kubectl(),
        &running.kubeconfig,
        "cluster-1",
        &["get", "ns", "default", "-o", "name"],
    );
    assert_eq!(namespaces.trim(), "namespace/default");

    // A second `up` into the running directory is refused.
    assert!(matches!(
        relayctl_kube_env::up(1, &dir),
        Err(Error::AlreadyRunning { .. })
    ));

    let stopped = relayctl_kube_env::down(&dir).expect("kube-env down");
    assert_eq!(stopped, running.processes);
    for (pid, name) in &stopped {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "{name} (pid {pid}) still runs: {stat}"
        );
    }
    assert_eq!(relayctl_kube_env::down(&dir).expect("second down"), []);

    // The stopped directory can be reused.
    let again = relayctl_kube_env::up(1, &dir).expect("kube-env up again");
    assert_eq!(again.contexts, ["mgmt"]);
    // An `up` interrupted before it wrote `pids` is still stopped: `down`
    // finds the processes by their command line.
    std::fs::remove_file(dir.join("pids")).expect("remove pids");
    let pids: Vec<u32> = again.processes.iter().map(|(pid, _)| *pid).collect();
    let stopped: Vec<u32> = relayctl_kube_env::down(&dir)
        .expect("down without pids")
        .iter()
        .map(|(pid, _)| *pid)
        .collect();
    assert_eq!(stopped.len(), 2, "stopped {stopped:?}, started {pids:?}");
    assert!(stopped.iter().all(|pid| pids.contains(pid)));
}

#[test]
fn up_refuses_a_directory_it_did_not_make() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("notes.txt"), "mine").expect("write");
    assert!(matches!(
        relayctl_kube_env::up(1, tmp.path()),
        Err(Error::ForeignDir { .. })
    ));
    assert!(tmp.path().join("notes.txt").is_file());
}
