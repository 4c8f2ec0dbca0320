//! Prometheus metrics in the text exposition format, over a minimal HTTP
//! server: a thread a connection (a few at most), one request per
//! connection, `GET /metrics`.
//! Everything comes from the same sources as the API's `stats` and `info`.

use crate::api::server::{accept_bounded, Control};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most of a request that is read.
const MAX_REQUEST: u64 = 16 * 1024;
/// The longest a request may take to arrive.
const REQUEST_TIME: Duration = Duration::from_secs(2);

/// A reader that gives up once its time is over.
struct Deadline<R> {
    inner: R,
    until: Instant,
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() >= self.until {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.inner.read(buf)
    }
}

/// The most connections answered at once; one more is told 503 and
/// closed. Prometheus keeps one scrape a target in flight.
const MAX_CONNECTIONS: usize = 8;

/// Serves `/metrics` on `listener`: each connection on a thread of its
/// own, at most `MAX_CONNECTIONS` at a time. One thread for all let each
/// connection that sent nothing hold every scrape behind it for its two
/// seconds: six silent connections held a scrape 11.5 s, past
/// Prometheus's 10 s scrape timeout.
pub fn spawn(control: Arc<Control>, listener: TcpListener) -> std::io::Result<()> {
    std::thread::Builder::new().name("vrouter-metrics".into()).spawn(move || {
        let timed = listener.incoming().map(|s| {
            s.inspect(|s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
            })
        });
        let refuse = |s: TcpStream| {
            respond(&s, "503 Service Unavailable", "", "too many connections to the metrics port\n", true)
        };
        accept_bounded(timed, MAX_CONNECTIONS, "vrouter-metrics-client", move |s| answer(&control, &s), refuse);
    })?;
    Ok(())
}

/// Reads one request from `stream` and answers it.
fn answer(control: &Control, stream: &TcpStream) {
    // A request is a line and a few headers: reading stops at MAX_REQUEST
    // bytes or after REQUEST_TIME, so that a client sending without end
    // neither fills memory nor holds its thread (a timeout per read alone
    // lets a byte a second go on forever).
    let until = Instant::now() + REQUEST_TIME;
    let mut reader = BufReader::new(Deadline { inner: Read::take(stream, MAX_REQUEST), until });
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
        line.clear();
    }
    let mut words = request.split_whitespace();
    let (method, target, version) = (words.next(), words.next(), words.next());
    // The query is the scraper's (a scrape config's `params`): the
    // metrics are the same whatever it asks.
    let path = target.and_then(|t| t.split(['?', '#']).next());
    let metrics = matches!(path, Some("/metrics" | "/"));
    match method {
        _ if !version.is_some_and(|v| v.starts_with("HTTP/")) => {
            respond(stream, "400 Bad Request", "", "GET /metrics HTTP/1.1\n", true)
        }
        Some("GET") if metrics => respond(stream, "200 OK", "", &render(control), true),
        // What a GET would answer, but the body: monitoring checks ask so.
        Some("HEAD") if metrics => respond(stream, "200 OK", "", &render(control), false),
        _ if metrics => respond(stream, "405 Method Not Allowed", "Allow: GET, HEAD\r\n", "GET /metrics\n", true),
        _ => respond(stream, "404 Not Found", "", "GET /metrics\n", true),
    }
}

/// Writes a response: `headers` (each ending in CRLF) beside the usual
/// ones, and `body`, or only its length when `send_body` is false.
fn respond(stream: &TcpStream, status: &str, headers: &str, body: &str, send_body: bool) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    );
    let mut out = stream;
    let body = if send_body { body.as_bytes() } else { b"" };
    let _ = out.write_all(head.as_bytes()).and_then(|_| out.write_all(body));
}

/// Label values escaped as the format asks.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &str, v: impl std::fmt::Display) {
        let _ = if labels.is_empty() {
            writeln!(self.out, "{name} {v}")
        } else {
            writeln!(self.out, "{name}{{{labels}}} {v}")
        };
    }
}

/// A counter family: its name, its help, and how to read it from `T`.
type Counter<T> = (&'static str, &'static str, fn(&T) -> u64);

/// The whole exposition.
pub fn render(control: &Control) -> String {
    let tables = control.lock().writer.tables().clone();
    // Per VRF: its routes by family, the bytes they take, and the /128s
    // only the trie walk finds (`tables::hosts`).
    let (routes, pooled, spares) = {
        let st = control.lock();
        let routes: Vec<(u32, (usize, usize), usize, usize)> = tables
            .vrfs()
            .map(|v| (v.id, st.writer.route_count(v.id), st.writer.vrf_memory_bytes(v.id), v.v6.host_routes().1))
            .collect();
        (routes, st.writer.pooled_node_bytes(), st.writer.spare_bytes())
    };
    let counted = control.stats().read();
    let (s, io) = (&counted.stats, &counted.io);
    let mut out = String::with_capacity(16 << 10);
    let mut f = Family { out: &mut out };

    let vif_counters: [Counter<crate::stats::VifCounters>; 7] = [
        ("vrouter_vif_rx_packets_total", "Frames received on the vif.", |c| c.rx_packets),
        ("vrouter_vif_rx_bytes_total", "Bytes received on the vif.", |c| c.rx_bytes),
        ("vrouter_vif_tx_packets_total", "Frames sent on the vif.", |c| c.tx_packets),
        ("vrouter_vif_tx_bytes_total", "Bytes sent on the vif.", |c| c.tx_bytes),
        (
            "vrouter_vif_tx_dropped_total",
            "Frames routed out of the vif that its port did not send (no port, link down, ring full).",
            |c| c.tx_dropped,
        ),
        ("vrouter_vif_rx_errors_total", "Malformed frames received on the vif.", |c| c.rx_errors),
        ("vrouter_vif_drops_total", "Frames received on the vif and dropped.", |c| c.drops),
    ];
    for (name, help, get) in vif_counters {
        f.header(name, "counter", help);
        for v in tables.vifs() {
            f.sample(name, &format!("vif=\"{}\",name=\"{}\"", v.index, esc(&v.name)), get(&s.vif(v.index)));
        }
    }
    let name = "vrouter_vif_general_path_packets_total";
    f.header(name, "counter", "Frames received on the vif that the fast lane left to the general path.");
    for v in tables.vifs() {
        f.sample(name, &format!("vif=\"{}\",name=\"{}\"", v.index, esc(&v.name)), counted.general_from(v.index));
    }
    // Alerting's signal for a pod cut off or a fabric down: 0 while the
    // port failed to open, its link is down or has no carrier.
    let name = "vrouter_vif_port_up";
    f.header(name, "gauge", "1 if the vif's port is open on a link that is up, 0 if not (vrctl vif: PORT).");
    for v in tables.vifs() {
        if let Some(state) = control.port_state(v.index) {
            f.sample(name, &format!("vif=\"{}\",name=\"{}\"", v.index, esc(&v.name)), u64::from(state == "up"));
        }
    }
    // What the kernel lost on an open port before vrouterd saw it.
    let socket_counters: [Counter<crate::stats::SocketCounters>; 4] = [
        (
            "vrouter_vif_kernel_rx_dropped_total",
            "Frames the kernel dropped on their way to vrouterd: no free frame, fewer than a jumbo frame's chain needs, or (before Linux 6.6) longer than a frame.",
            |k| k.rx_dropped,
        ),
        ("vrouter_vif_kernel_rx_ring_full_total", "Frames the kernel dropped, the rx ring full.", |k| k.rx_ring_full),
        ("vrouter_vif_kernel_fill_ring_empty_total", "Times the kernel found the fill ring empty.", |k| {
            k.fill_ring_empty
        }),
        ("vrouter_vif_kernel_tx_invalid_total", "Transmit descriptors the kernel refused.", |k| k.tx_invalid),
    ];
    let sockets: Vec<_> =
        tables.vifs().filter_map(|v| Some((v.index, v.name.as_str(), control.port(v.index)?.sockets?))).collect();
    for (name, help, get) in socket_counters {
        f.header(name, "counter", help);
        for (vif, vif_name, k) in &sockets {
            f.sample(name, &format!("vif=\"{vif}\",name=\"{}\"", esc(vif_name)), get(k));
        }
    }
    // A series per reason a vif has dropped for, from its first such drop:
    // most vifs have none, and every vif times every reason would be
    // thousands of zeros on a full node.
    let name = "vrouter_vif_drop_reasons_total";
    f.header(name, "counter", "Frames received on the vif and dropped, by reason (dropstats --vif).");
    for v in tables.vifs() {
        for (r, n) in s.vif_drop_reasons(v.index) {
            f.sample(name, &format!("vif=\"{}\",name=\"{}\",reason=\"{}\"", v.index, esc(&v.name), r.as_str()), n);
        }
    }
    f.header("vrouter_vrf_packets_total", "counter", "Packets by what their next hop did, per VRF (vrfstats).");
    for v in tables.vrfs() {
        for (kind, n) in s.vrf(v.id).fields() {
            f.sample(
                "vrouter_vrf_packets_total",
                &format!("vrf=\"{}\",name=\"{}\",type=\"{kind}\"", v.id, esc(&v.name)),
                n,
            );
        }
    }
    f.header("vrouter_drops_total", "counter", "Packets dropped, by reason (dropstats).");
    for r in crate::stats::DropReason::ALL {
        f.sample("vrouter_drops_total", &format!("reason=\"{}\"", r.as_str()), s.dropped(*r));
    }
    f.header("vrouter_to_host_total", "counter", "Frames handed to the host stack.");
    f.sample("vrouter_to_host_total", "", s.to_host);
    f.header("vrouter_to_agent_total", "counter", "Frames trapped to the agent.");
    f.sample("vrouter_to_agent_total", "", s.to_agent);
    f.header("vrouter_fragments_held_total", "counter", "Fragments held to wait for their datagram's first.");
    f.sample("vrouter_fragments_held_total", "", s.fragments_held);
    f.header("vrouter_fragments_released_total", "counter", "Held fragments let go once their first came.");
    f.sample("vrouter_fragments_released_total", "", s.fragments_released);

    if let Some(flows) = control.flows() {
        render_flows(&mut f, flows, &tables);
    }

    f.header("vrouter_table_entries", "gauge", "Entries in each table.");
    for (t, used, _) in tables.occupancy() {
        f.sample("vrouter_table_entries", &format!("table=\"{t}\""), used);
    }
    f.header("vrouter_table_capacity", "gauge", "Capacity of each table.");
    for (t, _, cap) in tables.occupancy() {
        f.sample("vrouter_table_capacity", &format!("table=\"{t}\""), cap);
    }
    f.header("vrouter_vrf_routes", "gauge", "Routes in each VRF, by family.");
    for (id, (v4, v6), _, _) in &routes {
        f.sample("vrouter_vrf_routes", &format!("vrf=\"{id}\",family=\"inet\""), v4);
        f.sample("vrouter_vrf_routes", &format!("vrf=\"{id}\",family=\"inet6\""), v6);
    }
    f.header("vrouter_vrf_route_memory_bytes", "gauge", "Memory each VRF's routes take, both families.");
    for (id, _, bytes, _) in &routes {
        f.sample("vrouter_vrf_route_memory_bytes", &format!("vrf=\"{id}\""), bytes);
    }
    f.header(
        "vrouter_vrf_host_routes_spilled",
        "gauge",
        "IPv6 /128s in each VRF that the trie walk alone finds, their hash bucket being full.",
    );
    for (id, _, _, spilled) in &routes {
        f.sample("vrouter_vrf_host_routes_spilled", &format!("vrf=\"{id}\""), spilled);
    }
    f.header(
        "vrouter_tables_pooled_node_bytes",
        "gauge",
        "Trie nodes the table writer keeps to copy into: spare, or still in a replaced snapshot.",
    );
    f.sample("vrouter_tables_pooled_node_bytes", "", pooled);
    f.header(
        "vrouter_tables_spare_bytes",
        "gauge",
        "Route tables the table writer keeps to change next, but for the trie nodes they share with the current ones.",
    );
    f.sample("vrouter_tables_spare_bytes", "", spares);
    f.header("vrouter_vrf_routes_capacity", "gauge", "Routes a VRF may hold per family.");
    f.sample("vrouter_vrf_routes_capacity", "", tables.limits().routes_per_vrf);
    f.header("vrouter_tables_generation", "counter", "Batches published to the data path.");
    f.sample("vrouter_tables_generation", "", tables.generation());

    f.header("vrouter_worker_busy_seconds_total", "counter", "Time a worker spent in rounds that received frames.");
    for (w, i) in io.iter().enumerate() {
        f.sample("vrouter_worker_busy_seconds_total", &format!("worker=\"{w}\""), i.busy_ns as f64 / 1e9);
    }
    f.header("vrouter_worker_seconds_total", "counter", "Time since the worker started.");
    for (w, i) in io.iter().enumerate() {
        f.sample("vrouter_worker_seconds_total", &format!("worker=\"{w}\""), i.elapsed_ns as f64 / 1e9);
    }
    let worker_counters: [Counter<crate::stats::WorkerIo>; 10] = [
        ("vrouter_worker_rx_packets_total", "Frames a worker received from its ports.", |i| i.rx),
        ("vrouter_worker_tx_packets_total", "Frames a worker queued for transmission.", |i| i.tx),
        ("vrouter_worker_tx_dropped_total", "Frames a worker found no port, frame or slot for.", |i| i.tx_dropped),
        (
            "vrouter_worker_general_path_packets_total",
            "Frames a worker's fast lane left to the general path (ARP, SYNs, new flows, drops).",
            |i| i.general_path,
        ),
        (
            "vrouter_worker_wakeups_total",
            "Times a worker slept and a frame woke it (its latency is a scheduler wake-up).",
            |i| i.wakeups,
        ),
        (
            "vrouter_worker_flow_cache_hits_total",
            "Packets a worker forwarded from its flow cache (a plain flow's hits, the shortest way).",
            |i| i.flow_cache.hits,
        ),
        (
            "vrouter_worker_flow_cache_fills_total",
            "Flow cache entries a worker filled (a flow's first hit, or one after a change).",
            |i| i.flow_cache.fills,
        ),
        (
            "vrouter_worker_flow_cache_forgotten_total",
            "Flow cache entries a worker forgot, their flow changed (removed, decided or pinned again).",
            |i| i.flow_cache.forgotten,
        ),
        (
            "vrouter_worker_flow_cache_renewals_total",
            "Times a new tables snapshot made a worker's flow cache stale.",
            |i| i.flow_cache.renewals,
        ),
        (
            "vrouter_worker_flow_cache_crowded_total",
            "Flow cache fills that found their set full of other live flows (one in 8 takes the oldest's place).",
            |i| i.flow_cache.crowded,
        ),
    ];
    for (name, help, get) in worker_counters {
        f.header(name, "counter", help);
        for (w, i) in io.iter().enumerate() {
            f.sample(name, &format!("worker=\"{w}\""), get(i));
        }
    }
    // Its own name, not a label of the total's: a sum over its causes
    // would count the total twice.
    let name = "vrouter_worker_general_path_cause_packets_total";
    f.header(name, "counter", "Frames a worker's fast lane left to the general path, by why it left them.");
    for (w, i) in io.iter().enumerate() {
        for (c, n) in crate::stats::GeneralCause::ALL.iter().zip(&i.general_causes) {
            f.sample(name, &format!("worker=\"{w}\",cause=\"{}\"", c.as_str()), *n);
        }
    }
    let name = "vrouter_worker_tx_dropped_cause_total";
    f.header(name, "counter", "Frames a worker routed and could not send, by why (full queues are congestion).");
    for (w, i) in io.iter().enumerate() {
        for (c, n) in crate::stats::Unsent::ALL.iter().zip(&i.unsent) {
            f.sample(name, &format!("worker=\"{w}\",cause=\"{}\"", c.as_str()), *n);
        }
    }
    out
}

/// The flow table: how full it is (alert before new flows drop as "flow
/// table full"), its setups and teardowns (`rate()` of them is `vrctl flow
/// rate`), and the pairs each vif and VRF holds against its limit.
fn render_flows(f: &mut Family<'_>, flows: &crate::flow::FlowTable, tables: &crate::tables::Tables) {
    let c = flows.config();
    let (created, removed) = flows.churn();
    let gauges: [(&str, &str, u64); 5] = [
        ("vrouter_flow_pairs", "Flow pairs in the table.", flows.len() as u64),
        ("vrouter_flow_capacity", "Flow pairs the table holds at most.", c.capacity as u64),
        ("vrouter_flow_memory_bytes", "Memory the flow table takes.", flows.memory_bytes() as u64),
        ("vrouter_flow_vif_limit", "Flow pairs one vif may create.", c.per_vif as u64),
        ("vrouter_flow_vrf_limit", "Flow pairs one VRF may hold.", c.per_vrf as u64),
    ];
    for (name, help, v) in gauges {
        f.header(name, "gauge", help);
        f.sample(name, "", v);
    }
    f.header("vrouter_flows_created_total", "counter", "Flow pairs set up.");
    f.sample("vrouter_flows_created_total", "", created);
    f.header("vrouter_flows_removed_total", "counter", "Flow pairs torn down: aged, evicted, deleted or flushed.");
    f.sample("vrouter_flows_removed_total", "", removed);
    f.header(
        "vrouter_flows_redecided_total",
        "counter",
        "Flow pairs decided again after a change of a policy that judges them, or of the routes it judges by.",
    );
    f.sample("vrouter_flows_redecided_total", "", flows.redecided());
    f.header("vrouter_vif_flow_pairs", "gauge", "Flow pairs each vif created.");
    for v in tables.vifs() {
        let label = format!("vif=\"{}\",name=\"{}\"", v.index, esc(&v.name));
        f.sample("vrouter_vif_flow_pairs", &label, flows.counts(v.index, 0).0);
    }
    f.header("vrouter_vrf_flow_pairs", "gauge", "Flow pairs each VRF holds.");
    for v in tables.vrfs() {
        f.sample("vrouter_vrf_flow_pairs", &format!("vrf=\"{}\"", v.id), flows.counts(0, v.id).1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::schema::Defaults;
    use crate::api::server::NodeInfo;
    use crate::flow::{DirSpec, FlowAction, FlowConfig, FlowKey, FlowTable};
    use crate::stats::StatsBoard;
    use crate::tables::{Limits, Object, Op, Vif, VifKind, VrfSpec};
    use crate::wire::MacAddr;

    /// The value of the sample `line` starts with (its name and labels).
    fn sample(text: &str, line: &str) -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn the_flow_table_is_exported_with_each_vif_and_vrf_share() {
        let limits = Limits { vifs: 8, vrfs: 8, nexthops: 16, labels: 16, routes_per_vrf: 16 };
        let (mut writer, _) = crate::tables::TablesWriter::new(limits);
        let vrf = |id| Op::Add(Object::Vrf(VrfSpec { id, name: format!("v{id}"), gateway_v4: None, gateway_v6: None }));
        let vif = |i, v| {
            Op::Add(Object::Vif(Vif::new(
                i,
                &format!("veth{i}"),
                VifKind::Virtual,
                v,
                MacAddr([2, 0, 0, 0, 0, i as u8]),
            )))
        };
        writer.apply(&[vrf(1), vrf(2), vif(1, 1), vif(2, 2)]).unwrap();
        // Two /128s in VRF 2; a subnet's first address (its low half zero) spills.
        let host = |prefix: &str| {
            let target = crate::tables::RouteTarget { nh: 1, label: crate::tables::RouteTarget::NO_LABEL };
            Op::Add(Object::Route(crate::tables::RouteSpec {
                vrf: 2,
                prefix: prefix.parse().unwrap(),
                target,
                network: None,
            }))
        };
        let nh = Op::Add(Object::NextHop(1, crate::tables::NextHop::Discard));
        writer.apply(&[nh, host("fd00:1::/128"), host("fd00:1::5/128")]).unwrap();
        let route_bytes = writer.vrf_memory_bytes(2);
        // The batch copied VRF 2's root, which the snapshot before shared.
        let pooled = writer.pooled_node_bytes();
        assert!(pooled > 0);
        let spares = writer.spare_bytes();
        let flows = Arc::new(FlowTable::new(FlowConfig { capacity: 1000, per_vif: 50, ..FlowConfig::default() }, 8, 8));
        // Three pairs from vif 1 in VRF 1, one from vif 2 in VRF 2; one of vif 1's goes again.
        let pair = |vrf, vif, port| {
            let key = FlowKey::v4(vrf, 17, 0x0a00_0001, 0x0a00_0002, port, 53);
            let (f, r) = (DirSpec::new(key, FlowAction::Forward), DirSpec::new(key.reversed(), FlowAction::Forward));
            flows.create(&f, &r, vif, 0, 0).unwrap().slot
        };
        let gone = pair(1, 1, 1000);
        pair(1, 1, 1001);
        pair(1, 1, 1002);
        pair(2, 2, 1000);
        assert!(flows.remove(gone));
        let control_of = |writer| {
            let node = NodeInfo {
                boot_id: "b".into(),
                underlay: [192, 0, 2, 1].into(),
                fabric: "eth0".into(),
                cores: vec![0],
            };
            let defaults = Defaults { router_mac: MacAddr([2, 0, 0, 0, 0, 1]), underlay: [192, 0, 2, 1].into() };
            Control::new(writer, defaults, StatsBoard::new(1, 8, 8), node)
        };
        let control = control_of(writer).with_flows(Arc::clone(&flows), Instant::now());
        // vif 2 hit its flow limit three times; vif 1 dropped nothing.
        let mut counted = crate::stats::Stats::new(8, 8);
        for _ in 0..3 {
            counted.count_drop(2, crate::stats::DropReason::FlowLimit);
        }
        // And sent 4 frames to the general path; vif 1, none. Its worker
        // could not send 5 it routed: the other worker was behind.
        let mut unsent = [0; crate::stats::Unsent::COUNT];
        unsent[crate::stats::Unsent::HandoffFull as usize] = 5;
        let io = crate::stats::WorkerIo { tx_dropped: 5, unsent, ..Default::default() };
        control.stats().publish(0, &counted, &[0, 0, 4], io);
        let text = render(&control);
        let reasons = "vrouter_vif_drop_reasons_total";
        assert_eq!(sample(&text, &format!("{reasons}{{vif=\"2\",name=\"veth2\",reason=\"flow_limit\"}}")), Some(3));
        assert!(!text.contains(&format!("{reasons}{{vif=\"1\"")), "no series for a vif without drops: {text}");
        let general = "vrouter_vif_general_path_packets_total";
        assert_eq!(sample(&text, &format!("{general}{{vif=\"2\",name=\"veth2\"}}")), Some(4));
        assert_eq!(sample(&text, &format!("{general}{{vif=\"1\",name=\"veth1\"}}")), Some(0));
        let unsent = "vrouter_worker_tx_dropped_cause_total";
        assert_eq!(sample(&text, &format!("{unsent}{{worker=\"0\",cause=\"handoff_full\"}}")), Some(5));
        assert_eq!(sample(&text, &format!("{unsent}{{worker=\"0\",cause=\"no_port\"}}")), Some(0));
        assert_eq!(sample(&text, "vrouter_flow_pairs"), Some(3), "{text}");
        assert_eq!(sample(&text, "vrouter_flow_capacity"), Some(1000));
        assert_eq!(sample(&text, "vrouter_flow_vif_limit"), Some(50));
        assert_eq!(sample(&text, "vrouter_flow_memory_bytes"), Some(flows.memory_bytes() as u64));
        assert_eq!(sample(&text, "vrouter_flows_created_total"), Some(4));
        assert_eq!(sample(&text, "vrouter_flows_removed_total"), Some(1));
        assert_eq!(sample(&text, "vrouter_vif_flow_pairs{vif=\"1\",name=\"veth1\"}"), Some(2));
        assert_eq!(sample(&text, "vrouter_vif_flow_pairs{vif=\"2\",name=\"veth2\"}"), Some(1));
        assert_eq!(sample(&text, "vrouter_vrf_flow_pairs{vrf=\"1\"}"), Some(2));
        assert_eq!(sample(&text, "vrouter_vrf_flow_pairs{vrf=\"2\"}"), Some(1));
        assert!(text.contains("# TYPE vrouter_flows_created_total counter\n"));
        assert_eq!(sample(&text, "vrouter_vrf_routes{vrf=\"2\",family=\"inet6\"}"), Some(2));
        assert_eq!(sample(&text, "vrouter_vrf_host_routes_spilled{vrf=\"2\"}"), Some(1));
        assert_eq!(sample(&text, "vrouter_vrf_host_routes_spilled{vrf=\"1\"}"), Some(0));
        assert_eq!(sample(&text, "vrouter_vrf_route_memory_bytes{vrf=\"2\"}"), Some(route_bytes as u64));
        assert_eq!(sample(&text, "vrouter_tables_pooled_node_bytes"), Some(pooled as u64));
        assert_eq!(sample(&text, "vrouter_tables_spare_bytes"), Some(spares as u64));
        assert!(route_bytes > 0);
        // Without a flow table, no flow families.
        let bare = control_of(crate::tables::TablesWriter::new(limits).0);
        assert!(!render(&bare).contains("vrouter_flow"));
    }
}
