//! A running `eddy serve` on an ephemeral loopback port, and real HTTP,
//! WebSocket and SSE clients for it. Every wait has a time limit.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{Sandbox, eddy_bin};

/// How long the server may take to start (it compiles every plugin).
const START_LIMIT: Duration = Duration::from_secs(120);

/// A running `eddy serve`.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    logs: mpsc::Receiver<String>,
    seen_logs: Vec<String>,
}

impl Sandbox {
    /// Start `eddy serve --config CONFIG --listen 127.0.0.1:0` and wait until
    /// it listens.
    pub fn serve(&self, config: &Path) -> Server {
        self.serve_with(config, &[])
    }

    /// [`Sandbox::serve`] with more arguments for `eddy serve`.
    pub fn serve_with(&self, config: &Path, extra: &[&str]) -> Server {
        self.serve_on(config, "127.0.0.1:0", extra)
    }

    /// [`Sandbox::serve_with`] on a given address (a restarted server that
    /// its clients must find again).
    pub fn serve_on(&self, config: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut args = vec![OsStr::new("--config"), config.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        self.start_serve(listen, &args, &[])
    }

    /// `eddy serve` on its embedded default configuration (no `--config`),
    /// with this sandbox's plugins folder as `EDDY_PLUGINS_DIR`: the server
    /// `scripts/run` starts.
    pub fn serve_default(&self) -> Server {
        let plugins = self.plugins_dir();
        self.start_serve(
            "127.0.0.1:0",
            &[],
            &[("EDDY_PLUGINS_DIR", plugins.as_os_str())],
        )
    }

    fn start_serve(&self, listen: &str, args: &[&OsStr], env: &[(&str, &OsStr)]) -> Server {
        let mut child = Command::new(eddy_bin())
            .args(["--log-format", "json", "serve", "--listen", listen])
            .args(args)
            .envs(env.iter().copied())
            .env_remove("EDDY_LOG")
            .env_remove("EDDY_CONFIG")
            // The data directory is the sandbox's own `data/` (the default,
            // relative to the working directory) unless the config says.
            .env_remove("EDDY_DATA_DIR")
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn eddy serve");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, logs) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (addr_tx, addr_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("eddy listening on http://") {
                    let _ = addr_tx.send(addr.to_owned());
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            addr: String::new(),
            logs,
            seen_logs: Vec::new(),
        };
        let started = Instant::now();
        loop {
            if let Ok(addr) = addr_rx.recv_timeout(Duration::from_millis(50)) {
                server.addr = addr;
                break;
            }
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || started.elapsed() > START_LIMIT {
                thread::sleep(Duration::from_millis(100));
                let logs = server.drain_logs().join("\n");
                match exited {
                    Some(status) => {
                        panic!("eddy serve exited ({status}) before listening; logs:\n{logs}")
                    }
                    None => {
                        panic!("eddy serve did not start within {START_LIMIT:?}; logs:\n{logs}")
                    }
                }
            }
        }
        server
    }
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://ADDR/v1/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Wait until `/v1/stats` says `n` events have been published.
    pub async fn wait_published(&self, n: u64, limit: Duration) {
        let client = http();
        let deadline = Instant::now() + limit;
        loop {
            let stats: Value = client
                .get(self.url("/v1/stats"))
                .send()
                .await
                .expect("GET /v1/stats")
                .json()
                .await
                .expect("stats JSON");
            if stats["published"] == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not all {n} published within {limit:?}: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Log lines so far.
    pub fn drain_logs(&mut self) -> &[String] {
        while let Ok(l) = self.logs.try_recv() {
            self.seen_logs.push(l);
        }
        &self.seen_logs
    }

    /// SIGKILL, no warning (a crash), and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Wait until a log line containing `needle` has been written; returns
    /// it. Fails after `limit`.
    pub fn wait_log(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.drain_logs().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {limit:?}; logs:\n{}",
                self.seen_logs.join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send SIGTERM and wait for exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                panic!("eddy serve did not exit within {limit:?} of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP client for tests (no proxy, short timeouts).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// `GET url` with [`http`], its body as JSON (panics on any failure: for
/// reads a test expects to work).
pub async fn get_json(url: impl reqwest::IntoUrl) -> serde_json::Value {
    let url = url.into_url().expect("a URL");
    let text = get_text(url.clone()).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}: {text}"))
}

/// `GET url` with [`http`], its body as text (panics on any failure).
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    let url = url.into_url().expect("a URL");
    let resp = http()
        .get(url.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// A WebSocket client that speaks eddy's protocol.
pub struct Ws {
    pub inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub connection_id: String,
}

/// How a WebSocket ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl Ws {
    /// Connect and read the `welcome`.
    pub async fn connect(url: &str) -> Ws {
        let (inner, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .expect("connect timed out")
        .expect("connect");
        let mut ws = Ws {
            inner,
            connection_id: String::new(),
        };
        let welcome = ws.recv(Duration::from_secs(10)).await.expect("welcome");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        ws.connection_id = welcome["connection_id"].as_str().unwrap_or("").to_owned();
        ws
    }

    /// Send a JSON message.
    pub async fn send(&mut self, v: Value) {
        self.inner
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("ws send");
    }

    /// The next JSON message that is not a heartbeat; `Err` when the
    /// connection closed.
    pub async fn recv(&mut self, limit: Duration) -> Result<Value, Closed> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.inner.next())
                .await
                .unwrap_or_else(|_| panic!("no WebSocket message within {limit:?}"));
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("server sends JSON");
                    if v["type"] != "heartbeat" {
                        return Ok(v);
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(f.map_or(
                        Closed {
                            code: 1005,
                            reason: String::new(),
                        },
                        |f| Closed {
                            code: u16::from(f.code),
                            reason: f.reason.to_string(),
                        },
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    return Err(Closed {
                        code: 1006,
                        reason: "connection dropped".into(),
                    });
                }
            }
        }
    }

    /// Subscribe and wait for the ack (returned).
    pub async fn subscribe(&mut self, channel: &str, extra: Value) -> Value {
        let mut msg = json!({"type": "subscribe", "channel": channel});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                msg[k] = v;
            }
        }
        self.send(msg).await;
        let ack = self.recv(Duration::from_secs(10)).await.expect("ack");
        assert_eq!(ack["type"], "subscribed", "{ack}");
        ack
    }

    /// Receive `n` channel messages (anything else is a test failure).
    pub async fn messages(&mut self, n: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("only {} of {n} messages within {limit:?}", out.len());
            }
            match self.recv(left).await {
                Ok(m) if m["type"] == "message" => out.push(m),
                Ok(other) => panic!("expected a message, got {other}"),
                Err(c) => panic!("closed after {} of {n} messages: {c:?}", out.len()),
            }
        }
        out
    }
}

/// Read an SSE stream until `n` data events (or an `error` event) arrive:
/// returns (id, event type, data) triples.
pub async fn sse_events(
    resp: reqwest::Response,
    n: usize,
    limit: Duration,
) -> Vec<(Option<String>, String, Value)> {
    Sse::new(resp).events(n, limit).await
}

/// An SSE stream read a few events at a time.
pub struct Sse {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: String,
    done: bool,
}

impl Sse {
    pub fn new(resp: reqwest::Response) -> Sse {
        Sse {
            stream: resp.bytes_stream().map(|c| c.map(|b| b.to_vec())).boxed(),
            buf: String::new(),
            done: false,
        }
    }

    /// The next `n` data events, or fewer if an `error` event (the last one
    /// returned) or the end of the stream comes first.
    pub async fn events(
        &mut self,
        n: usize,
        limit: Duration,
    ) -> Vec<(Option<String>, String, Value)> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < n && !self.done {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, "message".to_owned(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                let is_error = kind == "error";
                out.push((
                    id,
                    kind,
                    serde_json::from_str(&data).expect("SSE data is JSON"),
                ));
                if is_error {
                    self.done = true;
                    return out;
                }
                if out.len() == n {
                    return out;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.stream.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("only {} of {n} SSE events within {limit:?}", out.len())
                });
            match chunk {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => self.done = true,
            }
        }
        out
    }
}

/// A realistic `$pageview` of about 200 bytes as an NDJSON line (no
/// newline), with id `{prefix}{i}`.
pub fn pageview_line(prefix: &str, i: usize, ts: i64) -> String {
    format!(
        "{{\"id\":\"{prefix}{i}\",\"name\":\"$pageview\",\"distinct_id\":\"user-{}\",\
         \"timestamp\":{ts},\"session_id\":\"s-{}\",\"properties\":{{\
         \"$current_url\":\"https://shop.example.com/products/{}?ref=home\",\
         \"$referrer\":\"https://www.google.com/\",\"$screen_width\":1920,\"$lib\":\"web\"}}}}",
        i % 5000,
        i % 2000,
        i % 300
    )
}

/// POST an NDJSON body to `/v1/batch`, retrying after `Retry-After` while
/// the server answers 429, for at most `limit`. Returns the 202 body.
pub async fn post_ndjson(
    client: &reqwest::Client,
    server_url: &str,
    body: String,
    limit: Duration,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let resp = client
            .post(format!("{server_url}/v1/batch"))
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await
            .expect("POST /v1/batch");
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let text = resp.text().await.expect("response body");
        match status {
            202 => return serde_json::from_str(&text).expect("JSON body"),
            429 if Instant::now() < deadline => {
                let wait = Duration::from_secs(retry_after.unwrap_or(1));
                tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
            }
            _ => panic!("POST /v1/batch answered {status}: {text}"),
        }
    }
}

/// What a client read from a WebSocket until the server closed it.
#[derive(Debug)]
pub struct Drained {
    /// The seqs of the channel messages (`"type":"message"`), in order.
    pub seqs: Vec<u64>,
    /// Every other message but heartbeats, with the number of channel
    /// messages read before it.
    pub others: Vec<(usize, Value)>,
    /// How the connection ended.
    pub closed: Closed,
}

impl Ws {
    /// Read until the server closes the connection, keeping only the seq of
    /// each channel message (found without parsing the whole message, so
    /// that draining many large backlogs stays cheap). Fails after `limit`.
    pub async fn drain_seqs(&mut self, limit: Duration) -> Drained {
        let mut seqs = Vec::new();
        let mut others = Vec::new();
        let read = async {
            loop {
                match self.inner.next().await {
                    Some(Ok(Message::Text(t))) => match scan_message(&t) {
                        Ok((seq, _)) => seqs.push(seq),
                        Err(v) if v["type"] == "heartbeat" => {}
                        Err(v) => others.push((seqs.len(), v)),
                    },
                    Some(Ok(Message::Close(f))) => {
                        return f.map_or(
                            Closed {
                                code: 1005,
                                reason: String::new(),
                            },
                            |f| Closed {
                                code: u16::from(f.code),
                                reason: f.reason.to_string(),
                            },
                        );
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        return Closed {
                            code: 1006,
                            reason: "connection dropped".into(),
                        };
                    }
                }
            }
        };
        let closed = tokio::time::timeout(limit, read)
            .await
            .unwrap_or_else(|_| panic!("not closed within {limit:?}"));
        Drained {
            seqs,
            others,
            closed,
        }
    }
}

/// A channel message's seq and `data.id` (empty when it has none), read
/// without building the whole JSON value where the message has the server's
/// usual layout; anything that is not a channel message, parsed.
fn scan_message(text: &str) -> Result<(u64, String), Value> {
    let fast = || {
        let rest = text.strip_prefix(r#"{"type":"message","#)?;
        let at = rest.find(r#""seq":"#)? + 6;
        let end = rest[at..].find(|c: char| !c.is_ascii_digit())? + at;
        let seq = rest[at..end].parse::<u64>().ok()?;
        let rest = rest[end..].strip_prefix(r#","data":"#)?;
        let id = match rest.strip_prefix(r#"{"id":""#) {
            Some(r) if !r[..r.find('"')?].contains('\\') => r[..r.find('"')?].to_owned(),
            Some(_) => return None,
            None => String::new(),
        };
        Some((seq, id))
    };
    if let Some(found) = fast() {
        return Ok(found);
    }
    let v: Value = serde_json::from_str(text).expect("server sends JSON");
    if v["type"] == "message" {
        let seq = v["seq"].as_u64().expect("a message has a seq");
        let id = v["data"]["id"].as_str().unwrap_or_default().to_owned();
        return Ok((seq, id));
    }
    Err(v)
}

impl Ws {
    /// Receive `n` channel messages and return each one's seq and
    /// `data.id`, without keeping the messages (cheap for large bursts).
    /// Anything else but heartbeats is a failure.
    pub async fn message_ids(&mut self, n: usize, limit: Duration) -> Vec<(u64, String)> {
        let mut out = Vec::with_capacity(n);
        let read = async {
            while out.len() < n {
                match self.inner.next().await {
                    Some(Ok(Message::Text(t))) => match scan_message(&t) {
                        Ok(found) => out.push(found),
                        Err(v) if v["type"] == "heartbeat" => {}
                        Err(v) => panic!("expected a message, got {v} after {}", out.len()),
                    },
                    Some(Ok(Message::Close(f))) => {
                        panic!("closed after {} of {n} messages: {f:?}", out.len())
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("dropped after {} of {n} messages: {e}", out.len()),
                    None => panic!("dropped after {} of {n} messages", out.len()),
                }
            }
        };
        if tokio::time::timeout(limit, read).await.is_err() {
            panic!("only {} of {n} messages within {limit:?}", out.len());
        }
        out
    }
}
