//! Sharded runs on the directory backend, and the placement's properties.
//!
//! Three `apply --shard I/3` processes run at once over nine workload
//! folders: each folder is written by the shard its placement names and by
//! no other (the writer annotation on every Secret says who), mgmt by shard
//! 0 alone, and the fleet converges. A folder whose writer fence another
//! process holds is skipped and reported. Placement: going from N to N + 1
//! shards moves only the clusters the new shard wins.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use proptest::prelude::*;
use relayctl::model::ClusterName;
use relayctl::shard::{ANNOTATION_WRITER, Placement, rendezvous};
use support::{BIN, Fixture};

const WORKLOADS: usize = 9;

/// Nine names that rendezvous hashing spreads 3/2/4 over three shards, so
/// that every shard has clusters to write.
fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("region-{i}")).collect()
}

/// The managed example with `WORKLOADS` workload clusters (`extra` is
/// appended to the spec of the workload named `pinned`).
fn fleet(pinned: Option<(&str, &str)>) -> Fixture {
    let fixture = Fixture::example("managed");
    for name in names(WORKLOADS) {
        let mut text = format!(
            "apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata:\n  name: {name}\n"
        );
        if let Some((cluster, spec)) = pinned
            && cluster == name
        {
            text.push_str(spec);
        }
        fixture.write_config(&format!("{name}.yaml"), &text);
    }
    fixture
}

fn placement(count: u32) -> BTreeMap<String, u32> {
    let placement: BTreeMap<String, u32> = names(WORKLOADS)
        .into_iter()
        .map(|n| {
            let shard = rendezvous(&n, count);
            (n, shard)
        })
        .collect();
    for shard in 0..count {
        assert!(
            placement.values().filter(|s| **s == shard).count() >= 2,
            "every shard has clusters: {placement:?}"
        );
    }
    placement
}

/// The writer annotation of every Secret in `cluster`'s folder.
fn writers(fixture: &Fixture, cluster: &str) -> BTreeSet<String> {
    let dir = fixture.state().join(cluster).join("gloo-mesh");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().path();
        let stem = name.file_stem().unwrap().to_str().unwrap().to_owned();
        let secret = fixture.secret(cluster, &stem).unwrap();
        out.insert(
            secret
                .annotations
                .get(ANNOTATION_WRITER)
                .cloned()
                .unwrap_or_else(|| "(none)".to_owned()),
        );
    }
    out
}

#[test]
fn three_shards_at_once_write_each_cluster_once_and_the_fleet_converges() {
    let fixture = fleet(None);
    let children: Vec<_> = (0..3)
        .map(|i| {
            Command::new(BIN)
                .args(["apply", "config", "--auto-approve", "--shard-wait", "60s"])
                .arg("--shard")
                .arg(format!("{i}/3"))
                .arg("--state-dir")
                .arg(fixture.state())
                .current_dir(fixture.dir.path())
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        );
        fixture
            .transcript
            .borrow_mut()
            .push_str(&format!("{stdout}{stderr}"));
        assert_eq!(
            out.status.code(),
            Some(0),
            "shard {i}/3:\n{stdout}\n{stderr}"
        );
    }
    let expected = placement(3);
    for (cluster, shard) in &expected {
        assert_eq!(
            writers(&fixture, cluster),
            BTreeSet::from([format!("shard {shard}/3")]),
            "{cluster} is written by its shard alone"
        );
    }
    assert_eq!(
        writers(&fixture, "mgmt"),
        BTreeSet::from(["shard 0/3".to_owned()]),
        "mgmt is written by the coordinator alone"
    );
    let (code, run) = fixture.plan_code();
    assert_eq!(
        code, 0,
        "the fleet converged:\n{}\n{}",
        run.stdout, run.stderr
    );
    // A shard's later run finds nothing to do and does not wait.
    let run = fixture.run(&["plan", "config", "--detailed-exitcode", "--shard", "2/3"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    fixture.assert_no_leak(&[]);
}

#[test]
fn a_shard_before_the_coordinator_reports_what_it_waits_for_and_writes_nothing() {
    let fixture = fleet(None);
    let mine = placement(3)
        .into_iter()
        .find(|(_, s)| *s == 1)
        .map(|(n, _)| n)
        .unwrap();
    let run = fixture.run(&["apply", "config", "--auto-approve", "--shard", "1/3"]);
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.all()
            .contains("waiting for shard 0/3 to write the management cluster"),
        "{}",
        run.all()
    );
    assert!(
        run.all().contains("create relay-root-tls-secret"),
        "{}",
        run.all()
    );
    assert!(
        !fixture.state().join("mgmt/gloo-mesh").exists(),
        "mgmt untouched"
    );
    assert!(
        !fixture.state().join(&mine).join("gloo-mesh").exists(),
        "{mine} is not written against a root mgmt does not hold"
    );
}

#[test]
fn a_cluster_whose_fence_another_writer_holds_is_skipped_and_reported() {
    let fixture = fleet(None);
    fixture.run(&["apply", "config", "--auto-approve", "--shard", "0/3"]);
    // A shard other than 0 with more than one cluster.
    let shard = (1..3)
        .max_by_key(|s| placement(3).values().filter(|v| *v == s).count())
        .unwrap();
    let victim = placement(3)
        .into_iter()
        .find(|(_, s)| *s == shard)
        .map(|(n, _)| n)
        .unwrap();
    assert!(placement(3).values().filter(|v| **v == shard).count() > 1);
    let folder = fixture.state().join(&victim);
    std::fs::create_dir_all(&folder).unwrap();
    let lock = folder.join(".relayctl-prod.writer.lock");
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock)
            .unwrap();
    }
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock from util-linux");
    std::thread::sleep(Duration::from_millis(300));
    let run = fixture.run(&[
        "apply",
        "config",
        "--auto-approve",
        "--shard",
        &format!("{shard}/3"),
    ]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(
        run.code,
        1,
        "a skipped cluster fails the run:\n{}",
        run.all()
    );
    assert!(
        run.all().contains(&format!(
            "{victim}: skipped: another writer holds its writer fence"
        )),
        "{}",
        run.all()
    );
    assert!(
        !folder.join("gloo-mesh").exists(),
        "nothing was written to {victim}"
    );
    // The others of that shard were written.
    for (cluster, s) in placement(3) {
        if s == shard && cluster != victim {
            assert_eq!(
                writers(&fixture, &cluster),
                BTreeSet::from([format!("shard {shard}/3")])
            );
        }
    }
    // With the fence free the rerun writes it.
    let run = fixture.run(&[
        "apply",
        "config",
        "--auto-approve",
        "--shard",
        &format!("{shard}/3"),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        writers(&fixture, &victim),
        BTreeSet::from([format!("shard {shard}/3")])
    );
}

#[test]
fn a_shard_that_cannot_reach_mgmt_fails_as_the_environment_and_a_refused_mgmt_as_the_user() {
    let fixture = fleet(None);
    fixture.run(&["apply", "config", "--auto-approve", "--shard", "0/3"]);
    // Refused: the management cluster's folder is writable by others.
    let mgmt = fixture.state().join("mgmt");
    let mut mode = std::fs::metadata(&mgmt).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o777);
    std::fs::set_permissions(&mgmt, mode).unwrap();
    let run = fixture.run(&["apply", "config", "--auto-approve", "--shard", "1/3"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.all().contains("refused"), "{}", run.all());

    // Unreachable: an API server that refuses connections.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: mgmt\n  cluster: {{ server: 'https://127.0.0.1:{port}' }}\nusers:\n- name: u\n  user: {{ token: not-a-real-token }}\ncontexts:\n- name: mgmt\n  context: {{ cluster: mgmt, user: u }}\ncurrent-context: mgmt\n"
    );
    fixture.write_config("mgmt.kubeconfig", &kubeconfig);
    fixture.write_config(
        "mgmt.yaml",
        "apiVersion: relayctl.dev/v1alpha1\nkind: ManagementCluster\nmetadata:\n  name: mgmt\nspec:\n  connection: { kubeconfig: { context: mgmt, path: mgmt.kubeconfig } }\n",
    );
    let run = fixture.run(&[
        "apply",
        "config",
        "--auto-approve",
        "--shard",
        "1/3",
        "--timeout",
        "5s",
    ]);
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.stderr
            .contains("cannot reach the management cluster `mgmt`"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains("not-a-real-token"), "{}", run.all());
}

#[test]
fn the_writer_fence_is_never_another_instances_apply_lock() {
    use relayctl::backend::Backend as _;
    let fixture = Fixture::empty();
    let folder = relayctl::backend::directory::DirectoryBackend::new(fixture.state().join("c"));
    std::fs::create_dir_all(fixture.state().join("c")).unwrap();
    let _lock = folder
        .lock(
            "gloo-mesh",
            "prod-writer",
            "apply of prod-writer",
            Duration::ZERO,
        )
        .unwrap();
    let fence = folder.fence_writer("gloo-mesh", "prod", "relayctl/prod/shard-0-of-2");
    assert!(fence.is_ok(), "{:?}", fence.err());
    // And the fence does fence: a second writer is refused at once.
    let second = folder.fence_writer("gloo-mesh", "prod", "relayctl/prod/shard-1-of-3");
    assert!(
        matches!(second, Err(relayctl::backend::BackendError::Locked { .. })),
        "{:?}",
        second.err()
    );
}

#[test]
fn a_pin_moves_a_cluster_and_one_beyond_the_count_is_a_located_error() {
    let natural = placement(3)["region-4"];
    let target = (natural + 1) % 3;
    let fixture = fleet(Some(("region-4", &format!("spec:\n  shard: {target}\n"))));
    fixture.run(&["apply", "config", "--auto-approve", "--shard", "0/3"]);
    let run = fixture.run(&[
        "apply",
        "config",
        "--auto-approve",
        "--shard",
        &format!("{target}/3"),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        writers(&fixture, "region-4"),
        BTreeSet::from([format!("shard {target}/3")])
    );

    let fixture = fleet(Some(("region-4", "spec:\n  shard: 5\n")));
    let run = fixture.run(&["plan", "config", "--shard", "0/3"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("region-4.yaml:"), "{}", run.stderr);
    assert!(run.stderr.contains("shard-out-of-range"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("pinned to shard 5, but the run has 3 shards"),
        "{}",
        run.stderr
    );
    // Not a number: refused by validation, whatever the run.
    let fixture = fleet(Some(("region-4", "spec:\n  shard: first\n")));
    let run = fixture.run(&["validate", "config"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr
            .contains("`spec.shard` is `first`, not a shard index"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_index_comes_from_the_indexed_job_variable_and_bad_values_are_refused() {
    let fixture = fleet(None);
    let run = |env: Option<&str>, args: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .args(["plan", "config"])
            .args(args)
            .arg("--state-dir")
            .arg(fixture.state())
            .current_dir(fixture.dir.path())
            .env_remove("JOB_COMPLETION_INDEX")
            .stdin(Stdio::null());
        if let Some(index) = env {
            command.env("JOB_COMPLETION_INDEX", index);
        }
        let out = command.output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, stderr) = run(Some("0"), &["--shards", "3"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = run(None, &["--shards", "3"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("`JOB_COMPLETION_INDEX`, which is not set"),
        "{stderr}"
    );
    let (code, stderr) = run(Some("3"), &["--shards", "3"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not below the shard count 3"), "{stderr}");
    let (code, stderr) = run(None, &["--shard", "1-3"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("`1-3` is not a shard"), "{stderr}");
    let (code, stderr) = run(None, &["--shards", "0"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("the shard count must be 1 to 1000"),
        "{stderr}"
    );
}

#[test]
fn reconcile_once_as_the_pods_of_an_indexed_job_converges_the_fleet() {
    let fixture = fleet(None);
    let repo = fixture.dir.path().join("repo");
    std::fs::create_dir_all(repo.join("relay")).unwrap();
    for entry in std::fs::read_dir(fixture.config()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, repo.join("relay").join(path.file_name().unwrap())).unwrap();
    }
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .current_dir(&repo)
            .env("HOME", fixture.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "fleet"]);
    let cache = fixture.dir.path().join("git-cache");
    // The three pods start together; 1 and 2 wait for 0.
    let children: Vec<_> = (0..3)
        .map(|index| {
            Command::new(BIN)
                .args([
                    "reconcile",
                    "--once",
                    "--shards",
                    "3",
                    "--shard-wait",
                    "60s",
                ])
                .arg("--git")
                .arg(&repo)
                .args(["--path", "relay", "--log-format", "json"])
                .arg("--git-cache")
                .arg(cache.join(index.to_string()))
                .arg("--state-dir")
                .arg(fixture.state())
                .current_dir(fixture.dir.path())
                .env("JOB_COMPLETION_INDEX", index.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (index, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        fixture.transcript.borrow_mut().push_str(&text);
        assert_eq!(out.status.code(), Some(0), "pod {index}:\n{text}");
    }
    for (cluster, shard) in placement(3) {
        assert_eq!(
            writers(&fixture, &cluster),
            BTreeSet::from([format!("shard {shard}/3")])
        );
    }
    assert_eq!(
        writers(&fixture, "mgmt"),
        BTreeSet::from(["shard 0/3".to_owned()])
    );
    let (code, run) = fixture.plan_code();
    assert_eq!(code, 0, "{}\n{}", run.stdout, run.stderr);
    fixture.assert_no_leak(&[]);
}

// ---------------------------------------------------------------------------
// Placement
// ---------------------------------------------------------------------------

fn place(names: &BTreeSet<String>, count: u32) -> Placement {
    Placement::of_names(
        names.iter().map(|n| (ClusterName::parse(n).unwrap(), None)),
        count,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// From N to N + 1 shards a cluster either stays or moves to the new
    /// shard; none moves between two old shards.
    #[test]
    fn adding_a_shard_moves_clusters_only_to_the_new_shard(
        names in proptest::collection::btree_set("[a-z][a-z0-9-]{0,20}[a-z0-9]", 1..200),
        count in 1u32..16,
    ) {
        let before = place(&names, count);
        let after = place(&names, count + 1);
        for (name, owner) in before.owners() {
            let now = after.owner(name).unwrap().shard;
            prop_assert!(now == owner.shard || now == count, "{name}: {} -> {now}", owner.shard);
        }
        // And every shard computes the same map: placement is a function
        // of the names and the count alone.
        prop_assert_eq!(place(&names, count + 1), after);
    }

    /// A pinned cluster stays where it is pinned whatever the count.
    #[test]
    fn a_pinned_cluster_never_moves(pin in 0u32..4, extra in 0u32..8) {
        let count = pin + 1 + extra;
        let placement = Placement::of_names(
            [(ClusterName::parse("pinned").unwrap(), Some(pin))],
            count,
        );
        prop_assert_eq!(placement.owner(&ClusterName::parse("pinned").unwrap()).unwrap().shard, pin);
    }
}

#[test]
fn adding_a_shard_moves_about_one_in_n_plus_one_and_shards_are_balanced() {
    let names: BTreeSet<String> = (0..6000).map(|i| format!("cluster-{i}")).collect();
    for count in [1u32, 2, 3, 7] {
        let before = place(&names, count);
        let after = place(&names, count + 1);
        let moved = before
            .owners()
            .iter()
            .filter(|(n, o)| after.owner(n).unwrap().shard != o.shard)
            .count();
        let share = moved as f64 / names.len() as f64;
        let ideal = 1.0 / f64::from(count + 1);
        assert!(
            (share - ideal).abs() < 0.03,
            "{count} -> {}: moved {share:.3}, ideal {ideal:.3}",
            count + 1
        );
        for shard in 0..=count {
            let load = after.clusters_of(shard).len() as f64 / names.len() as f64;
            assert!(
                (load - ideal).abs() < 0.03,
                "shard {shard}/{}: {load:.3}",
                count + 1
            );
        }
    }
}

/// `apply --shard I/3 --at T`, which must exit 0.
fn apply_shard_at(fixture: &Fixture, shard: u32, at: &str) -> support::Run {
    let run = fixture.run(&[
        "apply",
        "config",
        "--auto-approve",
        "--shard",
        &format!("{shard}/3"),
        "--at",
        at,
    ]);
    assert_eq!(
        run.code, 0,
        "shard {shard}/3 at {at}:\n{}\n{}",
        run.stdout, run.stderr
    );
    run
}

#[test]
fn a_ca_rotation_in_a_sharded_fleet_advances_only_once_every_shard_wrote_its_phase() {
    let fixture = fleet(None);
    let stamp = |hours: i64| {
        relayctl::pki::inspect::rfc3339(
            (time::OffsetDateTime::now_utc() + time::Duration::hours(hours))
                .replace_nanosecond(0)
                .unwrap(),
        )
    };
    let t0 = stamp(1);
    for shard in 0..3 {
        apply_shard_at(&fixture, shard, &t0);
    }
    let path = fixture.config().join("relay-trust.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "  ca:\n",
            "  ca:\n    rotation: { generation: 2, soak: 1h }\n",
            1,
        ),
    )
    .unwrap();
    // Shard 0 starts the rotation; its own clusters get both roots.
    let run = apply_shard_at(&fixture, 0, &t0);
    assert!(
        run.stdout.contains("phase 1 of 4 (trust-both)"),
        "{}",
        run.stdout
    );
    // Past the soak time, shard 0 reads the other shards' clusters and
    // waits for them: it does not switch the signer.
    let t1 = stamp(3);
    let run = fixture.run(&[
        "plan",
        "config",
        "--detailed-exitcode",
        "--shard",
        "0/3",
        "--at",
        &t1,
    ]);
    assert_eq!(
        run.code, 3,
        "blocked on the other shards:\n{}\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("to complete the phase on 6 clusters")
            || run.stdout.contains("to complete the phase on 7 clusters"),
        "{}",
        run.stdout
    );
    apply_shard_at(&fixture, 0, &t1);
    assert!(
        fixture
            .secret("mgmt", "relayctl-prod-rotation")
            .unwrap()
            .get("new-signing.crt")
            .is_none(),
        "no switch before every shard wrote trust-both"
    );
    for shard in [1, 2] {
        apply_shard_at(&fixture, shard, &t1);
    }
    let run = apply_shard_at(&fixture, 0, &t1);
    assert!(
        run.stdout.contains("phase 2 of 4 (switch-signer)"),
        "{}",
        run.stdout
    );
    fixture.assert_no_leak(&[]);
}

#[test]
fn in_the_reissue_phase_every_shard_follows_the_waves_shard_0_records() {
    let fixture = Fixture::example("managed-preprovisioned");
    std::fs::remove_file(fixture.config().join("cluster-1.yaml")).unwrap();
    std::fs::remove_file(fixture.config().join("cluster-2.yaml")).unwrap();
    let path = fixture.config().join("relay-trust.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("rsa-4096", "ecdsa-p256");
    std::fs::write(&path, text).unwrap();
    for name in names(WORKLOADS) {
        fixture.write_config(
            &format!("{name}.yaml"),
            &format!("apiVersion: relayctl.dev/v1alpha1\nkind: WorkloadCluster\nmetadata:\n  name: {name}\n"),
        );
    }
    let at = |hours: i64| {
        relayctl::pki::inspect::rfc3339(
            (time::OffsetDateTime::now_utc() + time::Duration::hours(hours))
                .replace_nanosecond(0)
                .unwrap(),
        )
    };
    let round = |t: &str| {
        for shard in 0..3 {
            apply_shard_at(&fixture, shard, t);
        }
    };
    round(&at(1));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "  ca:\n",
            "  ca:\n    rotation: { generation: 2, soak: 1h, wave: 34 }\n",
            1,
        ),
    )
    .unwrap();
    // trust-both, then switch-signer, then the first wave of reissue.
    round(&at(1));
    round(&at(3));
    round(&at(5));
    let record = fixture.secret("mgmt", "relayctl-prod-rotation").unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(record.get("state.json").unwrap().expose()).unwrap();
    assert_eq!(state["rotation"]["phase"], "reissue", "{state:#}");
    let recorded: BTreeSet<String> = state["rotation"]["reissued"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(recorded.len(), 4, "34 % of 9 clusters: {recorded:?}");
    let signer = record.get("new-signing.crt").unwrap().clone();
    let signer = relayctl::pki::inspect_bundle(signer.expose()).unwrap();
    let moved: BTreeSet<String> = names(WORKLOADS)
        .into_iter()
        .filter(|name| {
            let client = fixture.secret(name, "relay-client-tls-secret").unwrap();
            let leaf = relayctl::pki::inspect_bundle(client.get("tls.crt").unwrap().expose())
                .unwrap()
                .remove(0);
            leaf.authority_key_id == signer[0].subject_key_id
        })
        .collect();
    assert_eq!(
        moved, recorded,
        "each shard reissued exactly the recorded wave's clusters"
    );
    // The rotation still ends, wave by wave.
    for hours in [7, 9, 11, 13, 15] {
        round(&at(hours));
    }
    let (code, run) = {
        let run = fixture.run(&["plan", "config", "--detailed-exitcode", "--at", &at(15)]);
        (run.code, run)
    };
    assert_eq!(code, 0, "{}\n{}", run.stdout, run.stderr);
    fixture.assert_no_leak(&[]);
}
