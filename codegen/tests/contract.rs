//! The wire contract in `proto/` passes `buf lint` (rules in `buf.yaml`) and
//! `buf breaking` (category FILE) against the previous commit's `proto/` and
//! against the last released contract, `proto/released.image.yaml`; mutated
//! copies (a renumbered field, a camelCase field) prove both checks bite.
//!
//! buf comes from npm (`@bufbuild/buf`, pinned below), installed into
//! `target/buf/` on first use with the machine's node and npm.
//!
//! Which commit is "previous": `FEEDS_CONTRACT_BASE` (any git revision) when
//! set; else `HEAD` when `proto/` has uncommitted changes; else, on a branch
//! that has left `main`, the commit where it left; else `HEAD`'s parent. A
//! checkout without that commit (shallow, or not a git repository) is
//! compared against the released contract only, and the test says so.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use prost::Message as _;

/// Pinned, so the check is the same on every machine.
const BUF_PACKAGE: &str = "@bufbuild/buf@1.75.0";
const BUF_VERSION: &str = "1.75.0";

/// The last released contract (an image without source info). Refresh it when
/// a contract is released:
/// `target/buf/node_modules/.bin/buf build proto --exclude-source-info -o proto/released.image.yaml`
const RELEASED: &str = "proto/released.image.yaml";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// The installed buf, installed on first use.
fn buf() -> &'static Path {
    static BUF: OnceLock<PathBuf> = OnceLock::new();
    BUF.get_or_init(|| {
        let prefix = root().join("target/buf");
        let bin = prefix.join("node_modules/.bin/buf");
        let ready = prefix.join(".installed");
        if std::fs::read_to_string(&ready).ok().as_deref() == Some(BUF_PACKAGE) {
            return bin;
        }
        std::fs::create_dir_all(&prefix).expect("create target/buf");
        let out = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
                "--loglevel=error",
                // The package's postinstall only swaps its node launcher for
                // the platform binary; the launcher works without it.
                "--ignore-scripts",
                "--prefix",
            ])
            .arg(&prefix)
            .arg(BUF_PACKAGE)
            .output()
            .unwrap_or_else(|e| {
                panic!("this test needs node and npm on PATH to install {BUF_PACKAGE}: {e}")
            });
        assert!(
            out.status.success(),
            "npm install {BUF_PACKAGE} into {} failed:\n{}",
            prefix.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let version = Command::new(&bin).arg("--version").output().expect("buf");
        assert_eq!(
            String::from_utf8_lossy(&version.stdout).trim(),
            BUF_VERSION,
            "{} is not buf {BUF_VERSION}",
            bin.display()
        );
        std::fs::write(&ready, BUF_PACKAGE).expect("mark installed");
        bin
    })
}

/// Runs buf in `dir`; (success, stdout and stderr).
fn run_buf(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(buf())
        .args(args)
        .current_dir(dir)
        // Keep buf's cache with the install instead of the user's home.
        .env("BUF_CACHE_DIR", root().join("target/buf/cache"))
        .output()
        .expect("run buf");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Files, services and messages in a buf input (directory or image).
fn census(input: &Path) -> (usize, usize, usize) {
    let out = Command::new(buf())
        .arg("build")
        .arg(input)
        .args(["--exclude-source-info", "-o", "-#format=binpb"])
        .current_dir(root())
        .env("BUF_CACHE_DIR", root().join("target/buf/cache"))
        .output()
        .expect("run buf build");
    assert!(
        out.status.success(),
        "buf build {} failed:\n{}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // A buf image is wire-compatible with a FileDescriptorSet.
    let set = prost_types::FileDescriptorSet::decode(out.stdout.as_slice()).expect("image");
    let services = set.file.iter().map(|f| f.service.len()).sum();
    let messages = set.file.iter().map(|f| f.message_type.len()).sum();
    (set.file.len(), services, messages)
}

/// Says what was compared in the test's output whether or not it passes.
/// libtest captures `println!`, so this writes to stderr directly: the line
/// is the record of what the check covered.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "contract: {line}");
}

fn git(args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root())
        .args(args)
        .output()
        .map_err(|e| format!("git is not available: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn resolves(rev: &str) -> Option<String> {
    git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{rev}^{{commit}}"),
    ])
    .ok()
}

/// The commit to compare with and why it is that one; Err says why there is
/// none in this checkout.
fn base_commit() -> Result<(String, String), String> {
    if let Ok(rev) = std::env::var("FEEDS_CONTRACT_BASE") {
        let sha = resolves(&rev)
            .unwrap_or_else(|| panic!("FEEDS_CONTRACT_BASE={rev} is not a commit here"));
        return Ok((sha, format!("FEEDS_CONTRACT_BASE={rev}")));
    }
    let top = git(&["rev-parse", "--show-toplevel"])
        .map_err(|e| format!("not a git repository ({e})"))?;
    let head = resolves("HEAD").ok_or_else(|| format!("{top} has no commit yet"))?;
    if git(&["diff", "--quiet", "HEAD", "--", "proto"]).is_err() {
        return Ok((head, "HEAD (proto/ has uncommitted changes)".to_owned()));
    }
    for main in ["main", "origin/main"] {
        let Some(main_sha) = resolves(main) else {
            continue;
        };
        let on_main = git(&["merge-base", "--is-ancestor", "HEAD", &main_sha]).is_ok();
        if !on_main {
            let fork = git(&["merge-base", "HEAD", &main_sha])
                .map_err(|e| format!("no common commit with {main}: {e}"))?;
            return Ok((fork, format!("where this branch left {main}")));
        }
        break;
    }
    match resolves("HEAD^") {
        Some(parent) => Ok((parent, "HEAD's parent".to_owned())),
        None if git(&["rev-parse", "--is-shallow-repository"]).as_deref() == Ok("true") => {
            Err("shallow checkout: HEAD's parent was not fetched".to_owned())
        }
        None => Err("HEAD is the first commit".to_owned()),
    }
}

/// Writes `proto/` as of `commit` under `dir`.
fn checkout_proto(commit: &str, dir: &Path) -> Result<PathBuf, String> {
    let listing = git(&["ls-tree", "-r", "--name-only", commit, "--", "proto"])?;
    let files: Vec<&str> = listing.lines().filter(|f| f.ends_with(".proto")).collect();
    if files.is_empty() {
        return Err(format!("{commit} has no .proto file under proto/"));
    }
    for file in files {
        let out = Command::new("git")
            .arg("-C")
            .arg(root())
            .args(["show", &format!("{commit}:./{file}")])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).map_err(|e| e.to_string())?;
        std::fs::write(&path, out.stdout).map_err(|e| e.to_string())?;
    }
    Ok(dir.join("proto"))
}

#[test]
fn lint_passes() {
    let (ok, text) = run_buf(&root(), &["lint"]);
    assert!(ok, "buf lint (rules in buf.yaml):\n{text}");
    report("buf lint: proto/ clean under buf.yaml");
}

#[test]
fn no_breaking_change_against_previous_commit_and_released_contract() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut against: Vec<(String, PathBuf)> = Vec::new();
    match base_commit()
        .and_then(|(sha, why)| checkout_proto(&sha, scratch.path()).map(|dir| (sha, why, dir)))
    {
        Ok((sha, why, dir)) => against.push((format!("proto/ at {sha} ({why})"), dir)),
        // Asked for by name: not comparing with it is a failure.
        Err(reason) if std::env::var_os("FEEDS_CONTRACT_BASE").is_some() => {
            panic!("FEEDS_CONTRACT_BASE: {reason}")
        }
        Err(reason) => report(&format!(
            "previous commit NOT compared: {reason}; comparing with the released contract only"
        )),
    }
    against.push((
        format!("the released contract {RELEASED}"),
        root().join(RELEASED),
    ));

    let (files, services, _) = census(&root().join("proto"));
    assert!(files > 0 && services > 0, "proto/ has no services");
    for (label, input) in &against {
        // An empty baseline would pass every rule: refuse to compare with one.
        let (files, services, messages) = census(input);
        assert!(
            files > 0 && services > 0 && messages > 0,
            "{label} holds {files} files, {services} services: nothing to compare with"
        );
        let input = input.to_str().expect("utf-8 path");
        let (ok, text) = run_buf(&root(), &["breaking", "proto", "--against", input]);
        assert!(ok, "buf breaking against {label}:\n{text}");
        report(&format!(
            "buf breaking: proto/ against {label}: {files} files, {services} services, \
             {messages} messages, no breaking change"
        ));
    }
}

/// A copy of the workspace's `buf.yaml` and `proto/` in a temporary directory.
fn copy_contract() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(root().join("buf.yaml"), dir.path().join("buf.yaml")).expect("copy buf.yaml");
    let from = root().join("proto/feeds/v1");
    let to = dir.path().join("proto/feeds/v1");
    std::fs::create_dir_all(&to).expect("mkdir");
    for entry in std::fs::read_dir(&from).expect("proto dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "proto") {
            std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    dir
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join("proto/feeds/v1").join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.matches(from).count(), 1, "{from:?} in {file}");
    std::fs::write(&path, text.replace(from, to)).expect("write");
}

#[test]
fn renumbered_field_is_a_breaking_change() {
    let copy = copy_contract();
    edit(
        copy.path(),
        "business.proto",
        "uint32 page_size = 2;",
        "uint32 page_size = 9;",
    );
    let current = root().join("proto");
    let (ok, text) = run_buf(
        copy.path(),
        &[
            "breaking",
            "proto",
            "--against",
            current.to_str().expect("utf-8"),
        ],
    );
    assert!(
        !ok,
        "renumbering GetFeedRequest.page_size passed buf breaking"
    );
    assert!(
        text.contains("\"page_size\"") && text.contains("GetFeedRequest"),
        "buf breaking did not name the field:\n{text}"
    );
    report(&format!(
        "self-test: renumbered GetFeedRequest.page_size caught: {}",
        text.trim()
    ));
}

#[test]
fn lint_rejects_a_misnamed_field() {
    let copy = copy_contract();
    edit(
        copy.path(),
        "business.proto",
        "bool explain = 5;",
        "bool explain = 5;\n  string tenantName = 6;",
    );
    let (ok, text) = run_buf(copy.path(), &["lint"]);
    assert!(!ok, "a camelCase field passed buf lint");
    assert!(text.contains("tenantName"), "{text}");
    report(&format!(
        "self-test: camelCase field caught: {}",
        text.trim()
    ));
}
