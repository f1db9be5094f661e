//! `${VAR}`, `${VAR:-fallback}` and `$$` interpolation of configuration
//! text, and the redaction of substituted values from toml's parse messages.

use super::ConfigError;

/// The `origin` used in errors from the free function [`interpolate`].
const TEXT_ORIGIN: &str = "configuration text";

/// Replace environment references in configuration text: `${VAR}` (an error
/// if VAR is unset), `${VAR:-fallback}` (the fallback when VAR is unset or
/// empty) and `$$` (a literal `$`). Any other `$` is kept. Nothing is
/// replaced inside TOML comments.
///
/// A value from the environment substituted inside a basic (`"..."`) string
/// is escaped, so the string holds exactly that value; inside a literal
/// (`'...'`) string a value that cannot be represented there is an error.
/// Fallbacks are part of the file and are inserted as written.
///
/// Errors name the origin "configuration text";
/// [`Config::parse`](super::Config::parse) names the real source.
pub fn interpolate(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    interpolate_text(text, TEXT_ORIGIN, env).map(|i| i.text)
}

/// Interpolated text, with where each of its lines came from.
pub(super) struct Interpolated {
    pub(super) text: String,
    /// `line_map[k]`: 1-based line of the original text that output line
    /// `k + 1` comes from (values with raw newlines add output lines).
    line_map: Vec<usize>,
    /// Values taken from the environment: the 1-based original line and
    /// name of the reference, and the text inserted for it.
    substituted: Vec<(usize, String, String)>,
}

/// Where the scanner is, as far as TOML quoting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    Bare,
    Comment,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
}

fn is_var_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_var_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

pub(super) fn interpolate_text(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Interpolated, ConfigError> {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let starts_with = |i: usize, s: &str| s.chars().enumerate().all(|(k, c)| at(i + k) == Some(c));
    let bad = |line: usize, message: String| ConfigError::BadSyntax {
        origin: origin.to_owned(),
        line,
        message,
    };

    let mut out = String::with_capacity(text.len());
    let mut line = 1;
    let mut line_map = vec![1];
    let mut substituted = Vec::new();
    let mut quoting = Quoting::Bare;
    let mut i = 0;
    while let Some(c) = at(i) {
        if c == '\n' {
            out.push('\n');
            line += 1;
            line_map.push(line);
            // Single-line strings and comments end at the line's end.
            if matches!(
                quoting,
                Quoting::Comment | Quoting::Basic | Quoting::Literal
            ) {
                quoting = Quoting::Bare;
            }
            i += 1;
            continue;
        }
        if quoting == Quoting::Comment {
            out.push(c);
            i += 1;
            continue;
        }
        if c == '$' {
            if at(i + 1) == Some('$') {
                out.push('$');
                i += 2;
                continue;
            }
            if at(i + 1) == Some('{') {
                let (value, next) = reference(&chars, i, line, origin, env)?;
                if let Some((name, value)) = value.from_env {
                    let placed = place(&value, quoting).map_err(|why| {
                        bad(
                            line,
                            format!("the value of environment variable `{name}` {why}"),
                        )
                    })?;
                    line_map.extend(std::iter::repeat_n(line, placed.matches('\n').count()));
                    out.push_str(&placed);
                    substituted.push((line, name, placed));
                } else {
                    line_map.extend(std::iter::repeat_n(
                        line,
                        value.fallback.matches('\n').count(),
                    ));
                    out.push_str(&value.fallback);
                }
                i = next;
                continue;
            }
            out.push('$');
            i += 1;
            continue;
        }
        // Track TOML quoting so comments are recognised and substituted
        // values can be escaped for the string they land in.
        let mut len = 1;
        match quoting {
            Quoting::Bare => {
                if c == '#' {
                    quoting = Quoting::Comment;
                } else if starts_with(i, "\"\"\"") {
                    quoting = Quoting::MultiBasic;
                    len = 3;
                } else if starts_with(i, "'''") {
                    quoting = Quoting::MultiLiteral;
                    len = 3;
                } else if c == '"' {
                    quoting = Quoting::Basic;
                } else if c == '\'' {
                    quoting = Quoting::Literal;
                }
            }
            // An escape: skip the escaped character, unless it is a line
            // break (the loop must see it to count lines) or a `$` (which
            // still starts a reference).
            Quoting::Basic | Quoting::MultiBasic
                if c == '\\' && at(i + 1).is_some_and(|n| n != '\n' && n != '$') =>
            {
                len = 2;
            }
            Quoting::Basic if c == '"' => quoting = Quoting::Bare,
            Quoting::Literal if c == '\'' => quoting = Quoting::Bare,
            Quoting::MultiBasic if starts_with(i, "\"\"\"") => {
                quoting = Quoting::Bare;
                len = 3;
                // Up to two more quotes are content before the delimiter.
                while len < 5 && at(i + len) == Some('"') {
                    len += 1;
                }
            }
            Quoting::MultiLiteral if starts_with(i, "'''") => {
                quoting = Quoting::Bare;
                len = 3;
                while len < 5 && at(i + len) == Some('\'') {
                    len += 1;
                }
            }
            _ => {}
        }
        out.extend(chars.iter().skip(i).take(len));
        i += len;
    }
    Ok(Interpolated {
        text: out,
        line_map,
        substituted,
    })
}

/// The outcome of one `${...}` reference.
struct Resolved {
    /// The variable's name and value, when the value comes from the
    /// environment.
    from_env: Option<(String, String)>,
    /// Otherwise: the fallback written in the file.
    fallback: String,
}

/// Resolve the reference starting at `chars[start]` (the `$` of `${`);
/// returns its value and the index just past its `}`.
fn reference(
    chars: &[char],
    start: usize,
    line: usize,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Resolved, usize), ConfigError> {
    let bad = |message: String| ConfigError::BadSyntax {
        origin: origin.to_owned(),
        line,
        message,
    };
    let open = start + 2;
    let Some(close) = chars
        .iter()
        .skip(open)
        .take_while(|&&c| c != '\n')
        .position(|&c| c == '}')
        .map(|p| open + p)
    else {
        let rest: String = chars
            .iter()
            .skip(start)
            .take_while(|&&c| c != '\n')
            .collect();
        return Err(bad(format!(
            "unterminated `${{` in `{rest}`: expected `${{NAME}}` or `${{NAME:-fallback}}`"
        )));
    };
    let inner: String = chars.iter().skip(open).take(close - open).collect();
    let (name, fallback) = match inner.split_once(":-") {
        Some((name, fallback)) => (name, Some(fallback)),
        None => (inner.as_str(), None),
    };
    let valid_name = name.chars().next().is_some_and(is_var_start) && name.chars().all(is_var_char);
    if !valid_name {
        let what = if name.is_empty() {
            "an empty variable name".to_owned()
        } else if let Some(pos) = name
            .find(|c: char| !is_var_char(c))
            .filter(|_| name.chars().next().is_some_and(is_var_start))
        {
            let name_part = name.get(..pos).unwrap_or_default();
            let after = name.get(pos..).unwrap_or_default();
            format!(
                "unexpected `{after}` after variable name `{name_part}` (a fallback is written `:-fallback`)"
            )
        } else {
            format!("invalid variable name `{name}`")
        };
        return Err(bad(format!(
            "bad reference `${{{inner}}}`: {what}; variable names are ASCII letters, digits and `_`, \
             not starting with a digit; write `${{NAME}}` or `${{NAME:-fallback}}`"
        )));
    }
    let value = env(name);
    let resolved = match (value, fallback) {
        (Some(v), Some(fallback)) if v.is_empty() => Resolved {
            from_env: None,
            fallback: fallback.to_owned(),
        },
        (Some(v), _) => Resolved {
            from_env: Some((name.to_owned(), v)),
            fallback: String::new(),
        },
        (None, Some(fallback)) => Resolved {
            from_env: None,
            fallback: fallback.to_owned(),
        },
        (None, None) => {
            return Err(ConfigError::UnsetVariable {
                origin: origin.to_owned(),
                line,
                name: name.to_owned(),
            });
        }
    };
    Ok((resolved, close + 1))
}

/// Make an environment value fit where it is substituted; `Err` says why it
/// cannot.
fn place(value: &str, quoting: Quoting) -> Result<String, String> {
    match quoting {
        Quoting::Basic | Quoting::MultiBasic => {
            let mut escaped = String::with_capacity(value.len());
            for c in value.chars() {
                match c {
                    '\\' => escaped.push_str("\\\\"),
                    '"' => escaped.push_str("\\\""),
                    '\n' => escaped.push_str("\\n"),
                    '\r' => escaped.push_str("\\r"),
                    '\t' => escaped.push('\t'),
                    c if c.is_control() => escaped.push_str(&format!("\\u{:04X}", u32::from(c))),
                    c => escaped.push(c),
                }
            }
            Ok(escaped)
        }
        Quoting::Literal => {
            if value.contains('\'') {
                Err("contains `'`, which a '...' literal string cannot hold; use a \"...\" string instead".to_owned())
            } else if value.chars().any(|c| c.is_control() && c != '\t') {
                Err("contains a line break or control character, which a '...' literal string cannot hold; \
                     use a \"...\" string instead"
                    .to_owned())
            } else {
                Ok(value.to_owned())
            }
        }
        Quoting::MultiLiteral => {
            if value.contains("'''") {
                Err("contains `'''`, which a '''...''' literal string cannot hold; use a \"...\" string instead".to_owned())
            } else {
                Ok(value.to_owned())
            }
        }
        Quoting::Bare | Quoting::Comment => Ok(value.to_owned()),
    }
}

/// Environment values shorter than this are not redacted from toml's
/// messages: they are too short to be secrets, and replacing them would
/// mangle the message's own words.
const REDACT_MIN_LEN: usize = 4;

/// toml's message for `err`, except when the offending line had an
/// environment value substituted (or lines moved): then the line is shown as
/// written in the file and values substituted on it are replaced by their
/// `${NAME}` in the message, so a secret does not end up in an error
/// message.
pub(super) fn parse_message(
    err: &toml::de::Error,
    original: &str,
    interpolated: &Interpolated,
) -> String {
    let fallback = || err.to_string().trim_end().to_owned();
    let Some(span) = err.span() else {
        return fallback();
    };
    let out_line = interpolated
        .text
        .get(..span.start)
        .map_or(1, |before| before.matches('\n').count() + 1);
    let Some(&line) = interpolated.line_map.get(out_line - 1) else {
        return fallback();
    };
    let on_line: Vec<_> = interpolated
        .substituted
        .iter()
        .filter(|(l, _, _)| *l == line)
        .collect();
    if out_line == line && on_line.is_empty() {
        return fallback();
    }
    let mut message = err.message().trim_end().to_owned();
    for (_, name, value) in on_line {
        if value.chars().count() >= REDACT_MIN_LEN {
            message = message.replace(value.as_str(), &format!("${{{name}}}"));
        }
    }
    let written = original.lines().nth(line - 1).unwrap_or_default();
    let gutter = " ".repeat(line.to_string().len());
    format!(
        "TOML parse error at line {line} (shown as written, before `${{...}}` substitution)\n\
         {gutter} |\n{line} | {written}\n{gutter} |\n{message}"
    )
}
