//! {{name}}: an alert plugin. For every final result of the window named
//! by `window`, the aggregate named by `aggregate`, per group, active when
//! it is above `max`.

use eddy_plugin_sdk::Config;
use eddy_plugin_sdk::alert::{AlertPlugin, Evaluation, ResultKind, Watches, Windows};

/// The plugin, configured.
pub struct Plugin {
    window: String,
    aggregate: String,
    max: f64,
}

impl AlertPlugin for Plugin {
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"properties":{"window":{"type":"string"},"aggregate":{"type":"string"},"max":{"type":"number"}}}"#;

    fn new(config: Config) -> Result<Self, String> {
        config.only(&["window", "aggregate", "max"])?;
        let max = match config.get("max") {
            None => 0.05,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("config key `max` must be a number, got {v}"))?,
        };
        Ok(Plugin {
            window: config.string_or("window", "errors_per_service")?,
            aggregate: config.string_or("aggregate", "error_ratio")?,
            max,
        })
    }

    fn watches(&self) -> Watches {
        Watches::window(&self.window)
    }

    fn on_windows(&mut self, windows: &Windows) -> Result<Vec<Evaluation>, String> {
        let mut out = Vec::new();
        for r in windows.results() {
            if r.kind() != ResultKind::Final {
                continue;
            }
            let Some(x) = r.f64(&self.aggregate) else {
                continue;
            };
            out.push(
                Evaluation::new(x, x > self.max)
                    .labels(r.group_labels())
                    .severity("warning")
                    .annotation("summary", format!("{} is {x}, above {}", self.aggregate, self.max)),
            );
        }
        Ok(out)
    }
}

eddy_plugin_sdk::alert!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_plugin_sdk::Value;
    use eddy_plugin_sdk::alert::WindowsBuilder;

    #[test]
    fn a_group_above_max_is_active() -> Result<(), String> {
        let mut plugin = Plugin::new(Config::from_json("{}")?)?;
        let windows = WindowsBuilder::new("errors_per_service", &["properties.service"], &["error_ratio"])
            .result(ResultKind::Final, 0, 60_000, &[Value::Str("checkout")], &[Value::Float(0.2)])
            .result(ResultKind::Final, 0, 60_000, &[Value::Str("search")], &[Value::Float(0.01)])
            .build();
        let out = plugin.on_windows(&windows)?;
        let active: Vec<bool> = out.iter().map(|e| e.active).collect();
        assert_eq!(active, [true, false]);
        assert_eq!(out[0].labels, [("service".to_owned(), "checkout".to_owned())]);
        Ok(())
    }
}
