//! The capability policy: which imports a plugin component may have.
//!
//! A component lists every interface it imports. eddy checks that list when
//! a file is loaded, before the component is linked or any of its code runs:
//! an import is either allowed by default, granted by the plugin's stages
//! (`allow = [...]` in `[[stages]]`), or the file is refused and never goes
//! live.
//!
//! # Why this default
//!
//! The default was chosen from what eddy's own Rust plugins import
//! (`eddy plugin inspect target/plugins/*.wasm`). Every plugin built with
//! Rust's `wasm32-wasip2` std imports, whether or not it uses them:
//!
//! - `wasi:io/{poll,error,streams}`,
//! - `wasi:cli/{environment,exit,stdin,stdout,stderr}` and the five
//!   `wasi:cli/terminal-*` interfaces,
//! - `wasi:random/insecure-seed` (std's hash maps are seeded from it).
//!
//! A plugin that reads the time adds `wasi:clocks/{wall-clock,monotonic-clock}`.
//! `wasi:filesystem/{types,preopens}` and the `wasi:sockets/*` interfaces are
//! linked only when the plugin's code uses `std::fs` or `std::net`: the test
//! plugin `fs-reader` imports the filesystem pair and `sandbox-probe` both
//! families, while none of the four example plugins imports either.
//!
//! So the default allows the std baseline, which gives a plugin nothing to
//! reach: eddy hands every instance an empty environment, no arguments,
//! empty stdin, discarded stdout/stderr and no terminal, and `exit` only
//! ends the call as a failure. It also allows clocks and random numbers, as
//! the contract (`wit/worlds.wit`) promises, and the eddy contract itself.
//! Files and sockets, the interfaces that reach outside the process, need a
//! grant. Anything else is not provided by eddy at all and cannot be
//! granted.
//!
//! # What a grant does
//!
//! A grant lets a component that imports those interfaces load. It opens
//! nothing: eddy still preopens no directory and allows no socket, so a
//! granted plugin's file and network calls fail at run time exactly as they
//! would on a machine without files or network. A grant is the operator
//! saying "I know this plugin links filesystem (or socket) code and accept
//! it"; the sandbox does not depend on it.

use std::fmt;

/// Interfaces every plugin may import without a grant, as package
/// (`ns:pkg`, every interface in it) or interface (`ns:pkg/iface`) names,
/// each with the reason it is safe in eddy.
pub const ALLOWED_BY_DEFAULT: &[(&str, &str)] = &[
    ("eddy:plugin", "the eddy contract: log, metrics, state"),
    (
        "wasi:io",
        "streams, errors and polling: plumbing for other interfaces, no access of its own",
    ),
    ("wasi:clocks", "wall and monotonic clocks"),
    ("wasi:random", "random numbers"),
    (
        "wasi:cli/environment",
        "eddy passes no environment variables and no arguments",
    ),
    (
        "wasi:cli/exit",
        "exiting ends the call, which counts as a failure",
    ),
    ("wasi:cli/stdin", "stdin is empty"),
    ("wasi:cli/stdout", "stdout is discarded"),
    ("wasi:cli/stderr", "stderr is discarded"),
    ("wasi:cli/terminal-input", "there is no terminal"),
    ("wasi:cli/terminal-output", "there is no terminal"),
    ("wasi:cli/terminal-stdin", "there is no terminal"),
    ("wasi:cli/terminal-stdout", "there is no terminal"),
    ("wasi:cli/terminal-stderr", "there is no terminal"),
];

/// Packages a stage can grant with `allow`, with their interfaces (each of
/// which can be granted alone) and what they are. These are the WASI
/// interfaces eddy links that reach outside the process.
pub const GRANTABLE: &[(&str, &[&str], &str)] = &[
    (
        "wasi:filesystem",
        &["types", "preopens"],
        "files; eddy preopens no directory, so nothing can be opened",
    ),
    (
        "wasi:sockets",
        &[
            "network",
            "instance-network",
            "tcp",
            "tcp-create-socket",
            "udp",
            "udp-create-socket",
            "ip-name-lookup",
        ],
        "network; eddy allows no TCP, UDP or name lookup, so nothing can connect",
    ),
];

/// The configuration key that holds grants, for messages.
pub const GRANT_KEY: &str = "allow";

/// An import name taken apart: `wasi:filesystem/types@0.2.6` is package
/// `wasi:filesystem`, interface `types`, version `0.2.6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportName<'a> {
    /// `ns:pkg`, or the whole name for a plain (non-interface) import.
    pub package: &'a str,
    /// The interface inside the package, if the name has one.
    pub interface: Option<&'a str>,
    /// The version after `@`, if any.
    pub version: Option<&'a str>,
}

impl<'a> ImportName<'a> {
    /// Split a component import name.
    pub fn parse(name: &'a str) -> Self {
        let (path, version) = match name.split_once('@') {
            Some((p, v)) => (p, Some(v)),
            None => (name, None),
        };
        let (package, interface) = match path.split_once('/') {
            Some((p, i)) => (p, Some(i)),
            None => (path, None),
        };
        ImportName {
            package,
            interface,
            version,
        }
    }

    /// Whether `rule` (`ns:pkg` or `ns:pkg/iface`, no version) covers this
    /// import.
    fn matches(&self, rule: &str) -> bool {
        match rule.split_once('/') {
            Some((package, interface)) => {
                self.package == package && self.interface == Some(interface)
            }
            None => self.interface.is_some() && self.package == rule,
        }
    }

    /// The package's entry in [`GRANTABLE`], if the import is one eddy links
    /// behind a grant.
    fn grantable(&self) -> Option<&'static str> {
        let interface = self.interface?;
        GRANTABLE
            .iter()
            .find(|(package, interfaces, _)| {
                *package == self.package && interfaces.contains(&interface)
            })
            .map(|(package, _, _)| *package)
    }
}

/// What the policy says about one import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed without a grant; the reason it is harmless.
    Default(&'static str),
    /// Allowed by this grant.
    Granted(String),
    /// Refused unless the plugin's stages grant this package (or the
    /// interface itself).
    NeedsGrant(&'static str),
    /// eddy does not provide this import; no grant can allow it.
    NotProvided,
}

impl Verdict {
    /// Whether the import may be linked.
    pub fn allowed(&self) -> bool {
        matches!(self, Verdict::Default(_) | Verdict::Granted(_))
    }

    /// A short machine-readable label: `default`, `granted`, `needs-grant`
    /// or `not-provided`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Default(_) => "default",
            Verdict::Granted(_) => "granted",
            Verdict::NeedsGrant(_) => "needs-grant",
            Verdict::NotProvided => "not-provided",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Default(why) => write!(f, "allowed by default ({why})"),
            Verdict::Granted(grant) => write!(f, "granted by {GRANT_KEY} = [\"{grant}\"]"),
            Verdict::NeedsGrant(package) => {
                write!(f, "needs a grant: {GRANT_KEY} = [\"{package}\"]")
            }
            Verdict::NotProvided => f.write_str("not provided by eddy; cannot be granted"),
        }
    }
}

/// The policy's answer for the import `name` given `grants`.
pub fn classify(name: &str, grants: &[String]) -> Verdict {
    let import = ImportName::parse(name);
    if let Some((_, why)) = ALLOWED_BY_DEFAULT
        .iter()
        .find(|(rule, _)| import.matches(rule))
    {
        return Verdict::Default(why);
    }
    let Some(package) = import.grantable() else {
        return Verdict::NotProvided;
    };
    match grants.iter().find(|g| import.matches(g)) {
        Some(grant) => Verdict::Granted(grant.clone()),
        None => Verdict::NeedsGrant(package),
    }
}

/// A component imports something its grants do not cover. The message
/// names every such import and says how to grant it (or that it cannot be).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", refusal_message(.plugin, .needs_grant, .not_provided))]
pub struct CapabilityError {
    /// The plugin (file stem) concerned.
    pub plugin: String,
    /// Imports refused for want of a grant, each with the package that
    /// grants it.
    pub needs_grant: Vec<(String, &'static str)>,
    /// Imports eddy does not provide at all, which no grant allows.
    pub not_provided: Vec<String>,
}

fn refusal_message(
    plugin: &str,
    needs_grant: &[(String, &'static str)],
    not_provided: &[String],
) -> String {
    let mut parts = Vec::new();
    if !needs_grant.is_empty() {
        let names: Vec<&str> = needs_grant.iter().map(|(n, _)| n.as_str()).collect();
        let mut packages: Vec<&str> = needs_grant.iter().map(|(_, p)| *p).collect();
        packages.dedup();
        let list = packages
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        parts.push(format!(
            "imports {} without a grant; if you trust it, add `{GRANT_KEY} = [{list}]` to every \
             [[stages]] entry with plugin = \"{plugin}\" (eddy still opens no file or socket for it)",
            names.join(", ")
        ));
    }
    if !not_provided.is_empty() {
        parts.push(format!(
            "imports {}, which eddy does not provide to plugins and no grant allows; rebuild the \
             plugin without it",
            not_provided.join(", ")
        ));
    }
    parts.join("; it also ")
}

/// Check every import in `imports` against the default and `grants`.
/// `plugin` names the plugin in the error.
pub fn check<'a>(
    plugin: &str,
    imports: impl IntoIterator<Item = &'a str>,
    grants: &[String],
) -> Result<(), CapabilityError> {
    let mut needs_grant = Vec::new();
    let mut not_provided = Vec::new();
    for name in imports {
        match classify(name, grants) {
            Verdict::Default(_) | Verdict::Granted(_) => {}
            Verdict::NeedsGrant(package) => needs_grant.push((name.to_owned(), package)),
            Verdict::NotProvided => not_provided.push(name.to_owned()),
        }
    }
    if needs_grant.is_empty() && not_provided.is_empty() {
        return Ok(());
    }
    needs_grant.sort_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(&b.0)));
    not_provided.sort();
    Err(CapabilityError {
        plugin: plugin.to_owned(),
        needs_grant,
        not_provided,
    })
}

/// Every name `allow` accepts: the packages of [`GRANTABLE`] and each of
/// their interfaces.
pub fn grant_names() -> Vec<String> {
    let mut names = Vec::new();
    for (package, interfaces, _) in GRANTABLE {
        names.push((*package).to_owned());
        names.extend(interfaces.iter().map(|i| format!("{package}/{i}")));
    }
    names
}

/// Check one entry of an `allow` list. Returns the grant as written, or a
/// message saying what is wrong and what is accepted.
pub fn validate_grant(grant: &str) -> Result<String, String> {
    let names = grant_names();
    if names.iter().any(|n| n == grant) {
        return Ok(grant.to_owned());
    }
    let packages = GRANTABLE
        .iter()
        .map(|(p, _, _)| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = if let Some((base, _)) = grant.split_once('@') {
        format!(" (leave out the version: \"{base}\")")
    } else if ALLOWED_BY_DEFAULT
        .iter()
        .any(|(rule, _)| ImportName::parse(grant).matches(rule) || *rule == grant)
    {
        " (it is allowed by default and needs no grant)".to_owned()
    } else {
        String::new()
    };
    Err(format!(
        "\"{grant}\" is not a capability eddy can grant{hint}; use {packages}, or one interface \
         of them such as \"wasi:filesystem/types\" (`eddy plugin inspect FILE.wasm` lists what a \
         plugin imports)"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// What `target/plugins/ua-enricher.wasm` imports (wasmtime's
    /// `component_type().imports()`).
    const EXAMPLE_PLUGIN: &[&str] = &[
        "eddy:plugin/log@0.1.0",
        "eddy:plugin/types@0.1.0",
        "wasi:io/poll@0.2.6",
        "wasi:io/error@0.2.6",
        "wasi:io/streams@0.2.6",
        "wasi:cli/environment@0.2.6",
        "wasi:cli/exit@0.2.6",
        "wasi:cli/stdin@0.2.6",
        "wasi:cli/stdout@0.2.6",
        "wasi:cli/stderr@0.2.6",
        "wasi:cli/terminal-input@0.2.6",
        "wasi:cli/terminal-output@0.2.6",
        "wasi:cli/terminal-stdin@0.2.6",
        "wasi:cli/terminal-stdout@0.2.6",
        "wasi:cli/terminal-stderr@0.2.6",
        "wasi:random/insecure-seed@0.2.6",
    ];

    fn grants(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn import_names_are_split() {
        assert_eq!(
            ImportName::parse("wasi:filesystem/types@0.2.6"),
            ImportName {
                package: "wasi:filesystem",
                interface: Some("types"),
                version: Some("0.2.6")
            }
        );
        assert_eq!(
            ImportName::parse("plain"),
            ImportName {
                package: "plain",
                interface: None,
                version: None
            }
        );
    }

    #[test]
    fn the_std_baseline_and_clocks_need_no_grant() {
        check("p", EXAMPLE_PLUGIN.iter().copied(), &[]).unwrap();
        check(
            "p",
            [
                "wasi:clocks/wall-clock@0.2.6",
                "wasi:clocks/monotonic-clock@0.2.0",
                "wasi:random/random@0.2.6",
                "eddy:plugin/state@0.1.0",
                "eddy:plugin/metrics@0.1.0",
            ],
            &[],
        )
        .unwrap();
    }

    #[test]
    fn filesystem_is_refused_without_a_grant_and_the_message_says_how_to_grant() {
        let err = check(
            "fs-reader",
            [
                "wasi:filesystem/types@0.2.6",
                "wasi:filesystem/preopens@0.2.6",
            ],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "imports wasi:filesystem/preopens@0.2.6, wasi:filesystem/types@0.2.6 without a grant; \
             if you trust it, add `allow = [\"wasi:filesystem\"]` to every [[stages]] entry with \
             plugin = \"fs-reader\" (eddy still opens no file or socket for it)"
        );
    }

    #[test]
    fn a_package_grant_covers_its_interfaces_and_an_interface_grant_only_itself() {
        let fs = [
            "wasi:filesystem/types@0.2.6",
            "wasi:filesystem/preopens@0.2.6",
        ];
        check("p", fs, &grants(&["wasi:filesystem"])).unwrap();
        let err = check("p", fs, &grants(&["wasi:filesystem/types"])).unwrap_err();
        assert_eq!(
            err,
            CapabilityError {
                plugin: "p".into(),
                needs_grant: vec![("wasi:filesystem/preopens@0.2.6".into(), "wasi:filesystem")],
                not_provided: vec![],
            }
        );
        check(
            "p",
            fs,
            &grants(&["wasi:filesystem/types", "wasi:filesystem/preopens"]),
        )
        .unwrap();
        // A filesystem grant does not cover sockets.
        let err = check(
            "p",
            ["wasi:sockets/tcp@0.2.6"],
            &grants(&["wasi:filesystem"]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("wasi:sockets/tcp@0.2.6") && err.contains("[\"wasi:sockets\"]"),
            "{err}"
        );
    }

    #[test]
    fn verdicts_per_import() {
        let g = grants(&["wasi:sockets"]);
        assert!(matches!(
            classify("wasi:cli/environment@0.2.6", &g),
            Verdict::Default(_)
        ));
        assert_eq!(
            classify("wasi:sockets/udp@0.2.6", &g),
            Verdict::Granted("wasi:sockets".into())
        );
        assert_eq!(
            classify("wasi:filesystem/types@0.2.6", &g),
            Verdict::NeedsGrant("wasi:filesystem")
        );
        // Not linked by eddy: no grant helps.
        for name in [
            "wasi:http/outgoing-handler@0.2.6",
            "wasi:cli/run@0.2.6",
            "wasi:filesystem/unknown@0.2.6",
            "acme:secrets/vault",
            "plain-function",
            "wasi:io",
        ] {
            assert_eq!(classify(name, &g), Verdict::NotProvided, "{name}");
        }
        // A package name is no prefix match on strings.
        assert_eq!(classify("wasi:iox/poll@0.2.6", &[]), Verdict::NotProvided);
    }

    #[test]
    fn not_provided_imports_are_named_with_what_to_do() {
        let err = check(
            "p",
            ["wasi:http/outgoing-handler@0.2.6", "wasi:sockets/tcp@0.2.6"],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("wasi:sockets/tcp@0.2.6 without a grant")
                && err.contains(
                    "it also imports wasi:http/outgoing-handler@0.2.6, which eddy does not provide"
                )
                && err.contains("rebuild the plugin without it"),
            "{err}"
        );
    }

    #[test]
    fn grants_are_validated() {
        assert_eq!(validate_grant("wasi:sockets").unwrap(), "wasi:sockets");
        assert_eq!(
            validate_grant("wasi:filesystem/preopens").unwrap(),
            "wasi:filesystem/preopens"
        );
        let e = validate_grant("wasi:filesytem").unwrap_err();
        assert!(
            e.contains("\"wasi:filesytem\" is not a capability")
                && e.contains("\"wasi:filesystem\", \"wasi:sockets\""),
            "{e}"
        );
        let e = validate_grant("wasi:filesystem@0.2.6").unwrap_err();
        assert!(e.contains("leave out the version"), "{e}");
        let e = validate_grant("wasi:clocks").unwrap_err();
        assert!(e.contains("allowed by default"), "{e}");
        let e = validate_grant("wasi:clocks/wall-clock").unwrap_err();
        assert!(e.contains("allowed by default"), "{e}");
        assert!(validate_grant("wasi:http").is_err());
        assert!(validate_grant("").is_err());
    }

    #[test]
    fn every_grant_name_is_accepted() {
        for name in grant_names() {
            validate_grant(&name).unwrap();
        }
        assert!(grant_names().contains(&"wasi:sockets/ip-name-lookup".to_owned()));
    }
}
