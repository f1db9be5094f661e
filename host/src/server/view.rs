//! REST's view of the engine: answers to [`Query`]s, asked of the engine
//! thread and shared between handlers.
//!
//! REST never locks the engine's state: it asks the engine thread, which
//! answers between two inputs. To keep a hundred clients polling the same
//! view from costing the engine a hundred answers, identical queries share
//! one: an answer is reused while the engine has applied no input since,
//! and for at most [`REUSE`] while it is busy; concurrent identical queries
//! wait for the same answer. Large responses (a window's history) are
//! rendered once per version of the data they show, off the engine thread
//! and one at a time, and served to every client that asks the same.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

use crate::runner::{Answer, Queries, Query, Stats};

/// How long an answer is reused while the engine is busy: a dashboard
/// polling every second sees data at most this old; a crowd of pollers
/// costs the engine at most one answer per view per this interval.
pub const REUSE: Duration = Duration::from_millis(50);

/// How long a handler waits for the engine thread (busy with a slow plugin,
/// say) before answering 503.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

type Pending = Shared<BoxFuture<'static, Option<Arc<Answer>>>>;

enum Entry {
    Ready {
        at: Instant,
        inputs: u64,
        answer: Arc<Answer>,
    },
    Pending(Pending),
}

/// Rendered responses kept for reuse, at most: each is one URL's answer
/// at one version of what it shows.
pub const RENDERED_ENTRIES: usize = 256;

/// Shared answers; cheap to clone.
#[derive(Clone)]
pub struct View {
    queries: Queries,
    stats: Arc<Stats>,
    entries: Arc<Mutex<HashMap<Query, Entry>>>,
    /// Response bodies by request, with the version of the data they show.
    rendered: Arc<Mutex<HashMap<String, (u64, Bytes)>>>,
    /// One render at a time: however many clients ask for large views,
    /// rendering them takes at most one core from ingest.
    render: Arc<tokio::sync::Semaphore>,
    /// One large response on the wire at a time (see [`View::send`]).
    sending: Arc<tokio::sync::Semaphore>,
    /// Their pace (`server.large_response_bytes_per_s`).
    bytes_per_s: u64,
}

/// Responses at least this large are sent one at a time: a crowd of clients
/// reading large views then shares one connection's worth of CPU, and
/// ingest keeps the rest, instead of every server thread copying bodies.
pub const LARGE_RESPONSE_BYTES: usize = 256 * 1024;

/// The pieces a large response is handed to the connection in, so its turn
/// ends when the last piece is taken.
const PIECE_BYTES: usize = 256 * 1024;

impl View {
    /// A view asking through `queries`; `stats.inputs` tells whether the
    /// engine moved on.
    pub fn new(queries: Queries, stats: Arc<Stats>, large_response_bytes_per_s: u64) -> View {
        View {
            queries,
            stats,
            entries: Arc::default(),
            rendered: Arc::default(),
            render: Arc::new(tokio::sync::Semaphore::new(1)),
            sending: Arc::new(tokio::sync::Semaphore::new(1)),
            bytes_per_s: large_response_bytes_per_s.max(1),
        }
    }

    /// A response body for `bytes`: a small one as it is; a large one waits
    /// its turn (one on the wire at a time), is handed over in pieces at
    /// most `server.large_response_bytes_per_s` fast, and holds the turn
    /// until the connection has taken its last piece.
    pub async fn send(&self, bytes: Bytes) -> axum::body::Body {
        if bytes.len() < LARGE_RESPONSE_BYTES {
            return axum::body::Body::from(bytes);
        }
        let permit = self.sending.clone().acquire_owned().await.ok();
        let piece_time = Duration::from_secs_f64(PIECE_BYTES as f64 / self.bytes_per_s as f64);
        let started = tokio::time::Instant::now();
        let stream = futures_util::stream::unfold(
            (bytes, 0usize, permit),
            move |(bytes, at, permit)| async move {
                if at >= bytes.len() {
                    // The turn ends with the state.
                    return None;
                }
                // Pace: piece n goes no sooner than n piece-times in.
                let n = u32::try_from(at / PIECE_BYTES).unwrap_or(u32::MAX);
                tokio::time::sleep_until(started + piece_time * n).await;
                let end = (at + PIECE_BYTES).min(bytes.len());
                let piece = bytes.slice(at..end);
                Some((
                    Ok::<_, std::convert::Infallible>(piece),
                    (bytes, end, permit),
                ))
            },
        );
        axum::body::Body::from_stream(stream)
    }

    /// The response body for request `key` of data at `version`: the one
    /// rendered before if the data has not changed since, else `render`'s
    /// (run on a blocking worker, one at a time).
    pub async fn rendered(
        &self,
        key: String,
        version: u64,
        render: impl FnOnce() -> Vec<u8> + Send + 'static,
    ) -> Bytes {
        let cached = |m: &Mutex<HashMap<String, (u64, Bytes)>>| {
            let m = m.lock().unwrap_or_else(PoisonError::into_inner);
            m.get(&key)
                .filter(|(v, _)| *v == version)
                .map(|(_, b)| b.clone())
        };
        if let Some(b) = cached(&self.rendered) {
            return b;
        }
        // A closed semaphore cannot happen (it is never closed); render
        // without the permit rather than fail if it ever did.
        let _permit = self.render.acquire().await.ok();
        // Someone may have rendered it while this request waited.
        if let Some(b) = cached(&self.rendered) {
            return b;
        }
        let body = Bytes::from(
            tokio::task::spawn_blocking(render)
                .await
                .unwrap_or_default(),
        );
        let mut m = self.rendered.lock().unwrap_or_else(PoisonError::into_inner);
        if m.len() >= RENDERED_ENTRIES {
            m.clear();
        }
        m.insert(key, (version, body.clone()));
        body
    }

    /// The answer to `q`: shared if fresh enough, else asked. `None` if the
    /// engine did not answer within [`ANSWER_TIMEOUT`].
    pub async fn get(&self, q: Query) -> Option<Arc<Answer>> {
        let inputs = self.stats.inputs.load(Ordering::Acquire);
        let pending = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            match entries.get(&q) {
                Some(Entry::Ready {
                    at,
                    inputs: seen,
                    answer,
                }) if *seen == inputs || at.elapsed() < REUSE => return Some(answer.clone()),
                Some(Entry::Pending(p)) => p.clone(),
                _ => {
                    let queries = self.queries.clone();
                    let asked = q.clone();
                    let p = async move { queries.ask(asked).await.map(Arc::new) }
                        .boxed()
                        .shared();
                    entries.insert(q.clone(), Entry::Pending(p.clone()));
                    p
                }
            }
        };
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, pending)
            .await
            .ok()
            .flatten();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match &answer {
            Some(a) => {
                entries.insert(
                    q,
                    Entry::Ready {
                        at: Instant::now(),
                        inputs,
                        answer: a.clone(),
                    },
                );
            }
            // Ask again next time rather than wait on a stuck answer.
            None => {
                entries.remove(&q);
            }
        }
        answer
    }
}
