//! [`PassThrough`]: a message field that travels undecoded until a stage
//! reads it.
//!
//! The user context rides on every stage request, and most stages only pass
//! it on. Decoding it at every hop and encoding it again is the cost the
//! reference team found dominating their middle stage. A request that
//! arrives over gRPC keeps such a field as the slice of the request buffer
//! it came in ([`bytes::Bytes`], no copy); a stage that sends the request on
//! sends those bytes as they are, and a stage that reads the field decodes
//! it once, on first read. In-process, the decoded value is moved from stage
//! to stage as before and never encoded.
//!
//! The wire format is the field's own: a length-delimited embedded message,
//! so clients generated from `proto/` by any stack see no difference. Fields
//! the reader's proto does not know survive the hop, because the bytes are
//! forwarded, not re-encoded from what was understood of them
//! ([`PassThrough::raw`] still holds them after a read).
//!
//! Which fields are carried this way is declared in `proto/`: every field
//! whose message type is marked `Pass-through:` in its comment (the
//! generator writes the carrying messages' `prost::Message` impls).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{
    DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len,
};
use prost::{DecodeError, Message};

/// Pass-through fields decoded in this process so far (a test can show that
/// a stage which only forwards the context never decodes it).
static DECODED: AtomicU64 = AtomicU64::new(0);

/// Pass-through fields this process has decoded since start.
pub fn decoded_fields() -> u64 {
    DECODED.load(Ordering::Relaxed)
}

/// A pass-through field's bytes could not be decoded (they arrived broken).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid message: {0}")]
pub struct Undecodable(String);

impl From<DecodeError> for Undecodable {
    fn from(e: DecodeError) -> Self {
        Self(e.to_string())
    }
}

/// A message field carried as received bytes until it is read; see the
/// module docs.
pub struct PassThrough<T> {
    /// The field's bytes as they arrived, forwarded as they are; `None` for
    /// a value made in this process or changed here.
    raw: Option<Bytes>,
    /// The value, decoded from `raw` on first read (or given).
    value: OnceLock<Result<T, Undecodable>>,
}

impl<T: Message + Default> PassThrough<T> {
    /// A field holding `value` (made in this process: moved, never encoded
    /// in-process).
    pub fn new(value: T) -> Self {
        Self {
            raw: None,
            value: OnceLock::from(Ok(value)),
        }
    }

    /// A field holding the encoding of a `T` that has not been decoded.
    pub fn from_raw(bytes: Bytes) -> Self {
        Self {
            raw: Some(bytes),
            value: OnceLock::new(),
        }
    }

    /// The value, decoded from the received bytes on first call.
    pub fn get(&self) -> Result<&T, Undecodable> {
        let decoded = self.value.get_or_init(|| {
            DECODED.fetch_add(1, Ordering::Relaxed);
            T::decode(self.raw.clone().unwrap_or_default()).map_err(Undecodable::from)
        });
        decoded.as_ref().map_err(Clone::clone)
    }

    /// The value, to change: decoded if needed; the received bytes are
    /// dropped, so what is sent on is the changed value.
    pub fn get_mut(&mut self) -> Result<&mut T, Undecodable> {
        self.get()?;
        self.raw = None;
        match self.value.get_mut() {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(e.clone()),
            // `get` above filled it.
            None => Err(Undecodable("pass-through value missing".to_owned())),
        }
    }

    /// The value, owned.
    pub fn into_inner(mut self) -> Result<T, Undecodable> {
        self.get()?;
        match self.value.take() {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(e),
            None => Err(Undecodable("pass-through value missing".to_owned())),
        }
    }

    /// Part of the value: `from_value` of the decoded value when there is
    /// one, else a `V` decoded from the received bytes. `V` is a message
    /// declaring only the fields the reader needs, with `T`'s field
    /// numbers: protobuf skips every other field by its length, so reading
    /// a short list out of a context that also carries a long event
    /// sequence does not decode the events. Counted in [`decoded_fields`].
    pub fn view<V: Message + Default>(
        &self,
        from_value: impl FnOnce(&T) -> V,
    ) -> Result<V, Undecodable> {
        match (self.value.get(), &self.raw) {
            (Some(Ok(value)), _) => Ok(from_value(value)),
            (Some(Err(e)), _) => Err(e.clone()),
            (None, Some(raw)) => {
                DECODED.fetch_add(1, Ordering::Relaxed);
                V::decode(raw.clone()).map_err(Undecodable::from)
            }
            (None, None) => Ok(V::default()),
        }
    }

    /// Merges `patch` into the field as protobuf merges two encodings of a
    /// message (what `patch` sets wins for a scalar, repeated fields are
    /// appended, embedded messages merge). When the field holds received
    /// bytes, `patch`'s encoding is appended to them: the field is neither
    /// decoded nor encoded again, and fields this build does not know
    /// survive. Bytes that do not decode are refused if they have been
    /// read; unread, they stay as they are, with the patch after them.
    pub fn merge(&mut self, patch: &T) -> Result<(), Undecodable> {
        if let Some(Err(e)) = self.value.get() {
            return Err(e.clone());
        }
        let encoded = patch.encode_to_vec();
        match self.raw.take() {
            Some(raw) => {
                let mut joined = BytesMut::with_capacity(raw.len() + encoded.len());
                joined.extend_from_slice(&raw);
                joined.extend_from_slice(&encoded);
                self.raw = Some(joined.freeze());
                match self.value.get_mut() {
                    Some(Ok(value)) => value.merge(encoded.as_slice()).map_err(Undecodable::from),
                    _ => Ok(()),
                }
            }
            None => self
                .get_mut()?
                .merge(encoded.as_slice())
                .map_err(Undecodable::from),
        }
    }

    /// Decodes now and forgets the received bytes, so the field is sent on
    /// re-encoded from its value: how every hop behaved before fields were
    /// passed through (`process.pass_through = false`).
    pub fn materialize(&mut self) -> Result<(), Undecodable> {
        self.get_mut().map(|_| ())
    }

    /// The bytes as received, when the field came over the wire and has not
    /// been changed here (including fields this build's proto does not know).
    pub fn raw(&self) -> Option<&Bytes> {
        self.raw.as_ref()
    }

    /// Whether the field has been decoded in this process (or was made here).
    pub fn is_decoded(&self) -> bool {
        self.value.get().is_some()
    }

    fn body_len(&self) -> usize {
        match (&self.raw, self.value.get()) {
            (Some(raw), _) => raw.len(),
            (None, Some(Ok(value))) => value.encoded_len(),
            (None, _) => 0,
        }
    }

    /// Writes the field (key, length, body) as tag `tag`: the received
    /// bytes when there are any, else the value's encoding.
    pub fn encode_field(&self, tag: u32, buf: &mut impl BufMut) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(self.body_len() as u64, buf);
        match (&self.raw, self.value.get()) {
            (Some(raw), _) => buf.put_slice(raw),
            (None, Some(Ok(value))) => value.encode_raw(buf),
            (None, _) => {}
        }
    }

    /// The length [`PassThrough::encode_field`] writes.
    pub fn encoded_len_field(&self, tag: u32) -> usize {
        let body = self.body_len();
        key_len(tag) + encoded_len_varint(body as u64) + body
    }

    /// Reads one occurrence of the field into `slot`: the length-delimited
    /// body is sliced out of `buf` (without a copy when `buf` is a `Bytes`
    /// or tonic's decode buffer). A repeated occurrence merges, as protobuf
    /// says: the encodings are concatenated (or merged into a decoded value).
    pub fn merge_field(
        slot: &mut Option<Self>,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // prost's own reader of a `bytes` field: checks the wire type and
        // length, then `copy_to_bytes`, which slices a `Bytes` buffer.
        let mut body = Bytes::new();
        prost::encoding::bytes::merge(wire_type, &mut body, buf, ctx)?;
        match slot {
            None => *slot = Some(Self::from_raw(body)),
            Some(field) => match (&field.raw, field.value.get()) {
                (Some(raw), None) => {
                    let mut joined = BytesMut::with_capacity(raw.len() + body.len());
                    joined.extend_from_slice(raw);
                    joined.extend_from_slice(&body);
                    *field = Self::from_raw(joined.freeze());
                }
                _ => match field.get_mut() {
                    Ok(value) => value.merge(body)?,
                    // The first occurrence was broken: so is the merge.
                    Err(_) => *field = Self::from_raw(body),
                },
            },
        }
        Ok(())
    }
}

impl<T: Message + Default> Default for PassThrough<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: Message + Default> From<T> for PassThrough<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: Clone> Clone for PassThrough<T> {
    fn clone(&self) -> Self {
        Self {
            raw: self.raw.clone(),
            value: self.value.clone(),
        }
    }
}

impl<T: Message + Default + PartialEq> PartialEq for PassThrough<T> {
    /// Equal values are equal however they travelled; bytes that do not
    /// decode compare as bytes.
    fn eq(&self, other: &Self) -> bool {
        match (self.get(), other.get()) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.raw == other.raw,
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for PassThrough<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.value.get(), &self.raw) {
            (Some(Ok(value)), _) => value.fmt(f),
            (_, Some(raw)) => write!(f, "PassThrough({} bytes, not decoded)", raw.len()),
            (Some(Err(e)), None) => write!(f, "PassThrough({e})"),
            (None, None) => f.write_str("PassThrough(empty)"),
        }
    }
}

/// `feeds.v1.UserContext` with `recent_items` alone: what the stages read.
#[derive(Clone, PartialEq, prost::Message)]
struct RecentItems {
    #[prost(uint64, repeated, tag = "1")]
    recent_items: Vec<u64>,
}

impl PassThrough<crate::pb::UserContext> {
    /// The context's `recent_items`, without decoding the rest of it (see
    /// [`PassThrough::view`]).
    pub fn recent_items(&self) -> Result<Vec<u64>, Undecodable> {
        self.view(|c| RecentItems {
            recent_items: c.recent_items.clone(),
        })
        .map(|r| r.recent_items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn context() -> pb::UserContext {
        pb::UserContext {
            recent_items: vec![3, 1, 4],
            features: [("hour".to_owned(), "7".to_owned())].into_iter().collect(),
            blob: vec![9; 300].into(),
            ..Default::default()
        }
    }

    /// A message with the same field number as a carrier's context field.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Plain {
        #[prost(message, optional, tag = "3")]
        context: Option<pb::UserContext>,
    }

    fn carried(bytes: &[u8]) -> Option<PassThrough<pb::UserContext>> {
        let mut buf = Bytes::copy_from_slice(bytes);
        let mut slot = None;
        while buf.has_remaining() {
            let (tag, wire_type) = prost::encoding::decode_key(&mut buf).expect("key");
            assert_eq!(tag, 3);
            PassThrough::merge_field(&mut slot, wire_type, &mut buf, DecodeContext::default())
                .expect("merge");
        }
        slot
    }

    #[test]
    fn received_bytes_are_sent_on_as_they_are_until_changed() {
        let wire = Plain {
            context: Some(context()),
        }
        .encode_to_vec();
        let field = carried(&wire).expect("present");
        assert!(!field.is_decoded());
        let mut out = Vec::new();
        field.encode_field(3, &mut out);
        assert_eq!(out, wire);
        assert_eq!(field.encoded_len_field(3), wire.len());
        // Reading decodes once and keeps the bytes.
        assert_eq!(field.get().expect("valid"), &context());
        assert!(field.raw().is_some());
        // Changing drops them: the new value is what goes on.
        let mut field = field;
        field.get_mut().expect("valid").recent_items.push(5);
        let mut out = Vec::new();
        field.encode_field(3, &mut out);
        let back = Plain::decode(out.as_slice()).expect("decodes");
        assert_eq!(
            back.context.expect("present").recent_items,
            vec![3, 1, 4, 5]
        );
    }

    #[test]
    fn recent_items_are_read_and_added_without_decoding_the_rest() {
        let mut full = context();
        full.recent_items.clear();
        full.events = (0..100)
            .map(|i| pb::Event {
                item_id: i,
                kind: 2,
                ts_ms: 1_000 + i as i64,
                dwell_s: 1.5,
            })
            .collect();
        let mut body = full.encode_to_vec();
        prost::encoding::string::encode(99, &"from a newer proto".to_owned(), &mut body);
        let mut wire = Vec::new();
        prost::encoding::bytes::encode(3, &body, &mut wire);
        let mut field = carried(&wire).expect("present");
        assert_eq!(field.recent_items().expect("valid"), Vec::<u64>::new());
        field
            .merge(&pb::UserContext {
                recent_items: vec![7, 8],
                ..Default::default()
            })
            .expect("merges");
        assert!(!field.is_decoded());
        assert_eq!(field.recent_items().expect("valid"), vec![7, 8]);
        // What goes on is the received bytes with the patch after them: the
        // unknown field survives, and a full decode sees both.
        let mut out = Vec::new();
        field.encode_field(3, &mut out);
        let mut expected = body.clone();
        expected.extend(
            pb::UserContext {
                recent_items: vec![7, 8],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let mut expected_wire = Vec::new();
        prost::encoding::bytes::encode(3, &expected, &mut expected_wire);
        assert_eq!(out, expected_wire);
        let mut want = full.clone();
        want.recent_items = vec![7, 8];
        assert_eq!(field.get().expect("valid"), &want);

        // A decoded value is read and merged in place.
        let mut made = PassThrough::new(context());
        assert_eq!(made.recent_items().expect("valid"), vec![3, 1, 4]);
        made.merge(&pb::UserContext {
            recent_items: vec![5],
            ..Default::default()
        })
        .expect("merges");
        assert_eq!(made.get().expect("valid").recent_items, vec![3, 1, 4, 5]);

        // Broken bytes say so when read.
        let broken = PassThrough::<pb::UserContext>::from_raw(Bytes::from_static(&[0x0a, 0x05, 1]));
        assert!(broken.recent_items().is_err());
    }

    #[test]
    fn a_value_made_here_encodes_like_prost() {
        let field = PassThrough::new(context());
        let mut out = Vec::new();
        field.encode_field(3, &mut out);
        assert_eq!(
            out,
            Plain {
                context: Some(context())
            }
            .encode_to_vec()
        );
    }

    #[test]
    fn unknown_fields_survive_a_read() {
        // Field 99 is unknown to UserContext.
        let mut body = context().encode_to_vec();
        prost::encoding::string::encode(99, &"from a newer proto".to_owned(), &mut body);
        let mut wire = Vec::new();
        prost::encoding::bytes::encode(3, &body, &mut wire);
        let field = carried(&wire).expect("present");
        assert_eq!(field.get().expect("valid"), &context());
        let mut out = Vec::new();
        field.encode_field(3, &mut out);
        assert_eq!(out, wire);
    }

    #[test]
    fn repeated_occurrences_merge_and_broken_bytes_say_so() {
        let a = pb::UserContext {
            recent_items: vec![1],
            ..Default::default()
        };
        let b = pb::UserContext {
            recent_items: vec![2],
            ..Default::default()
        };
        let mut wire = Plain { context: Some(a) }.encode_to_vec();
        wire.extend(Plain { context: Some(b) }.encode_to_vec());
        let field = carried(&wire).expect("present");
        assert_eq!(field.get().expect("valid").recent_items, vec![1, 2]);

        let broken = PassThrough::<pb::UserContext>::from_raw(Bytes::from_static(&[0x0a, 0x05, 1]));
        assert!(broken.get().is_err());
        assert!(broken.clone().into_inner().is_err());
    }
}
