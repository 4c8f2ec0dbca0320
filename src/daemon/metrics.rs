//! Prometheus metrics in the text exposition format, over a minimal HTTP
//! server: one thread, one request per connection, `GET /metrics`.
//! Everything comes from the same sources as the API's `stats` and `info`.

use crate::api::server::Control;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
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

/// Serves `/metrics` on `listener` from its own thread.
pub fn spawn(control: Arc<Control>, listener: TcpListener) -> std::io::Result<()> {
    std::thread::Builder::new().name("vrouter-metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            // A scraper that stalls gets two seconds, then the next one is served.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
            // A request is a line and a few headers: reading stops at
            // MAX_REQUEST bytes or after REQUEST_TIME, so that a client
            // sending without end neither fills memory nor holds the thread
            // (a timeout per read alone lets a byte a second go on forever).
            let until = Instant::now() + REQUEST_TIME;
            let mut reader = BufReader::new(Deadline { inner: Read::take(&stream, MAX_REQUEST), until });
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if request.starts_with("GET ") && (path == "/metrics" || path == "/") {
                ("200 OK", render(&control))
            } else {
                ("404 Not Found", "GET /metrics\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let mut out = &stream;
            let _ = out.write_all(head.as_bytes()).and_then(|_| out.write_all(body.as_bytes()));
        }
    })?;
    Ok(())
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
    let routes: Vec<(u32, (usize, usize))> = {
        let st = control.lock();
        tables.vrfs().map(|v| (v.id, st.writer.route_count(v.id))).collect()
    };
    let (s, io) = control.stats().read();
    let mut out = String::with_capacity(16 << 10);
    let mut f = Family { out: &mut out };

    let vif_counters: [Counter<crate::stats::VifCounters>; 6] = [
        ("vrouter_vif_rx_packets_total", "Frames received on the vif.", |c| c.rx_packets),
        ("vrouter_vif_rx_bytes_total", "Bytes received on the vif.", |c| c.rx_bytes),
        ("vrouter_vif_tx_packets_total", "Frames sent on the vif.", |c| c.tx_packets),
        ("vrouter_vif_tx_bytes_total", "Bytes sent on the vif.", |c| c.tx_bytes),
        ("vrouter_vif_rx_errors_total", "Malformed frames received on the vif.", |c| c.rx_errors),
        ("vrouter_vif_drops_total", "Frames received on the vif and dropped.", |c| c.drops),
    ];
    for (name, help, get) in vif_counters {
        f.header(name, "counter", help);
        for v in tables.vifs() {
            f.sample(name, &format!("vif=\"{}\",name=\"{}\"", v.index, esc(&v.name)), get(&s.vif(v.index)));
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

    f.header("vrouter_table_entries", "gauge", "Entries in each table.");
    for (t, used, _) in tables.occupancy() {
        f.sample("vrouter_table_entries", &format!("table=\"{t}\""), used);
    }
    f.header("vrouter_table_capacity", "gauge", "Capacity of each table.");
    for (t, _, cap) in tables.occupancy() {
        f.sample("vrouter_table_capacity", &format!("table=\"{t}\""), cap);
    }
    f.header("vrouter_vrf_routes", "gauge", "Routes in each VRF, by family.");
    for (id, (v4, v6)) in &routes {
        f.sample("vrouter_vrf_routes", &format!("vrf=\"{id}\",family=\"inet\""), v4);
        f.sample("vrouter_vrf_routes", &format!("vrf=\"{id}\",family=\"inet6\""), v6);
    }
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
    let worker_counters: [Counter<crate::stats::WorkerIo>; 3] = [
        ("vrouter_worker_rx_packets_total", "Frames a worker received from its ports.", |i| i.rx),
        ("vrouter_worker_tx_packets_total", "Frames a worker queued for transmission.", |i| i.tx),
        ("vrouter_worker_tx_dropped_total", "Frames a worker found no port, frame or slot for.", |i| i.tx_dropped),
    ];
    for (name, help, get) in worker_counters {
        f.header(name, "counter", help);
        for (w, i) in io.iter().enumerate() {
            f.sample(name, &format!("worker=\"{w}\""), get(i));
        }
    }
    out
}
