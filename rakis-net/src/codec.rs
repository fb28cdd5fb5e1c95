//! The request-response codec of direct messages: the request is the raw wire bytes of one
//! envelope (the stream is closed after it), the response a one-byte acknowledgement.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use rakis_core::envelope::MAX_MESSAGE_SIZE;

/// The receiver's answer to a direct message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ack {
    /// Valid and delivered to the node.
    Accepted,
    /// Invalid (envelope check failed).
    Rejected,
    /// Over the sender's rate limit, or the receiving node is overloaded; not delivered.
    RateLimited,
}

impl Ack {
    fn to_byte(self) -> u8 {
        match self {
            Ack::Accepted => 0,
            Ack::Rejected => 1,
            Ack::RateLimited => 2,
        }
    }

    fn from_byte(b: u8) -> io::Result<Self> {
        match b {
            0 => Ok(Ack::Accepted),
            1 => Ok(Ack::Rejected),
            2 => Ok(Ack::RateLimited),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown acknowledgement {other}"),
            )),
        }
    }
}

/// Raw bytes in, one byte back.
#[derive(Clone, Debug, Default)]
pub(crate) struct DirectCodec;

impl libp2p::request_response::Codec for DirectCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Ack;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(MAX_MESSAGE_SIZE as u64 + 1)
            .read_to_end(&mut buf)
            .await?;
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("direct message exceeds {MAX_MESSAGE_SIZE} bytes"),
            ));
        }
        Ok(buf)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Ack>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        Ack::from_byte(b[0])
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        ack: Ack,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[ack.to_byte()]).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    use super::*;

    fn proto() -> StreamProtocol {
        StreamProtocol::new("/rakis/test/direct/1")
    }

    #[tokio::test]
    async fn requests_and_acks_roundtrip() {
        let mut codec = DirectCodec;
        let mut out = Cursor::new(Vec::new());
        codec
            .write_request(&proto(), &mut out, b"bytes".to_vec())
            .await
            .unwrap();
        let mut input = Cursor::new(out.into_inner());
        assert_eq!(
            codec.read_request(&proto(), &mut input).await.unwrap(),
            b"bytes"
        );
        for ack in [Ack::Accepted, Ack::Rejected, Ack::RateLimited] {
            let mut out = Cursor::new(Vec::new());
            codec.write_response(&proto(), &mut out, ack).await.unwrap();
            let mut input = Cursor::new(out.into_inner());
            assert_eq!(
                codec.read_response(&proto(), &mut input).await.unwrap(),
                ack
            );
        }
        let mut bad = Cursor::new(vec![9u8]);
        assert!(codec.read_response(&proto(), &mut bad).await.is_err());
    }

    #[tokio::test]
    async fn oversized_requests_are_refused() {
        let mut codec = DirectCodec;
        let mut input = Cursor::new(vec![0u8; MAX_MESSAGE_SIZE + 1]);
        let err = codec.read_request(&proto(), &mut input).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut input = Cursor::new(vec![0u8; MAX_MESSAGE_SIZE]);
        assert_eq!(
            codec
                .read_request(&proto(), &mut input)
                .await
                .unwrap()
                .len(),
            MAX_MESSAGE_SIZE
        );
    }
}
