//! The `eddy` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "eddy",
    version,
    about = "Real-time analytics with WebAssembly plugins"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "EDDY_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum SummaryFormat {
    Text,
    Json,
    None,
}

#[derive(Subcommand)]
enum Command {
    /// Run NDJSON events from stdin (or --input) through the pipeline to
    /// stdout; print a summary on stderr.
    Pipe {
        /// Pipeline configuration (TOML); the embedded default if omitted.
        #[arg(long, short, env = "EDDY_CONFIG")]
        config: Option<PathBuf>,
        /// Read events from this file instead of stdin.
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// Write events to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Where events failed by a dead-letter stage are written (created on
        /// first use).
        #[arg(long, default_value = "dead-letter.ndjson")]
        dead_letter: PathBuf,
        /// Override the configuration's plugins_dir.
        #[arg(long)]
        plugins_dir: Option<PathBuf>,
        /// Override the configuration's pipeline.batch_size.
        #[arg(long)]
        batch_size: Option<usize>,
        /// Process a partial batch after waiting this many ms for more input.
        #[arg(long, default_value_t = 20)]
        linger_ms: u64,
        /// Do not watch the plugins folder for new versions.
        #[arg(long)]
        no_watch: bool,
        /// Summary format on stderr.
        #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
        summary: SummaryFormat,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDDY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Pipe {
            config,
            input,
            output,
            dead_letter,
            plugins_dir,
            batch_size,
            linger_ms,
            no_watch,
            summary,
        } => {
            let opts = eddy::pipe::PipeOptions {
                config,
                input,
                output,
                dead_letter,
                plugins_dir,
                batch_size,
                linger: Duration::from_millis(linger_ms),
                watch: !no_watch,
            };
            let result = eddy::pipe::run(&opts)?;
            match summary {
                SummaryFormat::Text => eprintln!("{}", result.to_text()),
                SummaryFormat::Json => eprintln!("{}", serde_json::to_string(&result)?),
                SummaryFormat::None => {}
            }
            Ok(())
        }
        Command::DefaultConfig => {
            print!("{}", eddy::config::DEFAULT_CONFIG);
            Ok(())
        }
    }
}
