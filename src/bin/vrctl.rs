//! vrctl: not built yet. The forwarding core it will run is in the library;
//! see the open issues for the daemon, the control API and the agent.

fn main() -> std::process::ExitCode {
    eprintln!("vrctl: not available yet in this build (only the forwarding core and vrpktgen pipeline are)");
    std::process::ExitCode::from(2)
}
