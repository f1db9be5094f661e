//! Tries to read a file with `std::fs` on every event and records whether
//! it could. Using `std::fs` makes the component import
//! `wasi:filesystem/types` and `wasi:filesystem/preopens`, which the example
//! plugins do not: eddy refuses to load it unless its stage grants
//! `wasi:filesystem`. Even with the grant it reads nothing, because eddy
//! preopens no directory; the recorded answer lets a test check that too.

use eddy_plugin_sdk::{Config, Event, Outcome, Processor};

/// The file read when the config names none.
pub const DEFAULT_PATH: &str = "/etc/passwd";

/// The reader.
pub struct FsReader {
    /// The file it tries to read.
    pub path: String,
}

impl Processor for FsReader {
    const CONFIG_SCHEMA: &'static str = r#"{
  "type": "object",
  "properties": {
    "path": {"type": "string", "default": "/etc/passwd", "description": "File to try to read"}
  },
  "additionalProperties": false
}"#;

    fn new(config: Config) -> Result<Self, String> {
        config.only(&["path"])?;
        Ok(FsReader {
            path: config.string_or("path", DEFAULT_PATH)?,
        })
    }

    fn process(&mut self, event: &mut Event<'_>) -> Outcome {
        event.set("file_read", std::fs::read(&self.path).is_ok());
        Outcome::Keep
    }
}

eddy_plugin_sdk::processor!(FsReader);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_path_from_config() {
        let r = FsReader::new(Config::from_json(r#"{"path": "/x"}"#).unwrap()).unwrap();
        assert_eq!(r.path, "/x");
        let d = FsReader::new(Config::default()).unwrap();
        assert_eq!(d.path, DEFAULT_PATH);
    }

    #[test]
    fn rejects_unknown_key() {
        let err = FsReader::new(Config::from_json(r#"{"file": "/x"}"#).unwrap())
            .err()
            .unwrap();
        assert!(err.contains("file"), "{err}");
    }
}
