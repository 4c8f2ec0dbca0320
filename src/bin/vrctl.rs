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
use std::time::{Duration, Instant};
use vrouter::api::client::{Client, ClientError};
use vrouter::cli::{count, show, Table};

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
    /// Drops by reason (`dropstats`).
    Dropstats {
        #[command(flatten)]
        rate: RateArgs,
        /// Show reasons with no drops too.
        #[arg(long)]
        all: bool,
    },
    /// Per-VRF packet counters by next-hop type (`vrfstats`).
    Vrfstats {
        /// One VRF, by id or name.
        #[arg(long)]
        vrf: Option<String>,
    },
    /// Build, limits, table occupancy and workers (`vrouter --info`).
    Info,
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
        /// Vif index.
        index: u32,
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
    /// Every VRF.
    List,
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
    /// With --rate: stop after this many refreshes.
    #[arg(long, requires = "rate")]
    count: Option<u64>,
    /// With --rate: seconds between refreshes.
    #[arg(long, default_value_t = 1.0, requires = "rate")]
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
        Cmd::Vif { cmd: VifCmd::List { rate } } if rate.rate => rates(c, json, *rate, vif_rates),
        Cmd::Vif { cmd: VifCmd::List { .. } } => {
            let items = c.dump_all(json!({ "object": "vif" }))?;
            emit(json, &Value::from(items.clone()), || vif_table(&items))
        }
        Cmd::Vif { cmd: VifCmd::Get { index } } => {
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
                json!({ "vrf": id, "prefix": r["prefix"], "nh": r["nh"], "label": r["label"], "nexthop": nh })
            } else {
                c.call("lookup", json!({ "vrf": id, "address": addr }))?
            };
            emit(json, &v, || {
                let mut t = Table::new(&["PREFIX", "LABEL", "NH", "TYPE", "DETAILS"]);
                t.row(vec![
                    show(&v["prefix"]),
                    show(&v["label"]),
                    show(&v["nh"]),
                    show(&v["nexthop"]["type"]),
                    nh_details(&v["nexthop"]),
                ]);
                t.to_string()
            })
        }
        Cmd::Dropstats { rate, .. } if rate.rate => rates(c, json, *rate, drop_rates),
        Cmd::Dropstats { all, .. } => {
            let s = c.call("stats", json!({}))?;
            emit(json, &s["drops"], || {
                let mut t = Table::new(&["REASON", "CONTRAIL NAME", "PACKETS"]);
                for d in s["drops"].as_array().into_iter().flatten() {
                    if *all || count(&d["count"]) > 0 {
                        t.row(vec![show(&d["reason"]), show(&d["contrail"]), show(&d["count"])]);
                    }
                }
                let total: u64 = s["drops"].as_array().into_iter().flatten().map(|d| count(&d["count"])).sum();
                format!("{t}total drops: {total}\n")
            })
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
            emit(json, &Value::from(vrfs.clone()), || vrfstats_table(&vrfs))
        }
        Cmd::Info => {
            let i = c.call("info", json!({}))?;
            let s = c.call("stats", json!({}))?;
            let v = json!({ "info": i, "workers": s["workers"] });
            emit(json, &v, || info_text(&i, &s["workers"]))
        }
        Cmd::Completion { .. } => Ok(()),
    }
}

/// Prints JSON or the table `text` makes.
fn emit(json: bool, v: &Value, text: impl FnOnce() -> String) -> Result<()> {
    let out = if json { format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()) } else { text() };
    print_out(&out);
    Ok(())
}

fn print_out(s: &str) {
    let mut o = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = o.write_all(s.as_bytes()).and_then(|_| o.flush());
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
        "ERRORS", "DROPS",
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
            show(&s["rx_errors"]),
            show(&s["drops"]),
        ]);
    }
    t.to_string()
}

fn vif_detail(v: &Value) -> String {
    let mut t = Table::new(&["FIELD", "VALUE"]);
    for key in ["index", "name", "kind", "vrf", "mac", "ipv4", "ipv6", "mtu", "proxy_arp", "mss_clamp", "disabled"] {
        t.row(vec![key.into(), show(&v[key])]);
    }
    if let Some(s) = v["status"].as_object() {
        for (k, x) in s {
            t.row(vec![k.clone(), show(x)]);
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

fn vrf_table(items: &[Value]) -> String {
    let mut t = Table::new(&["VRF", "NAME", "GATEWAY", "GATEWAY6", "ROUTES", "ROUTES6"]);
    for v in items {
        t.row(vec![
            show(&v["id"]),
            show(&v["name"]),
            show(&v["gateway_v4"]),
            show(&v["gateway_v6"]),
            show(&v["status"]["routes_v4"]),
            show(&v["status"]["routes_v6"]),
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
    out.push('\n');
    let mut w = Table::new(&["WORKER", "CORE", "RX", "TX", "TX DROPPED", "BUSY"]);
    for x in workers.as_array().into_iter().flatten() {
        let busy = count(&x["busy_ns"]) as f64 / count(&x["elapsed_ns"]).max(1) as f64 * 100.0;
        w.row(vec![
            show(&x["worker"]),
            show(&x["core"]),
            show(&x["rx"]),
            show(&x["tx"]),
            show(&x["tx_dropped"]),
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
            let mut t = Table::with_widths(&["PREFIX", "LABEL", "NH", "TYPE", "DETAILS"], &[43, 7, 7, 14, 0]);
            if !first {
                t.no_header();
            }
            for r in &items {
                let nh = r["nh"].as_u64().and_then(|id| nhs.get(&id)).cloned().unwrap_or(Value::Null);
                t.row(vec![show(&r["prefix"]), show(&r["label"]), show(&r["nh"]), show(&nh["type"]), nh_details(&nh)]);
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
type RateView = fn(&Value, &Value, f64, bool) -> String;

fn rates(c: &mut Client, json: bool, args: RateArgs, view: RateView) -> Result<()> {
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
    let keys = ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_errors", "drops"];
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
    let mut t = Table::new(&["VIF", "NAME", "RX PPS", "RX MBIT/S", "TX PPS", "TX MBIT/S", "ERRORS/S", "DROPS/S"]);
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
        ]);
    }
    format!("vif rates over {secs:.1} s (Ctrl-C to stop)\n{t}")
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
