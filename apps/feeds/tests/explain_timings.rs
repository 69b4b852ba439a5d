//! `--explain` timings are each stage's own CPU time, whatever thread the
//! stage ran on: in the monolith (recall and fine-rank on the compute pool)
//! and with every stage in its own server, each stage's own time is above
//! zero where it does work and never more than the request took.

mod common;

use std::time::{Duration, Instant};

use proxy_api::{Stage, pb};

async fn explained(addr: std::net::SocketAddr) -> (Vec<pb::StageTiming>, Duration) {
    let mut client = common::business(addr).await;
    let mut timings = Vec::new();
    let mut longest = Duration::ZERO;
    for user in 0..20u32 {
        let request = tonic::Request::new(pb::GetFeedRequest {
            user_id: user.to_string(),
            page_size: 10,
            explain: true,
            ..Default::default()
        });
        let started = Instant::now();
        let response = client.get_feed(request).await.expect("feed").into_inner();
        let took = started.elapsed();
        for t in &response.timings {
            assert!(
                Duration::from_micros(t.self_us) <= took,
                "{}: own time {} µs in a request of {took:?}",
                t.stage,
                t.self_us
            );
        }
        longest = longest.max(took);
        timings.extend(response.timings);
    }
    (timings, longest)
}

fn check(timings: &[pb::StageTiming], topology: &str) {
    for stage in Stage::ALL {
        let own: Vec<u64> = timings
            .iter()
            .filter(|t| t.stage == stage.name())
            .map(|t| t.self_us)
            .collect();
        assert_eq!(
            own.len(),
            20,
            "{topology}: {} timed in every request",
            stage.name()
        );
        if matches!(stage, Stage::Recall | Stage::FineRank) {
            assert!(
                own.iter().all(|us| *us > 0),
                "{topology}: {} did work in every request: {own:?}",
                stage.name()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_times_are_sane_in_every_binding() {
    let monolith = common::serve_monolith(|_| {}).await;
    let (timings, _) = explained(monolith.addrs[0]).await;
    check(&timings, "monolith");
    monolith.stop().await;

    let one_each: Vec<&[Stage]> = Stage::ALL.iter().map(std::slice::from_ref).collect();
    let pods = common::serve_groups(&one_each).await;
    let (timings, _) = explained(pods.addrs[0]).await;
    check(&timings, "a server per stage");
    pods.stop().await;
}
