//! The bytes on the wire: requests and replies of [`Queue`](super::Queue),
//! [`JoinableQueue`](super::JoinableQueue) and [`Pool`](super::Pool), and
//! their checked decoding.
//!
//! Everything received from the network is untrusted: [`Request::decode`]
//! and [`Response::decode`] check the magic byte, the version, the kind,
//! every length against the bytes that are really there and against fixed
//! limits, and UTF-8 where text is expected, and give a [`WireError`] for
//! anything else; they never panic and never allocate more than the input's
//! size. The messages themselves (rkyv archives of the queue's `T`, a task's
//! argument and result) travel as opaque byte strings here and are validated
//! with `bytecheck` by whoever deserialises them.
//!
//! Layout, all integers little-endian: `[MAGIC, VERSION, kind, fields...]`;
//! a byte string is a `u32` length and the bytes; a list is a `u32` count
//! and its items.

use std::fmt;

/// First byte of every request and reply.
pub(crate) const MAGIC: u8 = 0xD5;
/// Second byte: the protocol version.
pub(crate) const VERSION: u8 = 1;
/// Most items in one batch (send, receive).
pub(crate) const MAX_BATCH: u32 = 1 << 16;
/// Longest text (a function name, a reason).
pub(crate) const MAX_TEXT: u32 = 4096;

/// Why bytes from the network were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the layout needs.
    Truncated,
    /// Bytes left over after a complete message.
    Trailing,
    /// Not this protocol (first byte).
    BadMagic(u8),
    /// Another version of this protocol.
    BadVersion(u8),
    /// A kind byte this version does not know.
    BadKind(u8),
    /// A count or length over its limit.
    TooLong {
        /// What was announced.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// Text that is not UTF-8.
    BadText,
    /// A tag byte out of its range.
    BadFlag(u8),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => write!(f, "truncated message"),
            WireError::Trailing => write!(f, "trailing bytes after the message"),
            WireError::BadMagic(b) => write!(f, "not a shmproc::net message (first byte {b:#04x})"),
            WireError::BadVersion(v) => write!(f, "protocol version {v}, expected {VERSION}"),
            WireError::BadKind(k) => write!(f, "unknown message kind {k:#04x}"),
            WireError::TooLong { len, limit } => write!(f, "length {len} over the limit {limit}"),
            WireError::BadText => write!(f, "text that is not UTF-8"),
            WireError::BadFlag(b) => write!(f, "tag byte {b} out of range"),
        }
    }
}

impl std::error::Error for WireError {}

/// The three independent request streams of one remote queue handle: each
/// has its own sequence numbers, so a retried request is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    Send = 0,
    Recv = 1,
    Done = 2,
}

/// A request from a remote handle or a worker to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Push `items` (archives of `T`), waiting up to `wait_ms` for room.
    Send { client: u64, seq: u64, wait_ms: u32, items: Vec<Vec<u8>> },
    /// Pop up to `max` messages, waiting up to `wait_ms` for the first.
    Recv { client: u64, seq: u64, wait_ms: u32, max: u32 },
    /// The reply to `seq` of the receive lane arrived.
    Ack { client: u64, seq: u64 },
    /// `count` calls of `task_done`.
    TaskDone { client: u64, seq: u64, count: u32 },
    /// Wait up to `wait_ms` for every task to be done.
    Join { wait_ms: u32 },
    /// A worker asks for a task, waiting up to `wait_ms`.
    Take { worker: u64, seq: u64, wait_ms: u32 },
    /// A worker reports the outcome of `task`.
    Finish { worker: u64, task: u64, outcome: Outcome },
}

/// What running a task gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The result's archive.
    Ok(Vec<u8>),
    /// The function failed (its error, or a panic's message).
    Failed(String),
    /// The worker has no function of that name.
    Unknown(String),
}

/// A reply from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    /// The first `n` items of a send were queued.
    Accepted { n: u32 },
    /// Messages popped for a receive (at least one).
    Messages { items: Vec<Vec<u8>> },
    /// Nothing within the wait (receive: empty; join: not all done; take:
    /// no task).
    NotYet,
    /// The queue was closed (or the pool shut down).
    Closed,
    /// The request was refused: bad bytes, a bad message, a duplicate.
    Rejected { reason: String },
    /// Done (task_done counted, join complete, outcome recorded).
    Done,
    /// `task_done` called more often than items were queued.
    TooManyDone,
    /// The same request is still being served: ask again.
    Busy,
    /// A task for a worker: its id, function name and argument.
    Task { task: u64, name: String, arg: Vec<u8> },
    /// The worker is not (yet) known to the host as alive: ask again.
    UnknownWorker,
}

mod kind {
    pub const SEND: u8 = 0x01;
    pub const RECV: u8 = 0x02;
    pub const ACK: u8 = 0x03;
    pub const TASK_DONE: u8 = 0x04;
    pub const JOIN: u8 = 0x05;
    pub const TAKE: u8 = 0x11;
    pub const FINISH: u8 = 0x12;

    pub const ACCEPTED: u8 = 0x81;
    pub const MESSAGES: u8 = 0x82;
    pub const NOT_YET: u8 = 0x83;
    pub const CLOSED: u8 = 0x84;
    pub const REJECTED: u8 = 0x85;
    pub const DONE: u8 = 0x86;
    pub const TOO_MANY_DONE: u8 = 0x87;
    pub const BUSY: u8 = 0x88;
    pub const TASK: u8 = 0x91;
    pub const UNKNOWN_WORKER: u8 = 0x92;
}

/// Appends fields to an output buffer.
struct Out(Vec<u8>);

impl Out {
    fn new(kind: u8, capacity: usize) -> Out {
        let mut v = Vec::with_capacity(capacity + 3);
        v.extend_from_slice(&[MAGIC, VERSION, kind]);
        Out(v)
    }
    fn u8(&mut self, x: u8) -> &mut Self {
        self.0.push(x);
        self
    }
    fn u32(&mut self, x: u32) -> &mut Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(&mut self, x: u64) -> &mut Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // Lengths are u32 on the wire; the encoders are only given items
        // that the senders checked against `u32::MAX` (`item_len_ok`).
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
        self
    }
    fn items(&mut self, items: &[Vec<u8>]) -> &mut Self {
        self.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
        for i in items {
            self.bytes(i);
        }
        self
    }
}

/// Whether an item can be sent at all (its length fits the wire's `u32`).
pub(crate) fn item_len_ok(len: usize) -> bool {
    u32::try_from(len).is_ok()
}

/// Reads fields from untrusted input, checking every length.
struct In<'a> {
    rest: &'a [u8],
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let len = self.u32()?;
        // A length past the input is truncation, whatever it claims.
        Ok(self.take(len as usize)?.to_vec())
    }
    fn text(&mut self) -> Result<String, WireError> {
        let len = self.u32()?;
        if len > MAX_TEXT {
            return Err(WireError::TooLong { len: len.into(), limit: MAX_TEXT.into() });
        }
        let b = self.take(len as usize)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::BadText)
    }
    fn items(&mut self) -> Result<Vec<Vec<u8>>, WireError> {
        let n = self.u32()?;
        if n > MAX_BATCH {
            return Err(WireError::TooLong { len: n.into(), limit: MAX_BATCH.into() });
        }
        // Each item needs at least its 4-byte length: a count the input
        // cannot hold is refused before anything is allocated for it.
        if (n as usize).saturating_mul(4) > self.rest.len() {
            return Err(WireError::Truncated);
        }
        let mut v = Vec::with_capacity(n as usize);
        for _ in 0..n {
            v.push(self.bytes()?);
        }
        Ok(v)
    }
    fn end(&self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing)
        }
    }
}

/// Checks the header and returns the kind and a reader for the fields.
fn header(bytes: &[u8]) -> Result<(u8, In<'_>), WireError> {
    let mut r = In { rest: bytes };
    let magic = r.u8()?;
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    let kind = r.u8()?;
    Ok((kind, r))
}

/// The client id of a queue lane: the handle's id with the lane in the two
/// low bits (handle ids are multiples of 4).
pub(crate) fn lane_client(handle: u64, lane: Lane) -> u64 {
    (handle & !3) | lane as u64
}

impl Request {
    /// The bytes of this request.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Request::Send { client, seq, wait_ms, items } => {
                let size: usize = items.iter().map(|i| i.len() + 4).sum();
                let mut o = Out::new(kind::SEND, 24 + size);
                o.u64(*client).u64(*seq).u32(*wait_ms).items(items);
                o.0
            }
            Request::Recv { client, seq, wait_ms, max } => {
                let mut o = Out::new(kind::RECV, 24);
                o.u64(*client).u64(*seq).u32(*wait_ms).u32(*max);
                o.0
            }
            Request::Ack { client, seq } => {
                let mut o = Out::new(kind::ACK, 16);
                o.u64(*client).u64(*seq);
                o.0
            }
            Request::TaskDone { client, seq, count } => {
                let mut o = Out::new(kind::TASK_DONE, 20);
                o.u64(*client).u64(*seq).u32(*count);
                o.0
            }
            Request::Join { wait_ms } => {
                let mut o = Out::new(kind::JOIN, 4);
                o.u32(*wait_ms);
                o.0
            }
            Request::Take { worker, seq, wait_ms } => {
                let mut o = Out::new(kind::TAKE, 20);
                o.u64(*worker).u64(*seq).u32(*wait_ms);
                o.0
            }
            Request::Finish { worker, task, outcome } => {
                let body = match outcome {
                    Outcome::Ok(b) => b.len(),
                    Outcome::Failed(s) | Outcome::Unknown(s) => s.len(),
                };
                let mut o = Out::new(kind::FINISH, 21 + body);
                o.u64(*worker).u64(*task);
                match outcome {
                    Outcome::Ok(b) => o.u8(0).bytes(b),
                    Outcome::Failed(s) => o.u8(1).bytes(truncate_text(s).as_bytes()),
                    Outcome::Unknown(s) => o.u8(2).bytes(truncate_text(s).as_bytes()),
                };
                o.0
            }
        }
    }

    /// Decodes and checks a request.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Request, WireError> {
        let (k, mut r) = header(bytes)?;
        let req = match k {
            kind::SEND => Request::Send { client: r.u64()?, seq: r.u64()?, wait_ms: r.u32()?, items: r.items()? },
            kind::RECV => {
                let (client, seq, wait_ms, max) = (r.u64()?, r.u64()?, r.u32()?, r.u32()?);
                if max > MAX_BATCH {
                    return Err(WireError::TooLong { len: max.into(), limit: MAX_BATCH.into() });
                }
                Request::Recv { client, seq, wait_ms, max }
            }
            kind::ACK => Request::Ack { client: r.u64()?, seq: r.u64()? },
            kind::TASK_DONE => Request::TaskDone { client: r.u64()?, seq: r.u64()?, count: r.u32()? },
            kind::JOIN => Request::Join { wait_ms: r.u32()? },
            kind::TAKE => Request::Take { worker: r.u64()?, seq: r.u64()?, wait_ms: r.u32()? },
            kind::FINISH => {
                let (worker, task) = (r.u64()?, r.u64()?);
                let outcome = match r.u8()? {
                    0 => Outcome::Ok(r.bytes()?),
                    1 => Outcome::Failed(r.text()?),
                    2 => Outcome::Unknown(r.text()?),
                    b => return Err(WireError::BadFlag(b)),
                };
                Request::Finish { worker, task, outcome }
            }
            other => return Err(WireError::BadKind(other)),
        };
        r.end()?;
        Ok(req)
    }
}

/// `s` cut to at most [`MAX_TEXT`] bytes, at a character boundary.
pub(crate) fn truncate_text(s: &str) -> &str {
    let mut end = s.len().min(MAX_TEXT as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

impl Response {
    /// The bytes of this reply.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Response::Accepted { n } => {
                let mut o = Out::new(kind::ACCEPTED, 4);
                o.u32(*n);
                o.0
            }
            Response::Messages { items } => {
                let size: usize = items.iter().map(|i| i.len() + 4).sum();
                let mut o = Out::new(kind::MESSAGES, 4 + size);
                o.items(items);
                o.0
            }
            Response::NotYet => Out::new(kind::NOT_YET, 0).0,
            Response::Closed => Out::new(kind::CLOSED, 0).0,
            Response::Rejected { reason } => {
                let mut o = Out::new(kind::REJECTED, reason.len() + 4);
                o.bytes(truncate_text(reason).as_bytes());
                o.0
            }
            Response::Done => Out::new(kind::DONE, 0).0,
            Response::TooManyDone => Out::new(kind::TOO_MANY_DONE, 0).0,
            Response::Busy => Out::new(kind::BUSY, 0).0,
            Response::Task { task, name, arg } => {
                let mut o = Out::new(kind::TASK, 16 + name.len() + arg.len());
                o.u64(*task).bytes(truncate_text(name).as_bytes()).bytes(arg);
                o.0
            }
            Response::UnknownWorker => Out::new(kind::UNKNOWN_WORKER, 0).0,
        }
    }

    /// Decodes and checks a reply.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Response, WireError> {
        let (k, mut r) = header(bytes)?;
        let resp = match k {
            kind::ACCEPTED => Response::Accepted { n: r.u32()? },
            kind::MESSAGES => Response::Messages { items: r.items()? },
            kind::NOT_YET => Response::NotYet,
            kind::CLOSED => Response::Closed,
            kind::REJECTED => Response::Rejected { reason: r.text()? },
            kind::DONE => Response::Done,
            kind::TOO_MANY_DONE => Response::TooManyDone,
            kind::BUSY => Response::Busy,
            kind::TASK => Response::Task { task: r.u64()?, name: r.text()?, arg: r.bytes()? },
            kind::UNKNOWN_WORKER => Response::UnknownWorker,
            other => return Err(WireError::BadKind(other)),
        };
        r.end()?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests() -> Vec<Request> {
        vec![
            Request::Send { client: 4, seq: 1, wait_ms: 100, items: vec![vec![1, 2, 3], vec![]] },
            Request::Recv { client: 5, seq: 2, wait_ms: 0, max: 64 },
            Request::Ack { client: 5, seq: 2 },
            Request::TaskDone { client: 6, seq: 3, count: 2 },
            Request::Join { wait_ms: 50 },
            Request::Take { worker: 9, seq: 1, wait_ms: 100 },
            Request::Finish { worker: 9, task: 7, outcome: Outcome::Ok(vec![8; 8]) },
            Request::Finish { worker: 9, task: 7, outcome: Outcome::Failed("boom".into()) },
            Request::Finish { worker: 9, task: 7, outcome: Outcome::Unknown("cube".into()) },
        ]
    }

    fn responses() -> Vec<Response> {
        vec![
            Response::Accepted { n: 3 },
            Response::Messages { items: vec![vec![0; 8], vec![1]] },
            Response::NotYet,
            Response::Closed,
            Response::Rejected { reason: "bad".into() },
            Response::Done,
            Response::TooManyDone,
            Response::Busy,
            Response::Task { task: 1, name: "square".into(), arg: vec![2; 8] },
            Response::UnknownWorker,
        ]
    }

    #[test]
    fn round_trips() {
        for r in requests() {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
        for r in responses() {
            assert_eq!(Response::decode(&r.encode()), Ok(r));
        }
    }

    /// Every prefix of every valid message, every single-byte change and
    /// random bytes give an error or a valid value: never a panic.
    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut all: Vec<Vec<u8>> = requests().iter().map(Request::encode).collect();
        all.extend(responses().iter().map(Response::encode));
        for bytes in &all {
            for cut in 0..bytes.len() {
                assert!(Request::decode(&bytes[..cut]).is_err());
                assert!(Response::decode(&bytes[..cut]).is_err());
            }
            for i in 0..bytes.len() {
                for x in [0u8, 1, 0x7f, 0xff] {
                    let mut b = bytes.clone();
                    b[i] ^= x;
                    let _ = Request::decode(&b);
                    let _ = Response::decode(&b);
                }
            }
        }
        for r in requests() {
            let mut longer = r.encode();
            longer.push(0);
            assert_eq!(Request::decode(&longer), Err(WireError::Trailing));
        }
        for r in responses() {
            let mut longer = r.encode();
            longer.push(0);
            assert_eq!(Response::decode(&longer), Err(WireError::Trailing));
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..2000usize {
            let mut b = vec![MAGIC, VERSION];
            for _ in 0..len % 64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            let _ = Request::decode(&b);
            let _ = Response::decode(&b);
        }
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut b = vec![MAGIC, VERSION, kind::MESSAGES];
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Response::decode(&b), Err(WireError::TooLong { len: u32::MAX.into(), limit: MAX_BATCH.into() }));
        let mut b = vec![MAGIC, VERSION, kind::MESSAGES];
        b.extend_from_slice(&1000u32.to_le_bytes());
        assert_eq!(Response::decode(&b), Err(WireError::Truncated));
        assert_eq!(Request::decode(&[0x00, VERSION]), Err(WireError::BadMagic(0)));
        assert_eq!(Request::decode(&[MAGIC, 9, 1]), Err(WireError::BadVersion(9)));
        assert_eq!(Request::decode(&[MAGIC, VERSION, 0x70]), Err(WireError::BadKind(0x70)));
    }
}
