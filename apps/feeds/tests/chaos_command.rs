//! `feeds chaos` on a small world: two replicas of every stage as OS
//! processes, a kill and a latency fault on recall, a few seconds each. The
//! report is complete and says what happened: the killed replica exited on
//! SIGKILL and served again, the proxy held chunks back, the load ran in
//! every window. Bad settings are refused before anything starts.

mod common;

use std::process::Command;

#[test]
fn a_small_chaos_plan_runs_and_is_reported() {
    let out = tempfile::tempdir().expect("tempdir");
    let run = Command::new(common::EXE)
        .args([
            "chaos",
            "--stages",
            "recall",
            "--faults",
            "kill,latency",
            "--rate",
            "20",
            "--warmup-s",
            "1",
            "--nominal-s",
            "3",
            "--down-s",
            "1",
            "--latency-s",
            "3",
            "--settle-s",
            "1",
            "--items",
            &common::TEST_ITEMS.to_string(),
            "--users",
            &common::TEST_USERS.to_string(),
            "--dir",
        ])
        .arg(common::deploy_dir())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("run feeds chaos");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "feeds chaos failed:\n{stdout}\n{stderr}"
    );
    for row in [
        "| recall | kill | recall-b |",
        "| recall | latency | recall-a |",
    ] {
        assert!(stdout.contains(row), "no row {row:?} in\n{stdout}");
    }

    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("chaos.json")).expect("chaos.json"),
    )
    .expect("JSON");
    assert!(
        report["nominal"]["requests"].as_u64().expect("nominal") >= 40,
        "3 s at 20/s: {}",
        report["nominal"]
    );
    let episodes = report["episodes"].as_array().expect("episodes");
    assert_eq!(episodes.len(), 2);
    for e in episodes {
        assert!(
            e["window"]["requests"].as_u64().expect("requests") > 0,
            "{e}"
        );
        assert!(e["target"]["bound"].is_string() && e["target"]["met"].is_boolean());
        assert!(e["serving_ms"].as_f64() >= e["fault_ms"].as_f64(), "{e}");
    }
    let (kill, latency) = (&episodes[0], &episodes[1]);
    assert_eq!(kill["fault"], "kill");
    assert!(
        kill["exit"].as_str().expect("exit").contains("signal: 9"),
        "{kill}"
    );
    assert!(kill["gone_ms"].as_f64() >= kill["fault_ms"].as_f64());
    assert_eq!(latency["fault"], "latency");
    assert!(
        latency["delayed_chunks"].as_u64().expect("chunks") > 0,
        "{latency}"
    );
    assert!(latency["victim_share"].is_number(), "{latency}");

    // One line per request, and a config per replica.
    let csv = std::fs::read_to_string(out.path().join("requests.csv")).expect("csv");
    assert_eq!(
        csv.lines().count() as u64,
        report["requests"].as_u64().expect("requests") + 1
    );
    assert_eq!(report["replicas"].as_array().expect("replicas").len(), 10);
    assert!(out.path().join("chaos.md").is_file());
}

#[test]
fn bad_settings_are_refused_naming_the_option() {
    for (args, option) in [
        (&["--stages", "business"][..], "--stages"),
        (&["--stages", "recal"][..], "--stages"),
        (&["--latency-ms", "200-50"][..], "--latency-ms"),
        (&["--rate", "0"][..], "--rate"),
    ] {
        let out = tempfile::tempdir().expect("tempdir");
        let run = Command::new(common::EXE)
            .arg("chaos")
            .args(args)
            .arg("--out")
            .arg(out.path())
            .output()
            .expect("run feeds chaos");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(option), "{args:?}: {stderr}");
        assert!(
            std::fs::read_dir(out.path()).expect("out").next().is_none(),
            "{args:?} started something"
        );
    }
}
