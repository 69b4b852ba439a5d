//! Every fuzz target in `fuzz/` runs briefly on its committed corpus with
//! no crash, hang or panic. cargo-fuzz is installed by this test into
//! `target/fuzz-tools` (pinned) on first use; the targets are built with
//! the stable toolchain and no sanitizer (see `fuzz/README.md`) into
//! `target/fuzz`, where the long runs of the README find them too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Pinned, so every machine fuzzes with the same tool.
const CARGO_FUZZ: &str = "0.13.2";
/// Seconds each target fuzzes: enough to run every seed and a few thousand
/// mutations of them, so a harness or loader that breaks on its own
/// corpus fails here.
const SECONDS_PER_TARGET: u32 = 4;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// `target/fuzz-tools/bin/cargo-fuzz`, installed on first use.
fn cargo_fuzz(root: &Path) -> PathBuf {
    let tools = root.join("target/fuzz-tools");
    let exe = tools.join("bin/cargo-fuzz");
    let version = Command::new(&exe).arg("--version").output();
    if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ)) {
        return exe;
    }
    let out = Command::new(env!("CARGO"))
        .args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ])
        .arg("--root")
        .arg(&tools)
        .output()
        .expect("run cargo install");
    assert!(
        out.status.success(),
        "installing cargo-fuzz {CARGO_FUZZ} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// The targets `fuzz/Cargo.toml` declares, in order.
fn targets(root: &Path) -> Vec<String> {
    let manifest: toml::Table = std::fs::read_to_string(root.join("fuzz/Cargo.toml"))
        .expect("fuzz/Cargo.toml")
        .parse()
        .expect("fuzz/Cargo.toml parses");
    manifest["bin"]
        .as_array()
        .expect("[[bin]] targets")
        .iter()
        .map(|b| b["name"].as_str().expect("target name").to_owned())
        .collect()
}

/// The command without the config variables that would change what the
/// config target loads.
fn command(program: &Path) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with(feeds::ENV_PREFIX)) {
        c.env_remove(k);
    }
    c
}

#[test]
fn every_fuzz_target_survives_its_corpus() {
    let root = workspace();
    let started = Instant::now();
    let cargo_fuzz = cargo_fuzz(&root);
    let installed = started.elapsed();

    let build = command(&cargo_fuzz)
        .current_dir(&root)
        .args(["fuzz", "build", "--sanitizer", "none", "--target-dir"])
        .arg(root.join("target/fuzz"))
        .output()
        .expect("run cargo fuzz build");
    assert!(
        build.status.success(),
        "cargo fuzz build failed: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let built = started.elapsed();

    let bin = root.join("target/fuzz/x86_64-unknown-linux-gnu/release");
    let scratch = root.join("target/fuzz-smoke");
    let _ = std::fs::remove_dir_all(&scratch);
    let mut report = Vec::new();
    for target in targets(&root) {
        let corpus = root.join("fuzz/corpus").join(&target);
        let seeds = std::fs::read_dir(&corpus)
            .map(|d| d.count())
            .unwrap_or_default();
        assert!(seeds > 0, "{}: no seeds", corpus.display());
        // New inputs go to a scratch corpus; the committed one is only read.
        let new = scratch.join("corpus").join(&target);
        let artifacts = scratch.join("artifacts").join(&target);
        for dir in [&new, &artifacts] {
            std::fs::create_dir_all(dir).expect("scratch dir");
        }
        let t = Instant::now();
        let out = command(&bin.join(&target))
            .arg(&new)
            .arg(&corpus)
            .arg(format!("-max_total_time={SECONDS_PER_TARGET}"))
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .output()
            .expect("run the fuzz target");
        let log = String::from_utf8_lossy(&out.stderr);
        let tail: String = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            out.status.success(),
            "fuzz target {target} failed (inputs in {}):\n{tail}",
            artifacts.display()
        );
        let runs: u64 = log
            .lines()
            .find_map(|l| l.strip_prefix("Done ")?.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{target}: no run count in its output:\n{tail}"));
        assert!(
            runs >= seeds as u64,
            "{target}: {runs} runs for {seeds} seeds"
        );
        report.push(format!(
            "{target}: {runs} runs in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "cargo-fuzz ready in {:.1} s, targets built in {:.1} s, all run in {:.1} s total\n{}",
        installed.as_secs_f64(),
        (built - installed).as_secs_f64(),
        started.elapsed().as_secs_f64(),
        report.join("\n")
    );
}
