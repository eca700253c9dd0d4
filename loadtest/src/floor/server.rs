//! The server loop both floor programs share: what the kernel must be asked to do for a
//! WebSocket server on io_uring, and nothing else. One thread and one ring per listener
//! (SO_REUSEPORT), set up as ringcast's shards are (SINGLE_ISSUER, DEFER_TASKRUN,
//! COOP_TASKRUN): a multishot accept into a sparse table of direct descriptors, one multishot
//! receive per connection from a provided buffer ring, frames unmasked in place in the receive
//! buffer, at most one `IORING_OP_SEND` in flight per connection, every ready completion taken
//! in one batch and the turn's sends submitted together. No timers, no limits beyond the
//! tables, no metrics: the point is a floor to hold ringcast against.
//!
//! What a connection's messages mean is the [`Service`]'s (echo, or fanout).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use io_uring::{opcode, types};
use socket2::{Domain, Protocol, Socket, Type};

use crate::uring::buffers::ProvidedBuffers;
use crate::uring::ring::{Completion, Ring, tag, untag};
use crate::websocket::frame::{self, FrameHead};
use crate::websocket::handshake::{check_request, write_switching_protocols};

/// The listener's slot in the file table; accepted connections get the others.
const LISTENER_SLOT: u32 = 0;
const SUBMISSION_ENTRIES: u32 = 4096;
const COMPLETIONS_PER_TURN_MAX: usize = 4 * SUBMISSION_ENTRIES as usize;
const RECEIVE_GROUP_ID: u16 = 0;
/// The same receive pool as ringcast's default: 4096 buffers of 4 KiB.
const BUFFERS_COUNT: usize = 4096;
const BUFFER_BYTES: usize = 4096;
/// Longest message accepted (ringcast's echo mode allows 16 MiB).
const MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Frames queued to one connection at most (ringcast's `outbound_queue_frames_max`); past it
/// the connection is closed as a slow consumer.
const SHARED_FRAMES_QUEUED_MAX: usize = 16_384;
/// `IORING_REGISTER_FILE_ALLOC_RANGE` from the kernel's io_uring.h (the crate keeps it private).
const REGISTER_FILE_ALLOC_RANGE: libc::c_uint = 25;

const ACCEPT: u8 = 1;
const RECEIVE: u8 = 2;
const SEND: u8 = 3;
const SHUTDOWN: u8 = 4;
const CLOSE: u8 = 5;

/// What the server does with complete data messages.
pub trait Service {
    /// A data message (unmasked) on connection `slot`; answers go through `core`.
    fn message(&mut self, core: &mut Core, slot: u32, text: bool, payload: &[u8]);
    /// Connection `slot` is gone.
    fn closed(&mut self, slot: u32);
}

/// A listener bound with SO_REUSEPORT, so each thread of a floor program has its own.
pub fn listener(address: SocketAddrV4) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    Ok(socket)
}

/// A send in flight: bytes owned by the connection, or a frame shared by every subscriber.
enum Sending {
    Owned { offset: usize },
    Shared { frame: Rc<[u8]>, offset: usize },
}

/// One connection.
#[derive(Default)]
struct Connection {
    upgraded: bool,
    /// Request bytes before the upgrade; the partial frame after it.
    carry: Vec<u8>,
    /// Bytes to send (the 101, echoes, replies), and the buffer of an owned send in flight.
    outbound: Vec<u8>,
    owned_in_flight: Vec<u8>,
    /// Frames shared with other connections, sent one `SEND` each.
    shared: VecDeque<Rc<[u8]>>,
    sending: Option<Sending>,
    receive_armed: bool,
    closing: bool,
    listed: bool,
}

/// The ring, the tables and the connections of one thread.
pub struct Core {
    ring: Ring,
    buffers: ProvidedBuffers,
    connections: Vec<Option<Connection>>,
    completions: Vec<Completion>,
    send_list: Vec<u32>,
    parked: Vec<u32>,
}

impl Core {
    /// A ring with a table of `connections_max` + 1 slots, the listener in slot 0.
    pub fn new(listener_fd: RawFd, connections_max: usize) -> io::Result<Self> {
        let ring = Ring::new(SUBMISSION_ENTRIES)?;
        let slots = connections_max + 1;
        register_file_table(&ring, slots, listener_fd)?;
        let buffers = ProvidedBuffers::new(
            &ring.submitter(),
            RECEIVE_GROUP_ID,
            BUFFERS_COUNT,
            BUFFER_BYTES,
        )?;
        Ok(Self {
            ring,
            buffers,
            connections: (0..slots).map(|_| None).collect(),
            completions: Vec::with_capacity(COMPLETIONS_PER_TURN_MAX),
            send_list: Vec::new(),
            parked: Vec::new(),
        })
    }

    /// Queues bytes the connection owns (sent after any in flight, before shared frames).
    pub fn send_owned(&mut self, slot: u32, bytes: &[u8]) {
        let Some(connection) = self.connections[slot as usize].as_mut() else {
            return;
        };
        connection.outbound.extend_from_slice(bytes);
        self.list(slot);
    }

    /// Sends a frame shared with other connections: at once if the connection is idle,
    /// else after what it already has queued. Past the queue limit the connection is closed.
    pub fn send_shared(&mut self, slot: u32, frame: &Rc<[u8]>) -> io::Result<()> {
        let Some(connection) = self.connections[slot as usize].as_mut() else {
            return Ok(());
        };
        if connection.closing {
            return Ok(());
        }
        // Straight to the kernel only when nothing is waiting: frames keep their order.
        if connection.sending.is_none()
            && connection.outbound.is_empty()
            && connection.shared.is_empty()
        {
            connection.sending = Some(Sending::Shared {
                frame: Rc::clone(frame),
                offset: 0,
            });
            return self.submit_send(slot);
        }
        if connection.shared.len() >= SHARED_FRAMES_QUEUED_MAX {
            return self.close(slot);
        }
        connection.shared.push_back(Rc::clone(frame));
        self.list(slot);
        Ok(())
    }

    fn list(&mut self, slot: u32) {
        let connection = self.connections[slot as usize]
            .as_mut()
            .expect("listed live");
        if !connection.listed {
            connection.listed = true;
            self.send_list.push(slot);
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let entry = opcode::AcceptMulti::new(types::Fixed(LISTENER_SLOT))
            .allocate_file_index(true)
            .build()
            .user_data(tag(ACCEPT, 0));
        // SAFETY: a multishot accept into direct descriptors points at no memory of ours.
        unsafe { self.ring.push(&entry) }
    }

    fn arm_receive(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connections[slot as usize].as_mut().expect("live");
        connection.receive_armed = true;
        let entry = opcode::RecvMulti::new(types::Fixed(slot), RECEIVE_GROUP_ID)
            .build()
            .user_data(tag(RECEIVE, slot));
        // SAFETY: buffers come from the provided ring, which outlives the ring.
        unsafe { self.ring.push(&entry) }
    }

    fn submit_send(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connections[slot as usize].as_mut().expect("live");
        let rest = match connection.sending.as_ref().expect("a send to submit") {
            Sending::Owned { offset } => &connection.owned_in_flight[*offset..],
            Sending::Shared { frame, offset } => &frame[*offset..],
        };
        let entry = opcode::Send::new(types::Fixed(slot), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(tag(SEND, slot));
        // SAFETY: the bytes are `owned_in_flight` or a shared frame held in `sending`, neither
        // touched until this send completes; the connection is freed only after that.
        unsafe { self.ring.push(&entry) }
    }

    /// Starts the next send of every listed connection that has none in flight.
    fn flush_sends(&mut self) -> io::Result<()> {
        let listed = std::mem::take(&mut self.send_list);
        for &slot in &listed {
            let Some(connection) = self.connections[slot as usize].as_mut() else {
                continue;
            };
            connection.listed = false;
            if connection.sending.is_some() || connection.closing {
                continue;
            }
            if !connection.outbound.is_empty() {
                std::mem::swap(&mut connection.outbound, &mut connection.owned_in_flight);
                connection.sending = Some(Sending::Owned { offset: 0 });
            } else if let Some(frame) = connection.shared.pop_front() {
                connection.sending = Some(Sending::Shared { frame, offset: 0 });
            } else {
                continue;
            }
            self.submit_send(slot)?;
        }
        self.send_list = listed;
        self.send_list.clear();
        Ok(())
    }

    /// Closes connection `slot`: shut down (which ends its receive), then close once no
    /// request refers to it.
    fn close(&mut self, slot: u32) -> io::Result<()> {
        let connection = self.connections[slot as usize].as_mut().expect("live");
        if connection.closing {
            return Ok(());
        }
        connection.closing = true;
        connection.shared.clear();
        let entry = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_RDWR)
            .build()
            .user_data(tag(SHUTDOWN, slot));
        // SAFETY: a shutdown points at no memory.
        unsafe { self.ring.push(&entry) }
    }

    /// Frees connection `slot` once it is closing and no request refers to it.
    fn free_if_done(&mut self, slot: u32, service: &mut impl Service) -> io::Result<()> {
        let done = self.connections[slot as usize]
            .as_ref()
            .is_some_and(|c| c.closing && !c.receive_armed && c.sending.is_none());
        if !done {
            return Ok(());
        }
        self.connections[slot as usize] = None;
        service.closed(slot);
        let entry = opcode::Close::new(types::Fixed(slot))
            .build()
            .user_data(tag(CLOSE, slot));
        // SAFETY: a close points at no memory.
        unsafe { self.ring.push(&entry) }
    }
}

/// Runs a floor server thread forever (until the process is killed).
pub fn run(mut core: Core, service: &mut impl Service) -> io::Result<()> {
    core.arm_accept()?;
    loop {
        core.flush_sends()?;
        core.ring.submit_and_wait(Duration::from_secs(1))?;
        core.completions.clear();
        core.ring.harvest(&mut core.completions);
        for position in 0..core.completions.len() {
            let completion = core.completions[position];
            handle(&mut core, service, completion)?;
        }
        core.buffers.publish();
        while let Some(slot) = core.parked.pop() {
            let rearm = core.connections[slot as usize]
                .as_ref()
                .is_some_and(|c| !c.receive_armed && !c.closing);
            if rearm {
                core.arm_receive(slot)?;
            }
        }
    }
}

fn handle(core: &mut Core, service: &mut impl Service, completion: Completion) -> io::Result<()> {
    let (operation, slot) = untag(completion.user_data);
    match operation {
        ACCEPT => accepted(core, completion),
        RECEIVE => received(core, service, slot, completion),
        SEND => sent(core, service, slot, completion.result),
        SHUTDOWN | CLOSE => Ok(()),
        other => unreachable!("a request we never made: operation {other}"),
    }
}

fn accepted(core: &mut Core, completion: Completion) -> io::Result<()> {
    match completion.result {
        slot if slot >= 0 => {
            core.connections[slot as usize] = Some(Connection::default());
            core.arm_receive(slot as u32)?;
        }
        // A full table ends the accept (and the kernel drops the connection): the floor has
        // no table management, so it stops taking connections rather than spin.
        error if -error == libc::ENFILE => eprintln!("floor: connection table full"),
        error => eprintln!(
            "floor: accept failed: {}",
            io::Error::from_raw_os_error(-error)
        ),
    }
    if !completion.more() && -completion.result != libc::ENFILE {
        core.arm_accept()?;
    }
    Ok(())
}

fn received(
    core: &mut Core,
    service: &mut impl Service,
    slot: u32,
    completion: Completion,
) -> io::Result<()> {
    let ended = !completion.more();
    let Some(connection) = core.connections[slot as usize].as_mut() else {
        return Ok(());
    };
    if ended {
        connection.receive_armed = false;
    }
    match completion.result {
        length if length > 0 => {
            let buffer_id = completion
                .buffer_id()
                .expect("a receive with data names its buffer");
            // SAFETY: the kernel just handed us this buffer and writes to it again only after
            // `recycle` below; the mapping never moves. The slice is detached from the borrow
            // of `core.buffers` so the service can use the core while reading it.
            let bytes: &mut [u8] = unsafe {
                &mut *std::ptr::from_mut(core.buffers.filled(buffer_id, length as usize))
            };
            let outcome = take_in(core, service, slot, bytes);
            core.buffers.recycle(buffer_id);
            if outcome.is_err() {
                core.close(slot)?;
            }
        }
        error if -error == libc::ENOBUFS => core.parked.push(slot),
        _ => core.close(slot)?,
    }
    let rearm = core.connections[slot as usize]
        .as_ref()
        .is_some_and(|c| ended && !c.receive_armed && !c.closing);
    if rearm && completion.result != -libc::ENOBUFS {
        core.arm_receive(slot)?;
    }
    core.free_if_done(slot, service)
}

/// Not a WebSocket peer we serve (bad upgrade, bad frame, a close): close the connection.
struct Refused;

fn take_in(
    core: &mut Core,
    service: &mut impl Service,
    slot: u32,
    bytes: &mut [u8],
) -> Result<(), Refused> {
    let connection = core.connections[slot as usize].as_mut().expect("live");
    if connection.closing {
        return Ok(());
    }
    if !connection.upgraded {
        connection.carry.extend_from_slice(bytes);
        let Some((head_bytes, accept)) = check_request(&connection.carry).map_err(|_| Refused)?
        else {
            return Ok(());
        };
        connection.upgraded = true;
        let mut rest = std::mem::take(&mut connection.carry);
        rest.drain(..head_bytes);
        let mut answer = Vec::with_capacity(160);
        write_switching_protocols(&accept, &mut answer);
        core.send_owned(slot, &answer);
        return frames(core, service, slot, &mut rest);
    }
    if connection.carry.is_empty() {
        return frames(core, service, slot, bytes);
    }
    let mut carry = std::mem::take(&mut connection.carry);
    carry.extend_from_slice(bytes);
    frames(core, service, slot, &mut carry)
}

/// Handles every complete frame in `input` and keeps the partial rest in the carry.
fn frames(
    core: &mut Core,
    service: &mut impl Service,
    slot: u32,
    input: &mut [u8],
) -> Result<(), Refused> {
    let mut offset = 0;
    while offset < input.len() {
        let head = match frame::parse_head(&input[offset..], MESSAGE_BYTES_MAX) {
            Ok(Some(head)) => head,
            Ok(None) => break,
            Err(_) => return Err(Refused),
        };
        let end = offset + head.frame_bytes();
        if end > input.len() {
            break;
        }
        let payload = &mut input[offset + head.head_bytes..end];
        one_frame(core, service, slot, head, payload)?;
        offset = end;
    }
    if let Some(connection) = core.connections[slot as usize].as_mut() {
        connection.carry.extend_from_slice(&input[offset..]);
    }
    Ok(())
}

fn one_frame(
    core: &mut Core,
    service: &mut impl Service,
    slot: u32,
    head: FrameHead,
    payload: &mut [u8],
) -> Result<(), Refused> {
    // Clients must mask, and the floor has no use for fragments.
    let Some(key) = head.mask else {
        return Err(Refused);
    };
    if !head.fin {
        return Err(Refused);
    }
    frame::apply_mask(payload, key);
    match head.opcode {
        frame::TEXT | frame::BINARY => {
            service.message(core, slot, head.opcode == frame::TEXT, payload);
            Ok(())
        }
        frame::PING => {
            let mut pong = Vec::with_capacity(payload.len() + 2);
            frame::write_frame(&mut pong, frame::PONG, payload, None);
            core.send_owned(slot, &pong);
            Ok(())
        }
        frame::PONG => Ok(()),
        _ => Err(Refused),
    }
}

fn sent(core: &mut Core, service: &mut impl Service, slot: u32, result: i32) -> io::Result<()> {
    let Some(connection) = core.connections[slot as usize].as_mut() else {
        return Ok(());
    };
    let mut sending = connection.sending.take().expect("a send completed");
    if result < 0 {
        core.close(slot)?;
        return core.free_if_done(slot, service);
    }
    let (offset, length) = match &mut sending {
        Sending::Owned { offset } => (offset, connection.owned_in_flight.len()),
        Sending::Shared { frame, offset } => (offset, frame.len()),
    };
    *offset += result as usize;
    if *offset < length {
        // A short send: the rest goes out before anything else.
        connection.sending = Some(sending);
        return core.submit_send(slot);
    }
    if matches!(sending, Sending::Owned { .. }) {
        connection.owned_in_flight.clear();
    }
    if connection.outbound.is_empty()
        && !connection.closing
        && let Some(frame) = connection.shared.pop_front()
    {
        // The next queued frame goes out at once, its own SEND, without waiting a turn.
        connection.sending = Some(Sending::Shared { frame, offset: 0 });
        return core.submit_send(slot);
    }
    if !connection.outbound.is_empty() {
        core.list(slot);
    }
    core.free_if_done(slot, service)
}

/// A sparse file table of `slots`, the listener in slot 0, accepted connections in the rest.
fn register_file_table(ring: &Ring, slots: usize, listener_fd: RawFd) -> io::Result<()> {
    let submitter = ring.submitter();
    submitter
        .register_files_sparse(slots as u32)
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "a file table of {slots} slots ({error}): it must fit the soft RLIMIT_NOFILE"
                ),
            )
        })?;
    submitter.register_files_update(LISTENER_SLOT, &[listener_fd])?;
    #[repr(C)]
    struct FileIndexRange {
        offset: u32,
        length: u32,
        reserved: u64,
    }
    let range = FileIndexRange {
        offset: 1,
        length: (slots - 1) as u32,
        reserved: 0,
    };
    // SAFETY: IORING_REGISTER_FILE_ALLOC_RANGE reads one `io_uring_file_index_range` (two u32
    // and a u64, as above) from the pointer, during the call only.
    let result = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring_fd(ring),
            REGISTER_FILE_ALLOC_RANGE,
            &range as *const FileIndexRange,
            0,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ring_fd(ring: &Ring) -> RawFd {
    ring.as_raw_fd()
}
