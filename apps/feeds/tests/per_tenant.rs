//! The shipped `per-tenant` topology on real processes: tenant `lite` is
//! served entirely inside the front process (the per-stage processes see
//! none of its calls), every other tenant crosses all of them, and both
//! tenants get exactly the monolith's answers.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Case, Outcome, cases, deploy_dir, run_grpc, sample, scrape};
use proxy_api::Stage;

/// Calls each per-stage process has served, from its `/metrics`.
async fn served(metrics: &[SocketAddr]) -> Vec<f64> {
    let mut out = Vec::new();
    for m in metrics {
        out.push(sample(&scrape(*m).await, "grpc_server_handled_total", &[]));
    }
    out
}

async fn monolith(cases: &[Case]) -> Vec<Outcome> {
    let (config, plan) = common::config_for(&Stage::ALL, "127.0.0.1:0".parse().expect("addr"), &[]);
    let registry = feeds::build(&config, &plan).expect("registry");
    let business = registry.business().expect("business");
    let mut out = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        out.push(common::call(business.as_ref(), case, i).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lite_stays_in_process_and_default_crosses_the_pods() {
    let files = feeds::resolve("per-tenant", &deploy_dir()).expect("per-tenant");
    let copies = tempfile::tempdir().expect("tempdir");
    let files = feeds::relocate(&files, copies.path())
        .expect("relocate")
        .files;
    // A metrics endpoint on every per-stage process.
    let mut metrics = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("front.toml")) {
        let addr = common::free_addr();
        let mut text = std::fs::read_to_string(file).expect("read");
        text.push_str(&format!("\n[telemetry]\nmetrics_listen = \"{addr}\"\n"));
        std::fs::write(file, text).expect("write");
        metrics.push(addr);
    }
    assert_eq!(metrics.len(), 4);
    let running = feeds::start(
        common::EXE.as_ref(),
        &files,
        &common::test_env(),
        Duration::from_secs(90),
    )
    .await
    .expect("start per-tenant");
    let front = running.entry().expect("front");
    // The front reaches the per-stage split once its health probe answers.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let all = cases(80);
    let (lite, other): (Vec<Case>, Vec<Case>) =
        all.into_iter().partition(|c| c.tenant == Some("lite"));

    let before = served(&metrics).await;
    let got_lite = run_grpc(front, &lite).await;
    let after = served(&metrics).await;
    assert_eq!(
        before, after,
        "lite requests reached the per-stage processes"
    );
    assert!(got_lite.iter().filter(|o| o.is_ok()).count() >= lite.len() / 2);

    let got_other = run_grpc(front, &other).await;
    let moved = served(&metrics).await;
    let valid = got_other.iter().filter(|o| o.is_ok()).count() as f64;
    for (i, (a, b)) in after.iter().zip(&moved).enumerate() {
        assert!(
            b - a >= valid,
            "per-stage process {i} served {} calls for {valid} default-tenant requests",
            b - a
        );
    }

    assert_eq!(
        got_lite,
        monolith(&lite).await,
        "lite differs from the monolith"
    );
    assert_eq!(
        got_other,
        monolith(&other).await,
        "default differs from the monolith"
    );
    running.stop(Duration::from_secs(10)).await.expect("stop");
}
