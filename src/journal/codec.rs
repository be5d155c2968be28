//! How events become record payloads and back.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::fault::BoxError;

/// Turns events into the bytes of a journal record and back.
///
/// [`Postcard`] (serde's compact binary format) is the default; implement
/// this trait for another format (a schema'd one, or a hand-written layout).
/// `encode` appends to `out` (which already holds earlier records: append,
/// never clear); an error halts the journal stage, since a journal cannot
/// skip an event without leaving a gap.
pub trait Codec<E>: Send + 'static {
    /// Appends the encoding of `event` to `out`.
    ///
    /// # Errors
    /// The event cannot be encoded; the journal stage stops the bus.
    fn encode(&mut self, event: &E, out: &mut Vec<u8>) -> Result<(), BoxError>;

    /// Decodes one event from the whole of `bytes`.
    ///
    /// # Errors
    /// The bytes are not an encoding of an `E` (a changed event type, or a
    /// codec other than the one that wrote the journal).
    fn decode(&mut self, bytes: &[u8]) -> Result<E, BoxError>;
}

/// The default codec: [postcard](https://docs.rs/postcard), serde's compact
/// binary format (varint integers, no field names). An event type derives
/// `Serialize` and `Deserialize`; fields added later must go at the end and
/// be `#[serde(default)]` to keep old journals readable.
///
/// ```
/// use ringbus::journal::{Codec, Postcard};
/// let mut out = Vec::new();
/// Codec::<(u64, String)>::encode(&mut Postcard, &(300, "abc".into()), &mut out).unwrap();
/// assert_eq!(out, [0xac, 0x02, 3, b'a', b'b', b'c']); // varint 300, length, bytes
/// let back: (u64, String) = Postcard.decode(&out).unwrap();
/// assert_eq!(back, (300, "abc".to_owned()));
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
        Ok(postcard::from_bytes(bytes)?)
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
