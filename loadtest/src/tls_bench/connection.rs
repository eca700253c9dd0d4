//! One client connection of the TLS bench: TCP, optionally rustls over it (verifying the
//! server against the given CA), and the WebSocket client side written from RFC 6455 alone
//! (masked frames out, unmasked frames in). Set up blocking, then driven non-blocking from
//! one `poll` loop.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind};

/// Plaintext bytes read at most per socket read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// The mask of every client frame (any value is valid; the server must unmask all the same).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// What the client side of a connection speaks.
pub enum Security {
    Plain,
    Tls {
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    },
}

/// One connection: its socket, its TLS state (none for ws://) and the plaintext read but not
/// yet taken as frames.
pub struct Connection {
    socket: TcpStream,
    tls: Option<ClientConnection>,
    inbox: Vec<u8>,
    inbox_start: usize,
    scratch: Vec<u8>,
}

/// A frame from the server: its opcode and payload range in [`Connection::payload`].
pub struct ServerFrame {
    pub opcode: u8,
    start: usize,
    end: usize,
}

impl Connection {
    /// Connects and completes the TLS handshake (if any), blocking.
    pub fn connect(address: SocketAddr, security: &Security) -> io::Result<Connection> {
        let mut socket = TcpStream::connect(address)?;
        socket.set_nodelay(true)?;
        let tls = match security {
            Security::Plain => None,
            Security::Tls {
                config,
                server_name,
            } => {
                let mut tls = ClientConnection::new(Arc::clone(config), server_name.clone())
                    .map_err(io::Error::other)?;
                while tls.is_handshaking() {
                    tls.complete_io(&mut socket)?;
                }
                Some(tls)
            }
        };
        Ok(Connection {
            socket,
            tls,
            inbox: Vec::with_capacity(READ_CHUNK_BYTES),
            inbox_start: 0,
            scratch: vec![0; READ_CHUNK_BYTES],
        })
    }

    /// Whether the handshake was a resumption (`None` for plain TCP).
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.tls.as_ref().and_then(|tls| tls.handshake_kind())
    }

    /// Sends close_notify and reads until the server ends the stream (so that TLS 1.3 session
    /// tickets, sent after the handshake, are taken in), then drops the connection.
    pub fn close(mut self) -> io::Result<()> {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            while tls.wants_write() {
                tls.write_tls(&mut self.socket)?;
            }
            loop {
                match tls.read_tls(&mut self.socket) {
                    Ok(0) => break,
                    Ok(_) => {
                        let state = tls.process_new_packets().map_err(io::Error::other)?;
                        if state.peer_has_closed() {
                            break;
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::ConnectionReset => break,
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }

    /// The WebSocket upgrade of `path`, blocking; the server must answer 101.
    pub fn upgrade(&mut self, path: &str) -> io::Result<()> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        self.write_plaintext(request.as_bytes())?;
        self.flush_blocking()?;
        loop {
            if let Some(end) = find(&self.inbox[self.inbox_start..], b"\r\n\r\n") {
                let head = &self.inbox[self.inbox_start..self.inbox_start + end];
                if !head.starts_with(b"HTTP/1.1 101") {
                    return Err(io::Error::other(format!(
                        "upgrade refused: {}",
                        String::from_utf8_lossy(head)
                    )));
                }
                self.inbox_start += end + 4;
                return Ok(());
            }
            if self.read_some()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// From now on reads and writes do not block.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        self.socket.set_nonblocking(true)
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Queues a masked text frame of `payload` (written by [`Connection::flush`]).
    pub fn send_text(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x81);
        match payload.len() {
            length @ 0..=125 => frame.push(0x80 | length as u8),
            length @ 126..=65_535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(length as u16).to_be_bytes());
            }
            length => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(length as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(
            payload
                .iter()
                .enumerate()
                .map(|(index, byte)| byte ^ MASK[index % 4]),
        );
        self.write_plaintext(&frame)
    }

    fn write_plaintext(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.tls.as_mut() {
            Some(tls) => tls.writer().write_all(bytes),
            // Plain: written straight away (loopback takes small frames whole; a short write
            // is finished blocking, which only a stalled server would cause).
            None => write_all_retrying(&mut self.socket, bytes),
        }
    }

    /// Writes what TLS has queued, as far as the socket takes it; true when all went.
    pub fn flush(&mut self) -> io::Result<bool> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(true);
        };
        while tls.wants_write() {
            match tls.write_tls(&mut self.socket) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }

    fn flush_blocking(&mut self) -> io::Result<()> {
        if let Some(tls) = self.tls.as_mut() {
            while tls.wants_write() {
                tls.write_tls(&mut self.socket)?;
            }
        }
        Ok(())
    }

    /// Reads what the socket has into the inbox; 0 at the end of the stream. Non-blocking
    /// connections return `WouldBlock` when nothing is there.
    pub fn read_some(&mut self) -> io::Result<usize> {
        if self.inbox_start > 0 && self.inbox_start == self.inbox.len() {
            self.inbox.clear();
            self.inbox_start = 0;
        }
        match self.tls.as_mut() {
            None => {
                let count = self.socket.read(&mut self.scratch)?;
                self.inbox.extend_from_slice(&self.scratch[..count]);
                Ok(count)
            }
            Some(tls) => {
                if tls.read_tls(&mut self.socket)? == 0 {
                    return Ok(0);
                }
                let state = tls.process_new_packets().map_err(io::Error::other)?;
                let ended = state.peer_has_closed() && state.plaintext_bytes_to_read() == 0;
                if ended {
                    return Ok(0);
                }
                let mut total = 0;
                loop {
                    match tls.reader().read(&mut self.scratch) {
                        Ok(0) => return Ok(total.max(1)),
                        Ok(count) => {
                            self.inbox.extend_from_slice(&self.scratch[..count]);
                            total += count;
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                            return Ok(total.max(1));
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
        }
    }

    /// The next whole frame in the inbox, if there is one.
    pub fn next_frame(&mut self) -> Option<ServerFrame> {
        let bytes = &self.inbox[self.inbox_start..];
        if bytes.len() < 2 {
            return None;
        }
        let opcode = bytes[0] & 0x0f;
        let (length, header) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => (
                u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")) as usize,
                10,
            ),
            126 | 127 => return None,
            length => (length as usize, 2),
        };
        if bytes.len() < header + length {
            return None;
        }
        let start = self.inbox_start + header;
        self.inbox_start = start + length;
        Some(ServerFrame {
            opcode,
            start,
            end: start + length,
        })
    }

    /// The payload of a frame [`Connection::next_frame`] just returned.
    pub fn payload(&self, frame: &ServerFrame) -> &[u8] {
        &self.inbox[frame.start..frame.end]
    }
}

fn write_all_retrying(socket: &mut TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match socket.write(bytes) {
            Ok(count) => bytes = &bytes[count..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
