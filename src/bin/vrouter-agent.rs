//! vrouter-agent: keeps vrouterd's tables in line with the node's intent.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vrouter::agent::{self, AgentConfig, FileSource, IntentSource};
use vrouter::api::client::Client;
use vrouter::outln;

#[derive(Parser)]
#[command(name = "vrouter-agent", version, about = "Fills vrouterd's tables from the node's intent file")]
struct Cli {
    /// The intent file (TOML): networks, pods, remote endpoints, services.
    #[arg(long, default_value = "/etc/vrouter/intent.toml")]
    intent: PathBuf,
    /// vrouterd's API socket.
    #[arg(long, default_value = vrouter::api::proto::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Reconcile once and exit.
    #[arg(long)]
    once: bool,
    /// Print the operations a reconciliation would apply (JSON, one per line), and exit.
    #[arg(long, conflicts_with = "once")]
    dry_run: bool,
    /// Check the intent file and exit.
    #[arg(long, conflicts_with_all = ["once", "dry_run"])]
    check: bool,
    /// Log level (error, warn, info, debug, trace), or RUST_LOG-style
    /// directives (info,vrouter::agent=debug).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = vrouter::cli::init_logging(&cli.log_level) {
        eprintln!("vrouter-agent: {e}");
        return ExitCode::from(2);
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vrouter-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let mut source = FileSource::new(cli.intent.clone());
    if cli.check || cli.once || cli.dry_run {
        let intent = source.poll()?.ok_or("the intent file could not be read")?;
        if cli.check {
            outln!(
                "{}: {} networks, {} pods, {} remotes, {} services, {} policies",
                cli.intent.display(),
                intent.network.len(),
                intent.pod.len(),
                intent.remote.len(),
                intent.service.len(),
                intent.policy.len()
            );
            return Ok(());
        }
        let mut c = Client::connect(&cli.socket, "vrouter-agent").map_err(|e| e.to_string())?;
        c.set_timeout(Some(Duration::from_secs(60)));
        let mac = agent::fabric_mac(&intent)?;
        if cli.dry_run {
            for op in agent::plan(&mut c, &intent, mac)? {
                outln!("{}", serde_json::to_string(&op).map_err(|e| e.to_string())?);
            }
            return Ok(());
        }
        let o = agent::reconcile_once(&mut c, &intent, mac)?;
        outln!("added {}, updated {}, deleted {}", o.added, o.updated, o.deleted);
        return Ok(());
    }
    let (stop, refresh) = agent::signals()?;
    let cfg = AgentConfig { socket: cli.socket.clone(), check_every: Duration::from_secs(1) };
    agent::run(&cfg, &mut source, &stop, &refresh)
}
