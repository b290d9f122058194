//! [`Queue`] and [`JoinableQueue`] across hosts: a real shmproc queue on
//! its host, served under a key; remote handles that send and receive by
//! request/reply.
//!
//! # Delivery
//!
//! * **Exactly once while the host lives.** The host pops a message only to
//!   answer one specific receive request, and keeps that answer until the
//!   receiver acknowledges it (a one-way message sent as soon as the answer
//!   arrived, or implicitly by its next receive). A request that got no
//!   answer in time is sent again with the same sequence number, and the
//!   host replays its stored answer instead of popping again; the same holds
//!   for sends (a repeated send is not queued twice) and `task_done`.
//! * **A receiver that dies** (its process killed, its handle dropped)
//!   before acknowledging an answer: the host notices by the receiver's
//!   liveliness token and puts the unacknowledged messages back into the
//!   queue (at the back). They were never delivered to the program (the
//!   acknowledgement leaves as soon as the reply arrives), except in the
//!   window between the reply's arrival and the acknowledgement's
//!   departure: a receiver killed there may have had them and they are
//!   delivered again (at-least-once in that window).
//! * **Back-pressure.** A remote send into a full queue waits on the host
//!   (in slices of 100 ms, asked again until its
//!   timeout), so a full queue blocks or times out the remote sender; no
//!   message is dropped under congestion (zenoh's blocking congestion
//!   control on every request and acknowledgement).
//! * **The host goes away**: remote calls give `Disconnected` (the host's
//!   liveliness token is deleted: at once when its process dies and its TCP
//!   connections close; within the zenoh lease, 10 s by default, when its
//!   machine or network fails). Messages still in the host's queue are lost
//!   with it, unless the host's queue lives in a named segment that
//!   survives (see [`Segment::create_named`](crate::Segment::create_named)).
//! * **A network partition** longer than the lease makes each side think
//!   the other dead: the host re-queues what an unacknowledged receiver held
//!   and forgets its sequence numbers, so a send in flight across the
//!   partition may be queued twice.
//!
//! Batches: [`Queue::send_batch`] and [`Queue::recv_batch`] move many
//! messages per round trip. Every single call is one round trip (measured
//! at about 0.3 ms on loopback on a loaded 2-core machine, against 0.01 to
//! 0.05 ms for a plain TCP queue), so small messages should travel in
//! batches: 1 M `u64` went producer -> host -> consumer in 1.6 s (release)
//! in batches of 4096. Numbers: `cargo bench -p shmproc-benches --features
//! net --bench net`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use zenoh::pubsub::Subscriber;
use zenoh::sample::SampleKind;
use zenoh::Wait;

use super::link::{CallError, HostLink, SLICE};
use super::serve::Server;
use super::wire::{self, Lane, Request, Response};
use super::{millis, NetError, Node};
use crate::message::{decode, encode, Message};
use crate::{RecvError, RecvTimeoutError, SendError, SendTimeoutError, TaskDoneError};

/// Most bytes of messages in one request or reply (a batch is split).
const MAX_BATCH_BYTES: usize = 4 << 20;

/// The local queue a host serves.
enum Local<T: Message> {
    Plain(crate::Queue<T>),
    Joinable(crate::JoinableQueue<T>),
}

impl<T: Message> Local<T> {
    fn send_timeout(&self, v: &T, d: Duration) -> Result<(), SendTimeoutError> {
        match self {
            Local::Plain(q) => q.send_timeout(v, d),
            Local::Joinable(q) => q.send_timeout(v, d),
        }
    }
    fn recv_timeout(&self, d: Duration) -> Result<T, RecvTimeoutError> {
        match self {
            Local::Plain(q) => q.recv_timeout(d),
            Local::Joinable(q) => q.recv_timeout(d),
        }
    }
    fn try_recv(&self) -> Result<T, crate::TryRecvError> {
        match self {
            Local::Plain(q) => q.try_recv(),
            Local::Joinable(q) => q.try_recv(),
        }
    }
}

/// What the host remembers of one lane of one remote handle.
enum Answer {
    /// The request with this sequence number is being served.
    InProgress,
    /// Answered with these bytes (for a receive, they hold the messages
    /// handed out, put back if the receiver dies before acknowledging).
    Answered { reply: Vec<u8> },
    /// The receiver acknowledged the answer.
    Acked,
}

struct Record {
    seq: u64,
    answer: Answer,
}

/// The host's state: the local queue and what it remembers of each lane.
struct Host<T: Message> {
    local: Local<T>,
    records: Mutex<HashMap<u64, Record>>,
}

/// Copies untrusted bytes into an aligned buffer and validates them as a
/// `T`.
fn decode_item<T: Message>(item: &[u8]) -> Result<T, String> {
    let mut a = AlignedVec::<16>::with_capacity(item.len());
    a.extend_from_slice(item);
    decode::<T>(&a).map_err(|e| format!("message failed validation: {e}"))
}

fn lock<V>(m: &Mutex<V>) -> MutexGuard<'_, V> {
    // A panic while holding the lock leaves plain data behind, still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Message + 'static> Host<T> {
    /// Serves one request.
    fn handle(&self, req: Request) -> Response {
        match req {
            Request::Send { client, seq, wait_ms, items } => {
                self.once(client, seq, |h| h.push(&items, Duration::from_millis(wait_ms.into())))
            }
            Request::Recv { client, seq, wait_ms, max } => {
                self.once(client, seq, |h| h.pop(max, Duration::from_millis(wait_ms.into())))
            }
            Request::TaskDone { client, seq, count } => self.once(client, seq, |h| h.task_done(count)),
            Request::Join { wait_ms } => match &self.local {
                Local::Joinable(q) => {
                    if q.join_timeout(Duration::from_millis(wait_ms.into())) {
                        Response::Done
                    } else {
                        Response::NotYet
                    }
                }
                Local::Plain(_) => Response::Rejected { reason: "join on a queue that is not joinable".into() },
            },
            Request::Ack { .. } | Request::Take { .. } | Request::Finish { .. } => {
                Response::Rejected { reason: "not a queue request".into() }
            }
        }
    }

    /// Runs `work` once per `(client, seq)`: a repeat gets the stored
    /// answer (or `Busy` while the first is still being served).
    fn once(&self, client: u64, seq: u64, work: impl FnOnce(&Self) -> Response) -> Response {
        {
            let mut records = lock(&self.records);
            let rec = records.entry(client).or_insert(Record { seq: 0, answer: Answer::Acked });
            if seq == rec.seq {
                return match &rec.answer {
                    Answer::InProgress => Response::Busy,
                    Answer::Answered { reply, .. } => match Response::decode(reply) {
                        Ok(r) => r,
                        Err(e) => Response::Rejected { reason: format!("stored answer: {e}") },
                    },
                    Answer::Acked => Response::Rejected { reason: format!("request {seq} was already answered") },
                };
            }
            if seq < rec.seq {
                return Response::Rejected { reason: format!("stale request {seq} (at {})", rec.seq) };
            }
            // A newer request acknowledges the previous answer.
            rec.seq = seq;
            rec.answer = Answer::InProgress;
        }
        let response = work(self);
        let reply = response.encode();
        let mut records = lock(&self.records);
        match records.get_mut(&client) {
            Some(rec) if rec.seq == seq => {
                rec.answer = Answer::Answered { reply };
            }
            // The handle died (its record was dropped) while this was
            // served: nobody will receive what was popped; put it back.
            _ => {
                drop(records);
                if let Response::Messages { items } = response {
                    self.requeue(items);
                }
                return Response::Rejected { reason: "the requesting handle went away".into() };
            }
        }
        response
    }

    fn push(&self, items: &[Vec<u8>], wait: Duration) -> Response {
        // Every message is validated before any is queued: a batch with a
        // bad message is refused whole.
        let mut values = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match decode_item::<T>(item) {
                Ok(v) => values.push(v),
                Err(e) => return Response::Rejected { reason: format!("message {i}: {e}") },
            }
        }
        let deadline = Instant::now() + wait;
        let mut n: u32 = 0;
        for v in &values {
            match self.local.send_timeout(v, deadline.saturating_duration_since(Instant::now())) {
                Ok(()) => n += 1,
                Err(SendTimeoutError::Timeout) => break,
                Err(SendTimeoutError::Disconnected) if n == 0 => return Response::Closed,
                Err(e) if n == 0 => return Response::Rejected { reason: e.to_string() },
                Err(_) => break,
            }
        }
        Response::Accepted { n }
    }

    fn pop(&self, max: u32, wait: Duration) -> Response {
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let first = match self.local.recv_timeout(wait) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => return Response::NotYet,
            Err(RecvTimeoutError::Disconnected) => return Response::Closed,
            Err(e) => return Response::Rejected { reason: e.to_string() },
        };
        let mut next = Some(first);
        while let Some(v) = next.take() {
            match encode(&v) {
                Ok(b) => {
                    bytes += b.len();
                    items.push(b.to_vec());
                }
                // Not expected (the value was just deserialised); the
                // message cannot travel and is reported, not dropped
                // silently (the ones popped before it are put back).
                Err(e) => {
                    self.requeue(items);
                    return Response::Rejected { reason: format!("re-encoding a message: {e}") };
                }
            }
            if items.len() < max as usize && bytes < MAX_BATCH_BYTES {
                next = self.local.try_recv().ok();
            }
        }
        Response::Messages { items }
    }

    fn task_done(&self, count: u32) -> Response {
        match &self.local {
            Local::Joinable(q) => {
                for _ in 0..count {
                    if q.task_done().is_err() {
                        return Response::TooManyDone;
                    }
                }
                Response::Done
            }
            Local::Plain(_) => Response::Rejected { reason: "task_done on a queue that is not joinable".into() },
        }
    }

    /// An acknowledgement: the answer's messages arrived.
    fn ack(&self, client: u64, seq: u64) {
        let mut records = lock(&self.records);
        if let Some(rec) = records.get_mut(&client) {
            if rec.seq == seq && matches!(rec.answer, Answer::Answered { .. }) {
                rec.answer = Answer::Acked;
            }
        }
    }

    /// A remote handle went away: forget its lanes and put back what it
    /// was handed but never acknowledged.
    fn handle_gone(&self, handle: u64) {
        let mut back = Vec::new();
        {
            let mut records = lock(&self.records);
            for lane in [Lane::Send, Lane::Recv, Lane::Done] {
                if let Some(Record { answer: Answer::Answered { reply }, .. }) =
                    records.remove(&wire::lane_client(handle, lane))
                {
                    if let Ok(Response::Messages { items }) = Response::decode(&reply) {
                        back.extend(items);
                    }
                }
            }
        }
        self.requeue(back);
    }

    /// Puts messages back (at the back of the queue), waiting for room as
    /// long as it takes.
    fn requeue(&self, items: Vec<Vec<u8>>) {
        for item in items {
            if let Ok(v) = decode_item::<T>(&item) {
                while let Err(SendTimeoutError::Timeout) = self.local.send_timeout(&v, SLICE) {}
            }
        }
    }
}

/// The keys of one queue.
struct Keys {
    query: String,
    ack: String,
    host_token: String,
    clients: String,
}

impl Keys {
    fn new(node: &Node, name: &str) -> Result<Keys, NetError> {
        super::node::check_key_path(name)?;
        Ok(Keys {
            query: node.key("q", name, "rq"),
            ack: node.key("q", name, "ack"),
            host_token: node.key("q", name, "host"),
            clients: node.key("q", name, "c"),
        })
    }
}

/// What a host keeps alive: the server, the watchers, the token.
struct Serving<T: Message> {
    host: Arc<Host<T>>,
    _server: Server,
    _acks: Subscriber<()>,
    _clients: Subscriber<()>,
    _token: zenoh::liveliness::LivelinessToken,
}

fn serve<T: Message + Send + 'static>(node: &Node, name: &str, local: Local<T>) -> Result<Serving<T>, NetError>
where
    Local<T>: Send + Sync,
{
    let keys = Keys::new(node, name)?;
    let host = Arc::new(Host { local, records: Mutex::new(HashMap::new()) });
    let h = host.clone();
    let server = Server::start(&node.session, keys.query.clone(), Arc::new(move |req| h.handle(req)))?;
    let h = host.clone();
    let acks = node
        .session
        .declare_subscriber(keys.ack.clone())
        .callback(move |sample| {
            // Anything but a well-formed acknowledgement is ignored.
            if let Ok(Request::Ack { client, seq }) = Request::decode(&sample.payload().to_bytes()) {
                h.ack(client, seq);
            }
        })
        .wait()
        .map_err(NetError::zenoh)?;
    let h = host.clone();
    let clients = node
        .session
        .liveliness()
        .declare_subscriber(format!("{}/*", keys.clients))
        .history(true)
        .callback(move |sample| {
            if sample.kind() != SampleKind::Delete {
                return;
            }
            let Some(id) = sample.key_expr().as_str().rsplit('/').next().and_then(|s| u64::from_str_radix(s, 16).ok())
            else {
                return;
            };
            // Putting messages back may wait for room: not on zenoh's
            // callback thread.
            let h = h.clone();
            let _ = std::thread::Builder::new().name("shmproc-net-requeue".into()).spawn(move || h.handle_gone(id));
        })
        .wait()
        .map_err(NetError::zenoh)?;
    let token = node.session.liveliness().declare_token(keys.host_token).wait().map_err(NetError::zenoh)?;
    Ok(Serving { host, _server: server, _acks: acks, _clients: clients, _token: token })
}

/// One lane's next sequence number (the last one answered + 1 is sent).
struct LaneSeq(Mutex<u64>);

/// A remote handle's connection.
struct Remote {
    link: HostLink,
    handle: u64,
    ack_key: String,
    send: LaneSeq,
    recv: LaneSeq,
    done: LaneSeq,
}

impl Remote {
    fn connect(node: &Node, name: &str, timeout: Duration) -> Result<Remote, NetError> {
        let keys = Keys::new(node, name)?;
        let handle = super::node::fresh_id() & !3;
        let token = format!("{}/{handle:x}", keys.clients);
        let link = HostLink::open(node, keys.host_token, keys.query, Some(token), timeout)?;
        Ok(Remote {
            link,
            handle,
            ack_key: keys.ack,
            send: LaneSeq(Mutex::new(0)),
            recv: LaneSeq(Mutex::new(0)),
            done: LaneSeq(Mutex::new(0)),
        })
    }

    /// One answered request on a lane: the lane is held for the whole
    /// exchange, and its sequence number advances only once answered.
    fn request(&self, lane: Lane, wait: Duration, make: impl Fn(u64, u64) -> Request) -> Result<Response, CallError> {
        let seqs = match lane {
            Lane::Send => &self.send,
            Lane::Recv => &self.recv,
            Lane::Done => &self.done,
        };
        let mut seq = lock(&seqs.0);
        let next = *seq + 1;
        let client = wire::lane_client(self.handle, lane);
        let r = self.link.call(&make(client, next), wait)?;
        *seq = next;
        if lane == Lane::Recv && matches!(r, Response::Messages { .. }) {
            // Received: the host may forget the answer. A lost
            // acknowledgement is implied by the next receive.
            let _ = self.link.put(&self.ack_key, &Request::Ack { client, seq: next });
        }
        Ok(r)
    }

    /// Sends `items` (encoded), waiting for room until `deadline` (`None`:
    /// as long as it takes); the number sent.
    fn send_items(&self, items: &[Vec<u8>], deadline: Option<Instant>) -> Result<usize, SendTimeoutError> {
        let mut sent = 0usize;
        while sent < items.len() {
            let mut end = sent;
            let mut bytes = 0usize;
            while end < items.len() && end - sent < wire::MAX_BATCH as usize && (end == sent || bytes < MAX_BATCH_BYTES)
            {
                bytes += items.get(end).map_or(0, Vec::len);
                end += 1;
            }
            let chunk = items.get(sent..end).unwrap_or(&[]).to_vec();
            let wait = slice_until(deadline);
            let r = self
                .request(Lane::Send, wait, |client, seq| Request::Send {
                    client,
                    seq,
                    wait_ms: millis(wait),
                    items: chunk.clone(),
                })
                .map_err(send_call_error)?;
            match r {
                Response::Accepted { n } => {
                    let chunk_len = end - sent;
                    let n = (n as usize).min(chunk_len);
                    sent += n;
                    if n < chunk_len && deadline.is_some_and(|d| Instant::now() >= d) {
                        return if sent == 0 { Err(SendTimeoutError::Timeout) } else { Ok(sent) };
                    }
                }
                Response::Closed => return Err(SendTimeoutError::Disconnected),
                Response::Rejected { reason } => return Err(SendTimeoutError::Corrupt { reason }),
                other => return Err(SendTimeoutError::Corrupt { reason: format!("unexpected reply {other:?}") }),
            }
        }
        Ok(sent)
    }

    /// Receives up to `max` encoded messages, waiting until `deadline`.
    fn recv_items(&self, max: u32, deadline: Option<Instant>) -> Result<Vec<Vec<u8>>, RecvTimeoutError> {
        loop {
            let wait = slice_until(deadline);
            let r = self
                .request(Lane::Recv, wait, |client, seq| Request::Recv { client, seq, wait_ms: millis(wait), max })
                .map_err(recv_call_error)?;
            match r {
                Response::Messages { items } if !items.is_empty() => return Ok(items),
                Response::Messages { .. } | Response::NotYet => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(RecvTimeoutError::Timeout);
                    }
                }
                Response::Closed => return Err(RecvTimeoutError::Disconnected),
                Response::Rejected { reason } => return Err(RecvTimeoutError::Corrupt { reason }),
                other => return Err(RecvTimeoutError::Corrupt { reason: format!("unexpected reply {other:?}") }),
            }
        }
    }
}

/// The wait to ask the host for: a slice, or what is left before the
/// deadline if that is shorter.
fn slice_until(deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
        None => SLICE,
    }
}

fn send_call_error(e: CallError) -> SendTimeoutError {
    match e {
        CallError::HostGone | CallError::Zenoh(_) => SendTimeoutError::Disconnected,
        CallError::Wire(w) => SendTimeoutError::Corrupt { reason: format!("reply from the host: {w}") },
    }
}

fn recv_call_error(e: CallError) -> RecvTimeoutError {
    match e {
        CallError::HostGone | CallError::Zenoh(_) => RecvTimeoutError::Disconnected,
        CallError::Wire(w) => RecvTimeoutError::Corrupt { reason: format!("reply from the host: {w}") },
    }
}

fn to_send_error(e: SendTimeoutError) -> SendError {
    match e {
        SendTimeoutError::Timeout | SendTimeoutError::Disconnected => SendError::Disconnected,
        SendTimeoutError::TooLarge { size, limit } => SendError::TooLarge { size, limit },
        SendTimeoutError::Serialize { reason } => SendError::Serialize { reason },
        SendTimeoutError::NoSpace { size } => SendError::NoSpace { size },
        SendTimeoutError::Reentered => SendError::Reentered,
        SendTimeoutError::Corrupt { reason } => SendError::Corrupt { reason },
    }
}

fn to_recv_error(e: RecvTimeoutError) -> RecvError {
    match e {
        RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected => RecvError::Disconnected,
        RecvTimeoutError::Reentered => RecvError::Reentered,
        RecvTimeoutError::Corrupt { reason } => RecvError::Corrupt { reason },
    }
}

fn encode_all<T: Message>(values: &[T]) -> Result<Vec<Vec<u8>>, SendTimeoutError> {
    values
        .iter()
        .map(|v| {
            let b = encode(v).map_err(|e| SendTimeoutError::Serialize { reason: e.to_string() })?;
            if !wire::item_len_ok(b.len()) {
                return Err(SendTimeoutError::TooLarge { size: b.len(), limit: u32::MAX as usize });
            }
            Ok(b.to_vec())
        })
        .collect()
}

fn decode_all<T: Message>(items: &[Vec<u8>]) -> Result<Vec<T>, RecvTimeoutError> {
    items.iter().map(|i| decode_item::<T>(i).map_err(|reason| RecvTimeoutError::Corrupt { reason })).collect()
}

enum Side<T: Message> {
    Host(Serving<T>),
    Remote(Remote),
}

/// The operations both queue types share, on either side.
struct Core<T: Message> {
    side: Side<T>,
}

impl<T: Message + 'static> Core<T> {
    fn send_timeout_opt(&self, value: &T, deadline: Option<Instant>) -> Result<(), SendTimeoutError> {
        match &self.side {
            Side::Host(s) => match deadline {
                Some(d) => s.host.local.send_timeout(value, d.saturating_duration_since(Instant::now())),
                None => match &s.host.local {
                    Local::Plain(q) => q.send(value).map_err(send_error_to_timeout),
                    Local::Joinable(q) => q.send(value).map_err(send_error_to_timeout),
                },
            },
            Side::Remote(r) => {
                let items = encode_all(std::slice::from_ref(value))?;
                match r.send_items(&items, deadline)? {
                    0 => Err(SendTimeoutError::Timeout),
                    _ => Ok(()),
                }
            }
        }
    }

    fn send_batch_opt(&self, values: &[T], deadline: Option<Instant>) -> Result<usize, SendTimeoutError> {
        match &self.side {
            Side::Host(_) => {
                let mut n = 0;
                for v in values {
                    match self.send_timeout_opt(v, deadline) {
                        Ok(()) => n += 1,
                        Err(SendTimeoutError::Timeout) if n > 0 => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(n)
            }
            Side::Remote(r) => {
                let items = encode_all(values)?;
                match r.send_items(&items, deadline)? {
                    0 if !values.is_empty() => Err(SendTimeoutError::Timeout),
                    n => Ok(n),
                }
            }
        }
    }

    fn recv_batch_opt(&self, max: usize, deadline: Option<Instant>) -> Result<Vec<T>, RecvTimeoutError> {
        let max = u32::try_from(max.max(1)).unwrap_or(u32::MAX).min(wire::MAX_BATCH);
        match &self.side {
            Side::Host(s) => {
                let first = match deadline {
                    Some(d) => s.host.local.recv_timeout(d.saturating_duration_since(Instant::now()))?,
                    None => match &s.host.local {
                        Local::Plain(q) => q.recv().map_err(recv_error_to_timeout)?,
                        Local::Joinable(q) => q.recv().map_err(recv_error_to_timeout)?,
                    },
                };
                let mut out = vec![first];
                while out.len() < max as usize {
                    match s.host.local.try_recv() {
                        Ok(v) => out.push(v),
                        Err(_) => break,
                    }
                }
                Ok(out)
            }
            Side::Remote(r) => decode_all(&r.recv_items(max, deadline)?),
        }
    }
}

fn send_error_to_timeout(e: SendError) -> SendTimeoutError {
    match e {
        SendError::Disconnected => SendTimeoutError::Disconnected,
        SendError::TooLarge { size, limit } => SendTimeoutError::TooLarge { size, limit },
        SendError::Serialize { reason } => SendTimeoutError::Serialize { reason },
        SendError::NoSpace { size } => SendTimeoutError::NoSpace { size },
        SendError::Reentered => SendTimeoutError::Reentered,
        SendError::Corrupt { reason } => SendTimeoutError::Corrupt { reason },
    }
}

fn recv_error_to_timeout(e: RecvError) -> RecvTimeoutError {
    match e {
        RecvError::Disconnected => RecvTimeoutError::Disconnected,
        RecvError::Reentered => RecvTimeoutError::Reentered,
        RecvError::Corrupt { reason } => RecvTimeoutError::Corrupt { reason },
    }
}

macro_rules! queue_methods {
    () => {
        /// Whether this handle is the host (it owns the local queue).
        #[must_use]
        pub fn is_host(&self) -> bool {
            matches!(self.core.side, Side::Host(_))
        }

        /// Sends `value`, waiting for room as long as it takes.
        ///
        /// # Errors
        ///
        /// As the local queue's [`send`](crate::Queue::send); from a remote
        /// handle also `Disconnected` when the host went away, and
        /// `Corrupt` when the host refused the message (it failed
        /// validation there) or answered with bad bytes.
        pub fn send(&self, value: &T) -> Result<(), SendError> {
            self.core.send_timeout_opt(value, None).map_err(to_send_error)
        }

        /// Sends `value`, waiting for room at most `timeout`.
        ///
        /// # Errors
        ///
        /// As [`send`](Self::send), and `Timeout` when the queue stayed
        /// full (the message was not queued).
        pub fn send_timeout(&self, value: &T, timeout: Duration) -> Result<(), SendTimeoutError> {
            self.core.send_timeout_opt(value, Some(Instant::now() + timeout))
        }

        /// Sends all of `values` in order, many per round trip, waiting for
        /// room as long as it takes.
        ///
        /// # Errors
        ///
        /// As [`send`](Self::send). On an error, a prefix of `values` may
        /// have been queued.
        pub fn send_batch(&self, values: &[T]) -> Result<(), SendError> {
            self.core.send_batch_opt(values, None).map(drop).map_err(to_send_error)
        }

        /// Receives a message, waiting as long as it takes.
        ///
        /// # Errors
        ///
        /// As the local queue's [`recv`](crate::Queue::recv); from a remote
        /// handle `Disconnected` also when the host went away.
        pub fn recv(&self) -> Result<T, RecvError> {
            let mut v = self.core.recv_batch_opt(1, None).map_err(to_recv_error)?;
            v.pop().ok_or(RecvError::Corrupt { reason: "an empty batch".into() })
        }

        /// Receives a message, waiting at most `timeout`.
        ///
        /// # Errors
        ///
        /// As [`recv`](Self::recv), and `Timeout` when the queue stayed
        /// empty.
        pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
            let mut v = self.core.recv_batch_opt(1, Some(Instant::now() + timeout))?;
            v.pop().ok_or(RecvTimeoutError::Corrupt { reason: "an empty batch".into() })
        }

        /// Receives between 1 and `max` messages in one round trip, in
        /// queue order, waiting at most `timeout` for the first.
        ///
        /// # Errors
        ///
        /// As [`recv_timeout`](Self::recv_timeout).
        pub fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<T>, RecvTimeoutError> {
            self.core.recv_batch_opt(max, Some(Instant::now() + timeout))
        }
    };
}

/// A [`Queue`](crate::Queue) served to other hosts: on its host, a real
/// shmproc queue (local processes use it as usual); elsewhere, a handle
/// that sends and receives through the host. Delivery guarantees: the
/// [module docs](self).
///
/// ```no_run
/// use std::time::Duration;
/// use shmproc::net::{Node, Queue};
///
/// // On the host:
/// let node = Node::builder().listen("tcp/0.0.0.0:7447").open()?;
/// let q = Queue::serve(&node, "jobs", shmproc::Queue::<u64>::bounded(1024)?)?;
///
/// // On another machine:
/// let node = Node::builder().connect("tcp/10.0.0.5:7447").open()?;
/// let q = Queue::<u64>::connect(&node, "jobs", Duration::from_secs(10))?;
/// q.send(&42)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T: Message> {
    core: Core<T>,
}

impl<T: Message> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("net::Queue").field("host", &matches!(self.core.side, Side::Host(_))).finish()
    }
}

impl<T: Message + Send + 'static> Queue<T>
where
    crate::Queue<T>: Send + Sync,
{
    /// Serves `local` under `name` from this node: remote handles on other
    /// nodes (same prefix) reach it by [`connect`](Self::connect). This
    /// handle is the host: its calls go straight to `local`. Dropping it
    /// stops serving (remote handles get `Disconnected`).
    ///
    /// # Errors
    ///
    /// [`NetError::BadName`] for a name that is not key chunks
    /// (`[A-Za-z0-9_-]`, `/`-separated), [`NetError::Zenoh`] when zenoh
    /// refuses a declaration.
    pub fn serve(node: &Node, name: &str, local: crate::Queue<T>) -> Result<Queue<T>, NetError> {
        Ok(Queue { core: Core { side: Side::Host(serve(node, name, Local::Plain(local))?) } })
    }

    /// A remote handle to the queue served under `name`, waiting up to
    /// `timeout` for its host to be seen.
    ///
    /// # Errors
    ///
    /// [`NetError::HostNotFound`] when no host was seen in time.
    pub fn connect(node: &Node, name: &str, timeout: Duration) -> Result<Queue<T>, NetError> {
        Ok(Queue { core: Core { side: Side::Remote(Remote::connect(node, name, timeout)?) } })
    }

    /// The local queue, on the host.
    #[must_use]
    pub fn local(&self) -> Option<&crate::Queue<T>> {
        match &self.core.side {
            Side::Host(Serving { host, .. }) => match &host.local {
                Local::Plain(q) => Some(q),
                Local::Joinable(_) => None,
            },
            Side::Remote(_) => None,
        }
    }

    queue_methods!();
}

/// A [`JoinableQueue`](crate::JoinableQueue) served to other hosts:
/// [`Queue`]'s sending and receiving, plus `task_done` and `join` from
/// anywhere.
///
/// ```no_run
/// use std::time::Duration;
/// use shmproc::net::{JoinableQueue, Node};
///
/// let node = Node::builder().connect("tcp/10.0.0.5:7447").open()?;
/// let q = JoinableQueue::<u64>::connect(&node, "work", Duration::from_secs(10))?;
/// let job = q.recv()?;
/// // ... work on it ...
/// q.task_done()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JoinableQueue<T: Message> {
    core: Core<T>,
}

impl<T: Message> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("net::JoinableQueue").field("host", &matches!(self.core.side, Side::Host(_))).finish()
    }
}

impl<T: Message + Send + 'static> JoinableQueue<T>
where
    crate::JoinableQueue<T>: Send + Sync,
{
    /// Serves `local` under `name` (see [`Queue::serve`]).
    ///
    /// # Errors
    ///
    /// As [`Queue::serve`].
    pub fn serve(node: &Node, name: &str, local: crate::JoinableQueue<T>) -> Result<JoinableQueue<T>, NetError> {
        Ok(JoinableQueue { core: Core { side: Side::Host(serve(node, name, Local::Joinable(local))?) } })
    }

    /// A remote handle (see [`Queue::connect`]).
    ///
    /// # Errors
    ///
    /// As [`Queue::connect`].
    pub fn connect(node: &Node, name: &str, timeout: Duration) -> Result<JoinableQueue<T>, NetError> {
        Ok(JoinableQueue { core: Core { side: Side::Remote(Remote::connect(node, name, timeout)?) } })
    }

    /// The local queue, on the host.
    #[must_use]
    pub fn local(&self) -> Option<&crate::JoinableQueue<T>> {
        match &self.core.side {
            Side::Host(Serving { host, .. }) => match &host.local {
                Local::Joinable(q) => Some(q),
                Local::Plain(_) => None,
            },
            Side::Remote(_) => None,
        }
    }

    queue_methods!();

    /// Marks one received item as processed (Python's `task_done`).
    ///
    /// # Errors
    ///
    /// [`NetError::TaskDone`] when called more often than items were
    /// queued; [`NetError::HostGone`] when the host went away.
    pub fn task_done(&self) -> Result<(), NetError> {
        match &self.core.side {
            Side::Host(s) => match &s.host.local {
                Local::Joinable(q) => q.task_done().map_err(NetError::TaskDone),
                Local::Plain(_) => Err(NetError::TaskDone(TaskDoneError)),
            },
            Side::Remote(r) => {
                match r
                    .request(Lane::Done, Duration::ZERO, |client, seq| Request::TaskDone { client, seq, count: 1 })
                    .map_err(NetError::from_call)?
                {
                    Response::Done => Ok(()),
                    Response::TooManyDone => Err(NetError::TaskDone(TaskDoneError)),
                    other => Err(NetError::Protocol { reason: format!("unexpected reply {other:?}") }),
                }
            }
        }
    }

    /// Waits until every item queued so far was marked done.
    ///
    /// # Errors
    ///
    /// [`NetError::HostGone`] when the host went away (remote handles).
    pub fn join(&self) -> Result<(), NetError> {
        while !self.join_timeout(SLICE)? {}
        Ok(())
    }

    /// [`join`](Self::join) for at most `timeout`: whether all was done.
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, NetError> {
        match &self.core.side {
            Side::Host(s) => match &s.host.local {
                Local::Joinable(q) => Ok(q.join_timeout(timeout)),
                Local::Plain(_) => Ok(true),
            },
            Side::Remote(r) => {
                let deadline = Instant::now() + timeout;
                loop {
                    let wait = slice_until(Some(deadline));
                    match r.link.call(&Request::Join { wait_ms: millis(wait) }, wait).map_err(NetError::from_call)? {
                        Response::Done => return Ok(true),
                        Response::NotYet if Instant::now() >= deadline => return Ok(false),
                        Response::NotYet => {}
                        other => return Err(NetError::Protocol { reason: format!("unexpected reply {other:?}") }),
                    }
                }
            }
        }
    }
}
