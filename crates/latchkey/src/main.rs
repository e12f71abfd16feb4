//! `latchkey`: the command-line front of the Latchkey gateway. A thin binary
//! over the library crates: argument parsing, config loading and wiring.

mod ci;
mod cli;
mod client;
mod commands;
mod config;
mod credential;
mod init;
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
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
