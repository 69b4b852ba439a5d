//! gRPC reflection lists all five stage services and health, in both
//! versions clients speak (`v1`, and `v1alpha` for Python's grpcio-reflection
//! and older grpcurl and GUI clients), so
//! `grpcurl -plaintext localhost:50051 list` works against the monolith.

mod common;

use proxy_api::Stage;

/// The service names one reflection version lists (its generated module
/// is all that differs between the two versions).
macro_rules! list_services {
    ($version:ident, $addr:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", $addr))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("reflection")
            .into_inner();
        let response = stream
            .message()
            .await
            .expect("stream")
            .expect("one response");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected response {response:?}");
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

fn assert_lists_everything(names: &[String]) {
    for stage in Stage::ALL {
        assert!(
            names.iter().any(|n| n == stage.service_name()),
            "{} missing from {names:?}",
            stage.service_name()
        );
    }
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
}

#[tokio::test]
async fn lists_every_service() {
    let servers = common::serve_groups(&[&Stage::ALL]).await;
    assert_lists_everything(&list_services!(v1, servers.addrs[0]));
    servers.stop().await;
}

/// The older `grpc.reflection.v1alpha`, which some clients (Python's
/// grpcio-reflection, older grpcurl and GUI clients) still speak.
#[tokio::test]
async fn v1alpha_lists_every_service_too() {
    let servers = common::serve_groups(&[&Stage::ALL]).await;
    assert_lists_everything(&list_services!(v1alpha, servers.addrs[0]));
    servers.stop().await;
}
