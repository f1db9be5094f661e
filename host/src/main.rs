//! The `eddy` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod inspect;

/// jemalloc, not the system allocator: `eddy serve` allocates each event on
/// an HTTP worker and frees it on the pipeline thread, and glibc's malloc
/// takes an arena lock for nearly every such free.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    command: Option<Command>,
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
    /// Serve HTTP ingest, WebSocket/SSE streams and the REST API (the
    /// default when no command is given).
    Serve {
        /// Configuration file; the embedded default when left out.
        #[arg(long, short, env = "EDDY_CONFIG")]
        config: Option<std::path::PathBuf>,
        /// Address to listen on, overriding server.listen.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Write every input the engine applies (batches with their wall
        /// time, ticks, plugin changes) to this file, and the plugin
        /// versions it ran next to it, so `eddy pipe --replay FILE`
        /// reproduces exactly what this server published.
        #[arg(long)]
        record: Option<std::path::PathBuf>,
    },
    /// Post NDJSON events from a file (or `-` for stdin) to a running
    /// server, in batches; print accepted/rejected and the rate.
    Send {
        #[command(flatten)]
        options: eddy::client::SendOptions,
        /// Summary format on stderr.
        #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
        summary: SummaryFormat,
    },
    /// Send realistic, seeded PostHog-style traffic (a small shop: page
    /// views, a purchase funnel with drop-offs, login bursts, errors, a
    /// slow-page incident) to a running server until --duration or Ctrl-C;
    /// print what was sent.
    Demo {
        #[command(flatten)]
        options: eddy::client::demo::DemoOptions,
        /// Summary format on stderr.
        #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
        summary: SummaryFormat,
    },
    /// Subscribe to a channel of a running server and print its messages,
    /// one JSON line each.
    Tail {
        #[command(flatten)]
        options: eddy::client::TailOptions,
    },
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Re-run the history the write-ahead log holds (`--from`, `--to`)
    /// through a fresh engine under `--config` (say, with a new window) and
    /// write its results; the live server's state is not touched.
    Replay(eddy::rerun::ReplayOptions),
    /// Print the embedded default configuration.
    DefaultConfig,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show a component's world, describe() answer, config schema, imports
    /// (as capabilities: allowed by default or needing a grant), exports and
    /// size, and whether eddy would load it.
    Inspect(inspect::InspectOptions),
    /// Create a plugin project (Rust, Python or JavaScript) with a README,
    /// an example test and the WIT contract wired in.
    New(eddy::devtools::scaffold::NewOptions),
    /// Build a plugin project into a component (cargo, componentize-py or
    /// componentize-js, found from the project's files).
    Build(eddy::devtools::build::BuildOptions),
    /// Run a plugin (or a pipeline) over recorded events, deterministically,
    /// and compare with the expected output. Exit code 0 = pass, 1 = fail,
    /// 2 = could not run.
    Test(eddy::devtools::commands::TestOptions),
    /// Run two versions of a plugin over the same events and show the
    /// events changed (field by field), dropped and added. Exit code 0 =
    /// same output, 1 = different, 2 = could not run.
    Diff(eddy::devtools::commands::DiffOptions),
}

/// Exit status of `plugin test` / `plugin diff` when they cannot run at all
/// (as diff(1)): 1 is kept for "ran, and found differences".
const EXIT_TROUBLE: u8 = 2;

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDDY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
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
    // Developer commands report in their own words; the runtime's info
    // records (every plugin load) would bury them.
    let default_level = match &cli.command {
        Some(Command::Plugin {
            command:
                PluginCommand::New(_)
                | PluginCommand::Build(_)
                | PluginCommand::Test(_)
                | PluginCommand::Diff(_),
        }) => "warn",
        _ => "info",
    };
    init_tracing(cli.log_format, default_level);
    // Commands that report pass/fail through their exit status.
    let verdict = match &cli.command {
        Some(Command::Plugin {
            command: PluginCommand::Test(options),
        }) => Some(eddy::devtools::commands::test(options)),
        Some(Command::Plugin {
            command: PluginCommand::Diff(options),
        }) => Some(eddy::devtools::commands::diff(options)),
        _ => None,
    };
    match verdict {
        Some(Ok(true)) => return ExitCode::SUCCESS,
        Some(Ok(false)) => return ExitCode::FAILURE,
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_TROUBLE);
        }
        None => {}
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(command: Option<Command>) -> anyhow::Result<()> {
    let command = command.unwrap_or(Command::Serve {
        config: None,
        listen: None,
        record: None,
    });
    match command {
        Command::Serve {
            config,
            listen,
            record,
        } => {
            let config_path = config.clone();
            let config = eddy::config::Config::load(config.as_deref())?;
            let options = eddy::server::ServeOptions {
                listen,
                record,
                config_path,
            };
            let runtime = tokio_runtime()?;
            let result = runtime.block_on(eddy::server::run(config, options));
            // Whatever is still running past the shutdown grace is not waited for.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            result
        }
        Command::Send { options, summary } => {
            let result = tokio_runtime()?.block_on(eddy::client::send(&options))?;
            match summary {
                SummaryFormat::Text => eprintln!(
                    "sent: {} accepted, {} rejected, {} requests ({} retried after 429), {:.2} s, {:.0} events/s",
                    result.accepted,
                    result.rejected,
                    result.requests,
                    result.retries,
                    result.seconds,
                    result.rate()
                ),
                SummaryFormat::Json => eprintln!("{}", serde_json::to_string(&result)?),
                SummaryFormat::None => {}
            }
            Ok(())
        }
        Command::Demo { options, summary } => {
            eprintln!(
                "demo: sending about {} events/s to {} (seed {}){}",
                options.rate,
                options.url,
                options.seed,
                match options.duration {
                    Some(d) => format!(" for {}", humantime::format_duration(d)),
                    None => "; Ctrl-C stops".to_owned(),
                }
            );
            let result = tokio_runtime()?.block_on(eddy::client::demo::run(&options))?;
            match summary {
                SummaryFormat::Text => eprintln!("{}", result.to_text()),
                SummaryFormat::Json => eprintln!("{}", serde_json::to_string(&result)?),
                SummaryFormat::None => {}
            }
            Ok(())
        }
        Command::Tail { options } => tokio_runtime()?.block_on(eddy::client::tail(&options)),
        Command::Pipe { options, summary } => {
            let result = eddy::pipe::run(&options)?;
            match summary {
                SummaryFormat::Text => eprintln!("{}", result.to_text()),
                SummaryFormat::Json => eprintln!("{}", serde_json::to_string(&result)?),
                SummaryFormat::None => {}
            }
            Ok(())
        }
        Command::Plugin { command } => match command {
            PluginCommand::Inspect(options) => inspect::run(&options),
            PluginCommand::New(options) => Ok(eddy::devtools::commands::new(&options)?),
            PluginCommand::Build(options) => Ok(eddy::devtools::commands::build(&options)?),
            // Handled in main, for their exit status.
            PluginCommand::Test(_) | PluginCommand::Diff(_) => Ok(()),
        },
        Command::Replay(options) => {
            let summary = eddy::rerun::run(&options)?;
            eprintln!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::DefaultConfig => {
            print!("{}", eddy::config::DEFAULT_CONFIG);
            Ok(())
        }
    }
}
