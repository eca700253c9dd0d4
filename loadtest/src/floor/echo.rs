//! The echo floor: every data message goes back as one unmasked frame of the same kind, the
//! echoes of one turn coalesced into one send per connection.

use super::server::{Core, Service};
use crate::websocket::frame;

#[derive(Default)]
pub struct Echo {
    /// Reused for each echo frame, so echoing allocates nothing.
    frame: Vec<u8>,
}

impl Service for Echo {
    fn message(&mut self, core: &mut Core, slot: u32, text: bool, payload: &[u8]) {
        let opcode = if text { frame::TEXT } else { frame::BINARY };
        self.frame.clear();
        frame::write_frame(&mut self.frame, opcode, payload, None);
        core.send_owned(slot, &self.frame);
    }

    fn closed(&mut self, _slot: u32) {}
}
