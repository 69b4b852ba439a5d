//! `feeds eval` on a small generated world: the full pipeline beats the
//! popularity baseline by a clear margin, and every tenant's first pages are
//! full and within its caps.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_beats_popularity_and_pages_hold() {
    let (config, _) = common::config_for(
        &proxy_api::Stage::ALL,
        "127.0.0.1:0".parse().expect("addr"),
        &[],
    );
    let report = feeds::eval(&config, 100, 400).await.expect("eval runs");
    println!("{}", feeds::eval_table(&report));
    assert_eq!(report.users, 100);
    let (p, b) = (&report.pipeline, &report.popularity);
    assert!(
        p.ndcg_at_20 > 1.5 * b.ndcg_at_20 && p.ndcg_at_20 > b.ndcg_at_20 + 0.1,
        "{report:?}"
    );
    assert!(p.recall_at_100 > 1.5 * b.recall_at_100, "{report:?}");

    let tenant = |name: &str| {
        report
            .tenants
            .iter()
            .find(|t| t.tenant == name)
            .unwrap_or_else(|| panic!("tenant {name} in {report:?}"))
    };
    let (default, lite) = (tenant("default"), tenant("lite"));
    for t in [default, lite] {
        assert_eq!(t.users, 400);
        assert!(t.eligible > 390, "{t:?}");
        // Full first pages whenever the allowed catalogue has a page to give.
        assert_eq!(t.pipeline.empty_page_rate, 0.0, "{t:?}");
        assert_eq!(t.pipeline.short_page_rate, 0.0, "{t:?}");
        // Caps hold (the popularity baseline, with no caps, shows the
        // measure can fail).
        assert!(t.pipeline.cap_violation_rate <= 0.01, "{t:?}");
        assert!(t.pipeline.categories_per_page >= 3.0, "{t:?}");
    }
    assert!(lite.popularity.cap_violation_rate > 0.05, "{lite:?}");
}
