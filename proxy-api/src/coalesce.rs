//! Write coalescing for the HTTP/2 connections between processes: the
//! frames a connection's task writes in one turn, and those it writes on its
//! next turn, go out in one `writev`.
//!
//! h2 writes each turn's frames as soon as it has encoded them, and two
//! patterns make that one write too many on every call:
//! - a client's new stream is opened by the connection's task, which writes
//!   its HEADERS at once; hyper's body task sends the DATA only after that,
//!   so the DATA goes out in a second write on the connection's next turn;
//! - a server writes a large DATA frame before it encodes the trailers, so
//!   the trailers go out alone.
//!
//! [`Coalesce`] holds what is written (small writes copied, up to
//! [`HOLD`]), and on the connection's first flush with bytes held, lets the
//! task yield once (it wakes itself, so it runs again after the tasks that
//! are ready, such as that body task) before writing them. A write that
//! would take the held bytes past [`HOLD`] goes out at once, with the held
//! bytes before it in the same `writev`, uncopied. (Netty's
//! `FlushConsolidationHandler` delays flushes for the same reason.)
//!
//! Nothing is held past the flush after the yield: every byte h2 flushed is
//! then on the socket, or the socket is full and the task waits for it.
//! Whatever writes through a `Coalesce` must flush (h2 and rustls do).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held at most before a write goes out at once: above a frame's
/// HEADERS, a small message's DATA and its trailers; below what a large
/// message is, which is not worth copying.
pub const HOLD: usize = 16 * 1024;

/// Most slices passed to one `writev` (Linux's `UIO_MAXIOV` is 1024).
const MAX_SLICES: usize = 64;

/// A connection whose writes are coalesced (see the module docs).
#[derive(Debug)]
pub struct Coalesce<T> {
    inner: T,
    held: BytesMut,
    /// The task yielded once since bytes were first held.
    yielded: bool,
}

impl<T> Coalesce<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            held: BytesMut::new(),
            yielded: false,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes the held bytes out; `Ready(Ok)` once none is left.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.held.len() + total <= HOLD {
            for b in bufs {
                this.held.extend_from_slice(b);
            }
            return Poll::Ready(Ok(total));
        }
        // Too much to hold: the held bytes and these, in one write.
        loop {
            let held = this.held.len();
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut k = 0;
                if held > 0 {
                    slices[0] = IoSlice::new(&this.held);
                    k = 1;
                }
                for b in bufs.iter().take(MAX_SLICES - k) {
                    slices[k] = IoSlice::new(b);
                    k += 1;
                }
                ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &slices[..k]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n > held {
                this.held.clear();
                this.yielded = false;
                return Poll::Ready(Ok(n - held));
            }
            // Only (part of) the held bytes went: none of `bufs` is taken
            // until they all have.
            this.held.advance(n);
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.held.is_empty() {
            if !this.yielded {
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_write_held(cx))?;
        }
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_held(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Coalesce<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A plaintext connector for `tonic::transport::Endpoint`: TCP with
/// `TCP_NODELAY`, writes coalesced. The endpoint's connect timeout still
/// applies (tonic wraps the connector in it).
#[derive(Clone, Copy, Debug, Default)]
pub struct Connector;

type Connecting = Pin<
    Box<
        dyn Future<Output = io::Result<hyper_util::rt::TokioIo<Coalesce<tokio::net::TcpStream>>>>
            + Send,
    >,
>;

impl tower::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<Coalesce<tokio::net::TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(async move {
            let tcp = connect(&uri).await?;
            Ok(hyper_util::rt::TokioIo::new(Coalesce::new(tcp)))
        })
    }
}

/// `uri`'s host, an IPv6 address without its brackets.
pub(crate) fn host(uri: &http::Uri) -> io::Result<&str> {
    Ok(uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']'))
}

/// A TCP connection to `uri`'s host and port (80 if none), `TCP_NODELAY` set.
pub(crate) async fn connect(uri: &http::Uri) -> io::Result<tokio::net::TcpStream> {
    let host = host(uri)?;
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;

    /// Records each write it takes; takes at most `limit` bytes a write and,
    /// with `stall`, answers every other write `Pending` (waking at once).
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        limit: Option<usize>,
        stall: bool,
        stalled: bool,
        flushes: usize,
        shut: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.stall {
                this.stalled = !this.stalled;
                if this.stalled {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            let mut taken = Vec::new();
            for b in bufs {
                taken.extend_from_slice(b);
            }
            taken.truncate(this.limit.unwrap_or(usize::MAX));
            let n = taken.len();
            this.writes.push(taken);
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn waker() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        (Arc::clone(&wakes), Waker::from(wakes))
    }

    fn write(c: &mut Coalesce<Recorder>, cx: &mut Context<'_>, bytes: &[u8]) -> usize {
        match Pin::new(c).poll_write(cx, bytes) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("write: {other:?}"),
        }
    }

    #[test]
    fn one_turns_writes_and_the_next_turns_go_out_in_one_write() {
        let (wakes, waker) = waker();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Recorder::default());
        // The connection's turn: HEADERS, then a flush.
        assert_eq!(write(&mut c, &mut cx, &[1; 42]), 42);
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "the task yields awake");
        assert!(
            c.get_ref().writes.is_empty(),
            "nothing written before the yield"
        );
        // Its next turn: the DATA the body task queued meanwhile.
        assert_eq!(write(&mut c, &mut cx, &[2; 300]), 300);
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        let writes = &c.get_ref().writes;
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0][..42], [1; 42]);
        assert_eq!(writes[0][42..], [2; 300]);
        assert_eq!(c.get_ref().flushes, 1);
        // Nothing held: a flush goes straight through, without a yield.
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_large_write_takes_the_held_bytes_with_it() {
        let (_, waker) = waker();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Recorder::default());
        assert_eq!(write(&mut c, &mut cx, &[1; 42]), 42);
        let data = vec![2; HOLD + 1];
        assert_eq!(write(&mut c, &mut cx, &data), data.len());
        let writes = &c.get_ref().writes;
        assert_eq!(writes.len(), 1, "one writev: the held HEADERS and the DATA");
        assert_eq!(writes[0].len(), 42 + data.len());
        assert!(writes[0][..42].iter().all(|b| *b == 1));
        assert!(writes[0][42..].iter().all(|b| *b == 2));
        // Nothing left held, so nothing to wait for.
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
    }

    /// Short writes and a full socket (`Pending`) lose, repeat or reorder
    /// nothing; shutdown writes what is held first.
    #[test]
    fn short_and_stalled_writes_keep_every_byte_in_order() {
        let (_, waker) = waker();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Recorder {
            limit: Some(1000),
            stall: true,
            ..Recorder::default()
        });
        let mut sent = Vec::new();
        let mut next = 0u8;
        for (i, len) in [10, 5000, 20, 30_000, 7, HOLD, 1, 40_000, 3]
            .into_iter()
            .enumerate()
        {
            let chunk: Vec<u8> = (0..len)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            let mut at = 0;
            for _ in 0..10_000 {
                if at == chunk.len() {
                    break;
                }
                if let Poll::Ready(n) = Pin::new(&mut c).poll_write(&mut cx, &chunk[at..]) {
                    at += n.expect("write");
                }
            }
            assert_eq!(at, chunk.len(), "chunk {i} not taken");
            sent.extend_from_slice(&chunk);
            if i % 3 == 0 {
                let flushed = (0..10_000).any(|_| Pin::new(&mut c).poll_flush(&mut cx).is_ready());
                assert!(flushed, "flush {i} never finished");
            }
        }
        let shut = (0..10_000).any(|_| Pin::new(&mut c).poll_shutdown(&mut cx).is_ready());
        assert!(shut && c.get_ref().shut);
        let got: Vec<u8> = c.get_ref().writes.concat();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "bytes reordered or repeated");
    }
}
