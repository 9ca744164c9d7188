//! The `relayctl` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    relayctl::cli::main()
}
