//! `passenger`: the command-line tool.

mod start;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "passenger",
    version,
    about = "passenger-rs: an application server for Ruby, Python and Node.js apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve an app folder on the bundled nginx, in the foreground.
    Start(start::StartOptions),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Start(opts) => start::run(opts),
    };
    if let Err(e) = result {
        eprintln!("passenger: {e}");
        std::process::exit(1);
    }
}
