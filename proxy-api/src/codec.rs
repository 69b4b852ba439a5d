//! The prost codec used by every generated client and server.
//!
//! It is tonic's `ProstCodec` plus two process-wide counters (messages and
//! bytes encoded). They make the cost of the `grpc` binding observable and let
//! tests prove that the `local` binding never encodes a message.

use std::sync::atomic::{AtomicU64, Ordering};

use tonic::Status;
use tonic::codec::{BufferSettings, EncodeBuf, Encoder};
use tonic_prost::ProstCodec;

/// Messages encoded by this process since start, all services together.
static ENCODED_MESSAGES: AtomicU64 = AtomicU64::new(0);
/// Bytes those messages encoded to.
static ENCODED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Messages encoded by [`Codec`] in this process so far.
pub fn encoded_messages() -> u64 {
    ENCODED_MESSAGES.load(Ordering::Relaxed)
}

/// Bytes encoded by [`Codec`] in this process so far.
pub fn encoded_bytes() -> u64 {
    ENCODED_BYTES.load(Ordering::Relaxed)
}

/// tonic's prost codec with encode counting.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = CountingEncoder<<ProstCodec<T, U> as tonic::codec::Codec>::Encoder>;
    type Decoder = <ProstCodec<T, U> as tonic::codec::Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        CountingEncoder(self.0.encoder())
    }

    fn decoder(&mut self) -> Self::Decoder {
        self.0.decoder()
    }
}

/// Counts each message, then lets prost encode it.
#[derive(Debug)]
pub struct CountingEncoder<E>(E);

impl<E, T> Encoder for CountingEncoder<E>
where
    E: Encoder<Item = T, Error = Status>,
    T: prost::Message,
{
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        ENCODED_MESSAGES.fetch_add(1, Ordering::Relaxed);
        ENCODED_BYTES.fetch_add(item.encoded_len() as u64, Ordering::Relaxed);
        self.0.encode(item, dst)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
