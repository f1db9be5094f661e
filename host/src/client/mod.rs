//! `eddy send` and `eddy tail`: small clients of a running server.
//!
//! `send` posts NDJSON to `/v1/batch` in batches, one request at a time so
//! events arrive in file order, and retries a batch answered 429 after its
//! `Retry-After` — a refused batch is never skipped. `tail` subscribes over
//! WebSocket and prints each message's data as one JSON line. `demo`
//! sends generated traffic through the same poster.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

pub mod demo;
mod now;

/// Options of `eddy send`.
#[derive(Debug, Clone, clap::Args)]
pub struct SendOptions {
    /// NDJSON file to send, or `-` for stdin.
    pub file: String,
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "EDDY_URL")]
    pub url: String,
    /// Lines per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// API key (sent as a Bearer token).
    #[arg(long, env = "EDDY_API_KEY")]
    pub api_key: Option<String>,
    /// Stop retrying a refused (429/503) batch after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub retry_for_s: u64,
    /// Move every recorded `timestamp` by one offset so that the newest
    /// becomes the current time (spacing kept; integer milliseconds and
    /// RFC 3339 text keep their form; events without a timestamp get the
    /// server's time). For recordings older than `ingest.max_age_ms`.
    #[arg(long)]
    pub now: bool,
}

/// What `eddy send` did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SendSummary {
    /// Events the server accepted.
    pub accepted: u64,
    /// Events it rejected as invalid.
    pub rejected: u64,
    /// Requests made (retries included).
    pub requests: u64,
    /// Requests answered 429 or 503 and retried.
    pub retries: u64,
    /// Seconds taken.
    pub seconds: f64,
}

impl SendSummary {
    /// Accepted events per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.accepted as f64 / self.seconds
        } else {
            0.0
        }
    }
}

type Lines = Box<dyn Iterator<Item = anyhow::Result<String>> + Send>;

/// The lines of `file` (`-`: stdin), errors naming the file.
fn lines_of(file: &str) -> anyhow::Result<Lines> {
    let reader: Box<dyn BufRead + Send> = if file == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {file}"))?,
        ))
    };
    let name = file.to_owned();
    Ok(Box::new(reader.lines().map(move |l| {
        l.with_context(|| format!("reading {name}"))
    })))
}

/// Run `eddy send`.
pub async fn send(opts: &SendOptions) -> anyhow::Result<SendSummary> {
    if opts.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mut lines = lines_of(&opts.file)?;
    // --now needs the newest timestamp before the first line goes out: a
    // file is read twice, stdin (readable once) is held in memory.
    let offset = if opts.now {
        let newest = if opts.file == "-" {
            let held = lines.collect::<anyhow::Result<Vec<String>>>()?;
            let newest = now::newest(held.iter().cloned().map(Ok))?;
            lines = Box::new(held.into_iter().map(Ok));
            newest
        } else {
            let newest = now::newest(lines)?;
            lines = lines_of(&opts.file)?;
            newest
        };
        Some(now::offset_to_now(newest))
    } else {
        None
    };
    let poster = Poster::new(&opts.url, opts.api_key.clone(), opts.retry_for_s, "line")?;
    let started = Instant::now();
    let mut summary = SendSummary::default();
    let mut body = String::new();
    let mut in_body = 0usize;
    let mut first_line = 1usize;
    let mut line_no = 0usize;
    for line in lines {
        let line = line?;
        line_no += 1;
        match offset {
            Some(offset) => body.push_str(&now::shift_line(&line, offset, line_no)?),
            None => body.push_str(&line),
        }
        body.push('\n');
        in_body += 1;
        if in_body == opts.batch {
            poster
                .post(std::mem::take(&mut body), first_line, &mut summary)
                .await?;
            in_body = 0;
            first_line = line_no + 1;
        }
    }
    if in_body > 0 {
        poster.post(body, first_line, &mut summary).await?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Posts NDJSON bodies to `/v1/batch`, one at a time, retrying a body the
/// server refuses with 429 or 503 after its `Retry-After`.
pub(crate) struct Poster {
    client: reqwest::Client,
    url: String,
    api_key: Option<String>,
    retry_for: Duration,
    /// What a rejected entry is called in messages: "line" (of a file) or
    /// "event".
    unit: &'static str,
}

impl Poster {
    pub(crate) fn new(
        base_url: &str,
        api_key: Option<String>,
        retry_for_s: u64,
        unit: &'static str,
    ) -> anyhow::Result<Poster> {
        let client = reqwest::Client::builder()
            .build()
            .context("building the HTTP client")?;
        Ok(Poster {
            client,
            url: format!("{}/v1/batch", base_url.trim_end_matches('/')),
            api_key,
            retry_for: Duration::from_secs(retry_for_s),
            unit,
        })
    }

    /// Post `body`, whose first line is entry `first` (from 1), and count
    /// the answer into `summary`.
    pub(crate) async fn post(
        &self,
        body: String,
        first: usize,
        summary: &mut SendSummary,
    ) -> anyhow::Result<()> {
        let url = &self.url;
        let unit = self.unit;
        let deadline = Instant::now() + self.retry_for;
        loop {
            let mut req = self
                .client
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(body.clone());
            if let Some(key) = &self.api_key {
                req = req.bearer_auth(key);
            }
            summary.requests += 1;
            let resp = req
                .send()
                .await
                .with_context(|| format!("posting to {url}"))?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            let text = resp.text().await.unwrap_or_default();
            let reply: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status.as_u16() == 429 || status.as_u16() == 503 {
                if Instant::now() >= deadline {
                    bail!("the server kept refusing the batch starting at {unit} {first}: {text}");
                }
                summary.retries += 1;
                tokio::time::sleep(Duration::from_secs(retry_after.min(30))).await;
                continue;
            }
            let count = |k: &str| reply.get(k).and_then(Value::as_u64).unwrap_or(0);
            summary.accepted += count("accepted");
            summary.rejected += count("rejected");
            // Report rejected entries by their number in the file (or run).
            for e in reply
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .take(10)
            {
                let line = e.get("line").and_then(Value::as_u64).unwrap_or(0) as usize;
                let msg = e.get("error").and_then(Value::as_str).unwrap_or("");
                eprintln!("{unit} {}: {msg}", first + line.saturating_sub(1));
            }
            if !status.is_success() && status.as_u16() != 400 {
                bail!("the server answered {status}: {text}");
            }
            return Ok(());
        }
    }
}

/// Options of `eddy tail`.
#[derive(Debug, Clone, clap::Args)]
pub struct TailOptions {
    /// Channel: events, plugins, stats, dead-letters, ...
    pub channel: String,
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "EDDY_URL")]
    pub url: String,
    /// Filter as JSON, e.g. '{"names":["$pageview"],"where":[{"field":"properties.$browser","op":"equals","value":"Chrome"}]}'.
    #[arg(long)]
    pub filter: Option<String>,
    /// Fields to keep, comma-separated (e.g. name,distinct_id,properties.$browser).
    #[arg(long)]
    pub fields: Option<String>,
    /// Resume after this sequence number.
    #[arg(long)]
    pub since: Option<u64>,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Print whole messages (with channel and seq), not just their data.
    #[arg(long)]
    pub raw: bool,
    /// API key.
    #[arg(long, env = "EDDY_API_KEY")]
    pub api_key: Option<String>,
}

/// Run `eddy tail`, printing to stdout until the count is reached or the
/// server closes.
pub async fn tail(opts: &TailOptions) -> anyhow::Result<()> {
    let base = opts.url.trim_end_matches('/');
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    let mut url = format!("{ws_base}/v1/ws");
    if let Some(key) = &opts.api_key {
        url.push_str(&format!("?api_key={key}"));
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .with_context(|| format!("connecting to {ws_base}/v1/ws"))?;
    let mut sub = json!({"type": "subscribe", "channel": opts.channel});
    if let Some(f) = &opts.filter {
        sub["filter"] = serde_json::from_str(f).context("--filter is not JSON")?;
    }
    if let Some(f) = &opts.fields {
        sub["fields"] = json!(f.split(',').map(str::trim).collect::<Vec<_>>());
    }
    if let Some(s) = opts.since {
        sub["since"] = json!(s);
    }
    ws.send(Message::Text(sub.to_string().into())).await?;
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    while let Some(frame) = ws.next().await {
        match frame? {
            Message::Text(text) => {
                let msg: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                match msg.get("type").and_then(Value::as_str) {
                    Some("message") => {
                        let mut out = stdout.lock();
                        if opts.raw {
                            writeln!(out, "{text}")?;
                        } else {
                            writeln!(out, "{}", msg["data"])?;
                        }
                        seen += 1;
                        if opts.count.is_some_and(|c| seen >= c) {
                            return Ok(());
                        }
                    }
                    Some("error") => bail!("server error: {}", msg["message"]),
                    Some("subscribed") => {
                        eprintln!("subscribed to {} (head {})", opts.channel, msg["head"])
                    }
                    _ => {}
                }
            }
            Message::Close(frame) => {
                if let Some(f) = frame {
                    bail!(
                        "server closed the connection ({}): {}",
                        u16::from(f.code),
                        f.reason
                    );
                }
                return Ok(());
            }
            _ => {}
        }
    }
    Ok(())
}
