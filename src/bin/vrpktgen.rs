//! vrpktgen: vrouter's traffic generator and benchmark driver.
//!
//! `vrpktgen pipeline` runs the forwarding pipeline in memory, with no I/O,
//! so that anyone can measure or profile (perf, callgrind) the per-packet
//! cost of our own code. `vrpktgen tables` measures table memory and load
//! rate. `vrpktgen send` and `sink` are the two ends of real traffic on
//! AF_XDP sockets: stamped frames, counted per flow, with latency.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use vrouter::outln;
use vrouter::pktgen::scenario::{BenchParams, Case};

#[derive(Parser)]
#[command(name = "vrpktgen", version, about = "vrouter traffic generator and benchmark driver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a generator end runs.
#[derive(clap::Args)]
struct PortArgs {
    /// The interface to send or receive on (queue 0).
    #[arg(long)]
    dev: String,
    /// Run in this network namespace (`ip netns` name).
    #[arg(long)]
    netns: Option<String>,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many frames.
    #[arg(long)]
    count: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Send stamped UDP frames out of an interface on an AF_XDP socket.
    Send {
        #[command(flatten)]
        port: PortArgs,
        /// Source MAC.
        #[arg(long)]
        src_mac: vrouter::wire::MacAddr,
        /// Destination MAC.
        #[arg(long)]
        dst_mac: vrouter::wire::MacAddr,
        /// Source address (IPv4 or IPv6).
        #[arg(long)]
        src: std::net::IpAddr,
        /// Destination address.
        #[arg(long)]
        dst: std::net::IpAddr,
        /// Frame size on the wire (FCS included), 64 to 1518, or imix.
        #[arg(long, default_value = "64")]
        size: vrouter::pktgen::traffic::Sizes,
        /// Distinct flows (UDP port pairs), up to 16,777,216.
        #[arg(long, default_value_t = 1)]
        flows: u32,
        /// Frames per second; 0 for as fast as possible.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Send the frames already in a tunnel, to drive decapsulation: udp
        /// (MPLS over UDP) or gre (MPLS over GRE).
        #[arg(long)]
        encap: Option<String>,
        /// The tunnel's outer source (IPv4).
        #[arg(long, requires = "encap")]
        outer_src: Option<std::net::Ipv4Addr>,
        /// The tunnel's outer destination (IPv4).
        #[arg(long, requires = "encap")]
        outer_dst: Option<std::net::Ipv4Addr>,
        /// The tunnel's MPLS label.
        #[arg(long, requires = "encap")]
        label: Option<u32>,
    },
    /// Receive on an interface (an AF_XDP socket and XDP program of its
    /// own) and count what `send` stamped: per flow, loss, reordering,
    /// latency percentiles.
    Sink {
        #[command(flatten)]
        port: PortArgs,
        /// Stop once no frame has come for this many milliseconds.
        #[arg(long, default_value_t = 1000)]
        idle_ms: u64,
    },
    /// Send and sink at once, each in its own namespace, and report both:
    /// offered and delivered rate, loss, latency.
    Run {
        #[command(flatten)]
        settings: Box<vrouter::pktgen::run::RunSettings>,
        /// A TOML file with the same settings (`tx-dev = "eth0"`); flags win.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the forwarding pipeline in memory and report Mpps and ns per packet.
    Pipeline {
        /// local_forward, encap_mplsoudp, encap_mplsogre, encap_mplsoudp_ecmp,
        /// decap_mplsoudp, decap_mplsogre, service_mix (pods to remote
        /// pods, one flow in ten to a service), floating_ip_in (a
        /// gateway's clients to a pod's floating IP, DNATed),
        /// floating_ip_shared (the same to a floating IP two pods share,
        /// by an ECMP composite),
        /// floating_ip_out (the pod's answers, SNATed back),
        /// floating_pod_encap (that pod's own flows to remote pods, no
        /// NAT), cross_vrf_in
        /// (remote clients to a pod of another network on this node, by a
        /// route their network imports), cross_vrf_out (that pod's answers,
        /// routed back in the clients' network by their pairs),
        /// local_forward6, encap_mplsoudp6 and decap_mplsoudp6
        /// (local_forward, encap_mplsoudp and decap_mplsoudp between IPv6
        /// pods, to and from the IPv6 prefixes), service6 (an IPv6 pod to
        /// 256 IPv6 service addresses, /128s to an ECMP composite), or all.
        #[arg(long, default_value = "all")]
        case: String,
        /// Packets to process per case (whole batches: rounded up).
        #[arg(long, default_value_t = 10_000_000, value_parser = at_least_one::<u64>)]
        packets: u64,
        /// Frames per batch.
        #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
        batch: usize,
        /// IPv4 prefixes in the VRF.
        #[arg(long, default_value_t = 1_000_000)]
        routes: usize,
        /// IPv6 prefixes in the VRF.
        #[arg(long, default_value_t = 100_000)]
        routes6: usize,
        /// Distinct flows.
        #[arg(long, default_value_t = 10_000, value_parser = at_least_one::<usize>)]
        flows: usize,
        /// Inner frame length in bytes.
        #[arg(long, default_value_t = 64)]
        frame_len: usize,
        /// Send every frame down the general path (no fast path): a
        /// baseline to compare against in the same run.
        #[arg(long)]
        general_path: bool,
        /// Keep no flow cache in the pipeline: the flows' hits take the
        /// flow table and the next hop every time, a same-run baseline.
        #[arg(long)]
        no_flow_cache: bool,
        /// Give the VRF a 100-rule policy: every packet goes through the
        /// flow table (flows are set up in the warm-up, then hit).
        #[arg(long)]
        flow_policy: bool,
        /// Give the pipeline a flow table but no policy, as vrouterd runs
        /// it: a VRF tracks only the flows it must (those to an ECMP
        /// composite, whose member they pin).
        #[arg(long)]
        flow_table: bool,
        /// With --flow-policy (or --policy-change, --route-change): the
        /// policy denies every flow (its allowing rule left out); the
        /// warm-up makes the pairs, and the measured packets are dropped as
        /// their flows say, "ok" when they are.
        #[arg(long, requires = "flow_policy")]
        flow_deny: bool,
        /// Measure flow setup instead: --packets frames, each a new flow,
        /// through a VRF with a 100-rule policy into a flow table of
        /// vrouterd's default size (in rounds of at most three quarters
        /// of it, emptied between), then the same frames again as hits on
        /// their pairs, the baseline of the same run. Not floating_ip_out
        /// or cross_vrf_out, whose pairs their clients make (the _in
        /// cases).
        #[arg(long, conflicts_with_all = ["flow_policy", "flow_table", "threads"])]
        flow_setup: bool,
        /// With --flow-setup: each new flow a TCP SYN (a connection's first
        /// packet, which takes the general path), not a UDP datagram. The
        /// hits are then the same SYNs again, as retransmissions are: on
        /// the general path too.
        #[arg(long, requires = "flow_setup")]
        syn: bool,
        /// Measure what a policy change costs instead: --flows flows set
        /// up under a 100-rule policy, passed over once as hits (the
        /// baseline of the same run), once after another network's policy
        /// changed (one whose pods the VRF's routes do not reach), once
        /// after it changed again with a route to its pod in the VRF (each
        /// flow checked, none decided again), and once after the VRF's own
        /// changed (each flow decided again). Not the floating-IP cases,
        /// whose pairs the public VRF's policy judges, nor cross_vrf_out,
        /// whose pairs its clients make. cross_vrf_in's pairs reach a pod
        /// of another network, whose policy judges them too; not the one
        /// whose change the third pass follows, so they keep their
        /// decisions there as well.
        #[arg(long, conflicts_with_all = ["flow_policy", "flow_table", "threads", "flow_setup"])]
        policy_change: bool,
        /// Measure what a route change costs the flows it does not move
        /// instead: --flows flows set up under a 100-rule policy, passed
        /// over once as hits (the baseline of the same run), once after a
        /// pod's /32 was added to the VRF they route in (a pod on another
        /// node), and once after it was deleted; with the frames of each
        /// pass that the fast lane left to the general path. Fails if a
        /// pass after a change left it more than the hits' pass did.
        #[arg(long, conflicts_with_all = ["flow_policy", "flow_table", "threads", "flow_setup", "policy_change"])]
        route_change: bool,
        /// Workers side by side on the same tables, one per core: their
        /// Mpps add up (1 to 64).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Print one JSON object per case instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Trace packets between pods of two simulated nodes, hop by hop.
    Trace,
    /// Load routes through the control API and delete them again, timed,
    /// against the table writer alone as the baseline.
    RouteLoad {
        /// vrouterd's API socket; without it, an API server with no data
        /// path is started in this process.
        #[arg(long)]
        socket: Option<std::path::PathBuf>,
        /// Routes to load.
        #[arg(long, default_value_t = 1_000_000)]
        routes: u32,
        /// Routes per batch.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch: u32,
        /// The VRF to load into (it must exist on a running vrouterd).
        #[arg(long, default_value_t = 1)]
        vrf: u32,
        /// The next hop the routes point at (0 is vrouterd's discard).
        #[arg(long, default_value_t = 0)]
        nh: u32,
        /// The first address; routes are consecutive /32s.
        #[arg(long, default_value = "100.64.0.0")]
        base: std::net::Ipv4Addr,
        /// Leave the routes in place (no delete pass and no baseline): to
        /// measure forwarding with a big table.
        #[arg(long)]
        keep: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure table memory (resident set growth) and route load rate.
    Tables {
        /// Number of VRFs.
        #[arg(long, default_value_t = 1, value_parser = at_least_one::<usize>)]
        vrfs: usize,
        /// IPv4 routes per VRF.
        #[arg(long, default_value_t = 1_000_000)]
        routes: usize,
        /// IPv6 routes per VRF.
        #[arg(long, default_value_t = 0)]
        routes6: usize,
        /// IPv6 pod addresses (/128s) per VRF, 100 to a node's /64, with
        /// random interface identifiers.
        #[arg(long, default_value_t = 0)]
        hosts6: usize,
        /// Routes per batch.
        #[arg(long, default_value_t = 10_000, value_parser = at_least_one::<usize>)]
        batch: usize,
        /// Reader threads looking routes up, as workers would, while the
        /// routes load.
        #[arg(long, default_value_t = 0)]
        readers: usize,
        /// Give each route a label of its own, as remote pods' routes have
        /// (their interfaces' labels): a target each, where otherwise all
        /// routes share one.
        #[arg(long)]
        labels: bool,
        /// Give each VRF a policy that names networks, as Contrail's
        /// policies between virtual networks do: each route change then
        /// looks for the network its addresses were in.
        #[arg(long)]
        policy_networks: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A count of at least one, for a flag where none would measure nothing:
/// refused with what is wanted, not taken as one unsaid.
fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + From<u8> + PartialOrd,
    T::Err: std::fmt::Display,
{
    let v: T = s.parse().map_err(|e: T::Err| e.to_string())?;
    if v < T::from(1) {
        return Err("must be at least 1".into());
    }
    Ok(v)
}

/// `vrpktgen pipeline --flow-setup`: per case, flows set up per second
/// and per flow, against hits on the same flows in the same run.
fn flow_setups(cases: &[Case], params: BenchParams, packets: u64, syn: bool, json: bool) -> ExitCode {
    if !json {
        outln!(
            "{:<22} {:>12} {:>10} {:>12} {:>10} {:>10} {:>10}",
            "case",
            "M setups/s",
            "ns/setup",
            "hit ns/pkt",
            "setup/hit",
            "flows",
            "pairs"
        );
    }
    let mut failed = false;
    for &c in cases {
        let r = vrouter::pktgen::scenario::measure_setup(c, params, packets, syn);
        let (setup, hit) = (r.setup.ns_per_packet(), r.hit.ns_per_packet());
        // Every frame forwarded, and every setup frame a pair of its own.
        failed |= r.setup.ok != r.setup.packets || r.hit.ok != r.hit.packets || r.pairs != r.setup.packets;
        if json {
            outln!(
                "{}",
                serde_json::json!({
                    "case": c.name(), "proto": if syn { "tcp" } else { "udp" },
                    "setups_per_s": 1e9 / setup, "ns_per_setup": setup,
                    "hit_ns_per_packet": hit, "flows": r.setup.packets, "pairs": r.pairs,
                    "ok": r.setup.ok + r.hit.ok, "capacity": r.capacity, "rounds": r.rounds,
                    "batch": params.batch, "routes_v4": params.v4_routes,
                })
            );
        } else {
            outln!(
                "{:<22} {:>12.2} {:>10.1} {:>12.1} {:>10.2} {:>10} {:>10}",
                c.name(),
                1e3 / setup,
                setup,
                hit,
                setup / hit,
                r.setup.packets,
                r.pairs
            );
        }
    }
    if failed {
        eprintln!("vrpktgen: some frames were not forwarded, or did not each make a pair");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `vrpktgen pipeline --policy-change`: per case, ns per packet of a pass
/// over every flow after another network's policy change and after the
/// VRF's own, against hits in the same run.
fn policy_changes(cases: &[Case], params: BenchParams, json: bool) -> ExitCode {
    if !json {
        outln!(
            "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "case",
            "hit ns",
            "other ns",
            "redecided",
            "reached ns",
            "redecided",
            "own ns",
            "redecided",
            "own/other"
        );
    }
    let mut failed = false;
    for &c in cases {
        let r = vrouter::pktgen::scenario::measure_policy_change(c, params);
        let (hit, other, own) = (r.hit.ns_per_packet(), r.after_other.ns_per_packet(), r.after_own.ns_per_packet());
        let reached = r.after_reached.ns_per_packet();
        // Every frame forwarded (dropped on its flow, with --flow-deny), and
        // the own change decided every pair again.
        let passes = [r.hit, r.after_other, r.after_reached, r.after_own];
        failed |= passes.iter().any(|p| p.ok != p.packets) || r.redecided_own == 0;
        if json {
            outln!(
                "{}",
                serde_json::json!({
                    "case": c.name(), "flows": params.flows, "hit_ns_per_packet": hit,
                    "after_other_ns_per_packet": other, "redecided_after_other": r.redecided_other,
                    "after_reached_ns_per_packet": reached, "redecided_after_reached": r.redecided_reached,
                    "after_own_ns_per_packet": own, "redecided_after_own": r.redecided_own,
                    "batch": params.batch, "routes_v4": params.v4_routes,
                })
            );
        } else {
            outln!(
                "{:<22} {:>10.1} {:>10.1} {:>10} {:>10.1} {:>10} {:>10.1} {:>10} {:>10.2}",
                c.name(),
                hit,
                other,
                r.redecided_other,
                reached,
                r.redecided_reached,
                own,
                r.redecided_own,
                own / other
            );
        }
    }
    if failed {
        eprintln!("vrpktgen: some frames were not forwarded (dropped, with --flow-deny), or the VRF's own change decided nothing again");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `vrpktgen pipeline --route-change`: per case, ns per packet of a pass
/// over every flow after a route was added and after it was deleted,
/// against hits in the same run, and the frames of each pass that took the
/// general path.
fn route_changes(cases: &[Case], params: BenchParams, json: bool) -> ExitCode {
    if !json {
        outln!(
            "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "case",
            "hit ns",
            "general",
            "added ns",
            "general",
            "deleted ns",
            "general",
            "added/hit"
        );
    }
    let (mut failed, mut left) = (false, Vec::new());
    for &c in cases {
        let r = vrouter::pktgen::scenario::measure_route_change(c, params);
        let (hit, added, deleted) =
            (r.hit.ns_per_packet(), r.after_add.ns_per_packet(), r.after_delete.ns_per_packet());
        failed |= [r.hit, r.after_add, r.after_delete].iter().any(|p| p.ok != p.packets);
        // A route change that moves none of the flows leaves the lane's
        // hits in the lane: a pass after it that gives the general path
        // more frames than the hits' pass did is a regression (until
        // fc0ec19, every denied flow's packet, under --flow-deny).
        if r.general_after_add.max(r.general_after_delete) > r.general_hit {
            left.push(c.name());
        }
        if json {
            outln!(
                "{}",
                serde_json::json!({
                    "case": c.name(), "flows": params.flows, "hit_ns_per_packet": hit,
                    "general_hit": r.general_hit, "after_add_ns_per_packet": added,
                    "general_after_add": r.general_after_add, "after_delete_ns_per_packet": deleted,
                    "general_after_delete": r.general_after_delete,
                    "batch": params.batch, "routes_v4": params.v4_routes,
                })
            );
        } else {
            outln!(
                "{:<22} {:>10.1} {:>10} {:>10.1} {:>10} {:>10.1} {:>10} {:>10.2}",
                c.name(),
                hit,
                r.general_hit,
                added,
                r.general_after_add,
                deleted,
                r.general_after_delete,
                added / hit
            );
        }
    }
    if failed {
        eprintln!("vrpktgen: some frames were not forwarded (dropped, with --flow-deny)");
    }
    if !left.is_empty() {
        eprintln!("vrpktgen: after a route change the general path took frames the lane took before: {left:?}");
    }
    if failed || !left.is_empty() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Pipeline {
            case,
            packets,
            batch,
            routes,
            routes6,
            flows,
            frame_len,
            general_path,
            no_flow_cache,
            flow_policy,
            flow_table,
            flow_deny,
            flow_setup,
            syn,
            policy_change,
            route_change,
            threads,
            json,
        } => {
            if !(1..=64).contains(&threads) {
                eprintln!("vrpktgen: --threads must be 1..=64");
                return ExitCode::from(2);
            }
            // A measurement takes the cases it means something for: flow
            // setup not the answers' cases (their frames answer pairs their
            // clients made: those setups are the clients' cases'), a policy
            // change neither those nor the floating-IP cases (their pairs
            // are judged in the public VRF, not in the pods' one the
            // measurement changes).
            let answers = |c: &Case| c.opened_by().is_some();
            let measured = |c: &Case| !((flow_setup || policy_change) && answers(c) || policy_change && c.floating());
            let cases: Vec<Case> = if case == "all" {
                Case::ALL.into_iter().filter(measured).collect()
            } else {
                match Case::from_name(&case) {
                    Some(c) if measured(&c) => vec![c],
                    Some(_) => {
                        let help = "see --help for --flow-setup and --policy-change";
                        eprintln!("vrpktgen: {case} is not measured that way: {help}");
                        return ExitCode::from(2);
                    }
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
            let params = BenchParams {
                v4_routes: routes,
                v6_routes: routes6,
                flows,
                batch,
                frame_len,
                fast_path: !general_path,
                flow_cache: !no_flow_cache,
                flow_policy,
                flow_table,
                flow_deny,
            };
            if flow_setup {
                return flow_setups(&cases, params, packets, syn, json);
            }
            if policy_change {
                return policy_changes(&cases, params, json);
            }
            if route_change {
                return route_changes(&cases, params, json);
            }
            if !json {
                outln!("{:<22} {:>10} {:>10} {:>12} {:>10}", "case", "Mpps", "ns/pkt", "packets", "ok");
            }
            let mut failed = false;
            for c in cases {
                let r = if threads == 1 {
                    vrouter::pktgen::scenario::measure(c, params, packets)
                } else {
                    vrouter::pktgen::scenario::measure_threads(c, params, packets, threads, true)
                };
                failed |= r.ok != r.packets;
                if json {
                    outln!(
                        "{{\"case\":\"{}\",\"mpps\":{:.3},\"ns_per_packet\":{:.2},\"packets\":{},\"ok\":{},\"batch\":{},\"routes_v4\":{},\"routes_v6\":{},\"flows\":{},\"threads\":{}}}",
                        c.name(), r.mpps(), r.ns_per_packet() * threads as f64, r.packets, r.ok, batch, routes, routes6, flows, threads
                    );
                } else {
                    outln!(
                        "{:<22} {:>10.2} {:>10.1} {:>12} {:>10}",
                        c.name(),
                        r.mpps(),
                        r.ns_per_packet() * threads as f64,
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
        Command::Trace => trace(),
        Command::Send { port, src_mac, dst_mac, src, dst, size, flows, rate, encap, outer_src, outer_dst, label } => {
            use vrouter::pktgen::traffic::{Encap, Spec, Templates};
            let encap = match encap.as_deref().map(|k| Encap::from_settings(k, outer_src, outer_dst, label)) {
                None => None,
                Some(Ok(e)) => Some(e),
                Some(Err(e)) => return fail(&e),
            };
            let l2 = vrouter::pktgen::build::L2 { src: src_mac, dst: dst_mac };
            let templates = match Templates::new(&Spec { l2, src, dst, flows, sizes: size, encap }) {
                Ok(t) => t,
                Err(e) => return fail(&e),
            };
            if let Err(e) = enter(&port) {
                return fail(&e);
            }
            let o = vrouter::pktgen::port::SendOptions {
                rate,
                count: port.count,
                duration: std::time::Duration::from_secs_f64(port.duration),
                progress: !port.json,
            };
            match vrouter::pktgen::port::send(&port.dev, &templates, &o) {
                Ok(r) => {
                    let v = serde_json::json!({
                        "sent": r.sent, "bytes": r.bytes, "seconds": r.seconds, "pps": r.pps(),
                        "flows": flows, "rate": rate,
                    });
                    if port.json {
                        outln!("{v}");
                    } else {
                        outln!(
                            "sent {} frames ({} bytes) in {:.3} s: {:.3} Mpps",
                            r.sent,
                            r.bytes,
                            r.seconds,
                            r.pps() / 1e6
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("send on {}: {e}", port.dev)),
            }
        }
        Command::Run { settings, config, json } => {
            let settings = match config {
                Some(path) => match vrouter::pktgen::run::RunSettings::from_file(&path) {
                    Ok(file) => settings.over(file).into(),
                    Err(e) => return fail(&e),
                },
                None => settings,
            };
            let plan = match settings.resolve() {
                Ok(p) => p.with_progress(!json),
                Err(e) => return fail(&e),
            };
            let r = match plan.run() {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            let s = &r.sent;
            // Per-flow counts summarised: a million of them is no use here.
            let mut sink = sink_json(&r.received);
            if let Some(o) = sink.as_object_mut() {
                o.remove("per_flow");
                let per_flow = &r.received.tally.per_flow;
                o.insert("per_flow_min".into(), per_flow.iter().min().copied().unwrap_or(0).into());
                o.insert("per_flow_max".into(), per_flow.iter().max().copied().unwrap_or(0).into());
            }
            let v = serde_json::json!({
                "sent": s.sent, "seconds": s.seconds, "offered_pps": s.pps(), "delivered_pps": r.delivered_pps(),
                "received": r.received.tally.stamped, "lost": r.lost(),
                "loss": r.lost() as f64 / s.sent.max(1) as f64, "busy_cores": r.busy_cores, "sink": sink,
            });
            if json {
                outln!("{v}");
            } else {
                let p = r.received.tally.percentiles(&[50.0, 99.0, 99.9]);
                let us = |x: Option<u64>| x.map_or("-".to_string(), |n| format!("{:.1} µs", n as f64 / 1e3));
                outln!(
                    "offered {:.3} Mpps, delivered {:.3} Mpps: {} sent, {} received, {} lost ({:.2} %) in {:.3} s; latency p50 {} p99 {} p99.9 {}",
                    s.pps() / 1e6,
                    r.delivered_pps() / 1e6,
                    s.sent,
                    r.received.tally.stamped,
                    r.lost(),
                    r.lost() as f64 * 100.0 / s.sent.max(1) as f64,
                    s.seconds,
                    us(p[0]),
                    us(p[1]),
                    us(p[2])
                );
            }
            ExitCode::SUCCESS
        }
        Command::Sink { port, idle_ms } => {
            if let Err(e) = enter(&port) {
                return fail(&e);
            }
            let o = vrouter::pktgen::port::SinkOptions {
                duration: std::time::Duration::from_secs_f64(port.duration),
                count: port.count,
                idle: std::time::Duration::from_millis(idle_ms),
                progress: !port.json,
            };
            match vrouter::pktgen::port::sink(&port.dev, &o) {
                Ok(r) => {
                    let t = &r.tally;
                    let p = t.percentiles(&[50.0, 99.0, 99.9]);
                    let lost = t.seq_end.saturating_sub(t.stamped);
                    let v = sink_json(&r);
                    if port.json {
                        outln!("{v}");
                    } else {
                        let us = |x: Option<u64>| x.map_or("-".to_string(), |n| format!("{:.1} µs", n as f64 / 1e3));
                        outln!(
                            "received {} frames in {} flows ({} lost, {} reordered, {} not ours) in {:.3} s: {:.3} Mpps; latency p50 {} p99 {} p99.9 {}",
                            t.stamped, t.flows_seen(), lost, t.reordered, t.other, r.seconds,
                            t.stamped as f64 / r.seconds.max(1e-9) / 1e6, us(p[0]), us(p[1]), us(p[2])
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("sink on {}: {e}", port.dev)),
            }
        }
        Command::RouteLoad { socket, routes, batch, vrf, nh, base, keep, json } => {
            use vrouter::pktgen::routeload;
            let p = routeload::LoadParams { routes, batch, vrf, nh, base, keep };
            let (sock, local) = match socket {
                Some(s) => (s, false),
                None => match routeload::local_server(vrf) {
                    Ok(s) => (s, true),
                    Err(e) => {
                        eprintln!("vrpktgen: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            let loaded = routeload::load(&sock, &p);
            if local {
                // The server was this process's own; its socket goes with it.
                let _ = std::fs::remove_dir_all(sock.parent().unwrap_or(&sock));
            }
            let r = match loaded {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("vrpktgen: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let secs = |d: std::time::Duration| d.as_secs_f64();
            let Some(delete) = r.delete else {
                if json {
                    outln!(
                        "{{\"routes\":{routes},\"batch\":{},\"add_seconds\":{:.3},\"kept\":true}}",
                        p.batch,
                        secs(r.add)
                    );
                } else {
                    outln!("{routes} IPv4 routes added through the API in {:.2} s, and kept", secs(r.add));
                }
                return ExitCode::SUCCESS;
            };
            let baseline = routeload::direct(&p);
            if json {
                outln!(
                    "{{\"routes\":{routes},\"batch\":{},\"server\":\"{}\",\"add_seconds\":{:.3},\"delete_seconds\":{:.3},\"routes_per_second\":{:.0},\"direct_add_seconds\":{:.3},\"api_over_direct\":{:.2}}}",
                    p.batch, if local { "in-process" } else { "vrouterd" }, secs(r.add), secs(delete),
                    f64::from(routes) / secs(r.add), secs(baseline), secs(r.add) / secs(baseline)
                );
            } else {
                outln!(
                    "{routes} IPv4 routes in batches of {} through the API ({}): added in {:.2} s ({:.2} M routes/s), deleted in {:.2} s",
                    p.batch, if local { "in-process server, no data path" } else { "vrouterd" },
                    secs(r.add), f64::from(routes) / secs(r.add) / 1e6, secs(delete)
                );
                outln!(
                    "baseline, same run: TablesWriter::apply alone adds them in {:.2} s; the API costs x{:.2} of that",
                    secs(baseline),
                    secs(r.add) / secs(baseline)
                );
            }
            ExitCode::SUCCESS
        }
        Command::Tables { vrfs, routes, routes6, hosts6, batch, readers, labels, policy_networks, json } => {
            use vrouter::pktgen::scenario::{measure_tables, TablesParams};
            let r = measure_tables(TablesParams {
                vrfs,
                v4: routes,
                v6: routes6,
                hosts6,
                batch,
                readers,
                labels,
                policy_networks,
            });
            if json {
                outln!(
                    "{{\"vrfs\":{vrfs},\"labels\":{labels},\"policy_networks\":{policy_networks},\"routes_v4\":{routes},\"routes_v6\":{routes6},\"hosts_v6\":{hosts6},\"table_bytes\":{},\"rss_bytes\":{},\"load_seconds\":{:.3},\"routes_per_second\":{:.0},\"reader_lookups\":{},\"route_batch_seconds\":{:.6},\"policy_change_seconds\":{:.6},\"delete_seconds\":{:.3},\"deletes_per_second\":{:.0}}}",
                    r.table_bytes, r.rss_bytes, r.load.as_secs_f64(), r.routes_per_second(), r.reader_lookups,
                    r.route_batch.as_secs_f64(), r.policy_change.as_secs_f64(),
                    r.unload.as_secs_f64(), r.routes as f64 / r.unload.as_secs_f64().max(1e-9)
                );
            } else {
                let with = match (labels, policy_networks) {
                    (false, false) => "",
                    (true, false) => ", a label each",
                    (false, true) => ", under policies naming networks",
                    (true, true) => ", a label each, under policies naming networks",
                };
                outln!(
                    "{vrfs} VRF(s) x ({routes} IPv4 + {routes6} IPv6 + {hosts6} IPv6 /128) routes{with}: tables hold {:.1} MiB ({:.1} MiB resident growth), loaded in {:.3} s ({:.2} M routes/s)",
                    r.table_bytes as f64 / 1048576.0,
                    r.rss_bytes as f64 / 1048576.0,
                    r.load.as_secs_f64(),
                    r.routes_per_second() / 1e6
                );
                if readers > 0 {
                    outln!("{readers} reader(s) completed {} lookups meanwhile", r.reader_lookups);
                }
                outln!(
                    "a policy change (each VRF's route targets looked through for one to its pods): {:.1} µs a batch, against {:.1} µs a batch of {batch} routes ({:.2}x)",
                    r.policy_change.as_secs_f64() * 1e6,
                    r.route_batch.as_secs_f64() * 1e6,
                    r.policy_change.as_secs_f64() / r.route_batch.as_secs_f64().max(1e-9)
                );
                outln!(
                    "deleted again in {:.3} s ({:.2} M routes/s)",
                    r.unload.as_secs_f64(),
                    r.routes as f64 / r.unload.as_secs_f64().max(1e-9) / 1e6
                );
            }
            ExitCode::SUCCESS
        }
    }
}

/// The demo: each step says what should happen, shows what did, and fails
/// loudly if the two differ.
fn trace() -> ExitCode {
    use vrouter::pipeline::Verdict;
    use vrouter::pktgen::demo::{arp_from_pod, from_pod, trace, two_nodes};
    let (mut n1, mut n2) = two_nodes();
    let mut ok = true;
    let step = |ok: &mut bool, title: &str, lines: Vec<String>, got: Verdict, want: Verdict| {
        outln!("\n{title}");
        for l in lines {
            outln!("{l}");
        }
        let good = got == want;
        outln!("  => {:?} {}", got, if good { "(as expected)" } else { "(UNEXPECTED)" });
        *ok &= good;
    };
    let (l, v) = trace(&mut n1, &mut n2, 1, &arp_from_pod(1, "10.1.0.2", "10.1.0.1"));
    step(&mut ok, "a1 asks for its gateway: vrouter answers (proxy ARP)", l, v, Verdict::Tx(1));
    let (l, v) = trace(&mut n1, &mut n2, 1, &from_pod(1, "10.1.0.2", "10.1.0.3", 1000, 64));
    step(&mut ok, "a1 -> a2 on the same node: routed in VRF blue, MACs rewritten, TTL 64 -> 63", l, v, Verdict::Tx(2));
    let (l, v) = trace(&mut n1, &mut n2, 1, &from_pod(1, "10.1.0.2", "10.1.1.2", 1000, 64));
    step(&mut ok, "a1 -> b1 on node 2: MPLS over UDP, label 16 names b1's vif there", l, v, Verdict::Tx(1));
    let (l, v) = trace(&mut n1, &mut n2, 1, &from_pod(1, "10.1.0.2", "10.1.1.3", 1000, 64));
    step(&mut ok, "a1 -> b2 on node 2: MPLS over GRE", l, v, Verdict::Tx(2));
    outln!("\na1 -> service 10.96.0.10, 12 flows: ECMP over b1, b2, b3 by flow hash");
    let mut per_pod = [0u32; 4];
    for sport in 0..12 {
        let (_, v) = trace(&mut n1, &mut n2, 1, &from_pod(1, "10.1.0.2", "10.96.0.10", 2000 + sport, 64));
        if let Verdict::Tx(p @ 1..=3) = v {
            per_pod[p as usize] += 1;
        }
    }
    let spread = per_pod[1..].iter().all(|&n| n > 0);
    outln!(
        "  flows per pod: b1 {}, b2 {}, b3 {} {}",
        per_pod[1],
        per_pod[2],
        per_pod[3],
        if spread { "(as expected)" } else { "(UNEXPECTED)" }
    );
    ok &= spread;
    let (l, v) = trace(&mut n1, &mut n2, 1, &from_pod(1, "10.1.0.2", "10.1.1.2", 33434, 1));
    step(&mut ok, "a1 -> b1 with TTL 1 (traceroute): ICMP Time Exceeded from the gateway", l, v, Verdict::Tx(1));
    let (l, v) = trace(&mut n1, &mut n2, 3, &from_pod(3, "10.1.0.2", "10.1.1.2", 1000, 64));
    step(
        &mut ok,
        "r1 (VRF red, same address as a1) -> b1: red has no route, isolation holds",
        l,
        v,
        Verdict::Drop(vrouter::stats::DropReason::NoRoute),
    );
    if ok {
        outln!("\nall steps behaved as expected");
        ExitCode::SUCCESS
    } else {
        eprintln!("\nsome steps did not behave as expected");
        ExitCode::FAILURE
    }
}

fn fail(why: &str) -> ExitCode {
    eprintln!("vrpktgen: {why}");
    ExitCode::from(1)
}

/// A sink's report as JSON (`vrpktgen sink --json`, and `run`'s "sink").
fn sink_json(r: &vrouter::pktgen::port::SinkReport) -> serde_json::Value {
    let t = &r.tally;
    let p = t.percentiles(&[50.0, 99.0, 99.9]);
    serde_json::json!({
        "received": t.stamped, "other": t.other, "bytes": t.bytes, "flows": t.flows_seen(),
        "per_flow": t.per_flow, "lost": t.seq_end.saturating_sub(t.stamped), "reordered": t.reordered,
        "seconds": r.seconds, "pps": t.stamped as f64 / r.seconds.max(1e-9),
        "xdp_mode": format!("{:?}", r.mode).to_lowercase(),
        "latency_ns": { "p50": p[0], "p99": p[1], "p999": p[2] },
    })
}

/// Enters the port's network namespace, if it names one, and checks its duration.
fn enter(port: &PortArgs) -> Result<(), String> {
    if !(port.duration.is_finite() && port.duration > 0.0) {
        return Err(format!("--duration {}: a positive number of seconds", port.duration));
    }
    match &port.netns {
        Some(ns) => vrouter::io::enter_netns(ns).map_err(|e| format!("network namespace {ns}: {e}")),
        None => Ok(()),
    }
}
