//! The byte stream under an endpoint: what a connection's socket carries, turned into the bytes
//! its endpoint reads, and back.
//!
//! Plain TCP is the identity. TLS (rustls, sans-IO, inside each shard) slots in as another
//! variant: ciphertext from the receive buffer goes in and plaintext comes out for the endpoint;
//! the endpoint's queued plaintext is encrypted before it is sent. The shard calls only the
//! methods here, so that TLS is a layer and not a rewrite of the driver.

/// One connection's transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Bytes on the socket are the endpoint's bytes.
    #[default]
    Plain,
}

impl Transport {
    /// Hands the bytes of one read, as the endpoint must see them, to `read` (which consumes
    /// them all), and returns what it returned.
    pub fn handle_read<R>(&mut self, input: &mut [u8], read: impl FnOnce(&mut [u8]) -> R) -> R {
        match self {
            Transport::Plain => read(input),
        }
    }

    /// Whether the endpoint's queued bytes go on the socket as they are (no record layer).
    pub fn sends_queued_bytes(&self) -> bool {
        match self {
            Transport::Plain => true,
        }
    }
}
