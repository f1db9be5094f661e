//! `eddy pipe`'s input: NDJSON lines decoded on several threads, handed to
//! the engine in input order.
//!
//! A reader thread reads the input in chunks of whole lines (cut at the
//! last line break of what it has), numbers them and hands each to one of
//! the decoding threads; each runs the one [`LineDecoder`] over its chunk's
//! lines. The engine thread takes the decoded chunks back in the order they
//! were read, whichever thread finished first, so what the engine sees —
//! events, `$wall` lines, rejected lines with their numbers — is exactly
//! what one thread decoding line after line would give it.
//!
//! The one piece of state that flows from line to line is the virtual
//! clock: an event without a timestamp gets the last `{"$wall": MS}`
//! line's time. The reader finds `$wall` lines as it cuts chunks (a
//! substring search; only lines containing `"$wall"` are parsed) and gives
//! every chunk the clock it starts at.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use crate::event::Event;
use crate::ingest::{DecodeOptions, ItemError, LineDecoder, Location};

/// Bytes the reader gathers before cutting a chunk: large enough that
/// handing a chunk to a thread costs nothing per line (about 3,000 lines
/// of 80 bytes), small enough that the first events reach the engine at
/// once and the chunks in flight hold a few MiB.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Decoded chunks waiting for the engine, per decoding thread: enough to
/// keep every thread busy while the engine works on a chunk.
const IN_FLIGHT_PER_THREAD: usize = 2;

/// One input line, decoded.
pub enum Item {
    /// An event, on line `.0`.
    Event(u64, Event),
    /// A `{"$wall": MS}` line.
    Wall(u64, i64),
    /// A line that is not an event.
    Bad(ItemError),
    /// A blank line.
    Blank(u64),
    /// Reading the input failed (the last item).
    Failed(io::Error),
}

/// How the input is read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The decoder's options.
    pub decode: DecodeOptions,
    /// `$wall` lines set the clock (`--clock virtual`); otherwise the
    /// machine's clock is read for every chunk.
    pub virtual_clock: bool,
    /// Lines of the input to skip (a restore already covers them).
    pub skip: u64,
    /// The clock at the start (a restore).
    pub wall: Option<i64>,
    /// Decoding threads (at least 1).
    pub threads: usize,
}

/// The decoding threads to use when not told: every core but the one the
/// engine runs on, and at least one.
pub fn default_threads() -> usize {
    thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// Lines of one chunk, to decode.
struct Job {
    bytes: Vec<u8>,
    /// Number of the line before the chunk's first.
    before: u64,
    /// The virtual clock at the chunk's first line.
    wall: Option<i64>,
    done: SyncSender<Vec<Item>>,
}

/// What the next chunk is, or why there is none yet.
pub enum Next {
    /// The next chunk's items, in input order.
    Items(Vec<Item>),
    /// The deadline passed first (ask again).
    Timeout,
    /// The input ended.
    End,
}

/// The decoded input, chunk by chunk, in input order.
pub struct Decoded {
    order: Receiver<Receiver<Vec<Item>>>,
    /// The chunk waited for when a deadline passed.
    waiting: Option<Receiver<Vec<Item>>>,
}

impl Decoded {
    /// The next chunk, waiting at most until `deadline` (for ever with
    /// `None`).
    pub fn next(&mut self, deadline: Option<Instant>) -> Next {
        let left = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let chunk = match self.waiting.take() {
            Some(c) => c,
            None => {
                let got = match left() {
                    None => self
                        .order
                        .recv()
                        .map_err(|_| RecvTimeoutError::Disconnected),
                    Some(t) => self.order.recv_timeout(t),
                };
                match got {
                    Ok(c) => c,
                    Err(RecvTimeoutError::Timeout) => return Next::Timeout,
                    Err(RecvTimeoutError::Disconnected) => return Next::End,
                }
            }
        };
        let got = match left() {
            None => chunk.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(t) => chunk.recv_timeout(t),
        };
        match got {
            Ok(items) => Next::Items(items),
            Err(RecvTimeoutError::Timeout) => {
                self.waiting = Some(chunk);
                Next::Timeout
            }
            // A decoding thread ended without its chunk: never silently
            // short, so the run reports it as a read error.
            Err(RecvTimeoutError::Disconnected) => {
                Next::Items(vec![Item::Failed(io::Error::other(
                    "a decoding thread stopped before finishing its part of the input",
                ))])
            }
        }
    }
}

/// Start reading `source` on a reader thread and `options.threads`
/// decoding threads.
pub fn start(source: Box<dyn Read + Send>, options: ReadOptions) -> io::Result<Decoded> {
    let threads = options.threads.max(1);
    let (order_tx, order) = mpsc::sync_channel(threads * IN_FLIGHT_PER_THREAD);
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads);
    let jobs = Arc::new(Mutex::new(job_rx));
    for i in 0..threads {
        let jobs = jobs.clone();
        let options = options.clone();
        thread::Builder::new()
            .name(format!("eddy-pipe-decode-{i}"))
            .spawn(move || decode_jobs(&jobs, &options))?;
    }
    thread::Builder::new()
        .name("eddy-pipe-reader".into())
        .spawn(move || read_chunks(source, &options, &job_tx, &order_tx))?;
    Ok(Decoded {
        order,
        waiting: None,
    })
}

/// A decoding thread: chunks until the reader is done.
fn decode_jobs(jobs: &Mutex<Receiver<Job>>, options: &ReadOptions) {
    let mut decoder = LineDecoder::new(options.decode.clone());
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let items = decode_chunk(&mut decoder, &job, options);
        // The engine may have stopped early (`--stop-after`): nothing to do.
        let _ = job.done.send(items);
    }
}

/// Decode a chunk's lines, in order.
fn decode_chunk(decoder: &mut LineDecoder, job: &Job, options: &ReadOptions) -> Vec<Item> {
    let virtual_clock = options.virtual_clock;
    // On the machine's clock, a chunk's lines arrived together (within
    // the read that brought them in): they get one reading of the clock.
    decoder.set_now_ms(if virtual_clock {
        job.wall
    } else {
        Some(crate::ingest::now_ms())
    });
    let mut items = Vec::with_capacity(job.bytes.len() / 64 + 1);
    for (n, line) in (job.before + 1..).zip(lines(&job.bytes)) {
        if n <= options.skip {
            continue;
        }
        let item = classify(decoder, line, n, virtual_clock);
        if let Item::Wall(_, ms) = item {
            decoder.set_now_ms(Some(ms));
        }
        items.push(item);
    }
    items
}

/// The lines of `bytes` (each without its `\n` or `\r\n`); a last line
/// without a line break counts, an empty tail does not.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(at) => (rest.get(..at)?, rest.get(at + 1..)?),
            None => (rest, &[][..]),
        };
        rest = next;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

/// What line `n` holds.
pub fn classify(decoder: &LineDecoder, line: &[u8], n: u64, virtual_clock: bool) -> Item {
    if LineDecoder::is_blank(line) {
        return Item::Blank(n);
    }
    if virtual_clock
        && let Ok(text) = std::str::from_utf8(line)
        && let Some(wall) = crate::ingest::wall_directive(text)
    {
        return match wall {
            Ok(ms) => Item::Wall(n, ms),
            Err(error) => Item::Bad(ItemError {
                location: Location::Line(n as usize),
                error,
            }),
        };
    }
    match decoder.decode(line, n as usize) {
        Ok(e) => Item::Event(n, e),
        Err(e) => Item::Bad(e),
    }
}

/// The reader thread: cut the input into chunks of whole lines, hand each
/// to the decoding threads and its result slot to the engine, in order.
fn read_chunks(
    mut source: Box<dyn Read + Send>,
    options: &ReadOptions,
    jobs: &SyncSender<Job>,
    order: &SyncSender<Receiver<Vec<Item>>>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    let mut before: u64 = 0;
    let mut wall = options.wall;
    loop {
        if buf.capacity() - buf.len() < CHUNK_BYTES / 4 {
            buf.reserve(CHUNK_BYTES);
        }
        let filled = buf.len();
        buf.resize(buf.capacity(), 0);
        let asked = buf.len() - filled;
        let got = match source.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                buf.truncate(filled);
                continue;
            }
            Err(e) => {
                buf.truncate(filled);
                // The complete lines read before the error are processed;
                // then the error (a torn last line is not an event).
                if let Some(cut) = memchr::memrchr(b'\n', &buf) {
                    buf.truncate(cut + 1);
                    if !send(&mut buf, &mut before, &mut wall, options, jobs, order) {
                        return;
                    }
                }
                let (done, slot) = mpsc::sync_channel(1);
                let _ = done.send(vec![Item::Failed(e)]);
                let _ = order.send(slot);
                return;
            }
        };
        buf.truncate(filled + got);
        if got == 0 {
            // The end: the last line may lack its line break.
            if !buf.is_empty() {
                send(&mut buf, &mut before, &mut wall, options, jobs, order);
            }
            return;
        }
        // Hand over full chunks, and whatever complete lines there are when
        // no more input is waiting (a short read: a live stdin must not
        // wait for a chunk to fill).
        if (buf.len() >= CHUNK_BYTES || got < asked)
            && let Some(cut) = memchr::memrchr(b'\n', &buf)
        {
            let mut chunk = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_BYTES));
            buf.extend_from_slice(chunk.get(cut + 1..).unwrap_or_default());
            chunk.truncate(cut + 1);
            if !send(&mut chunk, &mut before, &mut wall, options, jobs, order) {
                return;
            }
        }
    }
}

/// Hand `chunk` (whole lines) to a decoding thread and its slot to the
/// engine; advance the line count and the clock past it. False once the
/// engine has stopped reading.
fn send(
    chunk: &mut Vec<u8>,
    before: &mut u64,
    wall: &mut Option<i64>,
    options: &ReadOptions,
    jobs: &SyncSender<Job>,
    order: &SyncSender<Receiver<Vec<Item>>>,
) -> bool {
    let bytes = std::mem::take(chunk);
    let first = *before;
    let starts_at = *wall;
    let breaks = memchr::memchr_iter(b'\n', &bytes).count() as u64;
    *before += breaks + u64::from(!bytes.ends_with(b"\n"));
    if options.virtual_clock && memchr::memmem::find(&bytes, b"\"$wall\"").is_some() {
        // The clock after the chunk: its last valid `$wall` line, found
        // as the decoding thread will find it.
        for (n, line) in (first + 1..).zip(lines(&bytes)) {
            if n <= options.skip || memchr::memmem::find(line, b"\"$wall\"").is_none() {
                continue;
            }
            if let Ok(text) = std::str::from_utf8(line)
                && let Some(Ok(ms)) = crate::ingest::wall_directive(text)
            {
                *wall = Some(ms);
            }
        }
    }
    let (done, slot) = mpsc::sync_channel(1);
    // The slot first: the engine waits on it while the chunk is decoded.
    if order.send(slot).is_err() {
        return false;
    }
    jobs.send(Job {
        bytes,
        before: first,
        wall: starts_at,
        done,
    })
    .is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_as_a_line_reader_does() {
        let all: Vec<&[u8]> = lines(b"a\r\nb\n\nc").collect();
        assert_eq!(all, [&b"a"[..], b"b", b"", b"c"]);
        assert_eq!(lines(b"a\n").count(), 1);
        assert_eq!(lines(b"").count(), 0);
    }
}
