//! Files embedded in the `eddy` binary: the WIT contract it speaks and the
//! Python and JavaScript SDKs, so `plugin new` and `plugin build` work from
//! any folder without an eddy checkout.

use std::path::Path;

use super::{DevError, io_err};

/// The WIT contract (`wit/`), file by file.
pub const WIT: &[(&str, &str)] = &[
    ("alert.wit", include_str!("../../../wit/alert.wit")),
    ("log.wit", include_str!("../../../wit/log.wit")),
    ("metrics.wit", include_str!("../../../wit/metrics.wit")),
    ("pattern.wit", include_str!("../../../wit/pattern.wit")),
    ("plugin.wit", include_str!("../../../wit/plugin.wit")),
    (
        "processing.wit",
        include_str!("../../../wit/processing.wit"),
    ),
    ("state.wit", include_str!("../../../wit/state.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("worlds.wit", include_str!("../../../wit/worlds.wit")),
];

/// The Python SDK module (`plugins/python/sdk/eddy_plugin.py`).
pub const PYTHON_SDK: (&str, &str) = (
    "eddy_plugin.py",
    include_str!("../../../plugins/python/sdk/eddy_plugin.py"),
);

/// The JavaScript SDK module (`plugins/js/sdk/eddy-plugin.js`).
pub const JS_SDK: (&str, &str) = (
    "eddy-plugin.js",
    include_str!("../../../plugins/js/sdk/eddy-plugin.js"),
);

/// Write `files` (relative paths) under `dir`, creating folders.
pub fn write_files<'a>(
    dir: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), DevError> {
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&path, text).map_err(io_err(&path))?;
    }
    Ok(())
}

/// Write the WIT contract into `dir`.
pub fn write_wit(dir: &Path) -> Result<(), DevError> {
    write_files(dir, WIT.iter().copied())
}
