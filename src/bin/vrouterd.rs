//! vrouterd: the per-node virtual router daemon.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "vrouterd", version, about = "vrouter's per-node dataplane daemon")]
struct Cli {
    /// Configuration file.
    #[arg(long, default_value = "/etc/vrouter/vrouterd.toml")]
    config: PathBuf,
    /// Log level (error, warn, info, debug, trace), or RUST_LOG-style
    /// directives (info,vrouter::api=debug); RUST_LOG works too.
    #[arg(long)]
    log_level: Option<String>,
    /// Check the configuration and tables, then exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = cli.log_level.or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".into());
    if let Err(e) = vrouter::cli::init_logging(&level) {
        eprintln!("vrouterd: {e}");
        return ExitCode::from(2);
    }
    let cfg = match vrouter::daemon::config::Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vrouterd: {e}");
            return ExitCode::from(2);
        }
    };
    let result = if cli.check { vrouter::daemon::check(&cfg).map(|_| ()) } else { vrouter::daemon::run(cfg) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vrouterd: {e}");
            ExitCode::FAILURE
        }
    }
}
