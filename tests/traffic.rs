//! `vrpktgen send` and `sink` on a real veth pair between two namespaces
//! the test makes and removes: what goes on the wire, read by tshark, and
//! what the sink counts.
//!
//! Needs root (CI is root); elsewhere it says so and skips.

mod common;

use common::{root_or_skip, run, tshark_available, tshark_fields, tshark_rows, Scratch};
use std::process::{Command, Stdio};
use std::time::Duration;

const MAC_A: &str = "02:00:00:00:0a:01";
const MAC_B: &str = "02:00:00:00:0b:01";

/// Namespaces `a` and `b` joined by a veth pair (`dev_a`, `dev_b`). Removed on drop.
struct Link {
    a: String,
    b: String,
    dev_a: String,
    dev_b: String,
}

impl Link {
    fn new(tag: &str) -> Link {
        let id = std::process::id() % 100_000;
        let l = Link {
            a: format!("vrpg-{tag}a-{id}"),
            b: format!("vrpg-{tag}b-{id}"),
            dev_a: format!("pg{tag}a{id}"),
            dev_b: format!("pg{tag}b{id}"),
        };
        for ns in [&l.a, &l.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            run(&["ip", "netns", "add", ns]);
        }
        run(&["ip", "link", "add", &l.dev_a, "type", "veth", "peer", "name", &l.dev_b]);
        for (dev, ns, mac) in [(&l.dev_a, &l.a, MAC_A), (&l.dev_b, &l.b, MAC_B)] {
            run(&["ip", "link", "set", dev, "netns", ns, "address", mac]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            // One frame in, one frame out.
            let _ = Command::new("ip")
                .args(["netns", "exec", ns, "ethtool", "-K", dev, "gro", "off", "tso", "off", "tx", "off", "rx", "off"])
                .output();
        }
        l
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn vrpktgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vrpktgen"))
}

fn send(link: &Link, extra: &[&str]) -> serde_json::Value {
    let out = vrpktgen()
        .args(["send", "--netns", &link.a, "--dev", &link.dev_a, "--src-mac", MAC_A, "--dst-mac", MAC_B, "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "send: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_sink_counts_every_stamped_frame_per_flow_with_latency() {
    if !root_or_skip("vrpktgen's AF_XDP ends") {
        return;
    }
    let link = Link::new("s");
    let sink = vrpktgen()
        .args(["sink", "--netns", &link.b, "--dev", &link.dev_b, "--duration", "20", "--count", "20000", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The sink's program is attached once XDP shows on its interface.
    let attached = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        run(&["ip", "-n", &link.b, "-d", "link", "show", &link.dev_b]).contains("xdp")
    });
    assert!(attached, "the sink attached its XDP program");
    let sent =
        send(&link, &["--src", "10.9.0.1", "--dst", "10.9.0.2", "--flows", "8", "--count", "20000", "--rate", "20000"]);
    assert_eq!(sent["sent"], 20000, "{sent}");
    let out = sink.wait_with_output().unwrap();
    assert!(out.status.success(), "sink: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["received"], 20000, "every frame at 20 kpps: {r}");
    assert_eq!(r["lost"], 0);
    assert_eq!(r["flows"], 8);
    assert!(r["per_flow"].as_array().unwrap().iter().all(|n| n == 2500), "flows take turns: {r}");
    let p50 = r["latency_ns"]["p50"].as_u64().unwrap();
    let p99 = r["latency_ns"]["p99"].as_u64().unwrap();
    assert!(p50 > 0 && p50 <= p99 && p99 < 10_000_000_000, "latency percentiles in order: {r}");
    // About one second of sending at the rate asked for.
    let seconds = sent["seconds"].as_f64().unwrap();
    assert!((0.9..3.0).contains(&seconds), "20,000 frames at 20,000/s took {seconds} s");
}

/// `vrpktgen run` drives both ends from a settings file, a flag overriding
/// it, and reports what the two ends saw together.
#[test]
fn run_drives_both_ends_from_a_file_and_flags() {
    if !root_or_skip("vrpktgen's AF_XDP ends") {
        return;
    }
    let link = Link::new("r");
    let dir = Scratch::dir("vrpktgen-run");
    let file = dir.join("run.toml");
    std::fs::write(
        &file,
        format!(
            "tx-dev = \"{}\"\ntx-netns = \"{}\"\nrx-dev = \"{}\"\nrx-netns = \"{}\"\nsrc-mac = \"{MAC_A}\"\ndst-mac = \"{MAC_B}\"\nsrc = \"10.9.0.1\"\ndst = \"10.9.0.2\"\nflows = 5\nrate = 1000\ncount = 3000\n",
            link.dev_a, link.a, link.dev_b, link.b
        ),
    )
    .unwrap();
    // The flag's rate wins over the file's 1,000/s: 3,000 frames take ~0.3 s, not 3.
    let out =
        vrpktgen().args(["run", "--config", file.to_str().unwrap(), "--rate", "10000", "--json"]).output().unwrap();
    // Without --json: a progress line each second from both ends, and a summary.
    let text = vrpktgen().args(["run", "--config", file.to_str().unwrap(), "--rate", "2000"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&text.stdout), String::from_utf8_lossy(&text.stderr));
    assert!(text.status.success() && stdout.starts_with("offered"), "{stdout}{stderr}");
    assert!(stdout.contains("3000 sent, 3000 received, 0 lost"), "{stdout}");
    assert!(stderr.contains("vrpktgen send: ") && stderr.contains(" Mpps"), "the sender's progress: {stderr}");
    assert!(stderr.contains("vrpktgen sink: "), "the sink's progress: {stderr}");
    assert!(out.status.success(), "run: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["sent"].as_u64(), r["received"].as_u64(), r["lost"].as_u64()),
        (Some(3000), Some(3000), Some(0)),
        "{r}"
    );
    assert_eq!(r["sink"]["flows"], 5, "{r}");
    let seconds = r["seconds"].as_f64().unwrap();
    assert!((0.25..1.5).contains(&seconds), "3,000 frames at 10,000/s took {seconds} s");
    assert!(r["sink"]["latency_ns"]["p50"].as_u64().unwrap() > 0);

    let bad = vrpktgen().args(["run", "--tx-dev", &link.dev_a, "--json"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is required"), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// What goes on the wire, read by tshark: sizes (IMIX), IPv6 with valid UDP
/// checksums after stamping, and frames already in an MPLS over UDP tunnel.
#[test]
fn frames_on_the_wire_are_what_was_asked_for() {
    if !root_or_skip("vrpktgen's AF_XDP ends") {
        return;
    }
    if !tshark_available() {
        assert!(std::env::var_os("CI").is_none(), "tshark is required in CI: tools/test installs it");
        eprintln!("SKIPPED: tshark is not installed");
        return;
    }
    let link = Link::new("w");
    let cases: [(&[&str], usize); 2] = [
        (&["--src", "fd00::1", "--dst", "fd00::2", "--size", "imix", "--flows", "3"], 24),
        (
            &[
                "--src",
                "10.9.0.1",
                "--dst",
                "10.9.0.2",
                "--size",
                "128",
                "--encap",
                "udp",
                "--outer-src",
                "192.168.0.1",
                "--outer-dst",
                "192.168.0.2",
                "--label",
                "37",
            ],
            10,
        ),
    ];
    for (i, (args, n)) in cases.iter().enumerate() {
        let pcap = std::env::temp_dir().join(format!("vrpktgen-wire-{}-{i}.pcap", std::process::id()));
        let count = n.to_string();
        let capture = Command::new("ip")
            .args(["netns", "exec", &link.b, "dumpcap", "-q", "-i", &link.dev_b, "-f", "udp", "-c", &count])
            .args(["-a", "duration:15", "-w"])
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        send(&link, &[args, &["--count", &count, "--rate", "1000"][..]].concat());
        let done = capture.wait_with_output().unwrap();
        assert!(done.status.success(), "dumpcap");
        let mut cmd = Command::new("tshark");
        cmd.args(["-n", "-r"]).arg(&pcap);
        tshark_fields(&mut cmd, &["frame.len", "ipv6.dst", "udp.checksum.status", "mpls.label", "ip.dst"]);
        let rows = tshark_rows(&cmd.output().unwrap().stdout);
        let _ = std::fs::remove_file(&pcap);
        assert_eq!(rows.len(), *n, "{rows:?}");
        if i == 0 {
            let lens: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
            // 64, 576 and 1500 on the wire are 60, 572 and 1496 without the FCS.
            // IMIX's small frames grow to the 82 bytes IPv6 and the stamp need.
            assert_eq!(lens.iter().filter(|l| **l == "78").count(), 14, "{lens:?}");
            assert_eq!(lens.iter().filter(|l| **l == "572").count(), 8, "{lens:?}");
            assert_eq!(lens.iter().filter(|l| **l == "1496").count(), 2, "{lens:?}");
            assert!(rows.iter().all(|r| r[1] == "fd00::2" && r[2] == "1"), "valid UDP checksums (1 = good): {rows:?}");
        } else {
            assert!(
                rows.iter().all(|r| r[0] == "124" && r[3] == "37" && r[4] == "192.168.0.2,10.9.0.2"),
                "MPLS over UDP, label 37, inner 10.9.0.2: {rows:?}"
            );
        }
    }
}
