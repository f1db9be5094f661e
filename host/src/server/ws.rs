//! `GET /v1/ws`: the WebSocket protocol.
//!
//! Client → server (JSON text frames):
//! `{"type":"subscribe","channel":"events","filter":{..},"fields":[..],"since":N}`,
//! `{"type":"unsubscribe","channel":"events"}`, `{"type":"ping","id":..}`.
//!
//! Server → client: `welcome`, `subscribed`, `unsubscribed`, `pong`,
//! `heartbeat`, `error`, and `{"type":"message","channel":..,"seq":N,"data":..}`.
//!
//! Each connection has a reader (client messages, idle timeout, heartbeats),
//! one forwarder task per subscription (reads the hub, filters, projects) and
//! one writer that owns the socket. Everything the client sees goes through
//! the writer's queue in order, so a `subscribed` ack precedes its messages
//! and an error precedes the close that follows it.
//!
//! Close codes: [`CLOSE_SLOW`] when the client fell too far behind or a write
//! to it stalled longer than `streams.send_timeout_ms` (the reason and a
//! preceding `error` message carry the last sequence number sent per
//! channel, so the client can resume with `since`), [`CLOSE_IDLE`] when the
//! client was silent for `streams.idle_timeout_ms`, 1001 when the server
//! shuts down, 1009 when a client message exceeds `streams.max_message_bytes`.
//!
//! A stalled client's socket buffers are full, so its error message and close
//! frame can only reach it once it reads again. The server stops sending it
//! messages and drops its subscriptions at once, but keeps the connection
//! open for up to `streams.idle_timeout_ms` (the time after which a silent
//! client is given up anyway) with the error and the close queued behind the
//! messages already sent: a client that resumes reading within that time
//! gets every message it was sent, then the error and the close naming the
//! last of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::AppState;
use super::api;
use super::auth::Access;
use super::streams::{ConnectionGuard, Feed, FeedEnd, SubscribeRequest};

/// Close code: the client could not keep up.
pub const CLOSE_SLOW: u16 = 4008;
/// Close code: the client sent nothing for `streams.idle_timeout_ms`.
pub const CLOSE_IDLE: u16 = 4001;
/// Close code: a client message exceeded `streams.max_message_bytes`.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: the server is shutting down.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Items queued for the writer. Small, since the hub is the real buffer:
/// channel messages travel in batches of up to a hub read, so a connection
/// holds at most a few batches outside the hub.
const WRITER_QUEUE: usize = 8;
/// Time allowed for the goodbye (error message, close frame) once a client
/// is being closed, unless it stalled.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Frames written per flush, at least: one syscall for many small messages.
const FLUSH_EVERY: usize = 256;

enum Out {
    /// A control message (error, pong, heartbeat).
    Text(String),
    /// A subscription's ack. Until its first message, the client has
    /// everything on `channel` up to `after`.
    Subscribed {
        ack: String,
        channel: Arc<str>,
        after: u64,
    },
    /// The reply to an unsubscribe, built by the writer, which knows the
    /// last seq it wrote on `channel`.
    Unsubscribed {
        channel: String,
    },
    /// Channel messages, in seq order.
    Messages {
        channel: Arc<str>,
        frames: Vec<(u64, Utf8Bytes)>,
    },
    Ping,
    /// Close with this code and reason.
    Close {
        code: u16,
        reason: String,
    },
}

/// Upgrade to a WebSocket after the read-key and connection-limit checks.
#[utoipa::path(
    get,
    path = "/v1/ws",
    operation_id = "websocket",
    tag = "streams",
    summary = "WebSocket subscriptions",
    description = "One connection, many channels: `subscribe` (channel, since, filters), \
                   `unsubscribe`, `ping`; see docs/api.md (Channels, WebSocket and SSE).",
    responses(
        (status = 101, description = "Switching protocols"),
        api::ReadDenied,
        (status = 503, description = "Unavailable (shutting down, or streams.max_connections reached)",
         body = api::Error),
    )
)]
pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(e) = state.keys.check_request(Access::Read, &headers, &query) {
        return e.into_response();
    }
    let guard = match ConnectionGuard::acquire(&state) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let max = usize::try_from(state.config.streams.max_message_bytes).unwrap_or(usize::MAX);
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection(state, socket, guard))
}

async fn connection(state: AppState, socket: WebSocket, _guard: ConnectionGuard) {
    let id = format!("c{}", state.next_connection.fetch_add(1, Ordering::Relaxed));
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel::<Out>(WRITER_QUEUE);
    let streams = &state.config.streams;
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        streams.send_timeout,
        streams.idle_timeout,
        state.hub.clone(),
    ));
    let _ = tx
        .send(Out::Text(
            json!({
                "type": "welcome",
                "connection_id": id,
                "channels": state.hub.channels().into_iter().map(|c| c.name).collect::<Vec<_>>(),
                "heartbeat_ms": streams.heartbeat.as_millis() as u64,
                "client_queue": streams.client_queue,
            })
            .to_string(),
        ))
        .await;

    let mut subs: Subs = HashMap::new();
    let mut heartbeat = tokio::time::interval(streams.heartbeat);
    heartbeat.tick().await;
    let mut shutdown = state.shutdown.clone();
    // One deadline, pushed back only when the client sends something: the
    // heartbeat must not reset it.
    let idle = tokio::time::sleep(streams.idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            () = &mut idle => {
                let _ = tx.send(Out::Close {
                    code: CLOSE_IDLE,
                    reason: format!("idle for {} ms", streams.idle_timeout.as_millis()),
                }).await;
                break;
            }
            incoming = stream.next() => {
                idle.as_mut().reset(tokio::time::Instant::now() + streams.idle_timeout);
                let frame = match incoming {
                    Some(Err(e)) => {
                        // Tell a client whose message was over the limit why
                        // it is being closed; other read errors mean it is gone.
                        if is_too_big(e) {
                            let _ = tx.send(Out::Close {
                                code: CLOSE_TOO_BIG,
                                reason: format!("message larger than {} bytes", streams.max_message_bytes),
                            }).await;
                        }
                        break;
                    }
                    None | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(frame)) => frame,
                };
                let reply = match frame {
                    Message::Text(text) => handle(&state, &tx, &mut subs, text.as_str()).await,
                    Message::Binary(_) => Some(error("bad_request", "binary frames are not supported; send JSON text", None)),
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) => None,
                };
                if let Some(reply) = reply && tx.send(Out::Text(reply.to_string())).await.is_err() {
                    break;
                }
            }
            _ = heartbeat.tick() => {
                // The heartbeat carries each subscription's position, so a
                // client with a selective filter can resume from there
                // rather than from its last matching message.
                let positions: serde_json::Map<String, Value> = subs
                    .iter()
                    .map(|(c, (_, sent))| (c.clone(), json!(sent.load(Ordering::Relaxed))))
                    .collect();
                let beat = json!({"type": "heartbeat", "time": super::now_ms(), "last_seq": positions}).to_string();
                if tx.send(Out::Text(beat)).await.is_err() || tx.send(Out::Ping).await.is_err() {
                    break;
                }
            }
            () = super::shutting_down(&mut shutdown) => {
                // Forwarders finish what the hub holds, then the writer closes.
                for (_, (task, _)) in subs.drain() {
                    let _ = task.await;
                }
                let _ = tx.send(Out::Close { code: CLOSE_GOING_AWAY, reason: "server shutting down".into() }).await;
                break;
            }
            () = tx.closed() => break,
        }
    }
    for (_, (task, _)) in subs.drain() {
        task.abort();
    }
    drop(tx);
    // The writer ends after the close frame (or when the client is gone).
    let _ = writer.await;
    // Then read until the client answers the close (or goes), so that the
    // connection ends after the client has read everything, rather than with
    // a reset that could discard what it has not read yet.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(frame)) = stream.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Live subscriptions of a connection: the forwarder and the last sequence
/// number it handed to the writer.
type Subs = HashMap<String, (JoinHandle<()>, Arc<AtomicU64>)>;

fn is_too_big(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    matches!(
        e.into_inner().downcast::<Error>().map(|b| *b),
        Ok(Error::Capacity(_))
    )
}

fn error(code: &str, message: impl Into<String>, request: Option<&Value>) -> Value {
    let mut v = json!({"type": "error", "code": code, "message": message.into()});
    if let Some(r) = request {
        v["request"] = r.clone();
    }
    v
}

/// Handle one client message; the reply, if any, goes out after anything
/// the handler already queued.
async fn handle(
    state: &AppState,
    tx: &mpsc::Sender<Out>,
    subs: &mut Subs,
    text: &str,
) -> Option<Value> {
    let msg: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return Some(error(
                "bad_request",
                "a message must be a JSON object",
                None,
            ));
        }
        Err(e) => return Some(error("bad_request", format!("not JSON: {e}"), None)),
    };
    let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "ping" => {
            Some(json!({"type": "pong", "id": msg.get("id").cloned().unwrap_or(Value::Null)}))
        }
        "subscribe" => {
            let req = match SubscribeRequest::from_json(&msg) {
                Ok(r) => r,
                Err(e) => return Some(error("bad_request", e, Some(&msg))),
            };
            if let Some((task, _)) = subs.get(&req.channel)
                && !task.is_finished()
            {
                return Some(error(
                    "already_subscribed",
                    format!(
                        "already subscribed to `{}`; unsubscribe first to change the filter",
                        req.channel
                    ),
                    Some(&msg),
                ));
            }
            let feed = match Feed::open(state, &req) {
                Ok(f) => f,
                Err(e) => {
                    let mut v = error(e.code, e.message, Some(&msg));
                    if let Value::Object(extra) = e.details {
                        for (k, val) in extra {
                            v[k] = val;
                        }
                    }
                    return Some(v);
                }
            };
            let ack = json!({
                "type": "subscribed",
                "channel": req.channel,
                "head": feed.head(),
                "since": req.since,
            });
            // The ack must precede the first message: queue it before the
            // forwarder exists.
            let subscribed = Out::Subscribed {
                ack: ack.to_string(),
                channel: Arc::from(req.channel.as_str()),
                after: feed.last_delivered(),
            };
            if tx.send(subscribed).await.is_err() {
                return None;
            }
            let sent = Arc::new(AtomicU64::new(feed.last_delivered()));
            let task = tokio::spawn(forward(
                feed,
                tx.clone(),
                sent.clone(),
                state.shutdown.clone(),
            ));
            subs.insert(req.channel, (task, sent));
            None
        }
        "unsubscribe" => {
            let channel = msg.get("channel").and_then(Value::as_str).unwrap_or("");
            match subs.remove(channel) {
                Some((task, _)) => {
                    // Wait until the forwarder has stopped, so that nothing
                    // of this subscription follows the reply.
                    task.abort();
                    let _ = task.await;
                    // The writer answers, after the messages already queued,
                    // with the last seq it wrote.
                    let _ = tx
                        .send(Out::Unsubscribed {
                            channel: channel.to_owned(),
                        })
                        .await;
                    None
                }
                None => Some(error(
                    "not_subscribed",
                    format!("not subscribed to `{channel}`"),
                    Some(&msg),
                )),
            }
        }
        "" => Some(error(
            "bad_request",
            "missing `type`; expected subscribe, unsubscribe or ping",
            Some(&msg),
        )),
        other => Some(error(
            "unknown_type",
            format!("unknown message type `{other}`; expected subscribe, unsubscribe or ping"),
            Some(&msg),
        )),
    }
}

/// Move one subscription's messages into the writer's queue.
async fn forward(
    mut feed: Feed,
    tx: mpsc::Sender<Out>,
    sent: Arc<AtomicU64>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let channel: Arc<str> = Arc::from(feed.channel());
    loop {
        let batch = tokio::select! {
            b = feed.next_frames() => b,
            () = super::shutting_down(&mut shutdown) => feed.drain_now(),
        };
        let (frames, done) = match batch {
            Ok(frames) => (frames, false),
            Err(FeedEnd::Drained { frames }) => (frames, true),
            Err(FeedEnd::Lagged { last_delivered }) => {
                sent.store(last_delivered, Ordering::Relaxed);
                let mut msg = error(
                    "slow_consumer",
                    format!(
                        "this client fell more than streams.client_queue messages behind on \
                         `{channel}`; closing. Resubscribe with since = last_seq to resume"
                    ),
                    None,
                );
                msg["channel"] = json!(&*channel);
                msg["last_seq"] = json!(last_delivered);
                let _ = tx.send(Out::Text(msg.to_string())).await;
                let reason = format!("slow consumer; last_seq {channel}={last_delivered}");
                let _ = tx
                    .send(Out::Close {
                        code: CLOSE_SLOW,
                        reason,
                    })
                    .await;
                return;
            }
        };
        // One queue item per batch: a wake-up of the writer per batch, not
        // per message.
        if !frames.is_empty() {
            let batch = Out::Messages {
                channel: channel.clone(),
                frames,
            };
            if tx.send(batch).await.is_err() {
                return;
            }
        }
        // Filtered-out messages count as seen: resuming skips them too.
        sent.store(feed.last_delivered(), Ordering::Relaxed);
        if done {
            return;
        }
    }
}

/// Own the socket: write what is queued, flushing after every
/// [`FLUSH_EVERY`] frames or when the queue is empty, each flush within
/// `send_timeout`.
///
/// A client whose socket accepts nothing for that long is stalled: the
/// writer stops taking from its queue (which ends the connection's
/// subscriptions) and queues the slow-consumer error and a [`CLOSE_SLOW`]
/// close naming the last seq written per channel, behind everything already
/// written, then waits up to `stall_linger` for the client to read them.
async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Out>,
    send_timeout: Duration,
    stall_linger: Duration,
    hub: crate::hub::Hub,
) {
    // Last seq written (handed to the socket, in order), per channel.
    let mut last: Vec<(Arc<str>, u64)> = Vec::new();
    let mut close: Option<(u16, String)> = None;
    let mut goodbye: Option<String> = None;
    let mut linger = CLOSE_GRACE;
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let written = tokio::time::timeout(send_timeout, async {
            let mut n = 0;
            while let Some(out) = next.take() {
                match out {
                    Out::Text(t) => {
                        sink.feed(Message::Text(t.into())).await?;
                        n += 1;
                    }
                    Out::Ping => {
                        sink.feed(Message::Ping(Default::default())).await?;
                        n += 1;
                    }
                    Out::Subscribed {
                        ack,
                        channel,
                        after,
                    } => {
                        sink.feed(Message::Text(ack.into())).await?;
                        let i = set_last(&mut last, channel, after);
                        last[i].1 = after;
                        n += 1;
                    }
                    Out::Unsubscribed { channel } => {
                        let at = last.iter().position(|(c, _)| **c == *channel);
                        let seq = at.map(|i| last.swap_remove(i).1);
                        let reply =
                            json!({"type": "unsubscribed", "channel": channel, "last_seq": seq});
                        sink.feed(Message::Text(reply.to_string().into())).await?;
                        n += 1;
                    }
                    Out::Messages { channel, frames } => {
                        let i = set_last(&mut last, channel, 0);
                        for (seq, frame) in frames {
                            sink.feed(Message::Text(frame)).await?;
                            // Fed means queued in order behind everything
                            // before it: the client gets it before any
                            // later error or close.
                            last[i].1 = seq;
                            n += 1;
                        }
                    }
                    Out::Close { code, reason } => {
                        close = Some((code, reason));
                        break;
                    }
                }
                if n < FLUSH_EVERY {
                    next = rx.try_recv().ok();
                }
            }
            sink.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) if close.is_none() => {}
            Ok(Ok(())) => break 'outer,
            Ok(Err(_)) => return, // the client went away
            Err(_) => {
                // Stalled. Stop taking messages: the forwarders see the queue
                // closed and end, and so does the connection's reader.
                rx.close();
                for (channel, _) in &last {
                    hub.note_slow_close(channel);
                }
                let seqs: Vec<String> = last.iter().map(|(c, s)| format!("{c}={s}")).collect();
                close = Some((
                    CLOSE_SLOW,
                    format!("send timeout; last_seq {}", seqs.join(" ")),
                ));
                let detail: serde_json::Map<String, Value> = last
                    .iter()
                    .map(|(c, s)| (c.to_string(), json!(s)))
                    .collect();
                let mut msg = error(
                    "slow_consumer",
                    format!(
                        "a write to this client did not complete within {} ms; closing. \
                         Resubscribe with since = last_seq to resume",
                        send_timeout.as_millis()
                    ),
                    None,
                );
                msg["last_seq"] = Value::Object(detail);
                goodbye = Some(msg.to_string());
                linger = stall_linger;
                break 'outer;
            }
        }
    }
    let _ = tokio::time::timeout(linger, async {
        if let Some(text) = goodbye {
            sink.send(Message::Text(text.into())).await?;
        }
        if let Some((code, mut reason)) = close {
            // A close reason is at most 123 bytes.
            while reason.len() > 123 {
                reason.pop();
            }
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            };
            sink.send(Message::Close(Some(frame))).await?;
        }
        sink.close().await
    })
    .await;
}

/// Record `seq` as the last written on `channel` if the channel is new, and
/// return the channel's index in `last`.
fn set_last(last: &mut Vec<(Arc<str>, u64)>, channel: Arc<str>, seq: u64) -> usize {
    match last.iter().position(|(c, _)| *c == channel) {
        Some(i) => i,
        None => {
            last.push((channel, seq));
            last.len() - 1
        }
    }
}
