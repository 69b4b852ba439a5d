//! Bad config makes `feeds serve` name the key and the file, exit non-zero
//! and start nothing.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

fn serve_with(toml: &str, envs: &[(&str, &str)]) -> (Output, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, toml).expect("write config");
    let mut cmd = Command::new(common::EXE);
    cmd.args(["serve", "--config"])
        .arg(&file)
        .env("RUST_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let output = run_bounded(cmd);
    (output, file.display().to_string())
}

/// Runs the command, killing it if it has not exited in 30 s (it must not
/// start serving, so a hang is a failure).
fn run_bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn feeds");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("feeds serve kept running on a bad config");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn assert_rejected(toml: &str, key: &str) {
    let (out, file) = serve_with(toml, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted:\n{toml}");
    assert!(
        stderr.contains(key),
        "stderr does not name {key}:\n{stderr}"
    );
    assert!(
        stderr.contains(&file),
        "stderr does not name the file {file}:\n{stderr}"
    );
    assert!(!stderr.contains("serving"), "it started serving:\n{stderr}");
}

const FRONT: &str = "[process]\nlisten = \"127.0.0.1:0\"\nhost = [\"business\", \"split\"]\n";

#[test]
fn unknown_stage_name() {
    assert_rejected(
        "[process]\nhost = [\"business\", \"ranker\"]\n",
        "process.host[1]",
    );
    assert_rejected(
        &format!("{FRONT}[remote.ranker]\nendpoints = [\"http://127.0.0.1:1\"]\n"),
        "remote.ranker",
    );
}

#[test]
fn stage_both_hosted_and_remote() {
    assert_rejected(
        &format!(
            "{FRONT}[remote.split]\nendpoints = [\"http://127.0.0.1:1\"]\n[remote.rerank]\nendpoints = [\"http://127.0.0.1:2\"]\n"
        ),
        "remote.split",
    );
}

#[test]
fn remote_stage_without_endpoint() {
    assert_rejected(FRONT, "remote.rerank.endpoints");
    assert_rejected(
        &format!("{FRONT}[remote.rerank]\nendpoints = []\n"),
        "remote.rerank.endpoints",
    );
}

#[test]
fn malformed_endpoint_url() {
    assert_rejected(
        &format!(
            "{FRONT}[remote.rerank]\nendpoints = [\"http://127.0.0.1:1\", \"127.0.0.1:50053\"]\n"
        ),
        "remote.rerank.endpoints[1]",
    );
}

#[test]
fn unknown_keys() {
    assert_rejected(
        "[process]\nlisten = \"127.0.0.1:0\"\nlisen = \"x\"\n",
        "lisen",
    );
    assert_rejected("[recall]\nquota_bogus = 5\n", "quota_bogus");
    assert_rejected("[nonsense]\nx = 1\n", "nonsense");
}

#[test]
fn invalid_stage_values() {
    assert_rejected("[rerank]\nlambda = 3.0\n", "rerank.lambda");
    assert_rejected("[process]\nlisten = \"localhost\"\n", "process.listen");
}

#[test]
fn invalid_operations_values() {
    assert_rejected(
        "[telemetry]\nmetrics_listen = \"nowhere\"\n",
        "telemetry.metrics_listen",
    );
    assert_rejected("[telemetry]\nlog_format = \"xml\"\n", "log_format");
    assert_rejected(
        "[telemetry]\notlp_endpoint = \"collector:4317\"\n",
        "telemetry.otlp_endpoint",
    );
    assert_rejected(
        "[telemetry]\nlog_filter = \"info,=[\"\n",
        "telemetry.log_filter",
    );
    let front = "[process]\nhost = [\"business\", \"split\", \"rerank\", \"finerank\"]\n[remote.recall]\nendpoints = [\"dns:///recall:1\"]\n";
    assert_rejected(
        &format!("{front}max_attempts = 0\n"),
        "remote.recall.max_attempts",
    );
    assert_rejected(
        &format!("{front}retry_token_ratio = 2.0\n"),
        "remote.recall.retry_token_ratio",
    );
    assert_rejected(
        "[process]\nhost = [\"business\", \"split\", \"rerank\", \"finerank\"]\n[remote.recall]\nendpoints = [\"dns:///recall\"]\n",
        "remote.recall.endpoints[0]",
    );
}

#[test]
fn invalid_concurrency_values() {
    assert_rejected(
        "[process]\nmin_concurrent_requests = 0\n",
        "process.min_concurrent_requests",
    );
    assert_rejected(
        "[process]\nmin_concurrent_requests = 30\ninitial_concurrent_requests = 10\n",
        "process.initial_concurrent_requests",
    );
    for tolerance in ["1.0", "0.5", "1000.0", "nan", "-inf"] {
        assert_rejected(
            &format!("[process]\nlatency_tolerance = {tolerance}\n"),
            "process.latency_tolerance",
        );
    }
    assert_rejected(
        "[process]\nconcurrency_limit = \"gradient\"\n",
        "concurrency_limit",
    );
    assert_rejected(
        "[process]\ncompute_threads = 100000\n",
        "process.compute_threads",
    );
    assert_rejected("[limits.ranker]\nmax_concurrent = 4\n", "limits.ranker");
    assert_rejected("[limits.recall]\nqueue = 4\n", "queue");
}

/// An HTTP/2 frame size outside the protocol's range (16,384 to 16,777,215)
/// is named by its key before anything is built.
#[test]
fn frame_size_outside_http2_range() {
    for bad in ["16383", "16777216", "0"] {
        assert_rejected(
            &format!("[process.limits]\nmax_frame_bytes = {bad}\n"),
            "process.limits.max_frame_bytes",
        );
    }
    assert_rejected(
        "[process.limits]\nmax_frame_bytes = -1\n",
        "max_frame_bytes",
    );
}

/// Shadow, recording and rollout sections: a bad value is named by its key.
#[test]
fn invalid_shadow_record_and_rollout_values() {
    const ROUTED: &str = "[remote.recall.pools.v2]\nendpoints = [\"http://127.0.0.1:1\"]\n\n\
                          [routes]\nrecall = []\n\n";
    assert_rejected("[shadow]\nconcurrency = 0\n", "shadow.concurrency");
    assert_rejected("[shadow.diff]\nmin_compared = \"x\"\n", "min_compared");
    assert_rejected(
        "[[routes.recall]]\ntarget = \"local\"\nshadow = { target = \"nowhere\", rate = 0.5 }\n",
        "nowhere",
    );
    assert_rejected("[record.recall]\nrate = 2.0\n", "record.recall.rate");
    assert_rejected("[record.ranker]\nrate = 0.1\n", "record.ranker");
    assert_rejected(
        "[rollout.recall]\nbaseline = \"local\"\ncandidate = \"v2\"\n",
        "rollout.recall",
    );
    assert_rejected(
        &format!("{ROUTED}[rollout.recall]\nbaseline = \"local\"\ncandidate = \"v3\"\n"),
        "rollout.recall.candidate",
    );
    assert_rejected(
        &format!(
            "{ROUTED}[rollout.recall]\nbaseline = \"local\"\ncandidate = \"v2\"\nsteps = [10, 5, 100]\n"
        ),
        "rollout.recall.steps[1]",
    );
    assert_rejected(
        &format!(
            "{ROUTED}[rollout.recall]\nbaseline = \"local\"\ncandidate = \"v2\"\nsteps = [10, 50]\n"
        ),
        "rollout.recall.steps",
    );
    assert_rejected(
        &format!(
            "{ROUTED}[rollout.recall]\nbaseline = \"local\"\ncandidate = \"v2\"\ngates = {{ max_p99_ratio = 0.5 }}\n"
        ),
        "rollout.recall.gates.max_p99_ratio",
    );
}

/// A TLS file that is missing, unreadable as PEM or does not match is
/// named with its key and its path, besides the config file.
#[test]
fn invalid_tls_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let ca = rcgen::generate_simple_self_signed(vec!["ca".to_owned()]).expect("ca");
    let leaf = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("leaf");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("other");
    std::fs::write(path("ca.pem"), ca.cert.pem()).expect("write");
    std::fs::write(path("cert.pem"), leaf.cert.pem()).expect("write");
    std::fs::write(path("key.pem"), leaf.signing_key.serialize_pem()).expect("write");
    std::fs::write(path("other-key.pem"), other.signing_key.serialize_pem()).expect("write");
    std::fs::write(path("garbage.pem"), "not a certificate\n").expect("write");
    let tls = |cert: &str, key: &str, ca: &str| {
        format!(
            "[process.tls]\nenabled = true\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
            path(cert),
            path(key),
            path(ca)
        )
    };
    let cases = [
        (
            tls("missing.pem", "key.pem", "ca.pem"),
            "process.tls.cert_file",
            "missing.pem",
        ),
        (
            tls("cert.pem", "key.pem", "garbage.pem"),
            "process.tls.ca_file",
            "garbage.pem",
        ),
        (
            tls("cert.pem", "garbage.pem", "ca.pem"),
            "process.tls.key_file",
            "garbage.pem",
        ),
        (
            tls("cert.pem", "other-key.pem", "ca.pem"),
            "process.tls.key_file",
            "other-key.pem",
        ),
        (
            tls("garbage.pem", "key.pem", "ca.pem"),
            "process.tls.cert_file",
            "garbage.pem",
        ),
    ];
    for (toml, key, file) in cases {
        assert_rejected(&toml, key);
        let (out, _) = serve_with(&toml, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(file), "{key}: {file} not named:\n{stderr}");
    }
    assert_rejected("[process.tls]\nenabled = true\n", "process.tls.cert_file");
}

#[test]
fn metrics_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let (out, _) = serve_with(
        &format!("[process]\nlisten = \"127.0.0.1:0\"\n[telemetry]\nmetrics_listen = \"{addr}\"\n"),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("telemetry.metrics_listen") && stderr.contains(&addr.to_string()),
        "{stderr}"
    );
    assert!(!stderr.contains("serving"), "{stderr}");
}

#[test]
fn listen_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let (out, _) = serve_with(&format!("[process]\nlisten = \"{addr}\"\n"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("process.listen") && stderr.contains(&addr.to_string()),
        "{stderr}"
    );
    assert!(!stderr.contains("serving"), "{stderr}");
}

#[test]
fn env_override_is_named() {
    let (out, _) = serve_with("", &[("FEEDS__RERANK__LAMBDA", "7")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("FEEDS__RERANK__LAMBDA"), "{stderr}");
}

#[test]
fn missing_config_file() {
    let mut cmd = Command::new(common::EXE);
    cmd.args(["serve", "--config", "/nonexistent/feeds.toml"]);
    let out = run_bounded(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/feeds.toml"), "{stderr}");
}

#[test]
fn shipped_files_are_valid() {
    let dir = common::deploy_dir();
    for name in ["monolith", "five-pod", "mixed"] {
        for file in feeds::resolve(name, &dir).expect("topology") {
            feeds::load(Some(&file)).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
    // The experiments file equals the built-in experiments.
    let split = split::Config {
        experiments_file: Some(dir.join("experiments.toml").display().to_string()),
        ..split::Config::default()
    };
    let from_file = split.experiments().expect("experiments.toml is valid");
    let builtin = split::Config::default().experiments().expect("built-in");
    assert_eq!(from_file, builtin);
}
