//! Spawning and stopping the control-plane processes, and picking ports.
//!
//! Two lifetimes exist. Processes *tied* to the test process must die however
//! it ends (panic, `exit`, SIGKILL from a timeout): they get
//! `PR_SET_PDEATHSIG=SIGKILL`. That signal fires when the *thread* that forked
//! the child exits, not the process, so every tied child is spawned from one
//! dedicated thread that lives until the process exits — never from a test
//! thread, which libtest ends after each test. *Detached* processes (the
//! `kube-env up` binary) start their own session and outlive their parent.
//!
//! Either way each child leads its own process group, so stopping it
//! (`kill(-pgid)`) also reaches anything it forked.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Whether started processes die with the test process or outlive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// Killed (SIGKILL) when the process that started them exits.
    TiedToProcess,
    /// Run in their own session until `kube-env down` stops them.
    Detached,
}

/// Spawns `cmd` as the leader of a new process group with the given lifetime.
pub(crate) fn spawn(mut cmd: Command, lifetime: Lifetime) -> io::Result<Child> {
    match lifetime {
        Lifetime::Detached => {
            // SAFETY: the closure runs between fork and exec and only calls
            // setsid(2), which is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.spawn()
        }
        Lifetime::TiedToProcess => {
            // SAFETY: getpid(2) has no preconditions.
            let parent = unsafe { libc::getpid() };
            // SAFETY: the closure runs between fork and exec and only calls
            // setpgid(2), prctl(2) and getppid(2), all async-signal-safe; it
            // allocates nothing (io::Error::last_os_error and from_raw_os_error
            // do not allocate).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setpgid(0, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    // The parent may have died before prctl took effect.
                    if libc::getppid() != parent {
                        return Err(io::Error::from_raw_os_error(libc::ESRCH));
                    }
                    Ok(())
                });
            }
            spawn_on_spawner_thread(cmd)
        }
    }
}

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// Hands `cmd` to the process-lifetime spawner thread and waits for the child.
fn spawn_on_spawner_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<io::Result<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("kube-env-spawner".to_owned())
            .spawn(move || {
                // Never returns: the sender lives in a static, so the thread
                // (and with it every PDEATHSIG) lasts as long as the process.
                for mut request in rx {
                    let _ = request.reply.send(request.cmd.spawn());
                }
            })?;
        Ok(tx)
    });
    let spawner = spawner
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
    let (reply, answer) = mpsc::channel();
    spawner
        .send(SpawnRequest { cmd, reply })
        .map_err(|_| io::Error::other("the kube-env spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the kube-env spawner thread dropped the request"))?
}

/// A port on 127.0.0.1 that was free a moment ago and that this process has
/// not handed out before.
///
/// Another process can still take it before our child binds it; callers
/// detect that (the child exits with "address already in use") and retry
/// with a fresh port.
pub(crate) fn free_port() -> io::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..64 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no fresh free port on 127.0.0.1 after 64 tries",
    ))
}

/// Sends `signal` to the process group led by `pid`.
pub(crate) fn signal_group(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(-pid, signal) } == -1 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    Ok(())
}

/// Whether `pid` names a live (not zombie) process.
pub(crate) fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => match stat.rfind(')') {
            Some(end) => !matches!(stat[end + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// Stops a child we spawned: SIGTERM to its group, SIGKILL after `grace`,
/// then reaps it.
pub(crate) fn stop_child(child: &mut Child, grace: Duration) {
    let pid = child.id();
    let _ = signal_group(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = signal_group(pid, libc::SIGKILL);
    let _ = child.wait();
}

/// SIGKILLs the group led by `pid` and reaps it if it is our child; for use
/// at process exit, where no `Child` handle is reachable.
pub(crate) fn kill_and_reap(pid: u32) {
    let _ = signal_group(pid, libc::SIGKILL);
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: waitpid(2) with a null status pointer is allowed; it only
        // reaps `pid`, which is our child or not waitable (then it fails).
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}
