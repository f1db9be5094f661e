//! The host's imports — logging, metrics and the host-held state store —
//! behind plain functions. Off wasm (in a plugin's native unit tests) they
//! fall back to in-process stand-ins so plugin logic can be tested with
//! `cargo test`.

/// Structured logging into the host's log.
pub mod log {
    /// Severity of a log record.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Level {
        /// Very detailed diagnostics.
        Trace,
        /// Development diagnostics.
        Debug,
        /// Normal operation.
        Info,
        /// Recovered from something unexpected.
        Warn,
        /// Something failed.
        Error,
    }

    /// Write a log record with structured fields.
    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        #[cfg(target_arch = "wasm32")]
        {
            use crate::bindings::eddy::plugin::log as wit;
            let level = match level {
                Level::Trace => wit::Level::Trace,
                Level::Debug => wit::Level::Debug,
                Level::Info => wit::Level::Info,
                Level::Warn => wit::Level::Warn,
                Level::Error => wit::Level::Error,
            };
            let fields: Vec<(String, String)> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            wit::log(level, message, &fields);
        }
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!("[{level:?}] {message} {fields:?}");
    }

    /// Log at info level.
    pub fn info(message: &str) {
        log(Level::Info, message, &[]);
    }

    /// Log at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message, &[]);
    }

    /// Log at error level.
    pub fn error(message: &str) {
        log(Level::Error, message, &[]);
    }
}

/// Plugin-defined counters and gauges.
pub mod metrics {
    /// Add `delta` to counter `name`.
    pub fn counter_add(name: &str, delta: u64) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::eddy::plugin::metrics::counter_add(name, delta);
        #[cfg(not(target_arch = "wasm32"))]
        let _ = (name, delta);
    }

    /// Set gauge `name` to `value`.
    pub fn gauge_set(name: &str, value: f64) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::eddy::plugin::metrics::gauge_set(name, value);
        #[cfg(not(target_arch = "wasm32"))]
        let _ = (name, value);
    }
}

/// The host-held key-value store, scoped to this plugin's stage (stages
/// that name the same `state` scope share one). It survives traps and hot
/// swaps; guest memory does not.
pub mod state {
    /// Why the host refused a write.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum StateError {
        /// The value exceeds the configured size limit (bytes).
        ValueTooLarge(u64),
        /// The store holds the configured maximum number of keys.
        TooManyKeys(u64),
    }

    impl std::fmt::Display for StateError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                StateError::ValueTooLarge(max) => write!(f, "state value larger than {max} bytes"),
                StateError::TooManyKeys(max) => write!(f, "plugin already holds {max} state keys"),
            }
        }
    }

    impl std::error::Error for StateError {}

    /// A value that can be kept in the state store.
    pub trait StateValue: Sized {
        /// Encode to bytes.
        fn encode(&self) -> Vec<u8>;
        /// Decode from bytes; `None` if the bytes are not a value of this type.
        fn decode(bytes: &[u8]) -> Option<Self>;
    }

    macro_rules! number_value {
        ($($t:ty),*) => {$(
            impl StateValue for $t {
                fn encode(&self) -> Vec<u8> {
                    self.to_le_bytes().to_vec()
                }
                fn decode(bytes: &[u8]) -> Option<Self> {
                    Some(<$t>::from_le_bytes(bytes.try_into().ok()?))
                }
            }
        )*};
    }
    number_value!(i64, u64, f64, i32, u32);

    impl StateValue for bool {
        fn encode(&self) -> Vec<u8> {
            vec![u8::from(*self)]
        }
        fn decode(bytes: &[u8]) -> Option<Self> {
            match bytes {
                [0] => Some(false),
                [1] => Some(true),
                _ => None,
            }
        }
    }

    impl StateValue for String {
        fn encode(&self) -> Vec<u8> {
            self.as_bytes().to_vec()
        }
        fn decode(bytes: &[u8]) -> Option<Self> {
            String::from_utf8(bytes.to_vec()).ok()
        }
    }

    impl StateValue for Vec<u8> {
        fn encode(&self) -> Vec<u8> {
            self.clone()
        }
        fn decode(bytes: &[u8]) -> Option<Self> {
            Some(bytes.to_vec())
        }
    }

    impl StateValue for () {
        fn encode(&self) -> Vec<u8> {
            Vec::new()
        }
        fn decode(_: &[u8]) -> Option<Self> {
            Some(())
        }
    }

    #[cfg(target_arch = "wasm32")]
    mod backend {
        use super::StateError;
        use crate::bindings::eddy::plugin::state as wit;

        fn err(e: wit::StateError) -> StateError {
            match e {
                wit::StateError::ValueTooLarge(n) => StateError::ValueTooLarge(n),
                wit::StateError::TooManyKeys(n) => StateError::TooManyKeys(n),
            }
        }
        pub fn get(key: &str) -> Option<Vec<u8>> {
            wit::get(key)
        }
        pub fn set(key: &str, value: &[u8]) -> Result<(), StateError> {
            wit::set(key, value).map_err(err)
        }
        pub fn set_if_absent(key: &str, value: &[u8]) -> Result<bool, StateError> {
            wit::set_if_absent(key, value).map_err(err)
        }
        pub fn delete(key: &str) -> bool {
            wit::delete(key)
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod backend {
        use super::StateError;
        use std::cell::RefCell;
        use std::collections::HashMap;

        thread_local! {
            static STORE: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
        }
        pub fn get(key: &str) -> Option<Vec<u8>> {
            STORE.with(|s| s.borrow().get(key).cloned())
        }
        pub fn set(key: &str, value: &[u8]) -> Result<(), StateError> {
            STORE.with(|s| s.borrow_mut().insert(key.to_owned(), value.to_vec()));
            Ok(())
        }
        pub fn set_if_absent(key: &str, value: &[u8]) -> Result<bool, StateError> {
            STORE.with(|s| {
                let mut s = s.borrow_mut();
                if s.contains_key(key) {
                    Ok(false)
                } else {
                    s.insert(key.to_owned(), value.to_vec());
                    Ok(true)
                }
            })
        }
        pub fn delete(key: &str) -> bool {
            STORE.with(|s| s.borrow_mut().remove(key).is_some())
        }
    }

    /// The value under `key`, if present and decodable as `T`.
    pub fn get<T: StateValue>(key: &str) -> Option<T> {
        backend::get(key).and_then(|b| T::decode(&b))
    }

    /// Store `value` under `key`.
    pub fn set<T: StateValue>(key: &str, value: &T) -> Result<(), StateError> {
        backend::set(key, &value.encode())
    }

    /// Store `value` under `key` unless the key exists; true if it stored.
    pub fn set_if_absent<T: StateValue>(key: &str, value: &T) -> Result<bool, StateError> {
        backend::set_if_absent(key, &value.encode())
    }

    /// Remove `key`; true if it was present.
    pub fn delete(key: &str) -> bool {
        backend::delete(key)
    }
}
