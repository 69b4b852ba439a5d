//! Degraded pages on real processes: with recall killed, a tenant with
//! `degraded_pages` keeps getting pages (popular items within its
//! constraints), marked `degraded` and counted; a tenant without it gets the
//! error; normal pages return by themselves once recall is back (the test
//! prints how long that took; the bound here only turns a hang into a
//! failure).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Proc, SERVING, free_addr, sample, scrape, wait_health};
use proxy_api::pb;
use tonic::metadata::MetadataValue;

async fn get(
    addr: SocketAddr,
    user: &str,
    tenant: &'static str,
) -> Result<pb::GetFeedResponse, tonic::Status> {
    let mut client = common::business(addr).await;
    let mut request = tonic::Request::new(pb::GetFeedRequest {
        user_id: user.into(),
        page_size: 10,
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(5));
    request
        .metadata_mut()
        .insert("x-tenant", MetadataValue::from_static(tenant));
    client
        .get_feed(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_degrade_while_recall_is_down_and_recover() {
    let (recall, recall_metrics) = (free_addr(), free_addr());
    let recall_toml = common::recall_replica(recall, recall_metrics, "");
    let recall_proc = Proc::start("recall", recall, &recall_toml);
    let (front, metrics) = (free_addr(), free_addr());
    let _front = Proc::start(
        "front",
        front,
        &format!(
            "[process]\nlisten = \"{front}\"\nhost = [\"business\", \"split\", \"rerank\", \"finerank\"]\n\n\
             [remote.recall]\nendpoints = [\"http://{recall}\"]\nhealth_interval_ms = 200\nconnect_timeout_ms = 300\n\n\
             [business.tenants.default]\ndegraded_pages = true\n\n\
             [telemetry]\nmetrics_listen = \"{metrics}\"\n"
        ),
    );
    wait_health(front, "", SERVING, Duration::from_secs(120)).await;

    let normal = get(front, "42", "default").await.expect("normal page");
    assert!(!normal.degraded && normal.items.len() == 10, "{normal:?}");

    drop(recall_proc); // SIGKILL
    let mut served = 0;
    for user in 0..10 {
        let page = get(front, &user.to_string(), "default")
            .await
            .expect("a degraded page instead of an error");
        assert!(page.degraded, "{page:?}");
        assert_eq!(page.items.len(), 10, "{page:?}");
        assert!(
            page.items.iter().all(|i| i.channel == "popular"),
            "{page:?}"
        );
        served += 1;
    }
    // Lite has degraded pages off: it gets the error.
    let status = get(front, "42", "lite")
        .await
        .expect_err("lite is not degraded");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        sample(
            &scrape(metrics).await,
            "feeds_degraded_responses_total",
            &["stage=\"business\"", "tenant=\"default\""]
        ) >= f64::from(served)
    );

    // Back: normal pages once recall serves again.
    let _recall = Proc::start("recall", recall, &recall_toml);
    wait_health(recall, "", SERVING, Duration::from_secs(120)).await;
    let back = Instant::now();
    loop {
        if let Ok(page) = get(front, "42", "default").await
            && !page.degraded
        {
            assert_eq!(page.items, normal.items, "recovered page differs");
            eprintln!(
                "normal pages again {:?} after recall reported SERVING",
                back.elapsed()
            );
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "still degraded 30 s after recall returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
