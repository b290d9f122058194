//! [`Node`]: one zenoh session in peer mode, with explicit endpoints and a
//! key prefix under which every queue and pool of this crate lives.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use zenoh::Wait;

use super::NetError;

/// A zenoh session in peer mode: the process's door to the other hosts.
///
/// Built with explicit `listen` / `connect` endpoints (zenoh locators such
/// as `tcp/10.0.0.5:7447`); multicast scouting is off, so a node finds
/// exactly the peers it is told about (and the peers those know, by
/// zenoh's gossip). Every key this crate declares starts with the node's
/// prefix (default `shmproc`), so unrelated applications on the same zenoh
/// network do not meet.
///
/// Open a node **after** forking (or start children with spawn or the fork
/// server): zenoh runs a tokio runtime with threads, and a fork copies only
/// the calling thread (see the [module docs](super)).
///
/// ```no_run
/// let host = shmproc::net::Node::builder().listen("tcp/0.0.0.0:7447").open()?;
/// let worker = shmproc::net::Node::builder().connect("tcp/10.0.0.5:7447").open()?;
/// # Ok::<(), shmproc::net::NetError>(())
/// ```
pub struct Node {
    pub(crate) session: zenoh::Session,
    prefix: String,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node").field("prefix", &self.prefix).field("zid", &self.session.zid()).finish()
    }
}

/// How a [`Node`] is opened: endpoints and key prefix.
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct NodeBuilder {
    listen: Vec<String>,
    connect: Vec<String>,
    prefix: Option<String>,
}

impl NodeBuilder {
    /// Listens on `endpoint` (e.g. `tcp/0.0.0.0:7447`). May be repeated.
    pub fn listen(mut self, endpoint: impl Into<String>) -> Self {
        self.listen.push(endpoint.into());
        self
    }

    /// Connects to the peer at `endpoint` (retried in the background while
    /// it is not up yet). May be repeated.
    pub fn connect(mut self, endpoint: impl Into<String>) -> Self {
        self.connect.push(endpoint.into());
        self
    }

    /// The key prefix (default `shmproc`): only nodes with the same prefix
    /// see each other's queues and pools. One or more chunks of
    /// `[A-Za-z0-9_-]` separated by `/`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Opens the session.
    ///
    /// # Errors
    ///
    /// [`NetError::BadName`] for a bad prefix, [`NetError::Zenoh`] when an
    /// endpoint is malformed or cannot be listened on.
    pub fn open(self) -> Result<Node, NetError> {
        let prefix = self.prefix.unwrap_or_else(|| "shmproc".to_owned());
        check_key_path(&prefix)?;
        let mut config = zenoh::Config::default();
        let json = |v: &[String]| -> Result<String, NetError> {
            let quoted: Vec<String> = v.iter().map(|s| json_string(s)).collect::<Result<_, _>>()?;
            Ok(format!("[{}]", quoted.join(",")))
        };
        let set = |c: &mut zenoh::Config, k: &str, v: &str| {
            c.insert_json5(k, v).map_err(|e| NetError::Zenoh { reason: format!("config {k}: {e}") })
        };
        set(&mut config, "mode", "\"peer\"")?;
        set(&mut config, "scouting/multicast/enabled", "false")?;
        set(&mut config, "listen/endpoints", &json(&self.listen)?)?;
        set(&mut config, "connect/endpoints", &json(&self.connect)?)?;
        let session = zenoh::open(config).wait().map_err(NetError::zenoh)?;
        Ok(Node { session, prefix })
    }
}

/// A JSON string literal for an endpoint; endpoints with quotes or
/// backslashes are refused rather than escaped.
fn json_string(s: &str) -> Result<String, NetError> {
    if s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(NetError::BadName { name: s.to_owned() });
    }
    Ok(format!("\"{s}\""))
}

/// Checks a name made of key chunks: `[A-Za-z0-9_-]+` separated by `/`.
pub(crate) fn check_key_path(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.split('/').all(|chunk| {
            !chunk.is_empty() && chunk.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(NetError::BadName { name: name.to_owned() })
    }
}

impl Node {
    /// A builder: endpoints and prefix.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key `prefix/kind/name/rest`.
    pub(crate) fn key(&self, kind: &str, name: &str, rest: &str) -> String {
        format!("{}/{kind}/{name}/{rest}", self.prefix)
    }

    /// The underlying zenoh session, for applications that also use zenoh
    /// directly.
    #[must_use]
    pub fn session(&self) -> &zenoh::Session {
        &self.session
    }
}

/// A fresh 64-bit id for a remote handle or worker: unique per process
/// (a counter) and, with high probability, across processes and hosts
/// (pid, time and std's random hash keys mixed in).
pub(crate) fn fresh_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    h.write_u128(nanos);
    // Never 0: 0 means "no id" on the wire.
    h.finish() | 1
}
