//! `eddy plugin new NAME --lang rust|python|js [--kind processor|pattern|alert]`: a plugin
//! project that builds, with a README, an example test and the contract
//! wired in.
//!
//! Templates are embedded in the binary. A template is a list of files per
//! (language, kind); a new world is one more row of [`TEMPLATES`] and its
//! files, nothing else.

use std::path::{Path, PathBuf};

use super::assets::{self, JS_SDK, PYTHON_SDK};
use super::{DevError, Kind, Lang, io_err};

/// A project template: the files of one language and plugin kind, with
/// `{{name}}`-style placeholders.
pub struct Template {
    /// Language.
    pub lang: Lang,
    /// Plugin kind (WIT world).
    pub kind: Kind,
    /// Relative path and text of each file.
    pub files: &'static [(&'static str, &'static str)],
}

const EVENTS: (&str, &str) = (
    "tests/events.ndjson",
    include_str!("templates/common/events.ndjson"),
);
const EXPECTED: (&str, &str) = (
    "tests/expected.ndjson",
    include_str!("templates/common/expected.ndjson"),
);
const PLUGIN_TOML: (&str, &str) = ("plugin.toml", include_str!("templates/common/plugin.toml"));
const README: (&str, &str) = ("README.md", include_str!("templates/common/README.md"));
const PATTERN_README: (&str, &str) = (
    "README.md",
    include_str!("templates/common/PATTERN_README.md"),
);
const ALERT_README: (&str, &str) = (
    "README.md",
    include_str!("templates/common/ALERT_README.md"),
);

/// Every template.
pub const TEMPLATES: &[Template] = &[
    Template {
        lang: Lang::Rust,
        kind: Kind::Processor,
        files: &[
            ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
            ("src/lib.rs", include_str!("templates/rust/src/lib.rs")),
            (".gitignore", "/target\n"),
            README,
            PLUGIN_TOML,
            EVENTS,
            EXPECTED,
        ],
    },
    Template {
        lang: Lang::Python,
        kind: Kind::Processor,
        files: &[
            ("app.py", include_str!("templates/python/app.py")),
            (".gitignore", "/target\n__pycache__/\n"),
            PYTHON_SDK,
            README,
            PLUGIN_TOML,
            EVENTS,
            EXPECTED,
        ],
    },
    Template {
        lang: Lang::Js,
        kind: Kind::Processor,
        files: &[
            ("app.js", include_str!("templates/js/app.js")),
            (".gitignore", "/target\n"),
            JS_SDK,
            README,
            PLUGIN_TOML,
            EVENTS,
            EXPECTED,
        ],
    },
    Template {
        lang: Lang::Rust,
        kind: Kind::Pattern,
        files: &[
            (
                "Cargo.toml",
                include_str!("templates/rust-pattern/Cargo.toml"),
            ),
            (
                "src/lib.rs",
                include_str!("templates/rust-pattern/src/lib.rs"),
            ),
            (".gitignore", "/target\n"),
            PATTERN_README,
        ],
    },
    Template {
        lang: Lang::Python,
        kind: Kind::Pattern,
        files: &[
            ("app.py", include_str!("templates/python-pattern/app.py")),
            (".gitignore", "/target\n__pycache__/\n"),
            PYTHON_SDK,
            PATTERN_README,
        ],
    },
    Template {
        lang: Lang::Js,
        kind: Kind::Pattern,
        files: &[
            ("app.js", include_str!("templates/js-pattern/app.js")),
            (".gitignore", "/target\n"),
            JS_SDK,
            PATTERN_README,
        ],
    },
    Template {
        lang: Lang::Rust,
        kind: Kind::Alert,
        files: &[
            (
                "Cargo.toml",
                include_str!("templates/rust-alert/Cargo.toml"),
            ),
            (
                "src/lib.rs",
                include_str!("templates/rust-alert/src/lib.rs"),
            ),
            (".gitignore", "/target\n"),
            ALERT_README,
        ],
    },
    Template {
        lang: Lang::Python,
        kind: Kind::Alert,
        files: &[
            ("app.py", include_str!("templates/python-alert/app.py")),
            (".gitignore", "/target\n__pycache__/\n"),
            PYTHON_SDK,
            ALERT_README,
        ],
    },
    Template {
        lang: Lang::Js,
        kind: Kind::Alert,
        files: &[
            ("app.js", include_str!("templates/js-alert/app.js")),
            (".gitignore", "/target\n"),
            JS_SDK,
            ALERT_README,
        ],
    },
];

/// Options of `eddy plugin new`.
#[derive(Debug, Clone, clap::Args)]
pub struct NewOptions {
    /// Plugin name: the project folder, the component's file stem and the
    /// `plugin` of its stage. Lower-case letters, digits and `-`.
    pub name: String,
    /// Language of the plugin.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Kind of plugin (WIT world).
    #[arg(long, value_enum, default_value_t = Kind::Processor)]
    pub kind: Kind,
    /// Folder to create the project in (`NAME/` below it).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Rust only: eddy's `plugin-sdk` folder, which the project depends on
    /// by path. Default: `EDDY_SDK_DIR`, else the checkout eddy was built
    /// from.
    #[arg(long, env = "EDDY_SDK_DIR")]
    pub sdk: Option<PathBuf>,
}

/// The folder of the eddy checkout this binary was built from.
pub fn checkout_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR")))
        .to_path_buf()
}

/// Whether `name` can be a plugin name (and a crate, module and file name).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64
}

/// Create the project; returns its folder.
pub fn create(opts: &NewOptions) -> Result<PathBuf, DevError> {
    if !valid_name(&opts.name) {
        return Err(DevError::InvalidName(opts.name.clone()));
    }
    let template = TEMPLATES
        .iter()
        .find(|t| t.lang == opts.lang && t.kind == opts.kind)
        .ok_or(DevError::NoTemplate {
            lang: opts.lang.name(),
            kind: opts.kind.world(),
        })?;
    let dir = opts.dir.join(&opts.name);
    if dir.exists() {
        return Err(DevError::Exists(dir));
    }
    let sdk_path = match opts.lang {
        Lang::Rust => {
            let sdk = opts
                .sdk
                .clone()
                .unwrap_or_else(|| checkout_root().join("plugin-sdk"));
            if !sdk.join("Cargo.toml").is_file() {
                return Err(DevError::NoSdk(sdk));
            }
            std::fs::canonicalize(&sdk)
                .map_err(io_err(&sdk))?
                .display()
                .to_string()
        }
        _ => String::new(),
    };
    let vars = Vars {
        name: &opts.name,
        sdk_path: &sdk_path,
        lang: opts.lang,
    };
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let files: Vec<(&str, String)> = template
        .files
        .iter()
        .map(|(path, text)| (*path, vars.fill(text)))
        .collect();
    assets::write_files(&dir, files.iter().map(|(p, t)| (*p, t.as_str())))?;
    // Python and JavaScript tools read the contract from the project.
    if opts.lang != Lang::Rust {
        assets::write_wit(&dir.join("wit"))?;
    }
    Ok(dir)
}

struct Vars<'a> {
    name: &'a str,
    sdk_path: &'a str,
    lang: Lang,
}

impl Vars<'_> {
    fn fill(&self, text: &str) -> String {
        let (title, source, layout, deadline, sdk_note) = match self.lang {
            Lang::Rust => (
                "Rust",
                "src/lib.rs",
                "Cargo.toml               depends on eddy's Rust SDK (eddy-plugin-sdk) by path\n\
                 src/lib.rs               the processor, with a unit test (`cargo test`)",
                "",
                "The SDK's documentation: `cargo doc --open -p eddy-plugin-sdk`, and \
                 \"Writing a plugin (Rust)\" in eddy's docs/plugins.md. `cargo test` runs the unit \
                 test natively.",
            ),
            Lang::Python => (
                "Python",
                "app.py",
                "app.py                   the processor\n\
                 eddy_plugin.py           eddy's Python SDK (a copy; `eddy plugin build` uses it)\n\
                 wit/                     eddy's WIT contract, which componentize-py builds against",
                "deadline_ms = 1000       # a Python stage costs 15-30 µs/event: give a 1,000-event batch room\n",
                "`eddy plugin build` runs componentize-py with `--stub-wasi`: the component \
                 imports nothing but eddy's contract, so it loads without grants. `print()` \
                 goes to eddy's log; files, sockets, `time` and `random`'s OS entropy are not \
                 available (use the event's `timestamp`). The SDK's docstrings \
                 (`eddy_plugin.py`) list what an `Event` offers.",
            ),
            Lang::Js => (
                "JavaScript",
                "app.js",
                "app.js                   the processor\n\
                 eddy-plugin.js           eddy's JavaScript SDK (a copy; `eddy plugin build` uses it)\n\
                 wit/                     eddy's WIT contract, which componentize-js builds against",
                "deadline_ms = 1000       # a JavaScript stage costs 15-30 µs/event: give a 1,000-event batch room\n",
                "`eddy plugin build` runs componentize-js with stdio, HTTP and fetch disabled, \
                 so the component imports nothing that needs a grant. Imports must stay \
                 inside this folder (componentize-js resolves them from here). The comments \
                 in `eddy-plugin.js` list what an `Event` offers.",
            ),
        };
        text.replace("{{name}}", self.name)
            .replace("{{sdk_path}}", self.sdk_path)
            .replace("{{lang}}", self.lang.name())
            .replace("{{lang_title}}", title)
            .replace("{{source}}", source)
            .replace("{{layout}}", layout)
            .replace("{{deadline}}", deadline)
            .replace("{{sdk_note}}", sdk_note)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_usable_as_crate_module_and_file_names() {
        for good in ["tagger", "geo-region", "a1"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "Tagger", "1abc", "a_b", "a.b", "a-", "../x", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn every_language_has_a_processor_template_with_an_example_test() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let t = TEMPLATES
                .iter()
                .find(|t| t.lang == lang && t.kind == Kind::Processor)
                .unwrap();
            for needed in ["README.md", "tests/events.ndjson", "tests/expected.ndjson"] {
                assert!(
                    t.files.iter().any(|(p, _)| *p == needed),
                    "{lang:?} {needed}"
                );
            }
        }
    }

    #[test]
    fn every_language_has_a_pattern_template() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let t = TEMPLATES
                .iter()
                .find(|t| t.lang == lang && t.kind == Kind::Pattern)
                .unwrap();
            let (_, readme) = t.files.iter().find(|(p, _)| *p == "README.md").unwrap();
            assert!(readme.contains("--kind pattern"), "{lang:?}");
        }
    }

    #[test]
    fn every_language_has_an_alert_template() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let t = TEMPLATES
                .iter()
                .find(|t| t.lang == lang && t.kind == Kind::Alert)
                .unwrap();
            let (_, readme) = t.files.iter().find(|(p, _)| *p == "README.md").unwrap();
            assert!(readme.contains("--kind alert"), "{lang:?}");
        }
    }

    #[test]
    fn creates_a_project_and_refuses_to_overwrite_it() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = NewOptions {
            name: "tagger".into(),
            lang: Lang::Python,
            kind: Kind::Processor,
            dir: tmp.path().into(),
            sdk: None,
        };
        let dir = create(&opts).unwrap();
        let app = std::fs::read_to_string(dir.join("app.py")).unwrap();
        assert!(app.contains("name = \"tagger\""), "{app}");
        assert!(dir.join("wit/worlds.wit").is_file());
        assert!(dir.join("eddy_plugin.py").is_file());
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(!readme.contains("{{"), "unfilled placeholder: {readme}");
        assert!(matches!(create(&opts), Err(DevError::Exists(_))));
    }
}
