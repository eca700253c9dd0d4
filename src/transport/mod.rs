//! The byte stream under an endpoint: what a connection's socket carries, turned into the bytes
//! its endpoint reads, and back.
//!
//! Plain TCP is the identity. TLS ([`tls`]: rustls' unbuffered handshake, then a record layer
//! that opens records in place in the receive buffer and seals them in pooled buffers) is the
//! other variant: ciphertext from the receive buffer goes in and plaintext comes out for the
//! endpoint; the endpoint's queued plaintext is sealed before it is sent. The shard calls only
//! the methods here and [`tls::TlsConnection`]'s, so that TLS is a layer and not a rewrite of
//! the driver. Nothing here touches a socket, a ring or a clock.

pub mod tls;

use std::sync::Arc;

use tls::{ReadOutcome, TlsConnection, TlsWorkspace};

/// One connection's transport.
#[derive(Debug, Default)]
pub enum Transport {
    /// Bytes on the socket are the endpoint's bytes.
    #[default]
    Plain,
    /// TLS: boxed, so that a plain connection pays one pointer for it.
    Tls(Box<TlsConnection>),
}

// A plain connection's transport stays one word.
const _: () = assert!(size_of::<Transport>() == size_of::<usize>());

impl Transport {
    /// A TLS transport at the start of its handshake.
    pub fn new_tls(config: &Arc<rustls::ServerConfig>) -> Result<Transport, rustls::Error> {
        Ok(Transport::Tls(Box::new(TlsConnection::new(config)?)))
    }

    /// Hands the bytes of one read, as the endpoint must see them, to `read` (which consumes
    /// each piece whole): the read itself for plain TCP, each record's plaintext for TLS.
    pub fn handle_read(
        &mut self,
        input: &mut [u8],
        workspace: &mut TlsWorkspace,
        mut read: impl FnMut(&mut [u8]),
    ) -> ReadOutcome {
        match self {
            Transport::Plain => {
                read(input);
                ReadOutcome::Open
            }
            Transport::Tls(tls) => tls.handle_read(input, workspace, read),
        }
    }

    /// Whether the endpoint's queued bytes go on the socket as they are (no record layer).
    pub fn sends_queued_bytes(&self) -> bool {
        matches!(self, Transport::Plain)
    }

    pub fn tls(&self) -> Option<&TlsConnection> {
        match self {
            Transport::Plain => None,
            Transport::Tls(tls) => Some(tls),
        }
    }

    pub fn tls_mut(&mut self) -> Option<&mut TlsConnection> {
        match self {
            Transport::Plain => None,
            Transport::Tls(tls) => Some(tls),
        }
    }

    /// Pooled memory the transport holds for this connection alone (ciphertext waiting, a
    /// record cut across reads): part of the connection's charge against the shard's budget.
    pub fn held_bytes(&self) -> usize {
        self.tls().map_or(0, TlsConnection::held_bytes)
    }
}
