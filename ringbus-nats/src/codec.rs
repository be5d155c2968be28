//! How events become message payloads and back.

use ringbus::BoxError;

/// Encodes events into message payloads and decodes them back. The egress
/// encodes on its stage thread; the ingress decodes on its own thread, and a
/// payload that fails to decode goes to the dead-letter subject with the
/// reason instead of into the bus.
pub trait Codec<E>: Send + 'static {
    /// Appends the encoding of `event` to `out` (empty when called).
    ///
    /// # Errors
    /// An event this codec cannot encode; the egress stage's failure policy
    /// routes it.
    fn encode(&mut self, event: &E, out: &mut Vec<u8>) -> Result<(), BoxError>;

    /// Decodes one payload.
    ///
    /// # Errors
    /// A payload that is not an encoded event.
    fn decode(&mut self, payload: &[u8]) -> Result<E, BoxError>;
}

/// serde's compact binary format ([postcard](https://docs.rs/postcard)):
/// varints, no field names, as ringbus's journal writes events. Both sides
/// must agree on the event's serde shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl<E> Codec<E> for Postcard
where
    E: serde::Serialize + serde::de::DeserializeOwned,
{
    fn encode(&mut self, event: &E, out: &mut Vec<u8>) -> Result<(), BoxError> {
        let bytes = postcard::to_extend(event, std::mem::take(out))?;
        *out = bytes;
        Ok(())
    }

    fn decode(&mut self, payload: &[u8]) -> Result<E, BoxError> {
        Ok(postcard::from_bytes(payload)?)
    }
}

/// A codec from two closures: `encode(&E, &mut Vec<u8>)` and
/// `decode(&[u8]) -> Result<E, _>`.
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

    fn decode(&mut self, payload: &[u8]) -> Result<E, BoxError> {
        (self.1)(payload).map_err(Into::into)
    }
}
