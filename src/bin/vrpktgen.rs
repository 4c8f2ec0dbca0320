//! vrpktgen: vrouter's traffic generator and benchmark driver.
//!
//! `vrpktgen pipeline` runs the forwarding pipeline in memory, with no I/O,
//! so that anyone can measure or profile (perf, callgrind) the per-packet
//! cost of our own code. `vrpktgen tables` measures table memory and load
//! rate. The AF_XDP `send`, `sink` and `run` modes arrive with the
//! benchmark suite.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Instant;
use vrouter::pktgen::scenario::{BenchParams, Case};

#[derive(Parser)]
#[command(name = "vrpktgen", version, about = "vrouter traffic generator and benchmark driver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the forwarding pipeline in memory and report Mpps and ns per packet.
    Pipeline {
        /// local_forward, encap_mplsoudp, encap_mplsogre, encap_mplsoudp_ecmp,
        /// decap_mplsoudp, decap_mplsogre, or all.
        #[arg(long, default_value = "all")]
        case: String,
        /// Packets to process per case.
        #[arg(long, default_value_t = 10_000_000)]
        packets: u64,
        /// Frames per batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// IPv4 prefixes in the VRF.
        #[arg(long, default_value_t = 1_000_000)]
        routes: usize,
        /// IPv6 prefixes in the VRF.
        #[arg(long, default_value_t = 100_000)]
        routes6: usize,
        /// Distinct flows.
        #[arg(long, default_value_t = 10_000)]
        flows: usize,
        /// Inner frame length in bytes.
        #[arg(long, default_value_t = 64)]
        frame_len: usize,
        /// Print one JSON object per case instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Measure table memory (resident set growth) and route load rate.
    Tables {
        /// Number of VRFs.
        #[arg(long, default_value_t = 1)]
        vrfs: usize,
        /// IPv4 routes per VRF.
        #[arg(long, default_value_t = 1_000_000)]
        routes: usize,
        /// IPv6 routes per VRF.
        #[arg(long, default_value_t = 0)]
        routes6: usize,
        /// Routes per batch.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Pipeline { case, packets, batch, routes, routes6, flows, frame_len, json } => {
            let cases: Vec<Case> = if case == "all" {
                Case::ALL.to_vec()
            } else {
                match Case::from_name(&case) {
                    Some(c) => vec![c],
                    None => {
                        eprintln!("vrpktgen: unknown case {case:?}; try --case all");
                        return ExitCode::from(2);
                    }
                }
            };
            if !(14 + 20 + 8..=1500).contains(&frame_len) {
                eprintln!("vrpktgen: --frame-len must be 42..=1500");
                return ExitCode::from(2);
            }
            let params = BenchParams { v4_routes: routes, v6_routes: routes6, flows, batch, frame_len };
            if !json {
                println!("{:<22} {:>10} {:>10} {:>12} {:>10}", "case", "Mpps", "ns/pkt", "packets", "ok");
            }
            let mut failed = false;
            for c in cases {
                let r = vrouter::pktgen::scenario::measure(c, params, packets);
                failed |= r.ok != r.packets;
                if json {
                    println!(
                        "{{\"case\":\"{}\",\"mpps\":{:.3},\"ns_per_packet\":{:.2},\"packets\":{},\"ok\":{},\"batch\":{},\"routes_v4\":{},\"routes_v6\":{},\"flows\":{}}}",
                        c.name(), r.mpps(), r.ns_per_packet(), r.packets, r.ok, batch, routes, routes6, flows
                    );
                } else {
                    println!(
                        "{:<22} {:>10.2} {:>10.1} {:>12} {:>10}",
                        c.name(),
                        r.mpps(),
                        r.ns_per_packet(),
                        r.packets,
                        r.ok
                    );
                }
            }
            if failed {
                eprintln!("vrpktgen: some frames did not get the expected verdict");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Command::Tables { vrfs, routes, routes6, batch, json } => {
            let r = vrouter::pktgen::scenario::measure_tables(vrfs, routes, routes6, batch.max(1));
            if json {
                println!(
                    "{{\"vrfs\":{vrfs},\"routes_v4\":{routes},\"routes_v6\":{routes6},\"rss_bytes\":{},\"load_seconds\":{:.3},\"routes_per_second\":{:.0}}}",
                    r.rss_bytes, r.load.as_secs_f64(), r.routes_per_second()
                );
            } else {
                println!(
                    "{vrfs} VRF(s) x ({routes} IPv4 + {routes6} IPv6) routes: {:.1} MiB resident, loaded in {:.3} s ({:.2} M routes/s)",
                    r.rss_bytes as f64 / 1048576.0,
                    r.load.as_secs_f64(),
                    r.routes_per_second() / 1e6
                );
            }
            let _ = Instant::now();
            ExitCode::SUCCESS
        }
    }
}
