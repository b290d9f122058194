//! The host's side of request/reply: one zenoh queryable whose queries are
//! handed to small pools of serving threads, one pool per class of request
//! so that a long wait of one class (a receive waiting for a message) never
//! holds up another (a send that would fill it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use zenoh::query::{Query, Queryable};
use zenoh::Wait;

use super::wire::{Request, Response};
use super::NetError;

/// The request classes, each with its own threads.
pub(crate) const CLASSES: usize = 3;
/// Serving threads per class.
const THREADS_PER_CLASS: usize = 2;

/// The class of a request, from its kind byte (an unknown or short request
/// goes to the last class, whose decoding refuses it).
fn class_of(bytes: &[u8]) -> usize {
    match bytes.get(2) {
        Some(0x01) => 0,        // send
        Some(0x02 | 0x11) => 1, // receive, take
        _ => 2,                 // everything else
    }
}

/// A queryable and its serving threads; dropping it undeclares the
/// queryable and joins the threads (each finishes the request it holds).
pub(crate) struct Server {
    queryable: Option<Queryable<()>>,
    senders: Vec<mpsc::Sender<Query>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Serves `key` with `handle`, called on a serving thread with each
    /// decoded request; a request that does not decode is answered with
    /// [`Response::Rejected`] and never reaches `handle`.
    pub(crate) fn start(
        session: &zenoh::Session,
        key: String,
        handle: Arc<dyn Fn(Request) -> Response + Send + Sync>,
    ) -> Result<Server, NetError> {
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        let stop = Arc::new(AtomicBool::new(false));
        for class in 0..CLASSES {
            let (tx, rx) = mpsc::channel::<Query>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..THREADS_PER_CLASS {
                let (rx, handle) = (rx.clone(), handle.clone());
                let stop = stop.clone();
                let t = std::thread::Builder::new()
                    .name(format!("shmproc-net-{class}-{i}"))
                    .spawn(move || loop {
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        // The lock only hands out the next query; it is
                        // released before the query is served.
                        let next = match rx.lock() {
                            Ok(guard) => guard.recv_timeout(Duration::from_millis(50)),
                            Err(_) => return,
                        };
                        let query = match next {
                            Ok(q) => q,
                            Err(mpsc::RecvTimeoutError::Timeout) => continue,
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        };
                        let bytes = query.payload().map(|p| p.to_bytes().into_owned()).unwrap_or_default();
                        let response = match Request::decode(&bytes) {
                            Ok(req) => handle(req),
                            Err(e) => Response::Rejected { reason: format!("bad request: {e}") },
                        };
                        // A requester that went away cannot be answered;
                        // nothing else to do about it here.
                        let _ = query.reply(query.key_expr().clone(), response.encode()).express(true).wait();
                    })
                    .map_err(|e| NetError::Zenoh { reason: format!("serving thread: {e}") })?;
                threads.push(t);
            }
            senders.push(tx);
        }
        let txs = senders.clone();
        let queryable = session
            .declare_queryable(key)
            .callback(move |query| {
                let class = query.payload().map_or(CLASSES - 1, |p| class_of(&p.to_bytes()));
                if let Some(tx) = txs.get(class) {
                    let _ = tx.send(query);
                }
            })
            .wait();
        let queryable = match queryable {
            Ok(q) => q,
            Err(e) => {
                // The threads see the flag and end.
                stop.store(true, Ordering::Release);
                return Err(NetError::zenoh(e));
            }
        };
        Ok(Server { queryable: Some(queryable), senders, threads, stop })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(q) = self.queryable.take() {
            let _ = q.undeclare().wait();
        }
        self.senders.clear();
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
