//! A loopback TCP proxy in front of one replica that can add latency: with a
//! delay range set, every chunk read from either side is held back a random
//! delay from that range before it is written on. Chunks keep their order
//! and each is delayed from when it was read, so the link gets slower, not
//! narrower (a queue of chunks drains at the read rate, each late by its
//! own delay). With no delay set it passes bytes straight on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// What the proxy is told and what it counts, shared with its connections.
#[derive(Debug, Default)]
struct State {
    /// Lower bound of the added delay, µs (both 0: no delay).
    min_us: AtomicU64,
    /// Upper bound of the added delay, µs.
    max_us: AtomicU64,
    /// Chunks held back so far, so a run can show the fault was applied.
    delayed_chunks: AtomicU64,
    /// Connections accepted so far.
    connections: AtomicU64,
    /// xorshift64 state for the delays (a fixed seed: runs are comparable).
    rng: AtomicU64,
}

impl State {
    /// The delay for the next chunk: uniform in the range, zero when unset.
    fn draw(&self) -> Duration {
        let (lo, hi) = (
            self.min_us.load(Ordering::Relaxed),
            self.max_us.load(Ordering::Relaxed),
        );
        if hi == 0 {
            return Duration::ZERO;
        }
        // A range being replaced may be read half old, half new.
        let hi = hi.max(lo);
        let mut next = 0;
        let _ = self
            .rng
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mut x| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                next = x;
                Some(x)
            });
        self.delayed_chunks.fetch_add(1, Ordering::Relaxed);
        Duration::from_micros(lo + next % (hi - lo + 1))
    }
}

/// A running proxy; dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Forwards every connection accepted on `listener` to `upstream`. A
    /// connection the upstream refuses is closed at once.
    pub fn start(listener: TcpListener, upstream: SocketAddr) -> std::io::Result<Proxy> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            ..State::default()
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            // Owned by the accept loop: aborting it ends every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        shared.connections.fetch_add(1, Ordering::Relaxed);
                        connections.spawn(serve(client, upstream, Arc::clone(&shared)));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(Proxy {
            addr,
            upstream,
            state,
            task,
        })
    }

    /// Where callers connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The replica behind it.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Adds a delay drawn from `range` to every chunk from now on, or, with
    /// `None`, passes chunks straight on again (chunks already held back
    /// still wait out their delay).
    pub fn set_delay(&self, range: Option<(Duration, Duration)>) {
        let (lo, hi) = range.map_or((0, 0), |(lo, hi)| {
            let lo = lo.as_micros() as u64;
            (lo, (hi.as_micros() as u64).max(lo).max(1))
        });
        self.state.min_us.store(lo, Ordering::Relaxed);
        self.state.max_us.store(hi, Ordering::Relaxed);
    }

    /// Chunks held back so far.
    pub fn delayed_chunks(&self) -> u64 {
        self.state.delayed_chunks.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, state: Arc<State>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pipe(client_read, server_write, Arc::clone(&state)),
        pipe(server_read, client_write, state),
    );
}

/// Copies one direction, each chunk released at its read time plus its
/// delay, never before the chunk ahead of it; an end of stream is passed on
/// as a half close once every chunk before it is written.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, state: Arc<State>) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = Instant::now();
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let release = (Instant::now() + state.draw()).max(last);
            last = release;
            if tx.send((release, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((release, chunk)) = rx.recv().await {
            // The timer rounds up to the next millisecond: a chunk due now
            // goes at once, or an undelayed link would add a millisecond.
            if release > Instant::now() {
                tokio::time::sleep_until(release).await;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr, payload: &[u8]) -> (Vec<u8>, Duration) {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let started = std::time::Instant::now();
        s.write_all(payload).await.expect("write");
        let mut got = vec![0u8; payload.len()];
        s.read_exact(&mut got).await.expect("read");
        (got, started.elapsed())
    }

    #[tokio::test]
    async fn passes_bytes_and_adds_the_delay_both_ways() {
        let upstream = echo().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = Proxy::start(listener, upstream).expect("proxy");

        let (got, fast) = round_trip(proxy.addr(), b"hello").await;
        assert_eq!(got, b"hello");
        assert!(fast < Duration::from_millis(40), "no delay set: {fast:?}");
        assert_eq!(proxy.delayed_chunks(), 0);

        proxy.set_delay(Some((Duration::from_millis(50), Duration::from_millis(60))));
        let (got, slow) = round_trip(proxy.addr(), b"world").await;
        assert_eq!(got, b"world");
        // One chunk each way, each held back 50-60 ms.
        assert!(slow >= Duration::from_millis(100), "{slow:?}");
        assert!(proxy.delayed_chunks() >= 2);

        proxy.set_delay(None);
        let (_, again) = round_trip(proxy.addr(), b"again").await;
        assert!(again < Duration::from_millis(40), "delay lifted: {again:?}");
        assert_eq!(proxy.connections(), 3);
    }

    #[tokio::test]
    async fn order_is_kept_under_random_delays() {
        let upstream = echo().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = Proxy::start(listener, upstream).expect("proxy");
        proxy.set_delay(Some((Duration::from_millis(1), Duration::from_millis(20))));
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let sent: Vec<u8> = (0..200u32).map(|i| (i % 251) as u8).collect();
        for chunk in sent.chunks(10) {
            s.write_all(chunk).await.expect("write");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut got = vec![0u8; sent.len()];
        s.read_exact(&mut got).await.expect("read");
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn a_refused_upstream_closes_the_connection() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = Proxy::start(listener, dead).expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
