//! `vrpktgen run`: both ends of a measurement from one command. The sink
//! runs on a thread in the receiving namespace, the sender on the calling
//! thread in the sending one; the report puts the two together (offered
//! and delivered rate, loss, latency).
//!
//! Settings come from flags, from a TOML file with the same names
//! (`tx-dev = "eth0"`), or both: a flag wins over the file.

use super::port::{self, SendOptions, SinkOptions, SinkReport};
use super::traffic::{Encap, Sizes, Spec, Templates};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Every setting of a run, each optional so that a file and flags can be
/// merged; `resolve` checks what is required.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunSettings {
    /// The interface the frames leave from.
    #[arg(long)]
    pub tx_dev: Option<String>,
    /// The sender's network namespace.
    #[arg(long)]
    pub tx_netns: Option<String>,
    /// The interface the sink listens on.
    #[arg(long)]
    pub rx_dev: Option<String>,
    /// The sink's network namespace.
    #[arg(long)]
    pub rx_netns: Option<String>,
    /// Source MAC of the frames.
    #[arg(long)]
    pub src_mac: Option<String>,
    /// Destination MAC (the forwarder's, or the sink's with none between).
    #[arg(long)]
    pub dst_mac: Option<String>,
    /// Source address.
    #[arg(long)]
    pub src: Option<String>,
    /// Destination address.
    #[arg(long)]
    pub dst: Option<String>,
    /// Frame size on the wire, 64 to 1518, or imix (default 64).
    #[arg(long)]
    pub size: Option<String>,
    /// Distinct flows (default 1).
    #[arg(long)]
    pub flows: Option<u32>,
    /// Frames per second; 0 (the default) for as fast as possible.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Seconds to send (default 10).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Frames to send, at most.
    #[arg(long)]
    pub count: Option<u64>,
    /// Wrap the frames in MPLS over udp or gre.
    #[arg(long)]
    pub encap: Option<String>,
    /// The tunnel's outer source.
    #[arg(long)]
    pub outer_src: Option<String>,
    /// The tunnel's outer destination.
    #[arg(long)]
    pub outer_dst: Option<String>,
    /// The tunnel's MPLS label.
    #[arg(long)]
    pub label: Option<u32>,
    /// How long the sink waits after the last frame, in ms (default 1000).
    #[arg(long)]
    pub idle_ms: Option<u64>,
}

macro_rules! merge_fields {
    ($a:ident, $b:ident, $($f:ident),*) => {
        RunSettings { $($f: $a.$f.or($b.$f)),* }
    };
}

impl RunSettings {
    /// Reads a settings file.
    pub fn from_file(path: &std::path::Path) -> Result<RunSettings, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// These settings, with `file`'s where these have none.
    pub fn over(self, file: RunSettings) -> RunSettings {
        merge_fields!(
            self, file, tx_dev, tx_netns, rx_dev, rx_netns, src_mac, dst_mac, src, dst, size, flows, rate, duration,
            count, encap, outer_src, outer_dst, label, idle_ms
        )
    }

    /// Checks and parses them into what the two ends need.
    pub fn resolve(&self) -> Result<RunPlan, String> {
        fn need<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, String> {
            v.as_deref().ok_or_else(|| format!("{name} is required (as --{name} or in the file)"))
        }
        fn parse<T: std::str::FromStr>(v: &str, name: &str) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e| format!("{name} {v:?}: {e}"))
        }
        let l2 = super::build::L2 {
            src: parse(need(&self.src_mac, "src-mac")?, "src-mac")?,
            dst: parse(need(&self.dst_mac, "dst-mac")?, "dst-mac")?,
        };
        let src: IpAddr = parse(need(&self.src, "src")?, "src")?;
        let dst: IpAddr = parse(need(&self.dst, "dst")?, "dst")?;
        let sizes: Sizes = parse(self.size.as_deref().unwrap_or("64"), "size")?;
        let outer = |v: &Option<String>, name: &str| v.as_deref().map(|a| parse::<Ipv4Addr>(a, name)).transpose();
        let encap = match self.encap.as_deref() {
            None => None,
            Some(kind) => Some(Encap::from_settings(
                kind,
                outer(&self.outer_src, "outer-src")?,
                outer(&self.outer_dst, "outer-dst")?,
                self.label,
            )?),
        };
        let spec = Spec { l2, src, dst, flows: self.flows.unwrap_or(1), sizes, encap };
        let templates = Templates::new(&spec)?;
        let seconds = self.duration.unwrap_or(10.0);
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(format!("duration {seconds}: a positive number of seconds"));
        }
        let send = SendOptions {
            rate: self.rate.unwrap_or(0),
            count: self.count,
            duration: Duration::from_secs_f64(seconds),
            progress: false,
        };
        let idle = Duration::from_millis(self.idle_ms.unwrap_or(1000));
        let sink = SinkOptions {
            // Until the sender is done and the last frames are in.
            duration: send.duration + idle + Duration::from_secs(5),
            count: self.count,
            idle,
            progress: false,
        };
        Ok(RunPlan {
            tx_dev: need(&self.tx_dev, "tx-dev")?.to_string(),
            tx_netns: self.tx_netns.clone(),
            rx_dev: need(&self.rx_dev, "rx-dev")?.to_string(),
            rx_netns: self.rx_netns.clone(),
            templates,
            send,
            sink,
        })
    }
}

/// A checked run.
pub struct RunPlan {
    tx_dev: String,
    tx_netns: Option<String>,
    rx_dev: String,
    rx_netns: Option<String>,
    templates: Templates,
    send: SendOptions,
    sink: SinkOptions,
}

/// Both ends' reports.
pub struct RunReport {
    /// The sender's.
    pub sent: port::SendReport,
    /// The sink's.
    pub received: SinkReport,
    /// Cores busy on the whole machine while the sender sent.
    pub busy_cores: Option<f64>,
}

impl RunReport {
    /// Frames sent and never received.
    pub fn lost(&self) -> u64 {
        self.sent.sent.saturating_sub(self.received.tally.stamped)
    }

    /// Delivered frames per second, over the sender's time.
    pub fn delivered_pps(&self) -> f64 {
        self.received.tally.stamped as f64 / self.sent.seconds.max(1e-9)
    }
}

impl RunPlan {
    /// Prints a progress line from each end every second, on stderr.
    pub fn with_progress(mut self, on: bool) -> RunPlan {
        self.send.progress = on;
        self.sink.progress = on;
        self
    }

    /// Starts the sink, sends, and waits for the sink. The calling thread
    /// moves into the sender's namespace.
    pub fn run(self) -> Result<RunReport, String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (rx_dev, rx_netns, sink_opts) = (self.rx_dev.clone(), self.rx_netns.clone(), self.sink);
        let sink = std::thread::Builder::new()
            .name("vrpktgen-sink".into())
            .spawn(move || -> Result<SinkReport, String> {
                if let Some(ns) = &rx_netns {
                    crate::io::enter_netns(ns).map_err(|e| format!("network namespace {ns}: {e}"))?;
                }
                port::sink_until_ready(&rx_dev, &sink_opts, || {
                    let _ = ready_tx.send(());
                })
                .map_err(|e| format!("sink on {rx_dev}: {e}"))
            })
            .map_err(|e| format!("starting the sink: {e}"))?;
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            return Err(match sink.join() {
                Ok(Err(e)) => e,
                _ => "the sink did not start within 10 s".into(),
            });
        }
        if let Some(ns) = &self.tx_netns {
            crate::io::enter_netns(ns).map_err(|e| format!("network namespace {ns}: {e}"))?;
        }
        let busy_before = crate::io::busy_seconds().ok();
        let sent = port::send(&self.tx_dev, &self.templates, &self.send)
            .map_err(|e| format!("send on {}: {e}", self.tx_dev))?;
        let busy_cores = match (busy_before, crate::io::busy_seconds().ok()) {
            (Some(a), Some(b)) => Some((b - a) / sent.seconds.max(1e-9)),
            _ => None,
        };
        let received = sink.join().map_err(|_| "the sink thread panicked".to_string())??;
        Ok(RunReport { sent, received, busy_cores })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_missing_settings_are_named() {
        let file: RunSettings = toml::from_str(
            r#"
tx-dev = "a0"
rx-dev = "b0"
src-mac = "02:00:00:00:00:01"
dst-mac = "02:00:00:00:00:02"
src = "10.0.0.1"
dst = "10.0.0.2"
flows = 8
rate = 1000
"#,
        )
        .unwrap();
        let flags = RunSettings { rate: Some(5000), size: Some("imix".into()), ..RunSettings::default() };
        let merged = flags.over(file);
        assert_eq!((merged.rate, merged.flows, merged.size.as_deref()), (Some(5000), Some(8), Some("imix")));
        let plan = merged.resolve().unwrap();
        assert_eq!((plan.send.rate, plan.tx_dev.as_str(), plan.rx_dev.as_str()), (5000, "a0", "b0"));

        let e = RunSettings { tx_dev: Some("a0".into()), ..RunSettings::default() }.resolve().err().unwrap();
        assert!(e.contains("src-mac is required"), "{e}");
        let bad = toml::from_str::<RunSettings>("tx_dev = \"a0\"").unwrap_err().to_string();
        assert!(bad.contains("unknown field"), "{bad}");
        let mut s = merged_with_encap();
        s.label = Some(1 << 20);
        assert!(s.resolve().err().unwrap().contains("20 bits"));
    }

    fn merged_with_encap() -> RunSettings {
        RunSettings {
            tx_dev: Some("a".into()),
            rx_dev: Some("b".into()),
            src_mac: Some("02:00:00:00:00:01".into()),
            dst_mac: Some("02:00:00:00:00:02".into()),
            src: Some("10.0.0.1".into()),
            dst: Some("10.0.0.2".into()),
            encap: Some("udp".into()),
            outer_src: Some("192.168.0.1".into()),
            outer_dst: Some("192.168.0.2".into()),
            label: Some(16),
            ..RunSettings::default()
        }
    }
}
