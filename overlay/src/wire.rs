//! The one wire codec: serde + CBOR in length-prefixed frames.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of CBOR. The length
//! is checked against the protocol's limit before a single body byte is read or a buffer
//! is allocated, so an oversized frame costs the receiver four bytes. Bodies go through
//! the one bounded codec ([`crate::codec`]): every message type carries a version
//! field, and [`Versioned`] lets the decoder refuse unknown versions.

use std::{io, marker::PhantomData};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};
use serde::{Serialize, de::DeserializeOwned};

use crate::codec::{self, CodecError};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Why a frame was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The declared length is over the protocol's limit; nothing past the prefix was read.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Length the sender declared.
        len: usize,
        /// Largest frame the protocol accepts.
        limit: usize,
    },
    /// The body is not valid CBOR for the expected message type.
    #[error("undecodable frame: {0}")]
    Undecodable(String),
    /// The body decoded but its version is one this node does not speak.
    #[error("unsupported message version {found}, this node speaks {supported}")]
    UnsupportedVersion {
        /// Version in the message.
        found: u16,
        /// Version this node speaks.
        supported: u16,
    },
    /// The stream ended inside the length prefix or the body.
    #[error("stream ended inside a frame")]
    Truncated,
}

impl FrameError {
    /// Digs a [`FrameError`] out of the `io::Error` libp2p hands back from a codec.
    pub fn from_io(err: &io::Error) -> Option<&FrameError> {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<FrameError>())
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

pub use crate::codec::Versioned;

impl From<CodecError> for FrameError {
    fn from(error: CodecError) -> FrameError {
        match error {
            CodecError::TooLarge { len, limit } => FrameError::TooLarge { len, limit },
            CodecError::Undecodable(reason) | CodecError::Encode(reason) => {
                FrameError::Undecodable(reason)
            }
            CodecError::UnsupportedVersion { found, supported } => {
                FrameError::UnsupportedVersion { found, supported }
            }
        }
    }
}

/// Encodes `msg` as a CBOR body (no length prefix).
pub fn encode_body<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    Ok(codec::encode(msg)?)
}

/// Decodes a CBOR body of at most `limit` bytes and checks its version.
pub fn decode_body<T: DeserializeOwned + Versioned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, FrameError> {
    Ok(codec::decode(bytes, limit)?)
}

/// Encodes `msg` as one frame: length prefix and CBOR body.
pub fn encode_frame<T: Serialize>(msg: &T, limit: usize) -> Result<Vec<u8>, FrameError> {
    let body = encode_body(msg)?;
    if body.len() > limit {
        return Err(FrameError::TooLarge {
            len: body.len(),
            limit,
        });
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: body.len(),
        limit,
    })?;
    let mut frame = Vec::with_capacity(LENGTH_PREFIX_BYTES + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decodes one frame from a byte slice (the form fuzzers and tests use).
pub fn decode_frame<T: DeserializeOwned + Versioned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, FrameError> {
    let (prefix, body) = bytes
        .split_first_chunk::<LENGTH_PREFIX_BYTES>()
        .ok_or(FrameError::Truncated)?;
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    let body = body.get(..len).ok_or(FrameError::Truncated)?;
    decode_body(body, limit)
}

async fn read_frame<T, R>(io: &mut R, limit: usize) -> io::Result<T>
where
    T: DeserializeOwned + Versioned,
    R: AsyncRead + Unpin + Send,
{
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    io.read_exact(&mut prefix).await.map_err(truncated)?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit }.into_io());
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await.map_err(truncated)?;
    decode_body(&body, limit).map_err(FrameError::into_io)
}

fn truncated(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Truncated.into_io()
    } else {
        err
    }
}

/// Writes an already encoded frame: encoding happens before the first await, so no
/// borrow of the message is held across it.
async fn write_frame<W>(io: &mut W, frame: Result<Vec<u8>, FrameError>) -> io::Result<()>
where
    W: AsyncWrite + Unpin + Send,
{
    let frame = frame.map_err(FrameError::into_io)?;
    io.write_all(&frame).await?;
    io.close().await
}

/// A request as read from a peer: the message, or why its frame was refused.
///
/// Reading a request never fails on a bad frame: libp2p's request-response drops inbound
/// read errors without telling the behaviour, and the swarm task must see them to
/// penalise the sender. A refused frame arrives as an ordinary request holding
/// [`Decoded::Invalid`]; the swarm task penalises the peer and never answers it.
#[derive(Debug)]
pub enum Decoded<T> {
    /// A frame that decoded into a message of a known version.
    Valid(T),
    /// A frame that was refused, and why.
    Invalid(FrameError),
}

/// A request-response codec for one pair of message types, with one frame limit for
/// requests and one for responses.
pub struct FrameCodec<Req, Resp> {
    request_limit: usize,
    response_limit: usize,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> FrameCodec<Req, Resp> {
    /// A codec refusing requests over `request_limit` and responses over `response_limit`.
    pub fn new(request_limit: usize, response_limit: usize) -> Self {
        FrameCodec {
            request_limit,
            response_limit,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for FrameCodec<Req, Resp> {
    fn clone(&self) -> Self {
        FrameCodec::new(self.request_limit, self.response_limit)
    }
}

impl<Req, Resp> request_response::Codec for FrameCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Versioned + Send + 'static,
    Resp: Serialize + DeserializeOwned + Versioned + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Decoded<Req>;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io, self.request_limit).await {
            Ok(req) => Ok(Decoded::Valid(req)),
            Err(err) => match FrameError::from_io(&err) {
                Some(frame_error) => Ok(Decoded::Invalid(frame_error.clone())),
                None => Err(err),
            },
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.response_limit).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Self::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let frame = match req {
            Decoded::Valid(req) => encode_frame(&req, self.request_limit),
            Decoded::Invalid(err) => Err(err),
        };
        write_frame(io, frame).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, encode_frame(&resp, self.response_limit)).await
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ping {
        version: u16,
        payload: Vec<u8>,
    }

    impl Versioned for Ping {
        const VERSION: u16 = 1;
        fn version(&self) -> u16 {
            self.version
        }
    }

    fn ping(len: usize) -> Ping {
        Ping {
            version: 1,
            payload: vec![7; len],
        }
    }

    #[test]
    fn frame_round_trips() {
        let frame = encode_frame(&ping(100), 1024).unwrap();
        assert_eq!(decode_frame::<Ping>(&frame, 1024).unwrap(), ping(100));
    }

    #[test]
    fn oversized_declared_length_is_refused_before_the_body() {
        let mut frame = (u32::MAX).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode_frame::<Ping>(&frame, 1024),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                limit: 1024
            })
        );
    }

    #[test]
    fn encoding_over_the_limit_is_refused() {
        assert!(matches!(
            encode_frame(&ping(2000), 1024),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_body_is_undecodable() {
        let mut frame = 4u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0xff, 0x00, 0x13, 0x37]);
        assert!(matches!(
            decode_frame::<Ping>(&frame, 1024),
            Err(FrameError::Undecodable(_))
        ));
    }

    #[test]
    fn short_frame_is_truncated() {
        assert_eq!(
            decode_frame::<Ping>(&[0, 0], 1024),
            Err(FrameError::Truncated)
        );
        let frame = encode_frame(&ping(10), 1024).unwrap();
        assert_eq!(
            decode_frame::<Ping>(&frame[..frame.len() - 1], 1024),
            Err(FrameError::Truncated)
        );
    }

    #[test]
    fn unknown_version_is_refused() {
        let frame = encode_frame(
            &Ping {
                version: 9,
                payload: vec![],
            },
            1024,
        )
        .unwrap();
        assert_eq!(
            decode_frame::<Ping>(&frame, 1024),
            Err(FrameError::UnsupportedVersion {
                found: 9,
                supported: 1
            })
        );
    }

    #[test]
    fn frame_errors_survive_the_io_error_round_trip() {
        let io = FrameError::Truncated.into_io();
        assert_eq!(FrameError::from_io(&io), Some(&FrameError::Truncated));
        let other = io::Error::other("x");
        assert_eq!(FrameError::from_io(&other), None);
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8.., 0..256)) {
            let _ = decode_frame::<Ping>(&bytes, 128);
        }
    }
}
