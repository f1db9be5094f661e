//! The `eddy` command line.

use std::process::ExitCode;

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
        #[command(flatten)]
        options: eddy::pipe::PipeOptions,
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
    // Colours only for a person at a terminal, not for files and pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
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
        Command::Pipe { options, summary } => {
            let result = eddy::pipe::run(&options)?;
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
