//! Tries what a sandboxed plugin must not be able to do — read files, see
//! the host's environment or arguments, open sockets — and what it may — read
//! the clock — and records the answers on every event, so a test can check
//! the sandbox from the inside.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};

/// The probe.
pub struct SandboxProbe;

impl Processor for SandboxProbe {
    fn new(config: Config) -> Result<Self, String> {
        config.only(&[])?;
        Ok(SandboxProbe)
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        event.set("read_root_dir", std::fs::read_dir("/").is_ok());
        event.set("read_cwd", std::fs::read_dir(".").is_ok());
        event.set("read_etc_passwd", std::fs::read("/etc/passwd").is_ok());
        event.set("env_vars", std::env::vars().count() as i64);
        event.set("args", std::env::args().count() as i64);
        event.set(
            "tcp_bind",
            std::net::TcpListener::bind("127.0.0.1:0").is_ok(),
        );
        event.set("udp_bind", std::net::UdpSocket::bind("127.0.0.1:0").is_ok());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        event.set(
            "clock_works",
            now.is_ok_and(|d| d.as_secs() > 1_600_000_000),
        );
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(SandboxProbe);
