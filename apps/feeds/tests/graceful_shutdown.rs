//! On SIGTERM a process reports NOT_SERVING, keeps answering through the
//! drain, finishes in-flight work, and exits 0 within drain + grace.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proxy_api::pb::business_client::BusinessClient;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_cleanly() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut child = Command::new(common::EXE)
        .arg("serve")
        .envs(common::test_env())
        .env("FEEDS__PROCESS__LISTEN", addr.to_string())
        .env("FEEDS__PROCESS__DRAIN_MS", "1500")
        .env("FEEDS__PROCESS__GRACE_MS", "5000")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    common::wait_serving(addr).await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    let client = BusinessClient::new(channel);
    let case = common::cases(3)[2].clone();

    // Steady traffic from before the signal until the server stops answering.
    let traffic = tokio::spawn(async move {
        let mut client = client;
        let (mut ok, mut failed_while_serving) = (0u32, Vec::new());
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            match client.get_feed(common::request(&case, 0)).await {
                Ok(_) => ok += 1,
                // After the drain the server refuses new streams or closes the
                // connection (a transport error: nothing reached a handler);
                // either ends the loop.
                Err(s)
                    if s.code() == tonic::Code::Unavailable
                        || std::error::Error::source(&s).is_some() =>
                {
                    break;
                }
                Err(s) => failed_while_serving.push(s),
            }
        }
        (ok, failed_while_serving)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    // During the drain: still up, but NOT_SERVING.
    let mut saw_not_serving = false;
    while signalled.elapsed() < Duration::from_millis(1_200) {
        if let Ok(r) = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            && r.get_ref().status == ServingStatus::NotServing as i32
        {
            saw_not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        saw_not_serving,
        "health never reported NOT_SERVING during the drain"
    );

    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(15),
            "still running 15 s after SIGTERM (drain 1.5 s + grace 5 s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let (ok, failed) = traffic.await.expect("traffic");
    assert!(ok > 0, "no request succeeded");
    assert!(
        failed.is_empty(),
        "requests failed inside the server: {failed:?}"
    );
}
