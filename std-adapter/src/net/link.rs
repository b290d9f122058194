//! The remote side's connection to a host: request/reply over a zenoh
//! query, the host's liveliness watched, and retries that keep a request's
//! sequence number so the host can recognise them.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zenoh::liveliness::LivelinessToken;
use zenoh::pubsub::Subscriber;
use zenoh::qos::CongestionControl;
use zenoh::query::{ConsolidationMode, QueryTarget};
use zenoh::sample::SampleKind;
use zenoh::Wait;

use super::wire::{Request, Response, WireError};
use super::{NetError, Node};

/// How long the host may take to answer beyond the wait a request asked
/// for, before the request is sent again (with the same sequence number,
/// so the host replays its answer instead of acting twice).
pub(crate) const REPLY_MARGIN: Duration = Duration::from_secs(5);

/// Longest wait one request asks the host for: a longer wait is a loop of
/// requests, so the host's serving threads are never held long and a dead
/// host is noticed between them.
pub(crate) const SLICE: Duration = Duration::from_millis(100);

const UNKNOWN: u8 = 0;
const ALIVE: u8 = 1;
const GONE: u8 = 2;

/// Why a call to the host ended without an answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The host's liveliness token went away.
    HostGone,
    /// The host answered with bytes that are not a valid reply.
    Wire(WireError),
    /// zenoh refused the query.
    Zenoh(String),
}

/// A connection to one host object (queue or pool).
pub(crate) struct HostLink {
    session: zenoh::Session,
    query_key: String,
    state: Arc<AtomicU8>,
    _watch: Subscriber<()>,
    _token: Option<LivelinessToken>,
}

impl HostLink {
    /// Watches the host's liveliness token at `host_token` and waits up to
    /// `timeout` for it to be there; declares `own_token` (this handle's
    /// liveliness, which the host watches) first.
    pub(crate) fn open(
        node: &Node,
        host_token: String,
        query_key: String,
        own_token: Option<String>,
        timeout: Duration,
    ) -> Result<HostLink, NetError> {
        let session = node.session.clone();
        let token = match own_token {
            Some(k) => Some(session.liveliness().declare_token(k).wait().map_err(NetError::zenoh)?),
            None => None,
        };
        let state = Arc::new(AtomicU8::new(UNKNOWN));
        let s = state.clone();
        let watch = session
            .liveliness()
            .declare_subscriber(host_token)
            .history(true)
            .callback(move |sample| {
                // Once gone, gone: a new host under the same name is a new
                // queue, and this handle's sequence numbers mean nothing to
                // it.
                let next = match sample.kind() {
                    SampleKind::Put => ALIVE,
                    SampleKind::Delete => GONE,
                };
                let _ = s.fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| (cur != GONE).then_some(next));
            })
            .wait()
            .map_err(NetError::zenoh)?;
        let link = HostLink { session, query_key, state, _watch: watch, _token: token };
        let deadline = Instant::now() + timeout;
        loop {
            match link.state.load(Ordering::Acquire) {
                ALIVE => return Ok(link),
                GONE => return Err(NetError::HostGone),
                _ if Instant::now() >= deadline => return Err(NetError::HostNotFound),
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// Whether the host's liveliness token went away.
    pub(crate) fn host_gone(&self) -> bool {
        self.state.load(Ordering::Acquire) == GONE
    }

    /// One query: `Ok(None)` when no reply came (none within the wait plus
    /// [`REPLY_MARGIN`], or no queryable matched yet).
    fn call_once(&self, req: &[u8], wait: Duration) -> Result<Option<Response>, CallError> {
        let replies = self
            .session
            .get(&self.query_key)
            .payload(req.to_vec())
            .target(QueryTarget::BestMatching)
            .consolidation(ConsolidationMode::None)
            .congestion_control(CongestionControl::Block)
            // Sent at once, not held back to be batched with others.
            .express(true)
            .timeout(wait + REPLY_MARGIN)
            .wait()
            .map_err(|e| CallError::Zenoh(e.to_string()))?;
        while let Ok(reply) = replies.recv() {
            match reply.result() {
                Ok(sample) => {
                    let bytes = sample.payload().to_bytes();
                    return Response::decode(&bytes).map(Some).map_err(CallError::Wire);
                }
                // An error reply (zenoh's own, e.g. a timeout notice): no
                // answer from the host.
                Err(_) => continue,
            }
        }
        Ok(None)
    }

    /// Sends `req` until the host answers it (anything but `Busy`) or goes
    /// away. The same bytes are sent each time, so the host recognises a
    /// repeat by its sequence number and never acts twice.
    pub(crate) fn call(&self, req: &Request, wait: Duration) -> Result<Response, CallError> {
        let bytes = req.encode();
        let mut backoff = Duration::from_micros(200);
        loop {
            if self.host_gone() {
                return Err(CallError::HostGone);
            }
            match self.call_once(&bytes, wait)? {
                Some(Response::Busy) | None => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(20));
                }
                Some(r) => return Ok(r),
            }
        }
    }

    /// A one-way message to `key` (reliable, blocking under congestion
    /// rather than dropped).
    pub(crate) fn put(&self, key: &str, req: &Request) -> Result<(), CallError> {
        self.session
            .put(key, req.encode())
            .congestion_control(CongestionControl::Block)
            .express(true)
            .wait()
            .map_err(|e| CallError::Zenoh(e.to_string()))
    }
}
