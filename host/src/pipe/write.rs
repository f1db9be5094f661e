//! Writing what the engine publishes, on a thread of its own: formatting
//! results and events (and freeing them) is as much work as computing
//! them, so the engine thread hands each input's outputs over and goes on
//! with the next input. The order of everything written is the order
//! published, and the files are flushed whenever the writer has caught
//! up, so whoever reads them live sees each input's results at once.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use anyhow::Context;

use crate::engine::{Emitted, Sink};
use crate::pipeline::DeadLetter;

/// Inputs' worth of outputs that may wait for the writer before the engine
/// waits for it (bounded: the engine cannot run away from a slow disk).
const QUEUE: usize = 8;

/// Where the engine's outputs go.
pub(super) struct Files {
    /// `None` with `--output none`.
    pub output: Option<Box<dyn Write + Send>>,
    /// The line being written (kept to reuse its allocation).
    pub line: String,
    pub results: Option<BufWriter<File>>,
    pub channels: Option<BufWriter<File>>,
    pub dead_letter: PathBuf,
    pub dead_file: Option<BufWriter<File>>,
    pub window_names: Vec<String>,
    pub events_out: u64,
    pub dead_lettered: u64,
    pub error: Option<io::Error>,
}

impl Files {
    fn write(&mut self, out: &Emitted) -> io::Result<()> {
        if let Some(f) = self.channels.as_mut() {
            let channel = out.channel(&self.window_names);
            for (seq, data) in out.messages() {
                serde_json::to_writer(
                    &mut *f,
                    &serde_json::json!({"channel": channel, "seq": seq, "data": data}),
                )?;
                f.write_all(b"\n")?;
            }
        }
        match out {
            Emitted::Events { events, .. } => {
                if let Some(output) = self.output.as_mut() {
                    for e in events {
                        self.line.clear();
                        e.write_json(&mut self.line);
                        self.line.push('\n');
                        output.write_all(self.line.as_bytes())?;
                    }
                    self.events_out += events.len() as u64;
                }
            }
            Emitted::DeadLetters { letters, .. } => {
                self.write_dead_letters(letters)?;
                self.dead_lettered += letters.len() as u64;
            }
            Emitted::Window { .. } | Emitted::Pattern { .. } | Emitted::Alert { .. } => {
                if let Some(f) = self.results.as_mut() {
                    self.line.clear();
                    out.write_result_lines(&self.window_names, &mut self.line);
                    f.write_all(self.line.as_bytes())?;
                }
            }
            Emitted::Plugin { .. } => {}
        }
        Ok(())
    }

    fn write_dead_letters(&mut self, letters: &[DeadLetter]) -> io::Result<()> {
        if self.dead_file.is_none() {
            // Append: dead letters from earlier runs are not thrown away.
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.dead_letter)?;
            self.dead_file = Some(BufWriter::new(f));
        }
        if let Some(f) = self.dead_file.as_mut() {
            for l in letters {
                serde_json::to_writer(&mut *f, l)?;
                f.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(output) = self.output.as_mut() {
            output.flush()?;
        }
        for f in [&mut self.results, &mut self.channels, &mut self.dead_file]
            .into_iter()
            .flatten()
        {
            f.flush()?;
        }
        Ok(())
    }
}

impl Sink for Files {
    fn emit(&mut self, out: Emitted) {
        if self.error.is_none()
            && let Err(e) = self.write(&out)
        {
            self.error = Some(e);
        }
    }
}

/// The engine's sink in `eddy pipe`: collects one input's outputs, then
/// [`Writer::send`]s them to the writing thread.
pub(super) struct Writer {
    pending: Vec<Emitted>,
    tx: Option<SyncSender<Vec<Emitted>>>,
    thread: Option<JoinHandle<Files>>,
    /// Set by the writing thread when a write failed.
    failed: Arc<AtomicBool>,
}

impl Sink for Writer {
    fn emit(&mut self, out: Emitted) {
        self.pending.push(out);
    }
}

impl Writer {
    /// Start the writing thread, writing to `files`.
    pub fn start(files: Files) -> anyhow::Result<Writer> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let thread = std::thread::Builder::new()
            .name("eddy-pipe-write".into())
            .spawn(move || write_all(files, rx, &flag))
            .context("starting the output thread")?;
        Ok(Writer {
            pending: Vec::new(),
            tx: Some(tx),
            thread: Some(thread),
            failed,
        })
    }

    /// Hand what was emitted since the last call to the writing thread.
    /// An error if writing has failed (the error the write met).
    pub fn send(&mut self) -> anyhow::Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(self.failure("the output thread failed"));
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        if let Some(tx) = &self.tx
            && tx.send(batch).is_ok()
        {
            return Ok(());
        }
        // The thread is gone: its error says why.
        Err(self.failure("the output thread stopped"))
    }

    /// Wait for the writing thread and return the error it met (`otherwise`
    /// if it has none to give).
    fn failure(&mut self, otherwise: &str) -> anyhow::Error {
        let error = match self.finish() {
            Ok(mut files) => files
                .error
                .take()
                .map_or_else(|| anyhow::anyhow!("{otherwise}"), Into::into),
            Err(e) => e,
        };
        error.context("writing output")
    }

    /// Wait for everything sent to be written and flushed; the files, with
    /// the first error writing met (if any) in `error`.
    pub fn finish(&mut self) -> anyhow::Result<Files> {
        self.tx = None;
        let thread = self
            .thread
            .take()
            .context("the output thread was already finished")?;
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the output thread panicked"))
    }
}

/// The writing thread: write each input's outputs in order, flush when
/// caught up. After a failed write the rest is received and dropped (so
/// the engine never waits on a dead writer) until the engine sees the flag.
fn write_all(mut files: Files, rx: Receiver<Vec<Emitted>>, failed: &AtomicBool) -> Files {
    let mut next = rx.recv().ok();
    while let Some(batch) = next {
        for out in batch {
            files.emit(out);
        }
        next = match rx.try_recv() {
            Ok(more) => Some(more),
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) => {
                if files.error.is_none()
                    && let Err(e) = files.flush()
                {
                    files.error = Some(e);
                }
                rx.recv().ok()
            }
        };
        if files.error.is_some() {
            failed.store(true, Ordering::Relaxed);
        }
    }
    if files.error.is_none()
        && let Err(e) = files.flush()
    {
        files.error = Some(e);
    }
    files
}
