//! The process-wide `tracing` subscriber: an `EnvFilter`, text or JSON lines, on
//! stdout or stderr, coloured only when that stream is a terminal (log files and
//! `kubectl logs` stay plain text).

use std::io::IsTerminal;

use tracing_subscriber::fmt::writer::EitherWriter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How each event is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `tracing_subscriber`'s default human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The format named by a `log_format` setting: `json`, or text for anything else.
    pub fn from_name(name: &str) -> Self {
        if name == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }
}

/// Why the subscriber was not installed (most likely: one is installed already).
pub type InitError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The stream logs go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    Stdout,
    Stderr,
}

impl LogOutput {
    fn is_terminal(self) -> bool {
        match self {
            LogOutput::Stdout => std::io::stdout().is_terminal(),
            LogOutput::Stderr => std::io::stderr().is_terminal(),
        }
    }
}

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = EitherWriter<std::io::Stdout, std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        match self {
            LogOutput::Stdout => EitherWriter::A(std::io::stdout()),
            LogOutput::Stderr => EitherWriter::B(std::io::stderr()),
        }
    }
}

/// Installs the global subscriber; fails if one is installed already.
pub fn init(filter: EnvFilter, format: LogFormat, output: LogOutput) -> Result<(), InitError> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(output.is_terminal())
        .with_writer(output);
    match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_selects_json() {
        assert_eq!(LogFormat::from_name("json"), LogFormat::Json);
        assert_eq!(LogFormat::from_name("text"), LogFormat::Text);
        assert_eq!(LogFormat::from_name("JSON"), LogFormat::Text);
        assert_eq!(LogFormat::from_name(""), LogFormat::Text);
    }
}
