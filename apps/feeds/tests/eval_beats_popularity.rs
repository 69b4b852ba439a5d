//! `feeds eval`: the full pipeline beats the popularity baseline on a small
//! generated world by a clear margin.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_beats_popularity() {
    let (config, _) = common::config_for(
        &proxy_api::Stage::ALL,
        "127.0.0.1:0".parse().expect("addr"),
        &[],
    );
    let report = feeds::eval(&config, 100).await.expect("eval runs");
    assert_eq!(report.users, 100);
    let (p, b) = (&report.pipeline, &report.popularity);
    assert!(
        p.ndcg_at_20 > 1.5 * b.ndcg_at_20 && p.ndcg_at_20 > b.ndcg_at_20 + 0.1,
        "{report:?}"
    );
    assert!(p.recall_at_100 > 1.5 * b.recall_at_100, "{report:?}");
}
