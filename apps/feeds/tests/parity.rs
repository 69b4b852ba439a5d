//! Parity: the same 200 requests give the same answers in every topology:
//! the monolith in-process, all stages in one process over real gRPC, the
//! monolith, five-pod and mixed topologies as OS processes.

mod common;

use std::time::Duration;

use common::{Case, Outcome, cases, deploy_dir, run_grpc, serve_groups};
use proxy_api::Stage;

/// Reference: every stage local, called through the registry in this process.
async fn in_process_local(cases: &[Case]) -> Vec<Outcome> {
    let (config, plan) = common::config_for(&Stage::ALL, "127.0.0.1:0".parse().expect("addr"), &[]);
    let registry = feeds::build(&config, &plan).expect("registry");
    let business = registry.business().expect("business is local");
    let mut out = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        out.push(common::call(business.as_ref(), case, i).await);
    }
    out
}

fn assert_same(name: &str, reference: &[Outcome], got: &[Outcome]) {
    assert_eq!(reference.len(), got.len());
    for (i, (want, got)) in reference.iter().zip(got).enumerate() {
        assert_eq!(
            want, got,
            "{name}: request {i} differs from the in-process monolith"
        );
    }
}

async fn os_topology(name: &str, cases: &[Case]) -> Vec<Outcome> {
    let files = feeds::resolve(name, &deploy_dir()).expect("topology files");
    // Moved to ports the OS picks, so the suite runs beside a server on the
    // shipped ports.
    let copies = tempfile::tempdir().expect("tempdir");
    let files = feeds::relocate(&files, copies.path())
        .expect("relocate")
        .files;
    let running = feeds::start(
        common::EXE.as_ref(),
        &files,
        &common::test_env(),
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let business = running.entry().expect("a process serves business");
    let got = run_grpc(business, cases).await;
    let statuses = running.stop(Duration::from_secs(10)).await.expect("stop");
    for (file, status) in statuses {
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM",
            file.display()
        );
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_in_every_topology() {
    let cases = cases(200);
    let reference = in_process_local(&cases).await;

    // The set must exercise the pipeline, not only its error paths.
    let ok = reference.iter().filter(|o| o.is_ok()).count();
    assert!(ok >= 190, "only {ok} of 200 reference requests succeeded");
    assert!(
        reference
            .iter()
            .any(|o| matches!(o, Ok(r) if r.items.len() >= 20))
    );
    let errors: Vec<_> = reference.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        errors
            .iter()
            .all(|(code, _)| *code == tonic::Code::InvalidArgument),
        "{errors:?}"
    );

    // All five stages in this process, each hop over real gRPC on loopback.
    let groups: Vec<&[Stage]> = Stage::ALL.iter().map(std::slice::from_ref).collect();
    let in_process = serve_groups(&groups).await;
    assert_same(
        "in-process over gRPC",
        &reference,
        &run_grpc(in_process.addrs[0], &cases).await,
    );
    in_process.stop().await;

    for name in ["monolith", "five-pod", "mixed"] {
        let got = os_topology(name, &cases).await;
        assert_same(name, &reference, &got);
    }
}
