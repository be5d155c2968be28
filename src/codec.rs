//! How events become bytes and back: one [`Codec`] trait for every place
//! an event leaves memory (the journal's records, the NATS bridge's
//! messages in `ringbus-nats`), with [`Postcard`] as the default and
//! [`FnCodec`] for two closures.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::fault::BoxError;

/// `codec.decode(bytes)`, with a panic in it returned as an error
/// (`the codec panicked: <message>`): what the journal's readers and the
/// bridge's ingress do, so that one record or message a codec cannot take
/// is reported (or dead-lettered) like any other that does not decode.
/// The bridge's ingress uses the codec again afterwards (the journal's
/// readers stop at the error): one that keeps state across calls must
/// leave it consistent when it panics (or fail every later call).
///
/// ```
/// use ringbus::codec::{decode_catching, FnCodec};
/// let mut strict = FnCodec(
///     |e: &u8, out: &mut Vec<u8>| -> Result<(), std::io::Error> {
///         out.push(*e);
///         Ok(())
///     },
///     // Indexes without a check: an empty payload panics.
///     |bytes: &[u8]| -> Result<u8, std::io::Error> { Ok(bytes[0]) },
/// );
/// assert_eq!(decode_catching(&mut strict, &[7]).unwrap(), 7);
/// let err = decode_catching(&mut strict, &[]).unwrap_err();
/// assert!(err.to_string().starts_with("the codec panicked: "), "{err}");
/// ```
///
/// # Errors
/// The codec's error, or its panic as one.
pub fn decode_catching<E, C: Codec<E> + ?Sized>(
    codec: &mut C,
    bytes: &[u8],
) -> Result<E, BoxError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| codec.decode(bytes))).unwrap_or_else(
        |panic| {
            let message = crate::report::panic_message(&*panic);
            Err(format!("the codec panicked: {message}").into())
        },
    )
}

/// Turns events into bytes and back: the journal's records, the NATS
/// bridge's message payloads.
///
/// [`Postcard`] (serde's compact binary format) is the default; implement
/// this trait for another format (a schema'd one, or a hand-written layout),
/// or use [`FnCodec`]. `encode` **appends** to `out`, which may already hold
/// other bytes (the journal's earlier records): append, never clear. What
/// an error does is up to the caller: the journal stage halts the bus (a
/// journal cannot skip an event without leaving a gap), the bridge's egress
/// routes it by its stage's failure policy, and its ingress dead-letters a
/// payload that does not decode.
pub trait Codec<E>: Send + 'static {
    /// Appends the encoding of `event` to `out`.
    ///
    /// # Errors
    /// The event cannot be encoded.
    fn encode(&mut self, event: &E, out: &mut Vec<u8>) -> Result<(), BoxError>;

    /// Decodes one event from the whole of `bytes`.
    ///
    /// # Errors
    /// The bytes are not an encoding of an `E` (a changed event type, or a
    /// codec other than the one that wrote them).
    fn decode(&mut self, bytes: &[u8]) -> Result<E, BoxError>;
}

/// The default codec: [postcard](https://docs.rs/postcard), serde's compact
/// binary format (varint integers, no field names). An event type derives
/// `Serialize` and `Deserialize`. Postcard writes neither field names nor
/// counts, so a changed type reads neither older records (a field added,
/// even `#[serde(default)]`, finds the record ended) nor newer ones (bytes
/// left over are an error): version the event yourself (an enum with a
/// variant per version keeps every old record readable) or start a new
/// journal or stream when it changes.
///
/// ```
/// use ringbus::codec::{Codec, Postcard};
/// let mut out = Vec::new();
/// Codec::<(u64, String)>::encode(&mut Postcard, &(300, "abc".into()), &mut out).unwrap();
/// assert_eq!(out, [0xac, 0x02, 3, b'a', b'b', b'c']); // varint 300, length, bytes
/// let back: (u64, String) = Postcard.decode(&out).unwrap();
/// assert_eq!(back, (300, "abc".to_owned()));
/// // Bytes left over are an error, not ignored:
/// assert!(Codec::<u64>::decode(&mut Postcard, &out).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl<E: Serialize + DeserializeOwned> Codec<E> for Postcard {
    #[inline]
    fn encode(&mut self, event: &E, out: &mut Vec<u8>) -> Result<(), BoxError> {
        postcard::serialize_with_flavor(event, AppendTo(out))?;
        Ok(())
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<E, BoxError> {
        // The whole of `bytes`: bytes left over mean another type wrote
        // them (`from_bytes` alone ignores them).
        let (event, rest) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(format!(
                "{} bytes left over after decoding an event from {} bytes: \
                 not an encoding of this event type",
                rest.len(),
                bytes.len()
            )
            .into());
        }
        Ok(event)
    }
}

/// A postcard flavor that appends to the journal's write buffer, so encoding
/// allocates nothing once the buffer has grown.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A codec from two closures: `encode(&E, &mut Vec<u8>)` (appending, as
/// [`Codec::encode`]) and `decode(&[u8]) -> Result<E, _>`.
///
/// ```
/// use ringbus::codec::{Codec, FnCodec};
/// let mut codec = FnCodec(
///     |v: &u32, out: &mut Vec<u8>| -> Result<(), std::io::Error> {
///         out.extend_from_slice(&v.to_le_bytes());
///         Ok(())
///     },
///     |bytes: &[u8]| -> Result<u32, std::io::Error> {
///         let array = bytes.try_into().map_err(|_| std::io::ErrorKind::InvalidData)?;
///         Ok(u32::from_le_bytes(array))
///     },
/// );
/// let mut out = Vec::new();
/// codec.encode(&7, &mut out).unwrap();
/// assert_eq!(codec.decode(&out).unwrap(), 7);
/// ```
pub struct FnCodec<Enc, Dec>(pub Enc, pub Dec);

impl<Enc, Dec> std::fmt::Debug for FnCodec<Enc, Dec> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnCodec")
    }
}

impl<E, Enc, Dec, Err> Codec<E> for FnCodec<Enc, Dec>
where
    Enc: FnMut(&E, &mut Vec<u8>) -> Result<(), Err> + Send + 'static,
    Dec: FnMut(&[u8]) -> Result<E, Err> + Send + 'static,
    Err: Into<BoxError>,
{
    fn encode(&mut self, event: &E, out: &mut Vec<u8>) -> Result<(), BoxError> {
        (self.0)(event, out).map_err(Into::into)
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<E, BoxError> {
        (self.1)(bytes).map_err(Into::into)
    }
}
