//! `latchkey`: the command-line front of the Latchkey gateway. A thin binary
//! over the library crates: argument parsing, config loading and wiring.

mod ci;
mod cli;
mod client;
mod commands;
mod config;
mod credential;
mod dev_app;
mod dev_cgit;
mod documents;
mod init;
mod login;
mod output;
mod witness;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            std::process::ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, like anyhow's `{:#}`, but a cause
/// whose text the message already holds is not repeated. Library errors
/// quote their cause in their own message (so a log line with `%e` is
/// whole) and also return it as `source()`; printed naively, a missing file
/// said `No such file or directory` two or three times.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let shown = io.to_string();
        #[derive(Debug)]
        struct Quoting {
            source: std::io::Error,
        }
        impl std::fmt::Display for Quoting {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "cannot read `x`: {}", self.source)
            }
        }
        impl std::error::Error for Quoting {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.source)
            }
        }
        let e = anyhow::Error::new(Quoting { source: io }).context("policies in `x`");
        let text = super::error_text(&e);
        assert_eq!(text.matches(&shown).count(), 1, "{text}");
        assert!(
            text.starts_with("policies in `x`: cannot read `x`: "),
            "{text}"
        );
    }
}
