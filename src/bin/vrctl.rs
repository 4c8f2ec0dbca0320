//! vrctl: look inside a running vrouterd, through its API only.
//!
//! The moves are Tungsten Fabric's (`vif`, `nh`, `rt`, `mpls`, `dropstats`,
//! `vrfstats`, `vrouter --info`); every command prints an aligned table, or
//! JSON with `--json`.

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vrouter::api::client::{Client, ClientError};
use vrouter::cli::{count, reader_gone, show, Table};
use vrouter::stats::DropReason;

#[derive(Parser)]
#[command(name = "vrctl", version, about = "Inspect vrouterd: interfaces, next hops, routes, labels, counters")]
struct Cli {
    /// vrouterd's API socket.
    #[arg(long, global = true, env = "VRCTL_SOCKET", default_value = vrouter::api::proto::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Interfaces (Contrail's `vif`).
    Vif {
        #[command(subcommand)]
        cmd: VifCmd,
    },
    /// Next hops (`nh`).
    Nh {
        #[command(subcommand)]
        cmd: GetList,
    },
    /// Routes (`rt`).
    Rt {
        #[command(subcommand)]
        cmd: RtCmd,
    },
    /// Incoming MPLS labels (`mpls`).
    Mpls {
        #[command(subcommand)]
        cmd: GetList,
    },
    /// VRFs.
    Vrf {
        #[command(subcommand)]
        cmd: VrfCmd,
    },
    /// Flows (`flow`): list, get, top, stats, rate, delete, flush.
    Flow {
        #[command(subcommand)]
        cmd: FlowCmd,
    },
    /// VRFs' network policies.
    Policy {
        #[command(subcommand)]
        cmd: VrfCmd,
    },
    /// Drops by reason (`dropstats`).
    Dropstats {
        #[command(flatten)]
        rate: RateArgs,
        /// Show reasons with no drops too.
        #[arg(long)]
        all: bool,
        /// Only what came in on one vif, by index or interface name
        /// (`dropstats --vif`): which pod's packets drop, and why.
        #[arg(long)]
        vif: Option<String>,
    },
    /// A vif's frames, as vrouterd sees them (Contrail's `vifdump`): each
    /// one received, with what vrouterd did with it, and each one sent, as
    /// rewritten. tcpdump on a pod's veth misses what XDP redirects, and on
    /// the fabric NIC sees no tunnel vrouterd takes. One line a frame, or
    /// pcapng with -w, which tcpdump, tshark and Wireshark read (the
    /// direction, and the verdict as a comment). Until Ctrl-C, -c or
    /// --duration. Lines give the time of day in UTC.
    Vifdump {
        /// The vif, by index or interface name.
        vif: String,
        /// Write pcapng to FILE (`-`: standard output, as in
        /// `vrctl vifdump 3 -w - | tshark -r -`).
        #[arg(short = 'w', long = "write")]
        write: Option<PathBuf>,
        /// Stop after this many frames.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Keep at most this many bytes of each frame.
        #[arg(short = 's', long, default_value_t = vrouter::capture::MAX_SNAPLEN as u32)]
        snaplen: u32,
        /// Only frames whose packet (the one inside, for a tunnel) matches,
        /// terms joined by `&`, as for `flow list`: `IP`, `IP:PORT`, `:PORT`,
        /// `IP:PORT,IP:PORT` (between the two), `proto tcp|udp|icmp|N`.
        /// vrouterd leaves the rest uncopied, so a busy vif's capture keeps up.
        #[arg(long = "match")]
        filter: Option<String>,
        /// Only the received frames the fast lane left to the general path,
        /// each with why (`vrctl runtime`'s causes): which of a vif's
        /// packets take the slow way. vrouterd queues no other frame, so
        /// a busy vif's traffic does not crowd them out.
        #[arg(long)]
        general: bool,
    },
    /// What vrouterd would do with the first packet of a flow from a pod,
    /// or from another node through a tunnel to the fabric vif (OVS's
    /// `ofproto/trace`): the route it takes, the policy rule that judges
    /// it, the ECMP member its hash picks, its NAT, and the frame as it
    /// would leave, tunnel and all; or why it would be dropped. Run through
    /// a pipeline of its own against the live tables: nothing is sent, and
    /// no flow is made.
    Trace {
        /// The pod's vif, or the fabric's, by index or interface name.
        vif: String,
        /// The destination address.
        dst: std::net::IpAddr,
        /// The source address (a pod's own by default; from the fabric,
        /// the address behind the other node, which must be given).
        #[arg(long)]
        src: Option<std::net::IpAddr>,
        /// From the fabric: the MPLS label the packet comes with (`vrctl
        /// mpls` lists this node's).
        #[arg(long)]
        label: Option<u32>,
        /// From the fabric: the tunnel, mpls-o-udp (the default) or mpls-o-gre.
        #[arg(long)]
        encap: Option<String>,
        /// From the fabric: the node that sent it, the tunnel's outer source.
        #[arg(long)]
        from: Option<std::net::Ipv4Addr>,
        /// udp, tcp (a SYN) or icmp (an echo request).
        #[arg(long, default_value = "udp")]
        proto: String,
        /// Source port (the echo id for icmp).
        #[arg(long, default_value_t = 40000)]
        sport: u16,
        /// Destination port.
        #[arg(long, default_value_t = 80)]
        dport: u16,
    },
    /// Per-VRF packet counters by next-hop type (`vrfstats`).
    Vrfstats {
        /// One VRF, by id or name.
        #[arg(long)]
        vrf: Option<String>,
    },
    /// Build, limits, table occupancy and workers (`vrouter --info`).
    Info,
    /// Where each worker's time goes: cycles and nanoseconds per packet in
    /// rx, parse, lookup, rewrite and tx (VPP's `show runtime`). Sampled:
    /// one batch in eight is timed.
    Runtime,
    /// Prints a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum VifCmd {
    /// Every vif, with its counters.
    List {
        #[command(flatten)]
        rate: RateArgs,
    },
    /// One vif.
    Get {
        /// Vif index, or interface name.
        vif: String,
    },
}

#[derive(Subcommand)]
enum GetList {
    /// Every entry.
    List,
    /// One entry.
    Get {
        /// Its id.
        id: u32,
    },
}

#[derive(Subcommand)]
enum VrfCmd {
    /// Every one.
    List,
}

#[derive(Subcommand)]
enum FlowCmd {
    /// Flow entries, both directions of each pair (Contrail's `flow -l`).
    List {
        /// Only flows that match, terms joined by `&`: `IP`, `IP:PORT`,
        /// `:PORT` (either side), `IP:PORT,IP:PORT` (between the two, either
        /// way), `vrf ID|NAME`, `proto tcp|udp|icmp|N`, `vif INDEX|NAME`,
        /// `rule VRF:N|VRF:default` (the flows a policy rule decides or
        /// lets on, as RULE shows it: `rule vrf3:0`, or `rule nginx:0`).
        /// E.g. "10.1.0.2:80 & vrf blue & proto tcp", "10.1.0.2,10.1.1.3:80".
        #[arg(long = "match")]
        filter: Option<String>,
    },
    /// One entry by its index.
    Get {
        /// Index.
        index: u32,
    },
    /// The busiest flows, refreshed like top.
    Top {
        #[command(flatten)]
        rate: RateArgs,
        /// Sort by packets or bytes per second.
        #[arg(long, value_enum, default_value = "pps")]
        sort: TopSort,
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        lines: usize,
    },
    /// The table: how full, its memory, the limits per vif and per VRF,
    /// the timeouts, and the pairs set up and torn down so far.
    Stats,
    /// Flow setups and teardowns per second.
    Rate {
        #[command(flatten)]
        rate: RateArgs,
    },
    /// Fragmented datagrams whose first fragment's ports are kept for the
    /// later fragments, how often those found them, and what became of
    /// those held because they came before their first.
    Fragments,
    /// Removes one flow pair, by either entry's index.
    Delete {
        /// Index.
        index: u32,
    },
    /// Removes every flow.
    Flush,
}

#[derive(Clone, Copy, ValueEnum)]
enum TopSort {
    Pps,
    Bps,
}

#[derive(Clone, Copy, ValueEnum)]
enum Family {
    Inet,
    Inet6,
}

#[derive(Subcommand)]
enum RtCmd {
    /// Every route of a VRF, in address order.
    Dump {
        /// VRF id or name.
        #[arg(long)]
        vrf: String,
        /// One address family.
        #[arg(long, value_enum)]
        family: Option<Family>,
    },
    /// The route the data path uses for ADDR (longest-prefix match), or
    /// exactly the route ADDR/LEN.
    Get {
        /// An address, or a prefix ADDR/LEN.
        addr: String,
        /// VRF id or name.
        #[arg(long)]
        vrf: String,
    },
}

#[derive(clap::Args, Clone, Copy)]
struct RateArgs {
    /// Live per-second rates, refreshed until Ctrl-C.
    #[arg(long)]
    rate: bool,
    /// With --rate (or top, rate): stop after this many refreshes.
    #[arg(long)]
    count: Option<u64>,
    /// With --rate (or top, rate): seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Completion { shell } = cli.cmd {
        clap_complete::generate(shell, &mut Cli::command(), "vrctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let result = Client::connect(&cli.socket, "vrctl").and_then(|mut c| {
        // A vrouterd that stopped answering is reported, not waited for.
        c.set_timeout(Some(Duration::from_secs(30)));
        run(&mut c, &cli)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vrctl: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

fn run(c: &mut Client, cli: &Cli) -> Result<()> {
    let json = cli.json;
    match &cli.cmd {
        Cmd::Vif { cmd: VifCmd::List { rate } } if rate.rate => rates(c, json, *rate, &vif_rates),
        Cmd::Vif { cmd: VifCmd::List { .. } } => {
            let items = c.dump_all(json!({ "object": "vif" }))?;
            emit(json, &Value::from(items.clone()), || vif_table(&items))
        }
        Cmd::Vif { cmd: VifCmd::Get { vif } } => {
            let index = vif_index(c, vif)?;
            let v = c.call("get", json!({ "vif": index }))?;
            emit(json, &v, || vif_detail(&v))
        }
        Cmd::Nh { cmd: GetList::List } => {
            let items = c.dump_all(json!({ "object": "nexthop" }))?;
            emit(json, &Value::from(items.clone()), || nh_table(&items))
        }
        Cmd::Nh { cmd: GetList::Get { id } } => {
            let v = c.call("get", json!({ "nexthop": id }))?;
            emit(json, &v, || nh_table(std::slice::from_ref(&v)))
        }
        Cmd::Mpls { cmd: GetList::List } => {
            let items = c.dump_all(json!({ "object": "label" }))?;
            let nhs = nexthops(c)?;
            emit(json, &Value::from(items.clone()), || label_table(&items, &nhs))
        }
        Cmd::Mpls { cmd: GetList::Get { id } } => {
            let v = c.call("get", json!({ "label": id }))?;
            let nhs = nexthops(c)?;
            emit(json, &v, || label_table(std::slice::from_ref(&v), &nhs))
        }
        Cmd::Vrf { cmd: VrfCmd::List } => {
            let items = c.dump_all(json!({ "object": "vrf" }))?;
            emit(json, &Value::from(items.clone()), || vrf_table(&items))
        }
        Cmd::Rt { cmd: RtCmd::Dump { vrf, family } } => {
            let id = vrf_id(c, vrf)?;
            route_dump(c, json, id, *family)
        }
        Cmd::Rt { cmd: RtCmd::Get { addr, vrf } } => {
            let id = vrf_id(c, vrf)?;
            let v = if addr.contains('/') {
                let r = c.call("get", json!({ "route": { "vrf": id, "prefix": addr } }))?;
                let nh = c.call("get", json!({ "nexthop": r["nh"] })).unwrap_or(Value::Null);
                let network = r.get("network").cloned().unwrap_or(json!(id));
                json!({ "vrf": id, "prefix": r["prefix"], "nh": r["nh"], "label": r["label"], "network": network, "nexthop": nh })
            } else {
                c.call("lookup", json!({ "vrf": id, "address": addr }))?
            };
            emit(json, &v, || {
                let mut t = Table::new(&["PREFIX", "LABEL", "NH", "NET", "TYPE", "DETAILS"]);
                t.row(vec![
                    show(&v["prefix"]),
                    show(&v["label"]),
                    show(&v["nh"]),
                    show(&v["network"]),
                    show(&v["nexthop"]["type"]),
                    nh_details(&v["nexthop"]),
                ]);
                t.to_string()
            })
        }
        Cmd::Dropstats { rate, all, vif } => dropstats(c, json, *rate, *all, vif.as_deref()),
        Cmd::Vifdump { vif, write, count, duration, snaplen, filter, general } => {
            let filter = match_of(c, filter.as_deref())?;
            let duration = duration.map(Duration::from_secs_f64);
            let how = Dump { count: *count, duration, snaplen: *snaplen, filter, general_only: *general };
            vifdump(c, json, vif, write.as_deref(), how)
        }
        Cmd::Trace { vif, dst, src, label, encap, from, proto, sport, dport } => {
            let stats = c.call("stats", json!({}))?;
            let index = find_vif(&stats, vif)?["index"].clone();
            let proto = proto.parse::<u8>().map_or_else(|_| json!(proto), |n| json!(n));
            let mut params = json!({ "vif": index, "dst": dst, "proto": proto, "sport": sport, "dport": dport });
            let given = [("src", src.map(|a| json!(a))), ("label", label.map(|l| json!(l)))];
            let tunnel = [("encap", encap.as_ref().map(|e| json!(e))), ("from", from.map(|a| json!(a)))];
            for (name, value) in given.into_iter().chain(tunnel) {
                if let Some(v) = value {
                    params[name] = v;
                }
            }
            let t = c.call("trace", params)?;
            emit(json, &t, || trace_text(&t, &stats))
        }
        Cmd::Vrfstats { vrf } => {
            let want = vrf.as_ref().map(|v| vrf_id(c, v)).transpose()?;
            let s = c.call("stats", json!({}))?;
            let vrfs: Vec<Value> = s["vrfs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| want.is_none_or(|w| v["id"] == json!(w)))
                .cloned()
                .collect();
            if let (Some(w), true) = (want, vrfs.is_empty()) {
                return Err(ClientError::Io(format!("VRF {w} does not exist")));
            }
            emit(json, &Value::from(vrfs.clone()), || vrfstats_table(&vrfs))
        }
        Cmd::Flow { cmd } => flow(c, json, cmd),
        Cmd::Policy { cmd: VrfCmd::List } => {
            let items = c.dump_all(json!({ "object": "policy" }))?;
            let vrfs = c.dump_all(json!({ "object": "vrf" }))?;
            emit(json, &Value::from(items.clone()), || policy_text(&items, &vrfs))
        }
        Cmd::Info => {
            let i = c.call("info", json!({}))?;
            let s = c.call("stats", json!({}))?;
            let v = json!({ "info": i, "workers": s["workers"] });
            emit(json, &v, || info_text(&i, &s["workers"]))
        }
        Cmd::Runtime => {
            let s = c.call("stats", json!({}))?;
            let rows: Vec<Value> = s["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| {
                    json!({
                        "worker": w["worker"], "core": w["core"], "rx": w["rx"], "busy_ns": w["busy_ns"],
                        "elapsed_ns": w["elapsed_ns"], "general_path": w["general_path"],
                        "general_causes": w["general_causes"], "flow_cache": w["flow_cache"],
                        "tx_dropped": w["tx_dropped"], "unsent": w["unsent"],
                        "runtime": w["runtime"],
                    })
                })
                .collect();
            emit(json, &Value::from(rows.clone()), || runtime_table(&rows))
        }
        Cmd::Completion { .. } => Ok(()),
    }
}

/// One row per worker and stage, and the worker's total.
fn runtime_table(workers: &[Value]) -> String {
    let mut t = Table::new(&["WORKER", "STAGE", "CYCLES/PKT", "NS/PKT", "SHARE"]);
    for w in workers {
        let rt = &w["runtime"];
        let stages = rt["stages"].as_array().cloned().unwrap_or_default();
        let total: f64 = stages.iter().filter_map(|s| s["cycles_per_packet"].as_f64()).sum();
        let cell = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
        for s in &stages {
            let share = s["cycles_per_packet"].as_f64().filter(|_| total > 0.0).map(|c| c / total * 100.0);
            t.row(vec![
                show(&w["worker"]),
                show(&s["stage"]),
                cell(&s["cycles_per_packet"]),
                cell(&s["ns_per_packet"]),
                share.map_or("-".to_string(), |x| format!("{x:.1}%")),
            ]);
        }
        let ns: f64 = stages.iter().filter_map(|s| s["ns_per_packet"].as_f64()).sum();
        let has = rt["packets"].as_u64().unwrap_or(0) > 0;
        t.row(vec![
            show(&w["worker"]),
            "total".to_string(),
            if has { format!("{total:.1}") } else { "-".to_string() },
            if has { format!("{ns:.1}") } else { "-".to_string() },
            format!("{} pkts timed", count(&rt["packets"])),
        ]);
        // Wall time in rounds that moved frames (syscalls and the softirq
        // work they run included), over every frame received.
        let rx = count(&w["rx"]);
        if rx > 0 {
            t.row(vec![
                show(&w["worker"]),
                "busy".to_string(),
                "-".to_string(),
                format!("{:.1}", count(&w["busy_ns"]) as f64 / rx as f64),
                format!(
                    "{:.1}% of the time",
                    count(&w["busy_ns"]) as f64 * 100.0 / count(&w["elapsed_ns"]).max(1) as f64
                ),
            ]);
            // Frames the fast lane left to the general path: ARP, SYNs
            // and new flows; steady traffic that lands here is slow. Then
            // why, the largest cause first.
            let general = count(&w["general_path"]);
            count_row(
                &mut t,
                w,
                "general",
                format!("{general} pkts, {:.1}% of rx", general as f64 * 100.0 / rx as f64),
            );
            cause_rows(&mut t, w, &w["general_causes"], general, "general");
            // The plain flows' hits the flow cache forwarded: the shortest
            // way a packet takes.
            let cache = &w["flow_cache"];
            let hits = count(&cache["hits"]);
            count_row(
                &mut t,
                w,
                "flow cache",
                format!(
                    "{hits} pkts, {:.1}% of rx; {} filled, {} forgotten, {} crowded",
                    hits as f64 * 100.0 / rx as f64,
                    count(&cache["fills"]),
                    count(&cache["forgotten"]),
                    count(&cache["crowded"]),
                ),
            );
            // Frames routed and not sent, and why: full queues are
            // congestion, the rest a fault to look into.
            let dropped = count(&w["tx_dropped"]);
            if dropped > 0 {
                let share = dropped as f64 * 100.0 / rx as f64;
                count_row(&mut t, w, "tx dropped", format!("{dropped} pkts, {share:.1}% of rx"));
                cause_rows(&mut t, w, &w["unsent"], dropped, "tx dropped");
            }
        }
    }
    t.to_string()
}

/// A row for each of a worker's `causes` that counted any, the largest
/// first, with its share of their `total`.
fn cause_rows(t: &mut Table, w: &Value, causes: &Value, total: u64, of: &str) {
    let mut counted: Vec<(&String, u64)> =
        causes.as_object().into_iter().flatten().map(|(c, n)| (c, count(n))).filter(|(_, n)| *n > 0).collect();
    counted.sort_by_key(|c| std::cmp::Reverse(c.1));
    for (cause, n) in counted {
        let share = n as f64 * 100.0 / total.max(1) as f64;
        count_row(t, w, &format!("  {cause}"), format!("{n} pkts, {share:.1}% of {of}"));
    }
}

/// A row of worker `w`'s counts of `what`, no stage's cycles in it.
fn count_row(t: &mut Table, w: &Value, what: &str, text: String) {
    t.row(vec![show(&w["worker"]), what.to_string(), "-".to_string(), "-".to_string(), text]);
}

/// Prints JSON or the table `text` makes.
fn emit(json: bool, v: &Value, text: impl FnOnce() -> String) -> Result<()> {
    let out = if json { format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()) } else { text() };
    print_out(&out);
    Ok(())
}

fn print_out(s: &str) {
    vrouter::cli::print(format_args!("{s}"));
}

fn vrf_id(c: &mut Client, v: &str) -> Result<u32> {
    if let Ok(id) = v.parse() {
        return Ok(id);
    }
    let vrfs = c.dump_all(json!({ "object": "vrf" }))?;
    vrfs.iter()
        .find(|x| x["name"] == json!(v))
        .and_then(|x| x["id"].as_u64())
        .map(|id| id as u32)
        .ok_or_else(|| ClientError::Io(format!("no VRF named {v:?}")))
}

fn nexthops(c: &mut Client) -> Result<std::collections::HashMap<u64, Value>> {
    let all = c.dump_all(json!({ "object": "nexthop" }))?;
    Ok(all.into_iter().filter_map(|n| Some((n["id"].as_u64()?, n))).collect())
}

fn vif_table(items: &[Value]) -> String {
    let mut t = Table::new(&[
        "VIF", "NAME", "KIND", "VRF", "MAC", "IP", "MTU", "PORT", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES",
        "TX DROPS", "ERRORS", "DROPS", "GENERAL",
    ]);
    for v in items {
        let s = &v["status"];
        t.row(vec![
            format!("vif0/{}", show(&v["index"])),
            show(&v["name"]),
            show(&v["kind"]),
            show(&v["vrf"]),
            show(&v["mac"]),
            [show(&v["ipv4"]), show(&v["ipv6"])].into_iter().filter(|s| s != "-").collect::<Vec<_>>().join(" "),
            show(&v["mtu"]),
            show(&s["port"]),
            show(&s["rx_packets"]),
            show(&s["rx_bytes"]),
            show(&s["tx_packets"]),
            show(&s["tx_bytes"]),
            show(&s["tx_dropped"]),
            show(&s["rx_errors"]),
            show(&s["drops"]),
            show(&s["general_path"]),
        ]);
    }
    t.to_string()
}

fn vif_detail(v: &Value) -> String {
    let mut t = Table::new(&["FIELD", "VALUE"]);
    for key in [
        "index",
        "name",
        "kind",
        "vrf",
        "mac",
        "ipv4",
        "ipv6",
        "mtu",
        "proxy_arp",
        "mss_clamp",
        "disabled",
        "source_check",
    ] {
        t.row(vec![key.into(), show(&v[key])]);
    }
    // `185.22.97.188 in VRF 4, tcp 80->8080 udp 53->5353`: where they
    // live, and which ports they forward where.
    for f in v["floating_ips"].as_array().into_iter().flatten() {
        let ports: Vec<String> = f["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| format!(" {} {}->{}", show(&m["proto"]), show(&m["port"]), show(&m["target"])))
            .collect();
        let ports = if ports.is_empty() { String::new() } else { format!(",{}", ports.concat()) };
        t.row(vec!["floating_ip".into(), format!("{} in VRF {}{ports}", show(&f["address"]), show(&f["vrf"]))]);
    }
    if let Some(s) = v["status"].as_object() {
        for (k, x) in s {
            let shown = match x.as_object() {
                // drop_reasons: `no_route 3, link_local 2`, as `dropstats --vif` counts them.
                Some(o) if o.is_empty() => "-".to_string(),
                Some(o) => o.iter().map(|(r, n)| format!("{r} {}", show(n))).collect::<Vec<_>>().join(", "),
                None => show(x),
            };
            t.row(vec![k.clone(), shown]);
        }
    }
    t.to_string()
}

fn nh_details(n: &Value) -> String {
    match n["type"].as_str().unwrap_or("") {
        "encap" => format!("oif {} dmac {}{}", show(&n["oif"]), show(&n["dmac"]), opt(" smac ", &n["smac"])),
        "tunnel" => format!(
            "{} oif {} {} -> {} dmac {}",
            show(&n["encap"]),
            show(&n["oif"]),
            if n["sip"].is_null() { "underlay".into() } else { show(&n["sip"]) },
            show(&n["dip"]),
            if n["dmac"].is_null() {
                match n["status"]["resolved_mac"].as_str() {
                    Some(m) => format!("{m} (neighbour)"),
                    None => "unresolved (neighbour)".into(),
                }
            } else {
                show(&n["dmac"])
            }
        ),
        "composite-ecmp" => {
            let m: Vec<String> = n["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| format!("{}{}", show(&m["nh"]), opt("/L", &m["label"])))
                .collect();
            format!("members {}", m.join(" "))
        }
        "vrf-lookup" => format!("vrf {}", show(&n["vrf"])),
        _ => String::new(),
    }
}

fn opt(prefix: &str, v: &Value) -> String {
    if v.is_null() {
        String::new()
    } else {
        format!("{prefix}{}", show(v))
    }
}

fn nh_table(items: &[Value]) -> String {
    let mut t = Table::new(&["ID", "TYPE", "REFS", "DETAILS"]);
    for n in items {
        t.row(vec![show(&n["id"]), show(&n["type"]), show(&n["status"]["refs"]), nh_details(n)]);
    }
    t.to_string()
}

fn label_table(items: &[Value], nhs: &std::collections::HashMap<u64, Value>) -> String {
    let mut t = Table::new(&["LABEL", "NH", "TYPE", "DETAILS"]);
    for l in items {
        let nh = l["nh"].as_u64().and_then(|id| nhs.get(&id)).cloned().unwrap_or(Value::Null);
        t.row(vec![show(&l["label"]), show(&l["nh"]), show(&nh["type"]), nh_details(&nh)]);
    }
    t.to_string()
}

/// `bytes` as an operator reads it: "812 B", "14.2 KiB", "3.1 MiB".
fn binary_size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

fn vrf_table(items: &[Value]) -> String {
    let mut t = Table::new(&["VRF", "NAME", "GATEWAY", "GATEWAY6", "ROUTES", "ROUTES6", "HOSTS6", "MEMORY", "FLOWS"]);
    for v in items {
        let status = &v["status"];
        // Why it tracks flows ("policy,ecmp_routes"), or "-".
        let why: Vec<&str> =
            status["tracks_flows"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        // The /128s found by hash, and those only the trie walk finds.
        let hosts = match status["hosts_v6_spilled"].as_u64() {
            Some(spilled) if spilled > 0 => format!("{} ({spilled} spilled)", show(&status["hosts_v6"])),
            _ => show(&status["hosts_v6"]),
        };
        t.row(vec![
            show(&v["id"]),
            show(&v["name"]),
            show(&v["gateway_v4"]),
            show(&v["gateway_v6"]),
            show(&status["routes_v4"]),
            show(&status["routes_v6"]),
            hosts,
            status["memory_bytes"].as_u64().map_or_else(|| "-".to_string(), binary_size),
            if why.is_empty() { "-".to_string() } else { why.join(",") },
        ]);
    }
    t.to_string()
}

fn vrfstats_table(vrfs: &[Value]) -> String {
    let mut out = String::new();
    for v in vrfs {
        out.push_str(&format!("VRF {} ({})\n", show(&v["id"]), show(&v["name"])));
        let mut t = Table::new(&["  COUNTER", "PACKETS"]);
        for (k, x) in v.as_object().into_iter().flatten() {
            if k != "id" && k != "name" {
                t.row(vec![format!("  {k}"), show(x)]);
            }
        }
        out.push_str(&t.to_string());
        out.push('\n');
    }
    out
}

fn info_text(i: &Value, workers: &Value) -> String {
    let mut out = format!(
        "vrouterd {} ({} build, {})  (API {}, boot {})\nunderlay {}  fabric {}  uptime {} s  tables generation {}\n\n",
        show(&i["version"]),
        show(&i["build"]["profile"]),
        show(&i["build"]["arch"]),
        show(&i["api_version"]),
        show(&i["boot_id"]),
        show(&i["underlay"]),
        show(&i["fabric"]),
        show(&i["uptime_s"]),
        show(&i["generation"]),
    );
    let mut t = Table::new(&["TABLE", "USED", "CAPACITY"]);
    for x in i["tables"].as_array().into_iter().flatten() {
        let cap = if x["capacity"].is_null() {
            format!("{} per VRF", show(&x["capacity_per_vrf"]))
        } else {
            show(&x["capacity"])
        };
        t.row(vec![show(&x["table"]), show(&x["used"]), cap]);
    }
    out.push_str(&t.to_string());
    let m = &i["memory"];
    if !m.is_null() {
        let size = |v: &Value| v.as_u64().map_or_else(|| "-".to_string(), binary_size);
        out.push_str(&format!(
            "routes take {}; the table writer keeps {} of spare route tables and {} of trie nodes to reuse\n",
            size(&m["routes_bytes"]),
            size(&m["writer_spare_bytes"]),
            size(&m["writer_pooled_bytes"]),
        ));
    }
    out.push('\n');
    let mut w = Table::new(&["WORKER", "CORE", "RX", "TX", "TX DROPPED", "WAKE-UPS", "BUSY"]);
    for x in workers.as_array().into_iter().flatten() {
        let busy = count(&x["busy_ns"]) as f64 / count(&x["elapsed_ns"]).max(1) as f64 * 100.0;
        w.row(vec![
            show(&x["worker"]),
            show(&x["core"]),
            show(&x["rx"]),
            show(&x["tx"]),
            show(&x["tx_dropped"]),
            show(&x["wakeups"]),
            format!("{busy:.1}%"),
        ]);
    }
    out.push_str(&w.to_string());
    out
}

/// Streams a route dump page by page, so a million routes never sit in memory.
fn route_dump(c: &mut Client, json: bool, vrf: u32, family: Option<Family>) -> Result<()> {
    let family = match family {
        Some(Family::Inet) => "inet",
        Some(Family::Inet6) => "inet6",
        None => "all",
    };
    let nhs = nexthops(c)?;
    let mut params = json!({ "object": "route", "vrf": vrf, "family": family, "limit": 10_000 });
    let mut first = true;
    let mut total = 0u64;
    if json {
        print_out("[");
    }
    loop {
        let page = c.call("dump", params.clone())?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        total += items.len() as u64;
        if json {
            let mut s = String::new();
            for r in &items {
                s.push_str(if first { "\n  " } else { ",\n  " });
                s.push_str(&r.to_string());
                first = false;
            }
            print_out(&s);
        } else {
            // NET: the network of the prefix's addresses, where imported
            // from another (a VRF's id); "-" for the VRF's own.
            let mut t = Table::with_widths(&["PREFIX", "LABEL", "NH", "NET", "TYPE", "DETAILS"], &[43, 7, 7, 5, 14, 0]);
            if !first {
                t.no_header();
            }
            for r in &items {
                let nh = r["nh"].as_u64().and_then(|id| nhs.get(&id)).cloned().unwrap_or(Value::Null);
                let cells = [&r["prefix"], &r["label"], &r["nh"], &r["network"], &nh["type"]];
                let mut row: Vec<String> = cells.into_iter().map(show).collect();
                row.push(nh_details(&nh));
                t.row(row);
            }
            print_out(&t.to_string());
            first = false;
        }
        match page.get("next") {
            Some(n) if !n.is_null() => params["after"] = n.clone(),
            _ => break,
        }
    }
    if json {
        print_out("\n]\n");
    } else {
        print_out(&format!("{total} routes\n"));
    }
    Ok(())
}

/// One refresh of a rate view: from the previous and current stats and the
/// seconds between them, a table (or JSON).
type RateView<'a> = &'a dyn Fn(&Value, &Value, f64, bool) -> String;

fn rates(c: &mut Client, json: bool, args: RateArgs, view: RateView<'_>) -> Result<()> {
    let interval = Duration::from_secs_f64(args.interval.clamp(0.1, 3600.0));
    let tty = std::io::stdout().is_terminal() && !json;
    let mut prev = c.call("stats", json!({}))?;
    let mut at = Instant::now();
    let mut n = 0;
    while args.count.is_none_or(|c| n < c) {
        std::thread::sleep(interval);
        let cur = c.call("stats", json!({}))?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let body = view(&prev, &cur, secs, json);
        let clear = if tty { "\x1b[2J\x1b[H" } else { "" };
        print_out(&format!("{clear}{body}{}", if json || tty { "" } else { "\n" }));
        prev = cur;
        n += 1;
    }
    Ok(())
}

fn per_sec(prev: &Value, cur: &Value, secs: f64) -> f64 {
    count(cur).saturating_sub(count(prev)) as f64 / secs.max(1e-9)
}

fn vif_rates(prev: &Value, cur: &Value, secs: f64, json: bool) -> String {
    let keys = ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "tx_dropped", "rx_errors", "drops", "general_path"];
    let mut rows = Vec::new();
    for v in cur["vifs"].as_array().into_iter().flatten() {
        let before = prev["vifs"].as_array().into_iter().flatten().find(|p| p["index"] == v["index"]);
        let r: Vec<f64> = keys.iter().map(|k| before.map_or(0.0, |b| per_sec(&b[*k], &v[*k], secs))).collect();
        rows.push((v, r));
    }
    if json {
        let all: Vec<Value> = rows
            .iter()
            .map(|(v, r)| {
                let mut o = json!({ "index": v["index"], "name": v["name"] });
                for (k, x) in keys.iter().zip(r) {
                    o[format!("{k}_per_s")] = json!(x);
                }
                o
            })
            .collect();
        return format!("{}\n", json!({ "interval_s": secs, "vifs": all }));
    }
    let mut t = Table::new(&[
        "VIF",
        "NAME",
        "RX PPS",
        "RX MBIT/S",
        "TX PPS",
        "TX MBIT/S",
        "TX DROPS/S",
        "ERRORS/S",
        "DROPS/S",
        "GENERAL/S",
    ]);
    for (v, r) in rows {
        t.row(vec![
            format!("vif0/{}", show(&v["index"])),
            show(&v["name"]),
            format!("{:.0}", r[0]),
            format!("{:.2}", r[1] * 8.0 / 1e6),
            format!("{:.0}", r[2]),
            format!("{:.2}", r[3] * 8.0 / 1e6),
            format!("{:.0}", r[4]),
            format!("{:.0}", r[5]),
            format!("{:.0}", r[6]),
            format!("{:.0}", r[7]),
        ]);
    }
    format!("vif rates over {secs:.1} s (Ctrl-C to stop)\n{t}")
}

/// `vrctl dropstats`: the node's drops by reason, or (`vif`) those of
/// what came in on one vif.
fn dropstats(c: &mut Client, json: bool, rate: RateArgs, all: bool, vif: Option<&str>) -> Result<()> {
    let Some(which) = vif else {
        if rate.rate {
            return rates(c, json, rate, &drop_rates);
        }
        let s = c.call("stats", json!({}))?;
        let vifs = || s["vifs"].as_array().into_iter().flatten();
        return emit(json, &s["drops"], || {
            drop_table(&s, all, s["vifs"].as_array()) + &port_drops(vifs) + &unsent_causes(&s["workers"])
        });
    };
    let s = c.call("stats", json!({}))?;
    let found = find_vif(&s, which)?;
    let (index, title) = (count(&found["index"]), format!("{}\n", vif_label(found)));
    if rate.rate {
        return rates(c, json, rate, &|p, c, secs, json| {
            let shown = drop_rates(&vif_drops(p, index), &vif_drops(c, index), secs, json);
            if json {
                shown
            } else {
                format!("{title}{shown}")
            }
        });
    }
    let mine = vif_drops(&s, index);
    emit(json, &mine["drops"], || {
        format!("{title}{}{}", drop_table(&mine, all, None), port_drops(|| [found].into_iter()))
    })
}

/// What the vifs' ports lost, under no reason above: frames routed out
/// of a vif that its port did not send, and frames the kernel dropped
/// before vrouterd saw them; a line a vif, nothing if none did.
fn port_drops<'a, I: Iterator<Item = &'a Value>>(vifs: impl Fn() -> I) -> String {
    let unsent: Vec<String> = vifs()
        .filter(|v| count(&v["tx_dropped"]) > 0)
        .map(|v| format!("  {}: tx_dropped {}\n", vif_label(v), count(&v["tx_dropped"])))
        .collect();
    let mut out = String::new();
    if !unsent.is_empty() {
        out = format!(
            "routed out but not sent (no port open for the vif, its link down, or its transmit ring full):\n{}",
            unsent.concat()
        );
    }
    out + &kernel_drops(vifs())
}

/// Why the workers did not send frames they routed, summed over them, the
/// largest cause first, each marked congestion (a full queue) or a fault;
/// nothing if they sent every one.
fn unsent_causes(workers: &Value) -> String {
    let mut sums: Vec<(vrouter::stats::Unsent, u64)> = vrouter::stats::Unsent::ALL
        .iter()
        .map(|&c| (c, workers.as_array().into_iter().flatten().map(|w| count(&w["unsent"][c.as_str()])).sum()))
        .filter(|&(_, n)| n > 0)
        .collect();
    if sums.is_empty() {
        return String::new();
    }
    sums.sort_by_key(|c| std::cmp::Reverse(c.1));
    let kind = |c: vrouter::stats::Unsent| if c.is_congestion() { "congestion" } else { "a fault" };
    let causes: Vec<String> = sums.iter().map(|&(c, n)| format!("{} {n} ({})", c.as_str(), kind(c))).collect();
    format!("  why, over the workers (per worker: vrctl runtime): {}\n", causes.join(", "))
}

/// The vifs whose ports lost frames in the kernel, before vrouterd saw
/// them, a line each; nothing if none did.
fn kernel_drops<'a>(vifs: impl Iterator<Item = &'a Value>) -> String {
    let lines: Vec<String> = vifs
        .filter_map(|v| {
            let k = &v["kernel"];
            let (dropped, full) = (count(&k["rx_dropped"]), count(&k["rx_ring_full"]));
            let empty = count(&k["fill_ring_empty"]);
            (dropped + full > 0).then(|| {
                format!("  {}: rx_dropped {dropped}, rx_ring_full {full}, fill_ring_empty {empty}\n", vif_label(v))
            })
        })
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "dropped in the kernel before vrouterd saw them (rx_dropped: no free frame, which fill_ring_empty counts too, \
         fewer than a jumbo frame's chain needs, which it does not, or before Linux 6.6 longer than a frame; rx_ring_full: vrouterd behind):\n{}",
        lines.concat()
    )
}

/// The vif named `which` (an index or an interface name) among `stats`' vifs.
fn find_vif<'a>(stats: &'a Value, which: &str) -> Result<&'a Value> {
    let found = stats["vifs"].as_array().into_iter().flatten().find(|v| match which.parse::<u64>() {
        Ok(i) => v["index"] == json!(i),
        Err(_) => v["name"] == json!(which),
    });
    found.ok_or_else(|| ClientError::Io(format!("no vif {which:?}")))
}

/// The index of vif `which`, given by index or interface name (a name is
/// looked up in `stats`).
fn vif_index(c: &mut Client, which: &str) -> Result<Value> {
    match which.parse::<u32>() {
        Ok(index) => Ok(json!(index)),
        Err(_) => Ok(find_vif(&c.call("stats", json!({}))?, which)?["index"].clone()),
    }
}

/// What `vifdump` keeps, and when it stops besides Ctrl-C.
struct Dump {
    count: Option<u64>,
    duration: Option<Duration>,
    snaplen: u32,
    /// `capture.start`'s `match`.
    filter: Option<Value>,
    /// Only frames that took the general path (`--general`).
    general_only: bool,
}

/// Captures vif `which`'s frames as `how` says, or until Ctrl-C: a line each, a
/// JSON object each (`json`), or pcapng to `write`. Says on standard error
/// how many it took, and how many vrouterd missed because this reader
/// fell behind.
fn vifdump(c: &mut Client, json: bool, which: &str, write: Option<&std::path::Path>, how: Dump) -> Result<()> {
    let snaplen = how.snaplen;
    let stats = c.call("stats", json!({}))?;
    let names = vif_labels(&stats);
    let found = find_vif(&stats, which)?;
    let label = vif_label(found);
    let io = |e: std::io::Error| ClientError::Io(format!("vifdump: {e}"));
    let mut pcap = match write {
        None => None,
        Some(p) => {
            let out: Box<dyn Write> = if p.as_os_str() == "-" {
                Box::new(std::io::stdout().lock())
            } else {
                Box::new(std::fs::File::create(p).map_err(|e| ClientError::Io(format!("{}: {e}", p.display())))?)
            };
            Some(vrouter::capture::pcapng::Writer::new(std::io::BufWriter::new(out), &label, snaplen).map_err(io)?)
        }
    };
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted)).map_err(io)?;
    }
    let mut start = json!({ "vif": found["index"], "snaplen": snaplen, "general": how.general_only });
    if let Some(m) = &how.filter {
        start["match"] = m.clone();
    }
    c.call("capture.start", start)?;
    eprintln!("vrctl: capturing {label}, {snaplen} bytes a frame; Ctrl-C stops");
    let started = Instant::now();
    let (mut taken, mut missed) = (0u64, 0u64);
    let mut out = std::io::stdout().lock();
    // A reader gone (`| head`, a `tshark -i -` that quit) ends the capture
    // as Ctrl-C does, with its summary; other write errors end it in error.
    let gone = |wrote: std::io::Result<()>| match wrote {
        Err(e) if reader_gone(&e) => Ok(true),
        Err(e) => Err(io(e)),
        Ok(()) => Ok(false),
    };
    'reading: while !interrupted.load(std::sync::atomic::Ordering::Relaxed) {
        if how.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let r = c.call("capture.read", json!({}))?;
        missed = r["missed"].as_u64().unwrap_or(missed);
        let packets = r["packets"].as_array().cloned().unwrap_or_default();
        for p in &packets {
            let data = p["data"].as_str().and_then(vrouter::capture::from_hex).unwrap_or_default();
            // `tx vif0/2 (t-a2), general path: tcp_syn`.
            let general = p["general"].as_str().map(|c| format!(", general path: {c}")).unwrap_or_default();
            let verdict = verdict_text(&p["verdict"], &names).map(|v| v + &general);
            let inbound = p["dir"] == "in";
            let wrote = if let Some(w) = &mut pcap {
                let dir = if inbound { vrouter::capture::Direction::In } else { vrouter::capture::Direction::Out };
                let len = p["len"].as_u64().unwrap_or(0) as u32;
                w.packet(count(&p["time_ns"]), dir, len, &data, verdict.as_deref())
            } else if json {
                writeln!(out, "{p}")
            } else {
                let time = clock_time(count(&p["time_ns"]));
                let dir = if inbound { "in " } else { "out" };
                let what = vrouter::capture::summary(&data);
                let verdict = verdict.map(|v| format!(" => {v}")).unwrap_or_default();
                writeln!(out, "{time} {dir} {:>5} {what}{verdict}", show(&p["len"]))
            };
            if gone(wrote)? {
                break 'reading;
            }
            taken += 1;
            if how.count.is_some_and(|n| taken >= n) {
                break 'reading;
            }
        }
        if gone(pcap.as_mut().map_or_else(|| out.flush(), |w| w.flush()))? {
            break 'reading;
        }
        if packets.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    gone(pcap.as_mut().map_or_else(|| out.flush(), |w| w.flush()))?;
    c.call("capture.stop", json!({}))?;
    let behind =
        if missed > 0 { " (this reader fell behind: narrow it with --match, or keep less with -s)" } else { "" };
    eprintln!("vrctl: {taken} frames captured on {label}; {missed} missed by vrouterd{behind}");
    Ok(())
}

/// What vrouterd did with a received frame (`capture.read`'s `verdict`), as
/// vifdump says it: `tx vif0/1 (t-b1)`, `drop no_route`, `to_host`,
/// `to_agent dhcp`, `held`. `None` for a frame it sent.
fn verdict_text(v: &Value, names: &std::collections::BTreeMap<u64, String>) -> Option<String> {
    let action = v["action"].as_str()?;
    Some(match action {
        "tx" => {
            let out = count(&v["vif"]);
            format!("tx {}", names.get(&out).cloned().unwrap_or_else(|| format!("vif0/{out}")))
        }
        "drop" => format!("drop {}", show(&v["reason"])),
        "to_agent" => format!("to_agent {}", show(&v["trap"])),
        other => other.to_string(),
    })
}

/// A trace (`trace`'s answer) as lines: the packet, its route, the policy
/// rule, and what became of it (`stats` names the vifs).
fn trace_text(t: &Value, stats: &Value) -> String {
    let names = vif_labels(stats);
    let vif = |i: &Value| names.get(&count(i)).cloned().unwrap_or_else(|| format!("vif0/{}", show(i)));
    let vrf = match &t["in"]["vrf"] {
        Value::Null => String::new(),
        v => format!(", VRF {}", show(v)),
    };
    let mut out = format!("in      {}{vrf}: {}\n", vif(&t["in"]["vif"]), show(&t["in"]["frame"]["summary"]));
    // ", label 16" where a route or member carries one.
    let label = |v: &Value| if v["label"].is_null() { String::new() } else { format!(", label {}", show(&v["label"])) };
    let member = |m: &Value| format!("member nh {}{}", show(&m["nh"]), label(m));
    // From the fabric: what the label names.
    let tunnel = &t["in"]["label"];
    if !tunnel.is_null() {
        out += &match &tunnel["nh"] {
            Value::Null => format!("label   {} names nothing\n", show(&tunnel["label"])),
            nh => format!("label   {} -> nh {nh} ({})\n", show(&tunnel["label"]), show(&tunnel["nexthop"]["type"])),
        };
    }
    let r = &t["route"];
    out += &match r {
        Value::Null if !tunnel["nexthop"].is_null() && tunnel["nexthop"]["type"] != "vrf-lookup" => {
            "route   none: the label names where it goes\n".to_string()
        }
        Value::Null => "route   none\n".to_string(),
        _ => {
            let (prefix, nh, kind) = (show(&r["prefix"]), show(&r["nh"]), show(&r["nexthop"]["type"]));
            format!("route   {prefix} -> nh {nh} ({kind}){}\n", label(r))
        }
    };
    out += &match &t["flow"] {
        Value::Null if t["in"]["vrf"].is_null() => "policy  none: no VRF takes it\n".to_string(),
        // (A policy's own drop makes a flow: this drop came first.)
        Value::Null if t["verdict"]["action"] == "drop" => {
            "policy  not reached: dropped before a flow is made\n".into()
        }
        Value::Null => "policy  none: the VRF tracks no flows\n".to_string(),
        f => {
            let rule = |r: &Value| match &r["index"] {
                Value::Null => format!("the default of VRF {}", show(&r["vrf"])),
                index => format!("rule {} of VRF {}", show(index), show(&r["vrf"])),
            };
            match (&f["passed_by"], &f["rule"]) {
                (_, Value::Null) => "policy  none judges it (a new pair, forwarded)\n".to_string(),
                (Value::Null, r) => format!("policy  {}\n", rule(r)),
                (first, r) => format!("policy  {}, then {} (the pod's network)\n", rule(first), rule(r)),
            }
        }
    };
    let m = &t["flow"]["ecmp"];
    if !m.is_null() {
        out += &format!("ecmp    {}, pinned in the flow\n", member(m));
    }
    if let Some(nat) = t["flow"]["nat"].as_object() {
        let rewrites: Vec<String> =
            nat.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| format!("{k} {}", show(v))).collect();
        out += &format!("nat     {}\n", rewrites.join(", "));
    }
    let verdict = |v: &Value| verdict_text(v, &names).unwrap_or_default();
    out += &format!("=>      {}\n", verdict(&t["verdict"]));
    if t["verdict"]["action"] == "tx" {
        out += &format!("out     {}\n", show(&t["out"]["summary"]));
    }
    for m in t["made"].as_array().into_iter().flatten() {
        out += &format!("also    {}: {}\n", verdict(&m["verdict"]), show(&m["frame"]["summary"]));
    }
    // Which way the flow's packets go: `fast lane`, or `general path
    // (tcp_syn)`; the next packet's verdict where it is not the first's.
    let lane = |p: &Value| match p["cause"].as_str() {
        Some(cause) => format!("general path ({cause})"),
        None => "fast lane".to_string(),
    };
    let path = &t["path"];
    if !path.is_null() {
        let mut line = format!("path    first packet: {}", lane(&path["first"]));
        let next = &path["next"];
        if !next.is_null() {
            line += &format!("; next ones: {}", lane(&next["path"]));
            if next["verdict"] != t["verdict"] {
                line += &format!(" => {}", verdict(&next["verdict"]));
            }
        }
        out += &format!("{line}\n");
    }
    // The lines above judge a new flow; a live one with this key goes by
    // what it holds.
    let live = &t["existing"];
    if !live.is_null() {
        let mut holds = vec![flow_action(live)];
        if !live["ecmp"].is_null() {
            holds.push(member(&live["ecmp"]));
        }
        if live["proto"] == 6 {
            holds.push(format!("tcp {}", show(&live["tcp"])));
        }
        let packets = count(&live["packets"]);
        holds.push(format!("{packets} packet{}", if packets == 1 { "" } else { "s" }));
        let (index, direction) = (show(&live["index"]), show(&live["direction"]));
        out +=
            &format!("live    flow {index} ({direction}) has this key: {}; its packets go by it\n", holds.join(", "));
        if !live["ecmp"].is_null() && live["ecmp"] != t["flow"]["ecmp"] {
            out += "        pinned to another member than a new flow would be: the members changed since it began\n";
        }
    }
    out
}

/// `time_ns` (since the Unix epoch) as a UTC time of day, to the microsecond.
fn clock_time(time_ns: u64) -> String {
    let (secs, micros) = (time_ns / 1_000_000_000, time_ns % 1_000_000_000 / 1000);
    format!("{:02}:{:02}:{:02}.{micros:06}", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

/// Every vif of `stats`, by index, as `vif_label` names it.
fn vif_labels(stats: &Value) -> std::collections::BTreeMap<u64, String> {
    stats["vifs"].as_array().into_iter().flatten().map(|v| (count(&v["index"]), vif_label(v))).collect()
}

/// A vif as the drop views name it: `vif0/3 (t-a1)`, from its entry in `stats`.
fn vif_label(v: &Value) -> String {
    format!("vif0/{} ({})", show(&v["index"]), show(&v["name"]))
}

/// `stats` with its drops by reason those of vif `index` alone (from its
/// `drop_reasons`), for the drop views.
fn vif_drops(stats: &Value, index: u64) -> Value {
    let vif = stats["vifs"].as_array().into_iter().flatten().find(|v| v["index"] == json!(index));
    let drops: Vec<Value> = stats["drops"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let n = vif.and_then(|v| v["drop_reasons"].get(d["reason"].as_str()?)).cloned();
            json!({ "reason": d["reason"], "contrail": d["contrail"], "count": n.unwrap_or(json!(0)) })
        })
        .collect();
    json!({ "drops": drops })
}

/// The drops of `s` by reason (those with none too, if `all`), their total,
/// and what to do about the ones whose cause lies outside vrouterd, each
/// hint naming the vifs it concerns, if given (`stats`' vifs).
fn drop_table(s: &Value, all: bool, vifs: Option<&Vec<Value>>) -> String {
    let mut t = Table::new(&["REASON", "CONTRAIL NAME", "PACKETS"]);
    let drops = || s["drops"].as_array().into_iter().flatten();
    let on_vifs = |r: DropReason| {
        let named: Vec<String> =
            vifs.into_iter().flatten().filter(|v| count(&v["drop_reasons"][r.as_str()]) > 0).map(vif_label).collect();
        if named.is_empty() {
            String::new()
        } else {
            format!("; on {}", named.join(", "))
        }
    };
    for d in drops() {
        if all || count(&d["count"]) > 0 {
            t.row(vec![show(&d["reason"]), show(&d["contrail"]), show(&d["count"])]);
        }
    }
    let total: u64 = drops().map(|d| count(&d["count"])).sum();
    let hints: String = drops()
        .filter(|d| count(&d["count"]) > 0)
        .filter_map(|d| DropReason::from_key(d["reason"].as_str()?))
        .filter_map(|r| Some(format!("{}: {}{}\n", r.as_str(), r.remedy()?, on_vifs(r))))
        .collect();
    format!("{t}total drops: {total}\n{hints}")
}

fn drop_rates(prev: &Value, cur: &Value, secs: f64, json: bool) -> String {
    let mut rows = Vec::new();
    for d in cur["drops"].as_array().into_iter().flatten() {
        let before = prev["drops"].as_array().into_iter().flatten().find(|p| p["reason"] == d["reason"]);
        let r = before.map_or(0.0, |b| per_sec(&b["count"], &d["count"], secs));
        rows.push((d, r));
    }
    if json {
        let all: Vec<Value> =
            rows.iter().map(|(d, r)| json!({ "reason": d["reason"], "per_s": r, "count": d["count"] })).collect();
        return format!("{}\n", json!({ "interval_s": secs, "drops": all }));
    }
    let mut t = Table::new(&["REASON", "DROPS/S", "TOTAL"]);
    for (d, r) in rows {
        if r > 0.0 || count(&d["count"]) > 0 {
            t.row(vec![show(&d["reason"]), format!("{r:.0}"), show(&d["count"])]);
        }
    }
    format!("drop rates over {secs:.1} s (Ctrl-C to stop)\n{t}")
}

/// The policies, each under its VRF's id and name (as `vrfstats` shows a
/// VRF); a rule's network is named too (`vrfs`: the VRFs as the API dumps
/// them).
fn policy_text(items: &[Value], vrfs: &[Value]) -> String {
    let name = |id: &Value| match vrfs.iter().find(|v| v["id"] == *id).map(|v| &v["name"]) {
        Some(Value::String(n)) => format!("{id} ({n})"),
        _ => show(id),
    };
    // Left out is any; a range keeps its dash ("1000-2000").
    let or_any = |v: &Value| if v.is_null() { "any".to_string() } else { show(v) };
    if items.is_empty() {
        return "no policies\n".into();
    }
    let mut out = String::new();
    for p in items {
        out.push_str(&format!(
            "VRF {}  default {}  (generation {})\n",
            name(&p["vrf"]),
            show(&p["default"]),
            show(&p["status"]["generation"])
        ));
        let mut t = Table::new(&["  RULE", "SOURCE", "DESTINATION", "PROTO", "SPORT", "DPORT", "ACTION"]);
        let side = |v: &Value| match v.get("network") {
            Some(n) => format!("network {}", name(n)),
            None => show(v),
        };
        for (i, r) in p["rules"].as_array().into_iter().flatten().enumerate() {
            t.row(vec![
                format!("  {i}"),
                side(&r["src"]),
                side(&r["dst"]),
                or_any(&r["proto"]),
                or_any(&r["sport"]),
                or_any(&r["dport"]),
                show(&r["action"]),
            ]);
        }
        if p["rules"].as_array().is_none_or(|r| r.is_empty()) {
            out.push_str("  no rules: the default decides every flow\n");
        } else {
            out.push_str(&t.to_string());
        }
        out.push('\n');
    }
    out
}

/// `--match` terms as the API's `match` object. A term may be given once:
/// a second address would have replaced the first unseen, so it is an
/// error that names the form for two endpoints.
fn flow_match(text: &str) -> Result<Value> {
    let bad = |t: &str| {
        ClientError::Io(format!(
            "--match: cannot read {t:?} (IP, IP:PORT, :PORT, IP:PORT,IP:PORT, vrf ID|NAME, proto P, vif INDEX|NAME, rule VRF:N|VRF:default, joined by &)"
        ))
    };
    let mut m = serde_json::Map::new();
    if text.trim().is_empty() {
        return Ok(Value::Object(m));
    }
    for term in text.split('&').map(str::trim) {
        let words: Vec<&str> = term.split_whitespace().collect();
        let fields = match words.as_slice() {
            // A name stays a string, for `match_of` to look up.
            ["vrf" | "vif", n] => vec![(words[0], n.parse::<u32>().map_or_else(|_| json!(n), |id| json!(id)))],
            ["proto", p] => vec![("proto", p.parse::<u8>().map_or_else(|_| json!(p), |n| json!(n)))],
            // As RULE shows it (vrf3:0, vrf3:default), or by the VRF's name.
            ["rule", r] => {
                let (which, index) = r.rsplit_once(':').ok_or_else(|| bad(term))?;
                let index = match index {
                    "default" => Value::Null,
                    n => json!(n.parse::<usize>().map_err(|_| bad(term))?),
                };
                // A name stays a string, for `match_of` to look up.
                let id = which.strip_prefix("vrf").unwrap_or(which).parse::<u32>();
                let vrf = id.map_or_else(|_| json!(which), |id| json!(id));
                vec![("rule", json!({ "vrf": vrf, "index": index }))]
            }
            [ends] => {
                let (one, peer) = match ends.split_once(',') {
                    Some((one, peer)) => (one, Some(peer)),
                    None => (*ends, None),
                };
                let (ip, port) = match_endpoint(one).ok_or_else(|| bad(term))?;
                let mut fields = vec![("ip", ip), ("port", port)];
                if let Some(peer) = peer {
                    let (ip, port) = match_endpoint(peer).ok_or_else(|| bad(term))?;
                    fields.extend([("peer_ip", ip), ("peer_port", port)]);
                }
                fields.into_iter().filter(|(_, v)| !v.is_null()).collect()
            }
            _ => return Err(bad(term)),
        };
        for (field, value) in fields {
            if m.insert(field.into(), value).is_some() {
                let two = if field.ends_with("port") || field.ends_with("ip") {
                    " (two endpoints: IP:PORT,IP:PORT)"
                } else {
                    ""
                };
                return Err(ClientError::Io(format!("--match: {term:?} gives {field} a second time{two}")));
            }
        }
    }
    Ok(Value::Object(m))
}

/// `--match`'s terms as the API takes them (`flow_match`), a VRF or vif
/// given by name (as every other command takes them) looked up as its id.
fn match_of(c: &mut Client, text: Option<&str>) -> Result<Option<Value>> {
    let Some(mut m) = text.map(flow_match).transpose()? else { return Ok(None) };
    if let Some(name) = m["vrf"].as_str().map(str::to_owned) {
        m["vrf"] = json!(vrf_id(c, &name)?);
    }
    if let Some(name) = m["vif"].as_str().map(str::to_owned) {
        m["vif"] = vif_index(c, &name)?;
    }
    if let Some(name) = m["rule"]["vrf"].as_str().map(str::to_owned) {
        m["rule"]["vrf"] = json!(vrf_id(c, &name)?);
    }
    Ok(Some(m))
}

/// One endpoint of `--match`: `IP`, `IP:PORT`, `:PORT`, `[IPv6]:PORT`, as
/// the address and port (JSON null where not given); `None` if unreadable.
fn match_endpoint(text: &str) -> Option<(Value, Value)> {
    let (ip, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, port) = rest.split_once(']')?;
        let port = match port {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (Some(ip), port)
    } else if let Some(port) = text.strip_prefix(':') {
        (None, Some(port))
    } else if text.matches(':').count() == 1 {
        let (ip, port) = text.split_once(':')?;
        (Some(ip), Some(port))
    } else {
        (Some(text), None)
    };
    let ip = match ip {
        Some(ip) => json!(ip.parse::<std::net::IpAddr>().ok()?),
        None => Value::Null,
    };
    let port = match port {
        Some(p) => json!(p.parse::<u16>().ok()?),
        None => Value::Null,
    };
    Some((ip, port))
}

fn all_flows(c: &mut Client, filter: Option<Value>) -> Result<Vec<Value>> {
    let mut params = json!({ "limit": 10_000 });
    if let Some(m) = filter {
        params["match"] = m;
    }
    c.all_pages("flow.list", params)
}

fn endpoint(ip: &Value, port: &Value) -> String {
    let ip = show(ip);
    if ip.contains(':') {
        format!("[{ip}]:{}", show(port))
    } else {
        format!("{ip}:{}", show(port))
    }
}

fn proto_name(p: &Value) -> String {
    match p.as_u64() {
        Some(6) => "tcp".into(),
        Some(17) => "udp".into(),
        Some(1) => "icmp".into(),
        Some(58) => "icmp6".into(),
        _ => show(p),
    }
}

/// Contrail's action letters: F forward, D(reason) drop, N(...) NAT; a
/// `*` after them while the policies changed since they were decided.
fn flow_action(f: &Value) -> String {
    let action = flow_action_letters(f);
    if f["stale"] == true {
        format!("{action}*")
    } else {
        action
    }
}

fn flow_action_letters(f: &Value) -> String {
    if let Some(r) = f["action"].get("drop") {
        return format!("D({})", show(r));
    }
    if f["nat"].is_null() {
        return "F".into();
    }
    let n = &f["nat"];
    let mut parts = Vec::new();
    for (k, tag) in [("src", "S"), ("dst", "D"), ("sport", "Ps"), ("dport", "Pd")] {
        if !n[k].is_null() {
            parts.push(format!("{tag}={}", show(&n[k])));
        }
    }
    format!("N({})", parts.join(","))
}

/// The policy rule that decides a pair, as `vrctl policy list` numbers
/// them: `vrf1:3`, `vrf1:default`, or `-` where no policy judges it.
fn flow_rule(r: &Value) -> String {
    if r.is_null() {
        return "-".into();
    }
    let rule = if r["index"].is_null() { "default".into() } else { show(&r["index"]) };
    format!("vrf{}:{rule}", show(&r["vrf"]))
}

/// A flow's RULE: the rule that decides it, after the one of its own VRF
/// that let it on where two policies judge it (`vrf3:0,vrf4:1`).
fn flow_rules(f: &Value) -> String {
    match &f["passed_by"] {
        Value::Null => flow_rule(&f["rule"]),
        first => format!("{},{}", flow_rule(first), flow_rule(&f["rule"])),
    }
}

fn age(ms: &Value) -> String {
    let s = count(ms) / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn flow_table(items: &[Value]) -> String {
    let mut t = Table::new(&[
        "INDEX",
        "DIR",
        "SOURCE",
        "DESTINATION",
        "PROTO",
        "VRF",
        "ACTION",
        "RULE",
        "ECMP",
        "TCP",
        "VIF",
        "PKTS",
        "BYTES",
        "AGE",
    ]);
    for f in items {
        // F<=>N: a pair tracked both ways; F=>N and R<=N: only the forward
        // direction is tracked (a service's answers, where the ECMP routes
        // alone make the VRF track flows), so the reverse counts nothing.
        let arrow = match (f["one_way"] == true, f["direction"] == "forward") {
            (false, _) => "<=>",
            (true, true) => "=>",
            (true, false) => "<=",
        };
        let dir = format!("{}{arrow}{}", if f["direction"] == "forward" { "F" } else { "R" }, show(&f["reverse"]));
        let ecmp = match &f["ecmp"] {
            Value::Null => "-".into(),
            e => format!(
                "E:{}{}",
                show(&e["nh"]),
                if e["label"].is_null() { String::new() } else { format!("/L{}", show(&e["label"])) }
            ),
        };
        // The reverse of a one-way pair counts nothing: not none seen.
        let counted =
            |v: &Value| if f["one_way"] == true && f["direction"] != "forward" { "-".into() } else { show(v) };
        t.row(vec![
            show(&f["index"]),
            dir,
            endpoint(&f["src"], &f["sport"]),
            endpoint(&f["dst"], &f["dport"]),
            proto_name(&f["proto"]),
            show(&f["vrf"]),
            flow_action(f),
            flow_rules(f),
            ecmp,
            show(&f["tcp"]),
            show(&f["vif"]),
            counted(&f["packets"]),
            counted(&f["bytes"]),
            age(&f["age_ms"]),
        ]);
    }
    t.to_string()
}

/// What `flow_table`'s letters mean, as Contrail's `flow -l` prints it.
const FLOW_LEGEND: &str = "\
DIR     F forward, R reverse, then the other entry: <=> tracked both ways; => and <= the forward way alone
        (a service's answers, where only the ECMP routes make the VRF track flows), its reverse counting nothing (-)
ACTION  F forward, D(reason) drop, N(S=source, D=destination, Ps=source port, Pd=destination port) NAT;
        * the policies changed since it was decided, or an address it is judged by network had no route then:
        the pair's next packet decides it again, by RULE
RULE    the policy rule that decides the pair now: vrf1:3 is rule 3 of VRF 1's policy (as policy list numbers them),
        vrf1:default its default, - no policy; vrf3:0,vrf4:1 where two judge it (a pod of another network on this
        node): VRF 3's rule 0 let it on, then VRF 4's rule 1 decided
ECMP    E:next hop/Llabel, the member the flow is pinned to
";

fn flow_stats_text(r: &Value) -> String {
    let (pairs, capacity) = (count(&r["pairs"]), count(&r["capacity"]).max(1));
    let secs = |k: &str| format!("{} s", count(&r[k]) as f64 / 1000.0);
    format!(
        "pairs      {pairs} of {capacity} ({:.1}%), {:.1} MiB\n\
         limits     {} pairs per vif, {} per VRF\n\
         timeouts   idle {}, dropped {}, closed {}, half-open {}\n\
         so far     {} set up, {} torn down, {} decided again after policy changes\n",
        pairs as f64 * 100.0 / capacity as f64,
        count(&r["memory_bytes"]) as f64 / f64::from(1 << 20),
        show(&r["per_vif_limit"]),
        show(&r["per_vrf_limit"]),
        secs("idle_timeout_ms"),
        secs("drop_timeout_ms"),
        secs("closed_timeout_ms"),
        secs("half_open_timeout_ms"),
        show(&r["created"]),
        show(&r["removed"]),
        show(&r["redecided"]),
    )
}

fn flow(c: &mut Client, json: bool, cmd: &FlowCmd) -> Result<()> {
    match cmd {
        FlowCmd::List { filter } => {
            let m = match_of(c, filter.as_deref())?;
            let items = all_flows(c, m)?;
            let stats = c.call("flow.stats", json!({}))?;
            emit(json, &Value::from(items.clone()), || {
                format!(
                    "{}{} entries shown; {} pairs of {} in the table\n{FLOW_LEGEND}",
                    flow_table(&items),
                    items.len(),
                    show(&stats["pairs"]),
                    show(&stats["capacity"])
                )
            })
        }
        FlowCmd::Get { index } => {
            let f = c.call("flow.get", json!({ "index": index }))?;
            emit(json, &f, || format!("{}{FLOW_LEGEND}", flow_table(std::slice::from_ref(&f))))
        }
        FlowCmd::Delete { index } => {
            let r = c.call("flow.delete", json!({ "index": index }))?;
            emit(json, &r, || format!("flow {index} and its reverse removed\n"))
        }
        FlowCmd::Fragments => {
            let r = c.call("flow.fragments", json!({}))?;
            emit(json, &r, || {
                let mut t = Table::new(&["VRF", "PROTO", "SOURCE", "DESTINATION", "IDENT", "PORTS", "EXPIRES"]);
                for e in r["entries"].as_array().into_iter().flatten() {
                    t.row(vec![
                        show(&e["vrf"]),
                        proto_name(&e["proto"]),
                        show(&e["src"]),
                        show(&e["dst"]),
                        show(&e["ident"]),
                        match (&e["sport"], &e["dport"]) {
                            (Value::Null, Value::Null) => "no flow".to_string(),
                            (s, d) => format!("{}:{}", show(s), show(d)),
                        },
                        age(&e["expires_in_ms"]),
                    ]);
                }
                format!(
                    "{}first fragments recorded {}; later fragments matched {}, unmatched {}; capacity {}\n\
                     held before their first {}: let go {}, expired {}, no room {}\n",
                    t,
                    show(&r["recorded"]),
                    show(&r["matched"]),
                    show(&r["unmatched"]),
                    show(&r["capacity"]),
                    show(&r["held"]),
                    show(&r["released"]),
                    show(&r["expired"]),
                    show(&r["no_room"])
                )
            })
        }
        FlowCmd::Flush => {
            let r = c.call("flow.flush", json!({}))?;
            emit(json, &r, || format!("{} flow pairs removed\n", show(&r["deleted"])))
        }
        FlowCmd::Stats => {
            let r = c.call("flow.stats", json!({}))?;
            emit(json, &r, || flow_stats_text(&r))
        }
        FlowCmd::Rate { rate } => {
            let interval = Duration::from_secs_f64(rate.interval.clamp(0.1, 3600.0));
            let mut prev = c.call("flow.stats", json!({}))?;
            let mut at = Instant::now();
            let mut n = 0;
            while rate.count.is_none_or(|c| n < c) {
                std::thread::sleep(interval);
                let cur = c.call("flow.stats", json!({}))?;
                let secs = at.elapsed().as_secs_f64();
                at = Instant::now();
                let setup = per_sec(&prev["created"], &cur["created"], secs);
                let teardown = per_sec(&prev["removed"], &cur["removed"], secs);
                let redecide = per_sec(&prev["redecided"], &cur["redecided"], secs);
                let line = if json {
                    format!(
                        "{}\n",
                        json!({ "interval_s": secs, "setup_per_s": setup, "teardown_per_s": teardown,
                                "redecide_per_s": redecide, "pairs": cur["pairs"] })
                    )
                } else {
                    format!(
                        "setup {setup:.0}/s  teardown {teardown:.0}/s  redecide {redecide:.0}/s  pairs {}\n",
                        show(&cur["pairs"])
                    )
                };
                print_out(&line);
                prev = cur;
                n += 1;
            }
            Ok(())
        }
        FlowCmd::Top { rate, sort, lines } => {
            let interval = Duration::from_secs_f64(rate.interval.clamp(0.1, 3600.0));
            let tty = std::io::stdout().is_terminal() && !json;
            let key = |f: &Value| (f["index"].as_u64().unwrap_or(0), f["src"].clone(), f["sport"].clone());
            let mut prev: std::collections::HashMap<_, Value> =
                all_flows(c, None)?.into_iter().map(|f| (key(&f), f)).collect();
            let mut at = Instant::now();
            let mut n = 0;
            while rate.count.is_none_or(|c| n < c) {
                std::thread::sleep(interval);
                let cur = all_flows(c, None)?;
                let secs = at.elapsed().as_secs_f64();
                at = Instant::now();
                let mut rows: Vec<(f64, f64, Value)> = cur
                    .iter()
                    .map(|f| {
                        let before = prev.get(&key(f));
                        let pps = before.map_or(count(&f["packets"]) as f64 / secs, |b| {
                            per_sec(&b["packets"], &f["packets"], secs)
                        });
                        let bps = before
                            .map_or(count(&f["bytes"]) as f64 / secs, |b| per_sec(&b["bytes"], &f["bytes"], secs));
                        (pps, bps * 8.0, f.clone())
                    })
                    .collect();
                rows.sort_by(|a, b| {
                    let (x, y) = match sort {
                        TopSort::Pps => (a.0, b.0),
                        TopSort::Bps => (a.1, b.1),
                    };
                    y.total_cmp(&x)
                });
                rows.truncate(*lines);
                let body = if json {
                    let all: Vec<Value> = rows
                        .iter()
                        .map(|(p, b, f)| json!({ "index": f["index"], "pps": p, "bps": b, "flow": f }))
                        .collect();
                    format!("{}\n", json!({ "interval_s": secs, "top": all }))
                } else {
                    let mut t = Table::new(&[
                        "INDEX",
                        "SOURCE",
                        "DESTINATION",
                        "PROTO",
                        "VRF",
                        "ACTION",
                        "PKTS/S",
                        "MBIT/S",
                        "PKTS",
                    ]);
                    for (p, b, f) in &rows {
                        t.row(vec![
                            show(&f["index"]),
                            endpoint(&f["src"], &f["sport"]),
                            endpoint(&f["dst"], &f["dport"]),
                            proto_name(&f["proto"]),
                            show(&f["vrf"]),
                            flow_action(f),
                            format!("{p:.0}"),
                            format!("{:.2}", b / 1e6),
                            show(&f["packets"]),
                        ]);
                    }
                    format!(
                        "{}top flows by {} over {secs:.1} s (Ctrl-C to stop)\n{t}\n",
                        if tty { "\x1b[2J\x1b[H" } else { "" },
                        match sort {
                            TopSort::Pps => "packets/s",
                            TopSort::Bps => "bits/s",
                        }
                    )
                };
                print_out(&body);
                prev = cur.into_iter().map(|f| (key(&f), f)).collect();
                n += 1;
            }
            Ok(())
        }
    }
}
