//! The functional core stays pure, by a test rather than by discipline:
//! `config`, `model`, `observed`, `relay`, `plan`, `pki` (outside its OS
//! randomness and the test key pool), `check`, `material` (outside its
//! loader), `text`, `secret`, `metrics`, `status`, `events` and `shard` may not do I/O, read the clock, reach the
//! OS's randomness, or import the shell (DESIGN.md §6). Test modules at the
//! end of a file (`#[cfg(test)] mod tests`) and test-only files are exempt.

use std::path::{Path, PathBuf};

/// What the core may not name: I/O, the clock, OS randomness, the shell.
const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "an async runtime"),
    ("kube::", "the Kubernetes client"),
    ("k8s_openapi", "Kubernetes API types"),
    ("git2", "Git"),
    ("clap", "the command line"),
    ("std::fs", "the file system"),
    ("std::env", "the environment"),
    ("std::process", "processes"),
    ("TcpStream", "the network"),
    ("TcpListener", "the network"),
    ("UdpSocket", "the network"),
    ("ToSocketAddrs", "name resolution"),
    ("std::thread", "threads"),
    ("tracing::", "logging"),
    ("now_utc", "the clock"),
    ("SystemTime", "the clock"),
    ("Instant::now", "the clock"),
    ("SysRng", "OS randomness"),
    ("OsRng", "OS randomness"),
    ("OsKeySource", "OS randomness (inject a KeySource)"),
    ("os_token", "OS randomness (inject a token source)"),
    ("crate::files", "the shell's file reading"),
    ("crate::backend", "the shell's backends"),
    ("crate::cli", "the command line"),
    ("crate::source", "the shell's manifest sources"),
    ("crate::fleet", "the shell's fleet observation"),
    ("crate::apply", "the shell's apply"),
    ("crate::material::load", "the shell's material loader"),
];

/// The pure modules, and the files in them that are not (the shell's part
/// of a module, test-only files).
const PURE: &[&str] = &[
    "src/config",
    "src/model.rs",
    "src/observed.rs",
    "src/relay.rs",
    "src/plan",
    "src/pki",
    "src/check",
    "src/material/mod.rs",
    "src/text.rs",
    "src/secret.rs",
    "src/metrics.rs",
    "src/status.rs",
    "src/events.rs",
    "src/shard.rs",
];
const EXEMPT: &[&str] = &[
    "src/pki/os.rs",
    "src/pki/testing.rs",
    "src/pki/tests.rs",
    "src/pki/fixtures.rs",
    "src/check/tests.rs",
    "src/config/validate/fixture.rs",
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            rust_files(&entry, out);
        } else if entry.extension().is_some_and(|e| e == "rs") {
            out.push(entry);
        }
    }
}

/// The violations in one file's text: `(line number, token, what it is)`.
/// Comments are skipped, and so is a trailing `#[cfg(test)]` module.
fn violations(text: &str) -> Vec<(usize, &'static str, &'static str)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        // An inline test module ends the scan; a declaration of one
        // (`mod tests;`) does not hide what follows it.
        if trimmed == "#[cfg(test)]"
            && lines.get(index + 1).is_some_and(|next| {
                let next = next.trim_start();
                next.starts_with("mod ") && next.trim_end().ends_with('{')
            })
        {
            break;
        }
        // `pki`'s facade names its OS sources to re-export them for the shell.
        if trimmed.starts_with("//") || trimmed.starts_with("pub use os::") {
            continue;
        }
        let code = line.split("//").next().unwrap_or(line);
        for (token, what) in FORBIDDEN {
            if code.contains(token) {
                out.push((index + 1, *token, *what));
            }
        }
    }
    out
}

#[test]
fn the_functional_core_does_no_io_reads_no_clock_and_imports_no_shell() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for place in PURE {
        rust_files(&root.join(place), &mut files);
    }
    assert!(
        files.len() > 30,
        "the scan must see the core: {}",
        files.len()
    );
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root).expect("inside the crate");
        if EXEMPT.iter().any(|e| relative == Path::new(e)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        for (line, token, what) in violations(&text) {
            found.push(format!("{}:{line}: `{token}` ({what})", relative.display()));
        }
    }
    assert!(
        found.is_empty(),
        "the functional core must stay pure (inject the clock, randomness and I/O):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_guard_sees_what_it_forbids() {
    let text = "use std::fs;\n#[cfg(test)]\nmod fixtures;\nfn a() { let _ = time::OffsetDateTime::now_utc(); } // std::env in a comment\n// use tokio;\n#[cfg(test)]\nmod tests {\n    use std::env;\n}\n";
    let found = violations(text);
    assert_eq!(
        found.iter().map(|(l, t, _)| (*l, *t)).collect::<Vec<_>>(),
        [(1, "std::fs"), (4, "now_utc")]
    );
}
