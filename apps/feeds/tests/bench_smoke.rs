//! `feeds bench --smoke`: the harness starts every topology and the echo
//! chain, drives them, checks parity, and writes a report that parses. It
//! checks that the harness works, not how fast anything is.

mod common;

use std::process::Command;

#[test]
fn bench_smoke_writes_a_complete_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("results");
    let output = Command::new(common::EXE)
        .args(["bench", "--smoke", "--out"])
        .arg(&out)
        .arg("--dir")
        .arg(common::deploy_dir())
        .output()
        .expect("run feeds bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in [
        "results.json",
        "report.md",
        "cpu_per_request.svg",
        "latency.svg",
    ] {
        let meta = std::fs::metadata(out.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(meta.len() > 100, "{file} is nearly empty");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).expect("read"))
            .expect("valid JSON");
    let configs = json["configs"].as_array().expect("configs");
    let topologies: Vec<&str> = configs
        .iter()
        .filter_map(|c| c["topology"].as_str())
        .collect();
    assert_eq!(
        topologies,
        [
            "monolith",
            "five-pod",
            "five-pod-eager",
            "mixed",
            "per-tenant-default",
            "per-tenant-lite",
            "monolith-lite",
            "echo-chain",
            "echo-one-hop"
        ]
    );
    for c in configs {
        assert!(
            c["runs"][0]["closed"]["requests"]
                .as_u64()
                .expect("requests")
                > 0,
            "{c}"
        );
        assert!(
            c["cpu_ms_per_req"]["median"].as_f64().expect("cpu") > 0.0,
            "{c}"
        );
        assert_eq!(c["errors"].as_object().map(|e| e.len()), Some(0), "{c}");
    }
    // Each floor is also measured at the rate of the topology it is the
    // floor of: the one-hop echo at the monolith's, the chain at five-pod's.
    let row = |name: &str| configs.iter().find(|c| c["topology"] == name).expect("row");
    for (floor, of) in [("echo-one-hop", "monolith"), ("echo-chain", "five-pod")] {
        let (floor, of) = (row(floor), row(of));
        let rate = floor["matched_rate"].as_f64().expect("matched rate");
        let throughput = of["throughput"]["median"].as_f64().expect("throughput");
        assert!((rate - throughput).abs() < 1e-6, "{rate} vs {throughput}");
        assert!(
            floor["matched_cpu_ms_per_req"]
                .as_f64()
                .expect("matched CPU")
                > 0.0,
            "{floor}"
        );
    }
    assert!(row("monolith")["matched_rate"].is_null());
    let targets = json["targets"].as_array().expect("targets");
    let named = |what: &str| {
        targets
            .iter()
            .filter(|t| t["name"].as_str().is_some_and(|n| n.contains(what)))
            .count()
    };
    // The smoke run has one payload (4 KB): one framework row each, no
    // split row (that compares 16 and 64 KB), and the rows of before.
    assert_eq!(named("monolith framework cost"), 1, "{targets:?}");
    assert_eq!(named("five-pod framework cost"), 1, "{targets:?}");
    assert_eq!(named("local hop"), 2, "{targets:?}");
    assert_eq!(named("per-tenant"), 2, "{targets:?}");
    assert_eq!(targets.len(), 9, "{targets:?}");
    assert!(
        json["rss"]
            .as_array()
            .expect("rss")
            .iter()
            .all(|r| r["total_mib"].as_f64().unwrap_or(0.0) > 1.0)
    );
    let md = std::fs::read_to_string(out.join("report.md")).expect("report");
    assert!(md.contains("## Targets") && md.contains("echo-chain"));
    assert!(md.contains("## Framework cost") && md.contains("| 4 KB |"));
    assert!(
        md.contains("one-hop at its peak"),
        "both floors in the table"
    );
}

#[test]
fn bad_payload_lists_are_refused_naming_the_option() {
    for kb in ["0", "1,2048", "x"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("results");
        let run = Command::new(common::EXE)
            .args(["bench", "--smoke", "--kb", kb, "--out"])
            .arg(&out)
            .output()
            .expect("run feeds bench");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "--kb {kb}: {stderr}");
        assert!(stderr.contains("--kb"), "--kb {kb}: {stderr}");
        assert!(!out.exists(), "--kb {kb} started something");
    }
}
