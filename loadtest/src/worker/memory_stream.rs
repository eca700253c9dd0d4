//! The in-memory stream tungstenite's codec runs over: bytes read from the socket are pushed in,
//! bytes the codec writes are taken out and sent by the caller. Reading past the pushed bytes is
//! `WouldBlock`, which tungstenite treats like a non-blocking socket with nothing to read.

use std::io::{self, Read, Write};

#[derive(Debug, Default)]
pub struct MemoryStream {
    /// Received bytes not yet consumed by the codec, from `incoming_offset` on.
    incoming: Vec<u8>,
    incoming_offset: usize,
    /// Bytes the codec wrote that the caller has not yet taken.
    outgoing: Vec<u8>,
}

impl MemoryStream {
    /// Appends bytes received from the socket.
    pub fn push_incoming(&mut self, bytes: &[u8]) {
        self.incoming_mut().extend_from_slice(bytes);
    }

    /// The received bytes, for appending to (TLS decrypts straight into them); emptied first
    /// when the codec has consumed all of them.
    pub fn incoming_mut(&mut self) -> &mut Vec<u8> {
        if self.incoming_offset == self.incoming.len() {
            self.incoming.clear();
            self.incoming_offset = 0;
        }
        &mut self.incoming
    }

    /// Whether the codec has written bytes the caller must send.
    pub fn has_outgoing(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Moves the bytes to send into `buffer` (cleared first), keeping both allocations alive.
    pub fn take_outgoing(&mut self, buffer: &mut Vec<u8>) {
        buffer.clear();
        std::mem::swap(buffer, &mut self.outgoing);
    }
}

impl Read for MemoryStream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let available = &self.incoming[self.incoming_offset..];
        if available.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let count = available.len().min(buffer.len());
        buffer[..count].copy_from_slice(&available[..count]);
        self.incoming_offset += count;
        Ok(count)
    }
}

impl Write for MemoryStream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.outgoing.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tungstenite::protocol::{Role, WebSocket};
    use tungstenite::{Message, WebSocket as Socket};

    use super::*;

    /// Reads return pushed bytes in order, then WouldBlock; writes collect until taken.
    #[test]
    fn reads_pushed_bytes_then_would_block() {
        let mut stream = MemoryStream::default();
        let mut buffer = [0u8; 4];
        assert_eq!(
            stream.read(&mut buffer).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        stream.push_incoming(b"hello");
        assert_eq!(stream.read(&mut buffer).unwrap(), 4);
        stream.push_incoming(b" you");
        assert_eq!(stream.read(&mut buffer).unwrap(), 4);
        assert_eq!(&buffer, b"o yo");
        assert_eq!(stream.read(&mut buffer).unwrap(), 1);
        assert!(stream.read(&mut buffer).is_err());
        stream.write_all(b"abc").unwrap();
        assert!(stream.has_outgoing());
        let mut sent = Vec::with_capacity(64);
        stream.take_outgoing(&mut sent);
        assert_eq!(sent, b"abc");
        assert!(!stream.has_outgoing());
    }

    /// A client codec over MemoryStream talks to a server codec over MemoryStream, one byte
    /// at a time: frames split anywhere reassemble, and pings are answered.
    #[test]
    fn codec_pair_over_memory() {
        let mut client: Socket<MemoryStream> =
            WebSocket::from_raw_socket(MemoryStream::default(), Role::Client, None);
        let mut server: Socket<MemoryStream> =
            WebSocket::from_raw_socket(MemoryStream::default(), Role::Server, None);
        client.send(Message::text("x".repeat(300))).unwrap();
        client.send(Message::Ping(vec![1, 2, 3].into())).unwrap();
        let mut wire = Vec::new();
        client.get_mut().take_outgoing(&mut wire);
        let mut received = Vec::new();
        for byte in &wire {
            server.get_mut().push_incoming(std::slice::from_ref(byte));
            match server.read() {
                Ok(message) => received.push(message),
                Err(tungstenite::Error::Io(error)) => {
                    assert_eq!(error.kind(), io::ErrorKind::WouldBlock)
                }
                Err(error) => panic!("{error}"),
            }
        }
        assert_eq!(received.len(), 2);
        assert_eq!(received[0], Message::text("x".repeat(300)));
        assert!(server.read().is_err());
        server.get_mut().take_outgoing(&mut wire);
        client.get_mut().push_incoming(&wire);
        assert_eq!(client.read().unwrap(), Message::Pong(vec![1, 2, 3].into()));
    }
}
