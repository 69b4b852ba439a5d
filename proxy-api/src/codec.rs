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

/// The body of one outgoing call: the message itself, moved into its only
/// attempt, or its encoding, made once for a call that may be sent again
/// (a retry resends the same bytes; nothing is cloned).
pub enum Payload<M> {
    /// Encoded by the transport as it sends.
    Message(M),
    /// Encoded already ([`encode_once`]); written as it is.
    Encoded(bytes::Bytes),
}

/// Encodes `message` for a call that may be sent more than once; counted
/// like any other encode.
pub fn encode_once<M: prost::Message>(message: &M) -> bytes::Bytes {
    let len = message.encoded_len();
    ENCODED_MESSAGES.fetch_add(1, Ordering::Relaxed);
    ENCODED_BYTES.fetch_add(len as u64, Ordering::Relaxed);
    let mut buf = bytes::BytesMut::with_capacity(len);
    message.encode_raw(&mut buf);
    buf.freeze()
}

/// The client codec of the remote stacks: sends a [`Payload`], decodes `R`.
pub struct PayloadCodec<M, R>(ProstCodec<M, R>);

impl<M, R> Default for PayloadCodec<M, R> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<M, R> tonic::codec::Codec for PayloadCodec<M, R>
where
    M: prost::Message + Send + 'static,
    R: prost::Message + Default + Send + 'static,
{
    type Encode = Payload<M>;
    type Decode = R;
    type Encoder = PayloadEncoder<M>;
    type Decoder = <ProstCodec<M, R> as tonic::codec::Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        PayloadEncoder(std::marker::PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        self.0.decoder()
    }
}

/// Writes a [`Payload`]: encodes a message (counted), copies an encoding.
pub struct PayloadEncoder<M>(std::marker::PhantomData<fn(M)>);

impl<M: prost::Message> Encoder for PayloadEncoder<M> {
    type Item = Payload<M>;
    type Error = Status;

    fn encode(&mut self, item: Payload<M>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut as _;
        match item {
            Payload::Message(message) => {
                let len = message.encoded_len();
                ENCODED_MESSAGES.fetch_add(1, Ordering::Relaxed);
                ENCODED_BYTES.fetch_add(len as u64, Ordering::Relaxed);
                dst.reserve(len);
                message.encode_raw(dst);
            }
            Payload::Encoded(bytes) => dst.put_slice(&bytes),
        }
        Ok(())
    }
}

/// A codec for calls whose messages are already bytes both ways (`feeds
/// replay` sends recorded requests and compares the answers as bytes).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = Status;

    fn encode(&mut self, item: bytes::Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, Status> {
        use bytes::Buf as _;
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}
