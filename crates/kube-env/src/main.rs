//! `kube-env up N DIR` / `kube-env down DIR`: a real multi-cluster control
//! plane in the background, for trying relayctl by hand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Real etcd + kube-apiservers on 127.0.0.1, in the background.
#[derive(Debug, Parser)]
#[command(name = "kube-env", version)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start one etcd and N apiservers; return once all are ready.
    Up {
        /// Number of apiservers: contexts `mgmt`, `cluster-1`, …, `cluster-(N-1)`.
        #[arg(value_parser = clap::value_parser!(u16).range(1..=64))]
        apiservers: u16,
        /// Directory for the kubeconfig, certificates, logs and etcd data.
        dir: PathBuf,
    },
    /// Stop every process an earlier `up` started in DIR (safe to repeat).
    Down {
        /// The directory given to `up`.
        dir: PathBuf,
    },
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Cmd::Up { apiservers, dir } => {
            relayctl_kube_env::up(usize::from(apiservers), &dir).map(|running| {
                let kubectl = running.binaries.kubectl();
                let kubeconfig = running.kubeconfig.display();
                eprintln!(
                    "kube-env: {} apiserver(s) ready in `{}` (contexts: {})",
                    running.contexts.len(),
                    dir.display(),
                    running.contexts.join(", ")
                );
                for (pid, name) in &running.processes {
                    eprintln!("  pid {pid}: {name}");
                }
                eprintln!("try:");
                eprintln!("  export KUBECONFIG={kubeconfig}");
                eprintln!(
                    "  {} --context {} get ns",
                    kubectl.display(),
                    running.contexts.get(1).map_or("mgmt", String::as_str)
                );
                eprintln!("stop it with `kube-env down {}`", dir.display());
                // Data on stdout: `eval "$(kube-env up 3 DIR)"` sets it up.
                println!("export KUBECONFIG={kubeconfig}");
            })
        }
        Cmd::Down { dir } => relayctl_kube_env::down(&dir).map(|stopped| {
            if stopped.is_empty() {
                eprintln!("kube-env: nothing running in `{}`", dir.display());
            }
            for (pid, name) in &stopped {
                eprintln!("kube-env: stopped {name} (pid {pid})");
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
