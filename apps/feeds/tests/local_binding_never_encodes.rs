//! The `local` binding is a plain call: no protobuf encoding happens, while
//! the `grpc` binding encodes every request and response.

mod common;

use common::{cases, run_grpc, serve_groups};
use proxy_api::{Stage, codec};

#[tokio::test]
async fn local_binding_never_encodes() {
    let cases = cases(20);
    let (config, plan) = common::config_for(&Stage::ALL, "127.0.0.1:0".parse().expect("addr"), &[]);
    let registry = feeds::build(&config, &plan).expect("registry");
    let business = registry.business().expect("local business");

    let before = codec::encoded_messages();
    let mut ok = 0;
    for (i, case) in cases.iter().enumerate() {
        ok += usize::from(common::call(business.as_ref(), case, i).await.is_ok());
    }
    assert!(ok > 15, "the calls must succeed to prove anything ({ok})");
    assert_eq!(
        codec::encoded_messages(),
        before,
        "the local binding encoded messages"
    );

    // Control: the same calls over the grpc binding do encode (4 hops, request
    // and response each, plus the client's request and the server's response).
    let groups: Vec<&[Stage]> = Stage::ALL.iter().map(std::slice::from_ref).collect();
    let servers = serve_groups(&groups).await;
    let before = codec::encoded_messages();
    let got = run_grpc(servers.addrs[0], &cases).await;
    let ok_grpc = got.iter().filter(|o| o.is_ok()).count() as u64;
    let encoded = codec::encoded_messages() - before;
    servers.stop().await;
    assert!(
        encoded >= ok_grpc * 10,
        "expected at least 10 encodes per request, got {encoded} for {ok_grpc}"
    );
}
