//! `feeds up` starts a topology as OS processes, waits until every process
//! serves, answers through it, and stops them all cleanly on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_serves_and_stops_mixed() {
    let mut child = Command::new(common::EXE)
        .args(["up", "mixed", "--free-ports", "--dir"])
        .arg(common::deploy_dir())
        .envs(common::test_env())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn feeds up");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("feeds up printed nothing for 60 s");
        lines.push(line.clone());
        if line.contains("ready (2 processes)") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "{lines:#?}");
    }
    // `--free-ports` moved the shipped 50051 (front) and 50053 (back).
    let serving_on = |file: &str| -> std::net::SocketAddr {
        lines
            .iter()
            .find_map(|l| l.split_once(&format!("{file} serving on ")).map(|(_, a)| a))
            .unwrap_or_else(|| panic!("no line for {file}: {lines:#?}"))
            .parse()
            .expect("an address")
    };
    let (front, back) = (serving_on("front.toml"), serving_on("back.toml"));
    assert!(
        front.ip().is_loopback() && back.ip().is_loopback(),
        "{lines:#?}"
    );

    let got = common::run_grpc(front, &common::cases(5)).await;
    assert!(got.iter().filter(|o| o.is_ok()).count() >= 4, "{got:?}");

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("feeds up did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "feeds up exited with {status}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(
        rest.iter()
            .filter(|l| l.contains("exited: exit status: 0"))
            .count(),
        2,
        "{rest:#?}"
    );
    assert!(!feeds::is_serving(front).await, "front still serving");
    assert!(!feeds::is_serving(back).await, "back still serving");
}
