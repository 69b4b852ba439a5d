//! `process.limits.max_frame_bytes` is the HTTP/2 frame size a Tandem
//! process advertises (`SETTINGS_MAX_FRAME_SIZE`), both as a server to its
//! callers and as a client to its downstreams: 1 MiB by default, the value
//! set otherwise. At the protocol's floor, 16,384, a chain of processes
//! still gives the answers it gives at the default, with contexts that take
//! several frames. (A value outside HTTP/2's range is refused at start: see
//! `config_errors.rs`.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use feeds::Config;
use proxy_api::Stage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
/// The protocol's default frame size, in force when SETTINGS do not list one.
const DEFAULT: u32 = 16_384;

/// The `SETTINGS_MAX_FRAME_SIZE` of the first SETTINGS frame (not an ACK)
/// the peer sends on `stream`, after its client preface when `client`.
async fn advertised(stream: &mut TcpStream, client: bool) -> u32 {
    let read = async {
        if client {
            let mut preface = [0u8; 24];
            stream.read_exact(&mut preface).await.expect("preface");
            assert_eq!(&preface[..], PREFACE, "not an HTTP/2 client");
        }
        loop {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await.expect("frame header");
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            stream
                .read_exact(&mut payload)
                .await
                .expect("frame payload");
            // SETTINGS (type 4) without ACK (flag 1).
            if head[3] != 4 || head[4] & 1 == 1 {
                continue;
            }
            let size = payload
                .chunks_exact(6)
                .find(|e| u16::from_be_bytes([e[0], e[1]]) == 5)
                .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]));
            return size.unwrap_or(DEFAULT);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("SETTINGS within 10 s")
}

/// The server at `addr`'s advertised frame size.
async fn server_advertises(addr: SocketAddr) -> u32 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(PREFACE).await.expect("preface");
    stream.write_all(&EMPTY_SETTINGS).await.expect("settings");
    advertised(&mut stream, false).await
}

/// Sets `process.limits.max_frame_bytes` to `frame` when there is one.
fn frame_size(frame: Option<u32>) -> impl Fn(&mut Config) {
    move |config| {
        if let Some(frame) = frame {
            config.process.limits.max_frame_bytes = frame;
        }
    }
}

#[tokio::test]
async fn server_and_client_advertise_the_configured_frame_size() {
    for (frame, expected) in [
        (None, 1u32 << 20),
        (Some(40_000), 40_000),
        (Some(DEFAULT), DEFAULT),
    ] {
        // The front's downstream is a bare listener, one per front, that
        // reads what the front's client sends when it connects (its health
        // probe or a call).
        let downstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let down_addr = downstream.local_addr().expect("addr");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let front = [Stage::Business, Stage::Split];
        let remotes = [(Stage::Rerank, down_addr)];
        let (config, plan) = common::config_with(&front, addr, &remotes, frame_size(frame));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            feeds::run(&config, &plan, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("front runs");
        });
        // A call makes the front connect downstream, if its prober has not.
        let call = tokio::spawn(async move {
            let mut client = common::business(addr).await;
            let case = common::cases(1).remove(0);
            let mut request = common::request(&case, 0);
            request.set_timeout(Duration::from_secs(2));
            let _ = client.get_feed(request).await;
        });
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), downstream.accept())
            .await
            .expect("the front connects downstream within 10 s")
            .expect("accept");
        assert_eq!(
            advertised(&mut conn, true).await,
            expected,
            "client side, {frame:?}"
        );
        assert_eq!(
            server_advertises(addr).await,
            expected,
            "server side, {frame:?}"
        );
        drop(conn);
        call.abort();
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
    }
}

/// The three-process chain (front, ranking, recall) at `frame`.
async fn chain(frame: Option<u32>) -> common::InProcess {
    let groups: [&[Stage]; 3] = [
        &[Stage::Business, Stage::Split],
        &[Stage::Rerank, Stage::FineRank],
        &[Stage::Recall],
    ];
    common::serve_groups_with(&groups, frame_size(frame)).await
}

#[tokio::test]
async fn the_smallest_frame_size_gives_the_same_answers() {
    // Contexts of 20 to 60 KB: at 16,384 each takes two to four frames.
    let mut cases = common::cases(24);
    for (i, case) in cases.iter_mut().enumerate() {
        if let Some(ctx) = case.request.context.as_mut() {
            ctx.get_mut().expect("made here").blob = vec![i as u8; 20_000 + i * 1_700].into();
        }
    }
    let default = chain(None).await;
    let expected = common::run_grpc(default.addrs[0], &cases).await;
    default.stop().await;
    let small = chain(Some(DEFAULT)).await;
    assert_eq!(server_advertises(small.addrs[1]).await, DEFAULT);
    let got = common::run_grpc(small.addrs[0], &cases).await;
    small.stop().await;
    assert!(
        expected.iter().filter(|o| o.is_ok()).count() >= 20,
        "most cases answer: {expected:?}"
    );
    for (i, (want, got)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(want, got, "case {i}");
    }
}
