//! A remote stage that cannot be reached gives UNAVAILABLE naming the stage,
//! within the connect timeout: never a hang.

mod common;

use std::time::Duration;

use proxy_api::{RemoteConfig, Stage};

#[tokio::test]
async fn unreachable_downstream_is_unavailable_and_named() {
    // A port nobody listens on: bind, note the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (mut config, _) = common::config_for(
        &[Stage::Business, Stage::Split],
        "127.0.0.1:0".parse().expect("addr"),
        &[(Stage::Rerank, dead)],
    );
    config.remote.insert(
        "rerank".into(),
        RemoteConfig {
            endpoints: vec![format!("http://{dead}")],
            connect_timeout_ms: 500,
            ..RemoteConfig::default()
        },
    );
    let plan = config.validate().expect("valid");
    let registry = feeds::build(&config, &plan).expect("registry");
    let business = registry.business().expect("local business");
    let case = &common::cases(3)[2];
    // The guard only turns a hang into a failure; it is not a speed assertion.
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        business.get_feed(&common::cx(case, 0), case.request.clone()),
    )
    .await
    .expect("the call must not hang")
    .expect_err("rerank is down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("rerank"), "{status:?}");
    assert!(status.message().contains(&dead.to_string()), "{status:?}");
}
