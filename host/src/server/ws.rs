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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::AppState;
use super::auth::{Access, presented_key};
use super::streams::{ConnectionGuard, Feed, FeedEnd, SubscribeRequest};

/// Close code: the client could not keep up.
pub const CLOSE_SLOW: u16 = 4008;
/// Close code: the client sent nothing for `streams.idle_timeout_ms`.
pub const CLOSE_IDLE: u16 = 4001;
/// Close code: a client message exceeded `streams.max_message_bytes`.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: the server is shutting down.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Frames queued for the writer; small, since the hub is the real buffer.
const WRITER_QUEUE: usize = 1024;
/// Time allowed for the goodbye (error message, close frame) once a client
/// is being closed: short, since a stalled client already had its
/// `send_timeout`.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// Frames written per flush: one syscall for many small messages.
const FLUSH_EVERY: usize = 256;

enum Out {
    /// A control message (ack, error, pong, heartbeat).
    Text(String),
    /// A channel message.
    Message {
        channel: Arc<str>,
        seq: u64,
        frame: String,
    },
    Ping,
    /// Close with this code; `lagged` adds the slow-consumer error first.
    Close {
        code: u16,
        reason: String,
    },
}

/// Upgrade to a WebSocket after the read-key and connection-limit checks.
pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let key = presented_key(&headers, query.get("api_key").map(String::as_str));
    if let Err(e) = state.keys.check(Access::Read, key) {
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
    let writer = tokio::spawn(write_loop(sink, rx, state.config.streams.send_timeout));
    let streams = &state.config.streams;
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
    let _ = writer.await;
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
            if tx.send(Out::Text(ack.to_string())).await.is_err() {
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
                Some((task, sent)) => {
                    // Wait until the forwarder has really stopped, so no
                    // message of this channel follows the ack.
                    task.abort();
                    let _ = task.await;
                    Some(
                        json!({"type": "unsubscribed", "channel": channel, "last_seq": sent.load(Ordering::Relaxed)}),
                    )
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
        for (seq, frame) in frames {
            if tx
                .send(Out::Message {
                    channel: channel.clone(),
                    seq,
                    frame,
                })
                .await
                .is_err()
            {
                return;
            }
            sent.store(seq, Ordering::Relaxed);
        }
        // Filtered-out messages count as seen: resuming skips them too.
        sent.store(feed.last_delivered(), Ordering::Relaxed);
        if done {
            return;
        }
    }
}

/// Own the socket: write what is queued, a batch per flush, each flush
/// within `send_timeout`. A stalled client is closed with [`CLOSE_SLOW`]
/// after the last message it was sent.
async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Out>,
    send_timeout: std::time::Duration,
) {
    // Last sequence fully handed to the socket, per channel.
    let mut last: Vec<(Arc<str>, u64)> = Vec::new();
    let mut close: Option<(u16, String)> = None;
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let written = tokio::time::timeout(send_timeout, async {
            let mut n = 0;
            while let Some(out) = next.take() {
                match out {
                    Out::Text(t) => sink.feed(Message::Text(t.into())).await?,
                    Out::Ping => sink.feed(Message::Ping(Default::default())).await?,
                    Out::Message {
                        channel,
                        seq,
                        frame,
                    } => {
                        sink.feed(Message::Text(frame.into())).await?;
                        match last.iter_mut().find(|(c, _)| *c == channel) {
                            Some(entry) => entry.1 = seq,
                            None => last.push((channel, seq)),
                        }
                    }
                    Out::Close { code, reason } => {
                        close = Some((code, reason));
                        break;
                    }
                }
                n += 1;
                if n < FLUSH_EVERY {
                    next = rx.try_recv().ok();
                }
            }
            sink.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) if close.is_none() => continue,
            Ok(Ok(())) => break 'outer,
            Ok(Err(_)) => return, // the client went away
            Err(_) => {
                let seqs: Vec<String> = last.iter().map(|(c, s)| format!("{c}={s}")).collect();
                close = Some((
                    CLOSE_SLOW,
                    format!("send timeout; last_seq {}", seqs.join(" ")),
                ));
                let detail: serde_json::Map<String, Value> = last
                    .iter()
                    .map(|(c, s)| (c.to_string(), json!(s)))
                    .collect();
                let msg = error(
                    "slow_consumer",
                    "a write to this client stalled; closing",
                    None,
                );
                let mut msg = msg;
                msg["last_seq"] = Value::Object(detail);
                let _ = tokio::time::timeout(
                    send_timeout,
                    sink.send(Message::Text(msg.to_string().into())),
                )
                .await;
                break 'outer;
            }
        }
    }
    if let Some((code, reason)) = close {
        // A close reason is at most 123 bytes.
        let mut reason = reason;
        while reason.len() > 123 {
            reason.pop();
        }
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
}
