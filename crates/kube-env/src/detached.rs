//! `kube-env up` / `kube-env down`: the same environment, started in the
//! background for humans and scripts, in a directory they choose.
//!
//! `up` records every process in `DIR/pids`; `down` stops exactly those (after
//! checking each pid still runs a process of this directory, so a reused pid
//! is never signalled) and is a no-op when nothing runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::Error;
use crate::binaries::Binaries;
use crate::launch;
use crate::process::{self, Lifetime};

/// Marks a directory as made by `kube-env up`, so `up` may wipe it.
const MARKER: &str = ".kube-env";
/// One `PID NAME` line per process, etcd first.
const PIDS: &str = "pids";

/// A background environment that `up` started.
#[derive(Debug)]
pub struct Running {
    /// `DIR/kubeconfig`.
    pub kubeconfig: PathBuf,
    /// Context names: `mgmt`, `cluster-1`, …
    pub contexts: Vec<String>,
    /// The binaries it runs (and the matching `kubectl`).
    pub binaries: Binaries,
    /// `(pid, name)` of every process, etcd first.
    pub processes: Vec<(u32, String)>,
}

/// Starts etcd and `apiservers` apiservers detached from this process, with
/// their files in `dir`, and returns once every apiserver is ready.
///
/// `dir` must be new, empty, or a directory of an earlier `up` whose
/// environment is stopped (its contents are then replaced).
pub fn up(apiservers: usize, dir: &Path) -> Result<Running, Error> {
    launch::create_dir(dir)?;
    let dir = dir.canonicalize().map_err(|source| Error::Dir {
        path: dir.to_owned(),
        source,
    })?;
    prepare_dir(&dir)?;
    let bins = Binaries::locate()?;
    launch::write_private(&dir.join(MARKER), "made by `kube-env up`\n")?;
    let launched = launch::launch(&bins, &dir, apiservers.max(1), Lifetime::Detached)?;
    let processes: Vec<(u32, String)> = launched
        .procs
        .iter()
        .map(|p| (p.child.id(), p.name.clone()))
        .collect();
    let pids: String = processes
        .iter()
        .map(|(pid, name)| format!("{pid} {name}\n"))
        .collect();
    launch::write_private(&dir.join(PIDS), &pids)?;
    // Dropping a `Child` neither kills nor waits; the processes live on in
    // their own sessions.
    drop(launched.procs);
    Ok(Running {
        kubeconfig: launched.kubeconfig,
        contexts: launched
            .clusters
            .iter()
            .map(|c| c.context().to_owned())
            .collect(),
        binaries: bins,
        processes,
    })
}

/// Stops every process `up` started in `dir`: SIGTERM to each process group
/// (apiservers before etcd), SIGKILL after 10 s. Returns what it stopped;
/// nothing when nothing runs. Files (logs, certificates) stay.
///
/// Besides the processes recorded in `DIR/pids` it stops any `etcd` or
/// `kube-apiserver` whose command line names a file in `dir`: an `up` that
/// was interrupted before writing `DIR/pids` leaves such processes behind.
pub fn down(dir: &Path) -> Result<Vec<(u32, String)>, Error> {
    let Ok(dir) = dir.canonicalize() else {
        return Ok(Vec::new());
    };
    let running = running_in(&dir)?;
    // Apiservers first: one whose etcd is gone hangs in its shutdown.
    let (etcd, apiservers): (Vec<_>, Vec<_>) = running.iter().partition(|(_, name)| name == "etcd");
    stop_recorded(&apiservers, Duration::from_secs(10))?;
    stop_recorded(&etcd, Duration::from_secs(10))?;
    let pids_file = dir.join(PIDS);
    match fs::remove_file(&pids_file) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::WriteFile {
                path: pids_file,
                source,
            });
        }
        _ => {}
    }
    Ok(running)
}

/// SIGTERM to every group, SIGKILL to what is left after `grace`.
fn stop_recorded(procs: &[&(u32, String)], grace: Duration) -> Result<(), Error> {
    let signal_all = |signal| -> Result<(), Error> {
        for (pid, name) in procs {
            if process::is_alive(*pid) {
                process::signal_group(*pid, signal).map_err(|source| Error::Stop {
                    what: name.clone(),
                    pid: *pid,
                    source,
                })?;
            }
        }
        Ok(())
    };
    signal_all(libc::SIGTERM)?;
    let deadline = Instant::now() + grace;
    while procs.iter().any(|(pid, _)| process::is_alive(*pid)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    signal_all(libc::SIGKILL)
}

/// Refuses foreign or running directories; empties a stopped one of ours.
fn prepare_dir(dir: &Path) -> Result<(), Error> {
    let read = |source| Error::Dir {
        path: dir.to_owned(),
        source,
    };
    let entries: Vec<_> = fs::read_dir(dir)
        .map_err(read)?
        .collect::<Result<_, _>>()
        .map_err(read)?;
    if entries.is_empty() {
        return Ok(());
    }
    if !dir.join(MARKER).exists() {
        return Err(Error::ForeignDir {
            dir: dir.to_owned(),
        });
    }
    if !running_in(dir)?.is_empty() {
        return Err(Error::AlreadyRunning {
            dir: dir.to_owned(),
        });
    }
    for entry in entries {
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|source| Error::Dir { path, source })?;
    }
    Ok(())
}

/// Live processes of the environment in `dir`: those recorded in `DIR/pids`,
/// then any other `etcd` or `kube-apiserver` running with a file of `dir`.
fn running_in(dir: &Path) -> Result<Vec<(u32, String)>, Error> {
    let pids_file = dir.join(PIDS);
    let recorded = match fs::read_to_string(&pids_file) {
        Ok(text) => parse_pids(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(Error::ReadFile {
                path: pids_file,
                source,
            });
        }
    };
    let mut running: Vec<(u32, String)> = recorded
        .into_iter()
        .filter(|(pid, _)| runs_in(*pid, dir))
        .collect();
    let proc_entries = fs::read_dir("/proc").map_err(|source| Error::ReadFile {
        path: PathBuf::from("/proc"),
        source,
    })?;
    for entry in proc_entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if running.iter().any(|(known, _)| *known == pid) {
            continue;
        }
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if matches!(comm, "etcd" | "kube-apiserver") && runs_in(pid, dir) {
            running.push((pid, comm.to_owned()));
        }
    }
    Ok(running)
}

fn parse_pids(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .filter_map(|line| {
            let (pid, name) = line.split_once(' ')?;
            Some((pid.parse().ok()?, name.to_owned()))
        })
        .collect()
}

/// Whether `pid` is alive and runs with a file of `dir` on its command line
/// (every process of ours does), i.e. is not a stranger that reused the pid.
fn runs_in(pid: u32, dir: &Path) -> bool {
    if !process::is_alive(pid) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = format!("{}/", dir.display());
    cmdline
        .split(|b| *b == 0)
        .any(|arg| String::from_utf8_lossy(arg).contains(&needle))
}

#[cfg(test)]
mod tests {
    use super::parse_pids;

    #[test]
    fn pids_file_lines_name_their_process() {
        let parsed = parse_pids("12 etcd\n13 kube-apiserver mgmt\ngarbage\n\n");
        assert_eq!(
            parsed,
            [
                (12, "etcd".to_owned()),
                (13, "kube-apiserver mgmt".to_owned())
            ]
        );
    }
}
