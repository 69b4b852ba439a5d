//! gRPC reflection lists all five stage services and health, so
//! `grpcurl -plaintext localhost:50051 list` works against the monolith.

mod common;

use proxy_api::Stage;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test]
async fn lists_every_service() {
    let servers = common::serve_groups(&[&Stage::ALL]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", servers.addrs[0]))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
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
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
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
    servers.stop().await;
}

/// The older `grpc.reflection.v1alpha`, which some clients (Python's
/// grpcio-reflection, older grpcurl and GUI clients) still speak.
#[tokio::test]
async fn v1alpha_lists_every_service_too() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let servers = common::serve_groups(&[&Stage::ALL]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", servers.addrs[0]))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("stream")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for stage in Stage::ALL {
        assert!(
            names.iter().any(|n| n == stage.service_name()),
            "{} missing from {names:?}",
            stage.service_name()
        );
    }
    servers.stop().await;
}
