//! End to end through the lab (`tools/lab`): two nodes running vrouterd,
//! each filled by its vrouter-agent through the API, pods in namespaces, a
//! bridge as the fabric. One test, because the lab's
//! namespaces have fixed names. Needs root (CI is root); elsewhere it skips.

mod common;

use std::process::Command;
use std::time::Duration;

const VROUTERD: &str = env!("CARGO_BIN_EXE_vrouterd");
const VRPKTGEN: &str = env!("CARGO_BIN_EXE_vrpktgen");

fn lab(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/lab"))
        .args(args)
        .env("VROUTERD", VROUTERD)
        .env("LAB_DIR", lab_dir())
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tools/lab {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lab_dir() -> String {
    format!("/tmp/vrouter-lab-test-{}", std::process::id())
}

struct LabGuard;
impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/lab"))
            .arg("down")
            .env("LAB_DIR", lab_dir())
            .output();
        let _ = std::fs::remove_dir_all(lab_dir());
    }
}

fn sh(ns: &str, script: &str) -> (bool, String) {
    let out = Command::new("ip").args(["netns", "exec", &format!("lab-{ns}"), "bash", "-c", script]).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// A short iperf3 run from `client` to `server`'s address; the server is
/// started here, and the client retries while the server comes up.
fn tcp(server: &str, client: &str, addr: &str, secs: u32) -> (bool, String) {
    let mut last = (false, String::new());
    for _ in 0..5 {
        sh(server, "iperf3 -s -D -1");
        std::thread::sleep(Duration::from_millis(300));
        last = sh(client, &format!("iperf3 -c {addr} -t {secs}"));
        if last.0 && last.1.contains("receiver") {
            return last;
        }
    }
    last
}

/// Node `node`'s frames received, and those its fast lanes left to the
/// general path, over all its workers (`vrctl runtime`), whose counts by
/// cause add up to them.
fn frames_and_general(node: &str) -> (u64, u64) {
    let w: serde_json::Value = serde_json::from_str(&lab(&["vrctl", node, "runtime", "--json"], &[])).unwrap();
    let workers = w.as_array().unwrap();
    let sum = |k: &str| workers.iter().map(|x| x[k].as_u64().unwrap()).sum::<u64>();
    let by_cause: u64 = workers
        .iter()
        .flat_map(|x| x["general_causes"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()))
        .sum();
    assert_eq!(by_cause, sum("general_path"), "node {node}'s general path by cause: {w}");
    (sum("rx"), sum("general_path"))
}

/// The packets node `node`'s workers forwarded from their flow caches
/// (`vrctl runtime`): plain flows' hits, the shortest way.
fn flow_cache_hits(node: &str) -> u64 {
    let w: serde_json::Value = serde_json::from_str(&lab(&["vrctl", node, "runtime", "--json"], &[])).unwrap();
    w.as_array().unwrap().iter().map(|x| x["flow_cache"]["hits"].as_u64().unwrap()).sum()
}

/// Starts a listener on UDP `port` in each of `pods` for four seconds,
/// appending what it hears to a file for `heard`, and gives them time to bind.
fn listen_udp(pods: &[&str], port: u16) {
    for pod in pods {
        let file = format!("/tmp/lab-{pod}-{port}");
        sh(
            pod,
            &format!("rm -f {file}; (timeout 4 socat -u UDP-RECV:{port} OPEN:{file},creat,append >/dev/null 2>&1 &)"),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// Bytes `pod`'s listener on `port` has heard (`listen_udp`); its file goes.
fn heard(pod: &str, port: u16) -> usize {
    let path = format!("/tmp/lab-{pod}-{port}");
    let n = std::fs::read(&path).map(|b| b.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    n
}

/// What the reordering scripts share: `send_ipv4_fragment(raw, src, dst,
/// proto, ident, offset, more, data)` writes one IPv4 fragment of a
/// datagram through the raw socket `raw`, so that its pieces can be sent
/// in any order.
const IPV4_FRAGMENT_PY: &str = r#"
import socket, struct, sys, time
def send_ipv4_fragment(raw, src, dst, proto, ident, offset, more, data):
    flags = (0x2000 if more else 0) | (offset // 8)
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(data), ident, flags, 64, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    raw.sendto(ip + data, (dst, 0))
"#;

/// `reordered.py DST PORT FLOWS`: for each of FLOWS flows from its own
/// source port, a 10-byte datagram, then a 1,200-byte one in two IPv4
/// fragments sent through a raw socket, the second first (UDP checksum 0:
/// none, as IPv4 allows).
const REORDERED: &str = r#"
dst, port, flows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for i in range(flows):
    sport = 45000 + i
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(('', sport))
    u.connect((dst, port))
    u.send(b'w' * 10)
    src = u.getsockname()[0]
    u.close()
    payload = b'f' * 1200
    udp = struct.pack('!HHHH', sport, port, 8 + len(payload), 0) + payload
    time.sleep(0.05)
    send_ipv4_fragment(raw, src, dst, 17, 0x5000 + i, 600, False, udp[600:])
    time.sleep(0.05)
    send_ipv4_fragment(raw, src, dst, 17, 0x5000 + i, 0, True, udp[:600])
"#;

/// What the scripts that change a policy mid-run share (`pushed.py`,
/// `streamed.py`): `move_intents(vrctl, sockets, moves)` renames each
/// staged intent over the one in place (`moves`: pairs of paths), then
/// waits, up to 10 s, until the policies of every vrouterd in `sockets`
/// show the change.
const MOVE_INTENTS_PY: &str = r#"
import os, socket, subprocess, sys, time
def policies(vrctl, sock):
    return subprocess.run([vrctl, '--socket', sock, 'policy', 'list', '--json'], check=True, capture_output=True).stdout
def move_intents(vrctl, sockets, moves):
    was = [policies(vrctl, sock) for sock in sockets]
    for staged, intent in moves:
        os.replace(staged, intent)
    end = time.time() + 10
    while any(policies(vrctl, sock) == w for sock, w in zip(sockets, was)) and time.time() < end:
        time.sleep(0.1)
"#;

/// `streamer.py`: in a pod, waits for one datagram on UDP 7790, then
/// sends a datagram back to its sender every 10 ms for 10 s.
const STREAMER: &str = r#"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('', 7790))
s.settimeout(30)
_, peer = s.recvfrom(100)
end = time.time() + 10
while time.time() < end:
    s.sendto(b'x', peer)
    time.sleep(0.01)
"#;

/// `streamed.py VRCTL SOCKET... --move STAGED:INTENT...`: from the external
/// client, one datagram to the floating IP's UDP 7790 (a streamer's), then
/// silence. Counts the datagrams that come back for 1 s; moves each staged
/// intent into place and waits until every node's policies changed; lets
/// 0.3 s of what was in flight pass, and counts again for 1.5 s. Prints
/// both counts.
const STREAMED: &str = r#"
at = sys.argv.index('--move')
vrctl, sockets = sys.argv[1], sys.argv[2:at]
moves = [m.split(':') for m in sys.argv[at + 1:]]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('', 47790))
s.settimeout(0.05)
s.sendto(b'go', ('185.22.97.188', 7790))
def count(secs):
    n, end = 0, time.time() + secs
    while time.time() < end:
        try:
            s.recv(100)
            n += 1
        except socket.timeout:
            pass
    return n
before = count(1.0)
move_intents(vrctl, sockets, moves)
count(0.3)
print(before, count(1.5))
"#;

/// `pushed.py PORT VRCTL SOCKET... [--move NEW INTENT]`: twelve
/// connections to the leonardo service from ports PORT..PORT+11, read for
/// 0.6 s; then `vrctl flow flush` on each vrouterd or, with `--move`, NEW
/// renamed over INTENT and, once the first vrouterd's policies show the
/// change, 0.5 s of reading left uncounted (what was on its way); then
/// read for 1.5 s. Prints, per connection, the first word its server sent
/// (its pod) and how many lines came before and after.
const PUSHED: &str = r#"
args = sys.argv[1:]
move = args[-2:] if '--move' in args else None
args = args[:-3] if move else args
port, vrctl, sockets = int(args[0]), args[1], args[2:]
conns = []
for i in range(12):
    s = socket.socket()
    s.bind(('', port + i))
    s.connect(('10.254.98.15', 80))
    s.settimeout(0.02)
    conns.append(s)
def read(secs):
    got = [b''] * len(conns)
    end = time.time() + secs
    while time.time() < end:
        for i, s in enumerate(conns):
            try:
                got[i] += s.recv(1000)
            except socket.timeout:
                pass
    return got
before = read(0.6)
if move:
    move_intents(vrctl, sockets[:1], [move])
    read(0.5)
else:
    for sock in sockets:
        subprocess.run([vrctl, '--socket', sock, 'flow', 'flush'], check=True, capture_output=True)
after = read(1.5)
for b, a in zip(before, after):
    print(b.decode().split()[0] if b else '-', b.count(b'\n'), a.count(b'\n'))
"#;

/// `repinged.py DST COUNT`: for each of COUNT echo identifiers, a small
/// echo request, then a 1,200-byte one in two IPv4 fragments sent through
/// a raw socket, the second first; prints how many of the big ones were
/// answered, whole.
const REPINGED: &str = r#"
dst, count = sys.argv[1], int(sys.argv[2])
def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def echo(ident, payload):
    c = csum(struct.pack('!BBHHH', 8, 0, 0, ident, 1) + payload)
    return struct.pack('!BBHHH', 8, 0, c, ident, 1) + payload
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
icmp.settimeout(0.1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect((dst, 9))
src = u.getsockname()[0]
u.close()
for i in range(count):
    ident = 0x4100 + i
    icmp.sendto(echo(ident, b'p' * 16), (dst, 0))
    time.sleep(0.05)
    m = echo(ident, b'q' * 1192)
    send_ipv4_fragment(raw, src, dst, 1, 0x6000 + i, 600, False, m[600:])
    time.sleep(0.05)
    send_ipv4_fragment(raw, src, dst, 1, 0x6000 + i, 0, True, m[:600])
big = set()
deadline = time.time() + 1.0
while time.time() < deadline:
    try:
        p = icmp.recv(4096)
    except socket.timeout:
        continue
    hl = (p[0] & 15) * 4
    kind, _, _, ident, _ = struct.unpack('!BBHHH', p[hl:hl + 8])
    if kind == 0 and 0x4100 <= ident < 0x4100 + count and len(p) - hl >= 1200:
        big.add(ident)
print(len(big))
"#;

/// Sends one UDP datagram of `len` bytes from `ns` to `addr:port`, in one
/// write: the sender's kernel fragments it if it must.
fn send_datagram(ns: &str, addr: &str, port: u16, len: usize) -> bool {
    let py = format!(
        "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'd' * {len}, ('{addr}', {port}))"
    );
    sh(ns, &format!("python3 -c \"{py}\"")).0
}

fn ping(ns: &str, dst: &str) -> bool {
    sh(ns, &format!("ping -c 3 -i 0.2 -W 1 {dst}")).0
}

fn rx_packets(ns: &str) -> u64 {
    sh(ns, "cat /sys/class/net/eth0/statistics/rx_packets").1.trim().parse().unwrap()
}

/// Captures tunnel packets on the switch's port toward node 1 while `traffic` runs.
fn capture(fields: &[&str], traffic: impl FnOnce()) -> Vec<Vec<String>> {
    capture_at("sw", "pn1", "ip proto 47 or udp port 6635", fields, traffic)
}

/// Captures what `filter` takes on interface `dev` of namespace `lab-NS`
/// while `traffic` runs, and reads `fields` of it with tshark.
fn capture_at(ns: &str, dev: &str, filter: &str, fields: &[&str], traffic: impl FnOnce()) -> Vec<Vec<String>> {
    common::capture_in(&format!("lab-{ns}"), dev, filter, fields, traffic)
}

/// Sends garbage frames into the pod's side of its link, as a broken pod would.
fn send_garbage_from(pod: &str, frames: usize) {
    let ns = format!("lab-{pod}");
    std::thread::spawn(move || {
        vrouter::io::enter_netns(&ns).unwrap();
        let ifindex = vrouter::io::ifindex("eth0").unwrap();
        // SAFETY: a plain packet socket in this thread's namespace; checked below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "packet socket");
        // SAFETY: sockaddr_ll is integers only; all zeros is valid before we fill it.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = ifindex as i32;
        sa.sll_halen = 6;
        let mut x = 0x1234_5678u64;
        for i in 0..frames {
            let len = 14 + (i % 80);
            let mut f: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            f[0..6].copy_from_slice(&[0, 0, 0x5e, 0, 1, 0]);
            if i % 2 == 0 {
                f[12..14].copy_from_slice(&[0x08, 0x00]); // "IPv4", truncated or garbled
            }
            // SAFETY: `f` and `sa` are live for the call and their lengths are passed.
            let r = unsafe {
                libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sa as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, f.len() as isize, "sent a garbage frame");
        }
        // SAFETY: closing the descriptor we opened.
        unsafe { libc::close(fd) };
    })
    .join()
    .unwrap();
}

#[test]
fn the_lab_end_to_end() {
    if !common::root_or_skip("lab tests") {
        return;
    }
    // Said at once, not as a capture that came back empty.
    assert!(common::tshark_available(), "the lab test reads the wire with tshark: run tools/test, which installs it");
    let _guard = LabGuard;
    lab(&["up"], &[]);
    let info = lab(&["info", "--json"], &[]);
    assert!(info.contains("\"name\":\"b3\"") && info.contains("\"address\":\"10.96.0.10\""), "{info}");

    // Pod to pod, same node and across nodes; ICMP and TCP.
    assert!(ping("a1", "10.1.0.3"), "a1 -> a2 on node 1");
    assert!(ping("a1", "10.1.1.2"), "a1 -> b1 across nodes");
    assert!(ping("b3", "10.1.0.2"), "b3 -> a1 across nodes");
    let (ok, out) = tcp("a2", "a1", "10.1.0.3", 1);
    assert!(ok && out.contains("receiver"), "TCP between pods on one node:\n{out}");
    let before = frames_and_general("n1");
    let (ok, out) = tcp("b1", "a1", "10.1.1.2", 2);
    assert!(ok && out.contains("receiver"), "TCP bulk transfer at MTU 1500 across nodes:\n{out}");
    // The bulk transfer's segments take the fast lanes: node 1's general
    // path sees its handshakes and little else (the workers publish their
    // counters every few milliseconds).
    std::thread::sleep(Duration::from_millis(200));
    let after = frames_and_general("n1");
    let (rx, general) = (after.0 - before.0, after.1 - before.1);
    assert!(rx > 10_000 && general * 100 < rx, "node 1: {general} of {rx} frames to the general path");

    // Isolation: red never reaches blue, though it reuses blue's addresses.
    assert!(ping("r1", "10.1.1.2"), "r1 -> r2 in red across nodes");
    assert!(!sh("r1", "ping -c 2 -i 0.2 -W 1 10.1.0.3").0, "red reached blue's a2");
    assert!(!sh("r1", "ping -c 2 -i 0.2 -W 1 10.1.1.3").0, "red reached blue's b2");

    // traceroute's first probe: ICMP Time Exceeded from the gateway.
    let (_, out) = sh("a1", "ping -c 1 -t 1 -W 1 10.1.1.2");
    assert!(out.contains("From 10.1.0.1") && out.contains("Time to live exceeded"), "{out}");

    // The nodes' own traffic on the fabric keeps working.
    assert!(sh("n1", "ping -c 2 -i 0.2 -W 1 192.168.100.2").0, "node to node through the kernels");

    // a2's allowed address 10.1.0.100 (the intent's allowed_addresses, a
    // keepalived VIP): reached on its node and from node 2 by a2's label,
    // and a2 sends from it past the source check.
    assert!(ping("a1", "10.1.0.100"), "a1 -> a2's allowed address");
    let (ok, out) = sh("b1", "ping -c 3 -i 0.2 -W 1 10.1.0.100");
    assert!(ok && out.contains("from 10.1.0.100"), "b1 -> a2's allowed address, across nodes: {out}");
    assert!(sh("a2", "ping -I 10.1.0.100 -c 3 -i 0.2 -W 1 10.1.1.2").0, "a2 sends from its allowed address");

    // ECMP: 300 flows to the service address reach all three pods, each at least 20 %.
    let before: Vec<u64> = ["b1", "b2", "b3"].iter().map(|p| rx_packets(p)).collect();
    sh("a1", "for i in $(seq 300); do echo -n x > /dev/udp/10.96.0.10/7777; done");
    std::thread::sleep(Duration::from_millis(500));
    let got: Vec<u64> = ["b1", "b2", "b3"].iter().zip(&before).map(|(p, b)| rx_packets(p) - b).collect();
    assert!(got.iter().sum::<u64>() >= 300, "{got:?}");
    assert!(got.iter().all(|&n| n >= 60), "each pod gets at least 20 % of 300 flows: {got:?}");

    // `vrctl trace` foretells which pod a flow to the service lands on: the
    // label of the member its trace picks is the one node 2 maps to the pod
    // that then receives the flow's datagram.
    let listing = |node: &str, what: &str| -> Vec<serde_json::Value> {
        serde_json::from_str(&lab(&["vrctl", node, what, "list", "--json"], &[])).unwrap()
    };
    let (labels, nexthops, vifs) = (listing("n2", "mpls"), listing("n2", "nh"), listing("n2", "vif"));
    let pod_of_label = |label: &serde_json::Value| -> String {
        let nh = &labels.iter().find(|l| l["label"] == *label).unwrap()["nh"];
        let oif = &nexthops.iter().find(|n| n["id"] == *nh).unwrap()["oif"];
        let name = vifs.iter().find(|v| v["index"] == *oif).unwrap()["name"].as_str().unwrap().to_string();
        name.trim_start_matches("t-").to_string()
    };
    let no_ports = |pod: &str| -> u64 {
        let snmp = sh(pod, "awk '/^Udp:/ && ++n == 2 {print $3}' /proc/net/snmp").1;
        snmp.trim().parse().unwrap()
    };
    let mut foretold = std::collections::BTreeSet::new();
    for sport in 41000..41012 {
        let args =
            ["vrctl", "n1", "trace", "t-a1", "10.96.0.10", "--sport", &sport.to_string(), "--dport", "7777", "--json"];
        let traced: serde_json::Value = serde_json::from_str(&lab(&args, &[])).unwrap();
        let pod = pod_of_label(&traced["flow"]["ecmp"]["label"]);
        let before: Vec<u64> = ["b1", "b2", "b3"].iter().map(|p| no_ports(p)).collect();
        sh("a1", &format!("echo -n x | socat -u - UDP:10.96.0.10:7777,sourceport={sport}"));
        std::thread::sleep(Duration::from_millis(200));
        let landed: Vec<&str> =
            ["b1", "b2", "b3"].iter().zip(&before).filter(|(p, b)| no_ports(p) > **b).map(|(p, _)| *p).collect();
        assert_eq!(landed, [pod.as_str()], "port {sport}: traced to {pod}, landed on {landed:?}");
        foretold.insert(pod);
    }
    assert!(foretold.len() >= 2, "twelve flows, more than one pod: {foretold:?}");

    // The wire, read by tshark on the fabric: MPLS over UDP, labels, TTLs,
    // checksums, and source ports that differ between flows.
    let rows = capture(
        &[
            "ip.proto",
            "udp.dstport",
            "udp.srcport",
            "mpls.label",
            "mpls.bottom",
            "ip.ttl",
            "ip.checksum.status",
            "ip.dst",
        ],
        || {
            sh("a1", "for i in $(seq 20); do echo -n flow > /dev/udp/10.1.1.2/5000; done");
        },
    );
    // Toward node 2 only: b1's answers (port unreachable) come back the other way.
    let to_b1: Vec<&Vec<String>> =
        rows.iter().filter(|r| r.len() >= 8 && r[7].starts_with("192.168.100.2,") && r[3] == "16").collect();
    assert!(to_b1.len() >= 20, "captured {} tunnel packets to b1: {rows:?}", to_b1.len());
    for r in &to_b1 {
        assert!(r[1].starts_with("6635"), "UDP destination port 6635: {r:?}");
        assert_eq!(r[4], "1", "bottom of stack");
        assert_eq!(r[5], "64,63", "outer TTL 64, inner TTL decremented once");
        assert_eq!(r[6], "1,1", "both IPv4 checksums good");
    }
    let ports: std::collections::HashSet<&str> = to_b1.iter().map(|r| r[2].split(',').next().unwrap()).collect();
    assert!(ports.len() >= 10, "source ports differ between flows: {ports:?}");

    // The same tunnels as vrouterd saw them on n1's fabric vif, which
    // tcpdump there cannot see (XDP takes them first): `vrctl vifdump -w -`
    // into tshark, only what goes to or from b1 (matched inside the
    // tunnel). a1's datagrams to b1 leave wrapped (label 16), and b1's
    // answers (port unreachable) come in wrapped, each with the pod
    // vrouterd delivered it to; nothing else.
    let dump = format!(
        "{} vrctl n1 vifdump fab --match 10.1.1.2 --duration 3 -w - | tshark -r - -T fields -E 'separator=;' \
         -e frame.packet_flags_direction -e mpls.label -e udp.dstport -e icmp.type -e frame.comment",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tools/lab")
    );
    let reader = Command::new("bash")
        .args(["-c", &dump])
        .env("VROUTERD", VROUTERD)
        .env("LAB_DIR", lab_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    sh("a1", "for i in $(seq 20); do echo -n flow > /dev/udp/10.1.1.2/5000; done");
    let out = reader.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    let said = String::from_utf8_lossy(&out.stderr);
    let out_to_b1 = seen.lines().filter(|l| l.starts_with("0x00000002;16;6635,5000;;")).count();
    assert!(out_to_b1 >= 20, "a1's datagrams, wrapped, out of fab:\n{seen}{said}");
    let answers = seen.lines().filter(|l| l.starts_with("0x00000001;") && l.ends_with(";3;tx vif0/3 (t-a1)")).count();
    assert!(answers >= 1, "b1's answers, in by fab, to a1:\n{seen}{said}");
    assert_eq!(seen.lines().count(), out_to_b1 + answers, "only b1's:\n{seen}{said}");

    // A datagram bigger than a pod's MTU: a1's kernel cuts it into
    // 1500-byte fragments, which cross the fabric (MTU 9100) as they are.
    listen_udp(&["b1"], 7779);
    assert!(send_datagram("a1", "10.1.1.2", 7779, 3000));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(heard("b1", 7779), 3000, "b1 reassembled the datagram from the pieces");

    // Jumbo frames: j1 and j2 are at MTU 9000, the fabric at 9100. Their
    // 8,928-byte pings (DF set) cross in one tunnel frame each way.
    let rows = capture(&["ip.len", "mpls.label"], || {
        assert!(sh("j1", "ping -c 3 -i 0.2 -W 1 -M do -s 8900 10.1.1.5").0, "jumbo pings j1 -> j2 across nodes");
    });
    let whole = rows.iter().filter(|r| r[0] == "8960,8928").count();
    assert!(whole >= 6, "three requests and three replies, each one MPLS-over-UDP frame: {rows:?}");
    // j1's 3,000-byte datagram (DF clear) crosses whole, and node 2 cuts
    // it for b1's MTU of 1500, from a frame that came in as a chain, into
    // spare buffers of its own.
    listen_udp(&["b1"], 7781);
    let df_clear =
        "import socket; s = socket.socket(2, 2); s.setsockopt(0, 10, 0); s.sendto(b'j' * 3000, ('10.1.1.2', 7781))";
    assert!(sh("j1", &format!("python3 -c \"{df_clear}\"")).0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(heard("b1", 7781), 3000, "b1 reassembled j1's datagram from node 2's pieces");

    // Reordered fragments of flows to the service: each flow's member is
    // pinned by a whole datagram first (hashed with its ports); then a
    // fragmented one comes, its second fragment before its first. Node 1
    // holds the second until the first has been seen, and sends both to
    // the flow's member, which reassembles the datagram. Judged alone,
    // without ports, the second went to another member two times in three.
    let flows = 6;
    listen_udp(&["b1", "b2", "b3"], 7780);
    let script = format!("{}/reordered.py", lab_dir());
    std::fs::write(&script, format!("{IPV4_FRAGMENT_PY}{REORDERED}")).unwrap();
    let (ok, out) = sh("a1", &format!("python3 {script} 10.96.0.10 7780 {flows}"));
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_millis(500));
    let got: Vec<usize> = ["b1", "b2", "b3"].iter().map(|p| heard(p, 7780)).collect();
    assert_eq!(got.iter().sum::<usize>(), flows * (10 + 1200), "every datagram whole, at its flow's member: {got:?}");
    // The same for big pings: each reordered echo is answered whole by the
    // member its flow is pinned to (before ICMP pieces waited: 1 of 6, once).
    let script = format!("{}/repinged.py", lab_dir());
    std::fs::write(&script, format!("{IPV4_FRAGMENT_PY}{REPINGED}")).unwrap();
    let (ok, out) = sh("a1", &format!("python3 {script} 10.96.0.10 {flows}"));
    assert!(ok, "{out}");
    assert_eq!(out.trim(), flows.to_string(), "every reordered big echo answered");
    let frags = lab(&["vrctl", "n1", "flow", "fragments", "--json"], &[]);
    let frags: serde_json::Value = serde_json::from_str(&frags).unwrap();
    let both = 2 * flows as u64;
    assert_eq!((frags["held"].as_u64(), frags["released"].as_u64()), (Some(both), Some(both)), "{frags}");

    // The tunnel's MAC comes from the kernel's neighbour table and follows
    // it: node 2's fabric gets a new MAC, node 1's kernel learns it, and
    // vrouterd on node 1 follows within its one-second refresh.
    sh("n2", "ip link set fab address 02:fa:00:00:00:22");
    sh("n1", "ip neigh flush dev fab; ping -c 2 -i 0.2 -W 1 192.168.100.2");
    std::thread::sleep(Duration::from_millis(1500));
    let log = std::fs::read_to_string(format!("{}/n1/vrouterd.log", lab_dir())).unwrap();
    assert!(log.contains("mac=02:fa:00:00:00:22"), "node 1 followed node 2's new MAC:\n{log}");
    assert!(ping("a1", "10.1.1.2"), "pods still talk after the MAC change");

    // vrctl on a lab node: the agent's tables, as the data path sees them.
    let hit = lab(&["vrctl", "n1", "rt", "get", "10.1.1.3", "--vrf", "blue", "--json"], &[]);
    let hit: serde_json::Value = serde_json::from_str(&hit).unwrap();
    assert_eq!((hit["label"].as_u64(), hit["nexthop"]["type"].as_str()), (Some(17), Some("tunnel")), "{hit}");
    assert_eq!(hit["nexthop"]["status"]["resolved_mac"], "02:fa:00:00:00:22", "{hit}");
    let vifs = lab(&["vrctl", "n1", "vif", "list"], &[]);
    assert!(vifs.lines().any(|l| l.starts_with("vif0/3") && l.contains("t-a1") && l.contains(" up ")), "{vifs}");

    // 100,000 routes come and go on node 1 while a flow runs through it:
    // the flow loses nothing.
    let sock = format!("{}/n1/vrouterd.sock", lab_dir());
    // A fixed count that outlasts the churn, so that ping ends on its own
    // and no echo is left in flight when it counts.
    let mut pinger = Command::new("ip")
        .args(["netns", "exec", "lab-a1", "ping", "-c", "2000", "-i", "0.005", "-W", "2", "10.1.1.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let load = Command::new(VRPKTGEN)
        .args(["route-load", "--socket", &sock, "--vrf", "1", "--routes", "100000", "--batch", "5000"])
        .output()
        .unwrap();
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    assert!(pinger.try_wait().unwrap().is_none(), "the flow ran for the whole churn");
    let out = String::from_utf8_lossy(&pinger.wait_with_output().unwrap().stdout).into_owned();
    let stat = out.lines().find(|l| l.contains("packets transmitted")).unwrap_or_else(|| panic!("{out}"));
    let n = |word: &str| -> u64 {
        let before = stat.split(word).next().unwrap();
        before.trim_end().rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(n(" packets transmitted") >= 100, "{stat}");
    assert_eq!(n(" packets transmitted"), n(" received"), "no loss while routes came and went: {stat}");
    eprintln!("route churn on a live node: {stat}; {}", String::from_utf8_lossy(&load.stdout).trim());
    let blue = lab(&["vrctl", "n1", "vrf", "list", "--json"], &[]);
    let blue: serde_json::Value = serde_json::from_str(&blue).unwrap();
    // The agent's 10: the gateway, a1, a2, a2's allowed address, b1-b3,
    // the jumbo pods j1 and j2, the service.
    assert_eq!(blue[1]["status"]["routes_v4"], 10, "the churn left nothing behind: {blue}");

    // Headless: the agent dies, forwarding goes on with the last tables.
    let agent_pid = std::fs::read_to_string(format!("{}/n1/agent.pid", lab_dir())).unwrap();
    Command::new("kill").args(["-KILL", agent_pid.trim()]).status().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(ping("a1", "10.1.1.2"), "forwarding goes on without the agent");
    // It comes back and finds nothing to change.
    lab(&["start", "n1", "agent"], &[]);
    let agent_log = || std::fs::read_to_string(format!("{}/n1/agent.log", lab_dir())).unwrap();
    assert!(agent_log().contains("tables already match the intent"), "{}", agent_log());
    // vrouterd restarts with empty tables: the agent notices and pushes
    // everything again; traffic resumes with nobody touching anything.
    lab(&["restart", "n1", "vrouterd"], &[]);
    let resumed = (0..20).any(|_| {
        std::thread::sleep(Duration::from_millis(500));
        sh("a1", "ping -c 1 -W 1 10.1.1.2").0
    });
    assert!(resumed, "traffic resumed after vrouterd restarted:\n{}", agent_log());
    assert!(agent_log().contains("vrouterd restarted") || agent_log().matches("connected to vrouterd").count() >= 2);
    assert!(ping("a1", "10.1.0.3"), "same-node traffic resumed too");

    // The intent changes: b3 leaves the service. The agent sees the file
    // change and applies one update; the service's flows go to b1 and b2.
    let intent_path = format!("{}/n1/intent.toml", lab_dir());
    let intent = std::fs::read_to_string(&intent_path).unwrap();
    let fewer = intent.replace(r#""10.1.1.2", "10.1.1.3", "10.1.1.4""#, r#""10.1.1.2", "10.1.1.3""#);
    assert_ne!(intent, fewer, "the service's endpoints are in the intent:\n{intent}");
    std::fs::write(&intent_path, fewer).unwrap();
    let members = || -> usize {
        let nh = lab(&["vrctl", "n1", "rt", "get", "10.96.0.10", "--vrf", "blue", "--json"], &[]);
        let nh: serde_json::Value = serde_json::from_str(&nh).unwrap();
        nh["nexthop"]["members"].as_array().map_or(0, |m| m.len())
    };
    let applied = (0..30).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        members() == 2
    });
    assert!(applied, "the agent applied the new intent:\n{}", agent_log());
    assert!(agent_log().contains("added=0 updated=1 deleted=0"), "one update, nothing else:\n{}", agent_log());
    // Counted by listeners on port 7777 (the interface counters also see ARP
    // and neighbour refreshes, which come at any time); b2, still a member,
    // shows that the listeners hear what arrives.
    listen_udp(&["b2", "b3"], 7777);
    sh("a1", "for i in $(seq 60); do echo -n x > /dev/udp/10.96.0.10/7777; done");
    std::thread::sleep(Duration::from_millis(500));
    let (b2, b3) = (heard("b2", 7777), heard("b3", 7777));
    assert!(b2 > 0, "b2, still a member, gets service traffic ({b2} datagrams)");
    assert_eq!(b3, 0, "b3 gets no service traffic once it left ({b3} datagrams of 60)");

    // The floating IP 185.22.97.188, held by a2 (node 1) and b2 (node 2):
    // the external client on the gateway node reaches it over tunnels; each
    // node NATs it to its pod, and the answers come back from it.
    let (ok, out) = sh("ext", "ping -c 3 -i 0.2 -W 1 185.22.97.188");
    assert!(ok && out.contains("from 185.22.97.188"), "{out}");
    let before = (rx_packets("a2"), rx_packets("b2"));
    sh("ext", "for i in $(seq 100); do echo -n x > /dev/udp/185.22.97.188/7777; done");
    std::thread::sleep(Duration::from_millis(500));
    let got = (rx_packets("a2") - before.0, rx_packets("b2") - before.1);
    assert!(got.0 + got.1 >= 100 && got.0 >= 15 && got.1 >= 15, "connections spread over both pods: {got:?}");
    // TCP, one connection at a time (iperf3's two connections could land on
    // different pods): each pod answers with its name, through the NAT.
    for pod in ["a2", "b2"] {
        let cmd = format!("socat TCP-LISTEN:8080,reuseaddr,fork SYSTEM:'echo {pod}' >/dev/null 2>&1 &");
        sh(pod, &cmd);
    }
    std::thread::sleep(Duration::from_millis(300));
    let cached = flow_cache_hits("n3");
    let answers: Vec<String> = (0..20)
        .map(|_| sh("ext", "timeout 3 socat -T 2 - TCP:185.22.97.188:8080 </dev/null").1.trim().to_string())
        .collect();
    assert!(answers.iter().all(|a| a == "a2" || a == "b2"), "every connection completed: {answers:?}");
    // The public network tracks every flow: a connection's packets after
    // its first hit (its FIN, the last ACK) took the gateway's flow cache.
    std::thread::sleep(Duration::from_millis(300));
    let cached = flow_cache_hits("n3") - cached;
    assert!(cached >= 20, "ext's connections' later packets came from n3's flow cache: {cached}");
    assert!(answers.contains(&"a2".into()) && answers.contains(&"b2".into()), "spread over both: {answers:?}");
    // A datagram too big for one packet: the external client's kernel
    // fragments it, and only the first fragment carries the ports. Every
    // node keys its flow by them, and the later fragments find them in the
    // fragment table, so all pieces take the first one's pod and NAT, and
    // the pod reassembles all 3000 bytes.
    listen_udp(&["a2", "b2"], 7778);
    assert!(send_datagram("ext", "185.22.97.188", 7778, 3000));
    std::thread::sleep(Duration::from_millis(500));
    let got: Vec<usize> = ["a2", "b2"].iter().map(|pod| heard(pod, 7778)).collect();
    assert!(got.contains(&3000) && got.iter().sum::<usize>() == 3000, "one pod got the whole datagram: {got:?}");
    let frags: serde_json::Value =
        serde_json::from_str(&lab(&["vrctl", "n3", "flow", "fragments", "--json"], &[])).unwrap();
    assert!(frags["matched"].as_u64().unwrap() >= 2, "the gateway matched the later fragments: {frags}");
    let gw = lab(&["vrctl", "n3", "flow", "list", "--match", "185.22.97.188:7778 & proto udp", "--json"], &[]);
    let gw: serde_json::Value = serde_json::from_str(&gw).unwrap();
    assert!(
        gw.as_array().unwrap().iter().any(|f| f["direction"] == "forward" && f["packets"].as_u64() >= Some(3)),
        "the datagram's flow, keyed by its ports, counted every fragment: {gw}"
    );

    // The flows say so: NAT on the pods' nodes, the pinned member on the gateway.
    let natted = [
        lab(&["vrctl", "n1", "flow", "list", "--match", "203.0.113.7"], &[]),
        lab(&["vrctl", "n2", "flow", "list", "--match", "203.0.113.7"], &[]),
    ]
    .concat();
    assert!(natted.contains("N(D=10.1.0.3)") || natted.contains("N(D=10.1.1.3)"), "{natted}");
    assert!(natted.contains("N(S=185.22.97.188)"), "{natted}");
    let gw = lab(&["vrctl", "n3", "flow", "list", "--match", "185.22.97.188 & proto tcp", "--json"], &[]);
    let gw: serde_json::Value = serde_json::from_str(&gw).unwrap();
    assert!(
        gw.as_array().unwrap().iter().any(|f| f["direction"] == "forward" && f["ecmp"]["label"] == 100),
        "the gateway pins each connection to a node: {gw}"
    );
    // `vrctl trace` from node 1's fabric says the same of a connection
    // the gateway sends there, with the label its route gives node 1's
    // member: the floating IP's VRF routes it to a2, NATed to a2's address.
    let to_fip: serde_json::Value =
        serde_json::from_str(&lab(&["vrctl", "n3", "rt", "get", "--vrf", "public", "185.22.97.188", "--json"], &[]))
            .unwrap();
    let n3_nexthops = listing("n3", "nh");
    let to_n1 = to_fip["nexthop"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| n3_nexthops.iter().any(|n| n["id"] == m["nh"] && n["dip"] == "192.168.100.1"));
    let label = to_n1.unwrap_or_else(|| panic!("a member to node 1: {to_fip}"))["label"].to_string();
    let args = [
        "vrctl",
        "n1",
        "trace",
        "fab",
        "185.22.97.188",
        "--label",
        &label,
        "--src",
        "203.0.113.7",
        "--from",
        "192.168.100.3",
        "--proto",
        "tcp",
        "--dport",
        "8080",
        "--json",
    ];
    let traced: serde_json::Value = serde_json::from_str(&lab(&args, &[])).unwrap();
    let a2 = listing("n1", "vif").into_iter().find(|v| v["name"] == "t-a2").unwrap()["index"].clone();
    assert_eq!(traced["verdict"], serde_json::json!({ "action": "tx", "vif": a2 }), "{traced}");
    assert_eq!(traced["flow"]["nat"]["dst"], "10.1.0.3", "{traced}");
    let out = traced["out"]["summary"].as_str().unwrap();
    assert!(out.contains("203.0.113.7.40000 > 10.1.0.3.8080: TCP [S]"), "{out}");

    // 185.22.97.189, a1's floating IP, forwards TCP 80 to a1's port 8080
    // and nothing else (a Kubernetes service's port and target port): the
    // external client's connection to port 80 is served by a1's 8080, its
    // answers come back from port 80, and port 8080 itself reaches nothing.
    // tshark on a1's link reads what node 1 made of it.
    sh("a1", "socat TCP-LISTEN:8080,reuseaddr,fork SYSTEM:'echo a1' >/dev/null 2>&1 &");
    std::thread::sleep(Duration::from_millis(300));
    let fields = ["ip.src", "ip.dst", "tcp.srcport", "tcp.dstport", "ip.checksum.status", "tcp.checksum.status"];
    let mut results = Vec::new();
    let rows = capture_at("a1", "eth0", "tcp", &fields, || {
        for port in [80, 8080] {
            let cmd = format!("timeout 3 socat -T 2 - TCP:185.22.97.189:{port} </dev/null");
            results.push(sh("ext", &cmd));
        }
    });
    assert!(results[0].0 && results[0].1.trim() == "a1", "port 80 reaches a1: {:?}", results[0]);
    assert!(!results[1].0 && results[1].1.trim().is_empty(), "port 8080 is not forwarded: {:?}", results[1]);
    assert!(!rows.is_empty(), "a1's link carried the connection");
    for r in &rows {
        let inbound = r[0] == "203.0.113.7";
        let ends = if inbound { ["10.1.0.2", "8080"] } else { ["203.0.113.7", "8080"] };
        assert!(r[1] == ends[0] && (r[3] == ends[1] || r[2] == ends[1]), "only port 8080 at a1: {r:?}");
        assert!(r[4] == "1" && r[5] == "1", "every checksum right after the NAT: {r:?}");
    }
    let ext_side = lab(&["vrctl", "n1", "flow", "list", "--match", "203.0.113.7 & proto tcp"], &[]);
    assert!(ext_side.contains("N(D=10.1.0.2,Pd=8080)") && ext_side.contains("N(S=185.22.97.189,Ps=80)"), "{ext_side}");
    let drops = lab(&["vrctl", "n1", "dropstats", "--json"], &[]);
    let drops: serde_json::Value = serde_json::from_str(&drops).unwrap();
    let closed = drops.as_array().unwrap().iter().find(|d| d["reason"] == "port_not_forwarded").unwrap();
    assert!(closed["count"].as_u64() >= Some(1), "the connection to 8080, counted: {closed}");
    let args = ["vrctl", "n1", "trace", "fab", "185.22.97.189", "--label", &label, "--src", "203.0.113.7"];
    let traced = lab(&[&args[..], &["--proto", "tcp", "--dport", "80"]].concat(), &[]);
    assert!(traced.contains("nat     dst 10.1.0.2, dport 8080") && traced.contains("(t-a1)"), "{traced}");
    let traced = lab(&[&args[..], &["--proto", "tcp", "--dport", "8080"]].concat(), &[]);
    assert!(traced.contains("=>      drop port_not_forwarded"), "{traced}");

    // A policy change stops a floating IP's answers while its client is
    // silent: a pod streams datagrams to the external client, which sent
    // one and then listens; the public network's policy on the pods' nodes
    // turns to deny, and nothing more comes, though the client never sent
    // again (until `277b551` the stream went on). Put back, it allows.
    let streamer = format!("{}/streamer.py", lab_dir());
    std::fs::write(&streamer, STREAMER).unwrap();
    let streamed = format!("{}/streamed.py", lab_dir());
    std::fs::write(&streamed, format!("{MOVE_INTENTS_PY}{STREAMED}")).unwrap();
    for pod in ["a2", "b2"] {
        sh(pod, &format!("python3 {streamer} >/dev/null 2>&1 &"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let public = "network = \"public\"\ndefault = \"allow\"";
    let mut moves = Vec::new();
    let mut allowing = Vec::new();
    for node in ["n1", "n2"] {
        let intent = format!("{}/{node}/intent.toml", lab_dir());
        let was = std::fs::read_to_string(&intent).unwrap();
        let denying = was.replacen(public, &public.replace("allow", "deny"), 1);
        assert_ne!(denying, was, "the public network's policy in {intent}");
        let staged = format!("{}/{node}/intent.denying", lab_dir());
        std::fs::write(&staged, denying).unwrap();
        moves.push(format!("{staged}:{intent}"));
        allowing.push((intent, was));
    }
    let sockets = ["n1", "n2"].map(|n| format!("{}/{n}/vrouterd.sock", lab_dir())).join(" ");
    let vrctl = env!("CARGO_BIN_EXE_vrctl");
    let (ok, out) = sh("ext", &format!("python3 {streamed} {vrctl} {sockets} --move {}", moves.join(" ")));
    let counts: Vec<u32> = out.split_whitespace().filter_map(|c| c.parse().ok()).collect();
    assert!(ok && counts.len() == 2, "{out}");
    assert!(counts[0] >= 20, "the pod streamed to the client before the change: {out}");
    assert_eq!(counts[1], 0, "nothing came once the public policy denied the client: {out}");
    // The streamer the client did not reach still waits, the other still sends.
    sh("a2", "pkill -f '^[^ ]*python3 [^ ]*/streamer[.]py$'");
    let denied = lab(&["vrctl", "n1", "flow", "list", "--match", "203.0.113.7:47790 & proto udp", "--json"], &[])
        + &lab(&["vrctl", "n2", "flow", "list", "--match", "203.0.113.7:47790 & proto udp", "--json"], &[]);
    assert!(denied.contains("flow_action_drop"), "the pair, decided again by its answers: {denied}");
    let public_default = |node: &str| -> serde_json::Value {
        let json = |what: &str| -> serde_json::Value {
            serde_json::from_str(&lab(&["vrctl", node, what, "list", "--json"], &[])).unwrap()
        };
        let vrfs = json("vrf");
        let public = vrfs.as_array().unwrap().iter().find(|v| v["name"] == "public").unwrap()["id"].clone();
        let policies = json("policy");
        let policy = policies.as_array().unwrap().iter().find(|p| p["vrf"] == public);
        policy.map_or(serde_json::Value::Null, |p| p["default"].clone())
    };
    for (intent, was) in &allowing {
        std::fs::write(intent, was).unwrap();
    }
    let restored = (0..30).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        public_default("n1") == "allow" && public_default("n2") == "allow"
    });
    assert!(restored, "the agents put the public policy back: {:?}", public_default("n1"));

    // The article's policy: the nginx network reaches the leonardo service
    // on TCP 80 and nothing else, across nodes, decided in the data path.
    for pod in ["leo1", "leo2"] {
        for port in [80, 81] {
            // Port 80's listener is replaced below, by the pid kept here.
            let keep = format!("echo $! >{}/{pod}-{port}.pid", lab_dir());
            sh(pod, &format!("socat TCP-LISTEN:{port},reuseaddr,fork SYSTEM:'echo {pod}' >/dev/null 2>&1 & {keep}"));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for denied in ["10.47.255.251:80", "10.254.98.15:81", "10.47.255.250:80"] {
        let (ok, out) = sh("nx1", &format!("timeout 3 socat -T 2 - TCP:{denied} </dev/null"));
        assert!(!ok && out.trim().is_empty(), "nginx may not reach {denied}: {out}");
    }
    let (ok, _) = sh("nx1", "ping -c 1 -W 1 10.254.98.15");
    assert!(!ok, "not even ping");
    // The allowed connections last, just before their flows are listed
    // below: a closed connection's pair ages out 10 s after it closed,
    // and the denied attempts above take that long.
    let answers: Vec<String> = (0..12)
        .map(|_| sh("nx1", "timeout 3 socat -T 2 - TCP:10.254.98.15:80 </dev/null").1.trim().to_string())
        .collect();
    assert!(answers.iter().all(|a| a == "leo1" || a == "leo2"), "nginx reaches the service: {answers:?}");
    assert!(answers.contains(&"leo1".into()) && answers.contains(&"leo2".into()), "over both pods: {answers:?}");
    let (ok, out) = sh("nx2", "timeout 3 socat -T 2 - TCP:10.254.98.15:80 </dev/null");
    assert!(ok && out.trim().starts_with("leo"), "from node 2 as well: {out}");
    let flows = lab(&["vrctl", "n1", "flow", "list", "--match", "10.32.1.2 & proto tcp"], &[]);
    assert!(flows.lines().any(|l| l.contains("10.254.98.15:80") && l.contains(" F ")), "{flows}");
    assert!(flows.lines().any(|l| l.contains("10.254.98.15:81") && l.contains("D(flow_action_drop)")), "{flows}");
    assert!(flows.lines().any(|l| l.contains("10.47.255.251:80") && l.contains("D(flow_action_drop)")), "{flows}");
    // And which rule decided each: nginx's one rule let :80 through (or,
    // where the member was leo1, a pod of leonardo on this node, leonardo's
    // one rule, whose policy judges too); nginx's default stopped the rest.
    let vrf_id = |node: &str, name: &str| -> serde_json::Value {
        let vrfs: serde_json::Value =
            serde_json::from_str(&lab(&["vrctl", node, "vrf", "list", "--json"], &[])).unwrap();
        vrfs.as_array().unwrap().iter().find(|v| v["name"] == name).unwrap()["id"].clone()
    };
    let (nginx, leonardo) = (vrf_id("n1", "nginx"), vrf_id("n1", "leonardo"));
    let listed = lab(&["vrctl", "n1", "flow", "list", "--match", "10.32.1.2 & proto tcp", "--json"], &[]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    // (Each failure names the one flow, short enough for CI's log to keep.)
    let flows_to = |dst: &str, port: u16| -> Vec<&serde_json::Value> {
        let forward = listed.as_array().unwrap().iter().filter(|f| f["direction"] == "forward");
        forward.filter(|f| f["dst"] == dst && f["dport"] == port).collect()
    };
    let allowed = flows_to("10.254.98.15", 80);
    assert!(!allowed.is_empty(), "{listed}");
    for f in &allowed {
        let r = &f["rule"];
        assert!(r["index"] == 0 && (r["vrf"] == nginx || r["vrf"] == leonardo), "{f}");
        // To leo1, on this node, leonardo's policy decided after nginx's
        // rule 0 let the flow on; to leo2, nginx's alone judged here.
        let first = &f["passed_by"];
        if r["vrf"] == leonardo {
            assert!(first["vrf"] == nginx && first["index"] == 0, "both rules: {f}");
        } else {
            assert!(first.is_null(), "one rule: {f}");
        }
    }
    // The flows nginx's rule 0 lets through, by `--match "rule nginx:0"`:
    // those it decides, and those it lets on to leonardo's.
    let by_rule = lab(&["vrctl", "n1", "flow", "list", "--match", "rule nginx:0 & proto tcp", "--json"], &[]);
    let by_rule: serde_json::Value = serde_json::from_str(&by_rule).unwrap();
    let nginx_0 = serde_json::json!({ "vrf": nginx, "index": 0 });
    let by_rule = by_rule.as_array().unwrap();
    assert!(!by_rule.is_empty(), "nx1's connections to the service");
    assert!(by_rule.iter().all(|f| f["rule"] == nginx_0 || f["passed_by"] == nginx_0), "{by_rule:?}");
    if allowed.iter().any(|f| f["rule"]["vrf"] == leonardo) {
        let text = lab(&["vrctl", "n1", "flow", "list", "--match", "10.254.98.15:80 & proto tcp"], &[]);
        assert!(text.contains(&format!("vrf{nginx}:0,vrf{leonardo}:0")), "{text}");
    }
    // `vrctl trace` names both rules too, for a connection its hash sends to leo1.
    let to_leo1 = (41000..41040).find_map(|sport| {
        let port = sport.to_string();
        let args =
            ["vrctl", "n1", "trace", "t-nx1", "10.254.98.15", "--proto", "tcp", "--sport", &port, "--dport", "80"];
        let text = lab(&args, &[]);
        text.lines().any(|l| l.starts_with("=>") && l.ends_with("(t-leo1)")).then_some(text)
    });
    let text = to_leo1.expect("one of 40 connections to the service goes to leo1");
    let both = format!("policy  rule 0 of VRF {nginx}, then rule 0 of VRF {leonardo} (the pod's network)");
    assert!(text.contains(&both), "{text}");
    for (dst, port) in [("10.254.98.15", 81), ("10.47.255.251", 80)] {
        let ruled = flows_to(dst, port);
        assert!(!ruled.is_empty(), "{dst}:{port}: {listed}");
        for f in ruled {
            assert!(f["rule"]["vrf"] == nginx && f["rule"]["index"].is_null(), "{dst}:{port}: {f}");
        }
    }
    // Leonardo's own policy let leo2 answer nx1, from node 1: a flow of
    // leonardo's on node 2, allowed because nx1 is in the nginx network by
    // its route there (imported from nginx, it keeps nginx as its network).
    let vrfs: serde_json::Value = serde_json::from_str(&lab(&["vrctl", "n2", "vrf", "list", "--json"], &[])).unwrap();
    let leo = vrfs.as_array().unwrap().iter().find(|v| v["name"] == "leonardo").unwrap().clone();
    let on_n2 = lab(&["vrctl", "n2", "flow", "list", "--match", "10.32.1.2 & proto tcp", "--json"], &[]);
    let on_n2: serde_json::Value = serde_json::from_str(&on_n2).unwrap();
    assert!(
        on_n2.as_array().unwrap().iter().any(|f| f["vrf"] == leo["id"]
            && f["direction"] == "forward"
            && f["dst"] == "10.254.98.15"
            && f["dport"] == 80
            && f["action"] == "forward"),
        "leonardo judged nx1's connections on node 2: {on_n2}"
    );

    // A bulk transfer to the service takes the fast lanes of both nodes,
    // the service's answers from its address included (the lane makes the
    // reverse path check for them: every one took the general path before,
    // about a seventh of a transfer's frames). The sink's pid replaces the
    // listener's, for the servers below to replace in turn.
    for pod in ["leo1", "leo2"] {
        let pidfile = format!("{}/{pod}-80.pid", lab_dir());
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let pid = pid.trim();
        sh(pod, &format!("kill {pid}; for i in $(seq 40); do kill -0 {pid} 2>/dev/null || break; sleep 0.05; done"));
        sh(pod, &format!("socat -u TCP-LISTEN:80,reuseaddr,fork OPEN:/dev/null >/dev/null 2>&1 & echo $! >{pidfile}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = ["n1", "n2"].map(frames_and_general);
    let (ok, out) = sh("nx2", "head -c 100M /dev/zero | timeout 20 socat -u - TCP:10.254.98.15:80");
    assert!(ok, "a bulk transfer from nx2 to the leonardo service: {out}");
    std::thread::sleep(Duration::from_millis(200));
    let after = ["n1", "n2"].map(frames_and_general);
    let rx: u64 = (0..2).map(|n| after[n].0 - before[n].0).sum();
    let general: u64 = (0..2).map(|n| after[n].1 - before[n].1).sum();
    assert!(rx > 10_000 && general * 100 < rx, "nodes 1 and 2: {general} of {rx} frames to the general path");

    // A connection whose pairs go while it is open (aged out while idle,
    // or lost with a restart of vrouterd) goes on when its server speaks
    // first, though leonardo may not open connections to nginx: twelve
    // connections to the service, over both pods, the servers pushing a
    // line every 0.1 s; every flow on both nodes is flushed meanwhile.
    // (By its pid, not by a pattern of its command line: the shell that
    // looked for the pattern matched it too, and once pids wrapped past
    // the listener's, killed itself first and left the old server on.)
    for pod in ["leo1", "leo2"] {
        let pid = std::fs::read_to_string(format!("{}/{pod}-80.pid", lab_dir())).unwrap();
        let pid = pid.trim();
        // Gone before the next one binds the port.
        sh(pod, &format!("kill {pid}; for i in $(seq 40); do kill -0 {pid} 2>/dev/null || break; sleep 0.05; done"));
        let push = format!("while echo {pod}; do sleep 0.1; done");
        sh(pod, &format!("socat TCP-LISTEN:80,reuseaddr,fork SYSTEM:'{push}' >/dev/null 2>&1 &"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let client = format!("{}/pushed.py", lab_dir());
    std::fs::write(&client, format!("{MOVE_INTENTS_PY}{PUSHED}")).unwrap();
    let sockets = ["n1", "n2"].map(|n| format!("{}/{n}/vrouterd.sock", lab_dir())).join(" ");
    let vrctl = env!("CARGO_BIN_EXE_vrctl");
    let (ok, out) = sh("nx1", &format!("python3 {client} 42000 {vrctl} {sockets}"));
    assert!(ok && out.lines().count() == 12, "{out}");
    for line in out.lines() {
        let [pod, before, after] = line.split(' ').collect::<Vec<_>>()[..] else { panic!("{out}") };
        let (before, after): (u32, u32) = (before.parse().unwrap(), after.parse().unwrap());
        assert!(pod.starts_with("leo") && before >= 3, "the servers push lines: {out}");
        assert!(after >= 3, "each connection went on after the flush: {out}");
    }
    assert!(out.contains("leo1") && out.contains("leo2"), "over both pods, local and remote: {out}");

    // A policy change stops the open connections it now denies: nginx's
    // rule moved from TCP 80 to 81 in node 1's intent, where nx1's pairs
    // are judged by nginx's policy. Each pair is decided again on its next
    // packet, to leo1 on this node and to leo2 on node 2 alike, and its
    // server's lines stop; put back, the rule lets new connections through.
    let intent = format!("{}/n1/intent.toml", lab_dir());
    let allowing = std::fs::read_to_string(&intent).unwrap();
    let rule = "dst = \"10.254.98.15/32\"\nproto = \"tcp\"\ndport = 80";
    let denying = allowing.replacen(rule, &rule.replace("80", "81"), 1);
    assert_ne!(denying, allowing, "nginx's rule in {intent}");
    let staged = format!("{}/n1/intent.denying", lab_dir());
    std::fs::write(&staged, denying).unwrap();
    let redecided = || -> u64 {
        let stats: serde_json::Value =
            serde_json::from_str(&lab(&["vrctl", "n1", "flow", "stats", "--json"], &[])).unwrap();
        stats["redecided"].as_u64().unwrap()
    };
    let redecided_before = redecided();
    let (ok, out) = sh("nx1", &format!("python3 {client} 43000 {vrctl} {sockets} --move {staged} {intent}"));
    assert!(ok && out.lines().count() == 12, "{out}");
    for line in out.lines() {
        let [pod, before, after] = line.split(' ').collect::<Vec<_>>()[..] else { panic!("{out}") };
        assert!(pod.starts_with("leo") && before.parse::<u32>().unwrap() >= 3, "pushed before the change: {out}");
        assert_eq!(after, "0", "nothing came once the policy denied the connections: {out}");
    }
    assert!(out.contains("leo1") && out.contains("leo2"), "over both pods, local and remote: {out}");
    let now = redecided();
    assert!(now >= redecided_before + 12, "the 12 pairs decided again: {redecided_before} -> {now}");
    let listed = lab(&["vrctl", "n1", "flow", "list", "--match", "10.254.98.15:80 & proto tcp", "--json"], &[]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let pairs: Vec<&serde_json::Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["direction"] == "forward" && (43000..43012).contains(&f["sport"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(pairs.len(), 12, "{listed}");
    for f in pairs {
        let by_default = serde_json::json!({ "vrf": nginx, "index": null });
        assert!(f["action"]["drop"] == "flow_action_drop" && f["rule"] == by_default && f["stale"] == false, "{f}");
    }
    std::fs::write(&intent, &allowing).unwrap();
    let nginx_dport = || -> serde_json::Value {
        let p: serde_json::Value =
            serde_json::from_str(&lab(&["vrctl", "n1", "policy", "list", "--json"], &[])).unwrap();
        p.as_array().unwrap().iter().find(|p| p["vrf"] == nginx).unwrap()["rules"][0]["dport"].clone()
    };
    let restored = (0..30).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        nginx_dport() == 80
    });
    assert!(restored, "the agent put nginx's rule back");
    let (_, out) = sh("nx1", "timeout 3 socat -T 2 - TCP:10.254.98.15:80 </dev/null | head -n 1");
    assert!(out.trim().starts_with("leo"), "allowed again: {out}");

    // A service with ports, as Kubernetes has them (port 80 to the pods'
    // 8080), added to both nodes' intents: the address becomes a floating
    // IP of each endpoint on its node, which need not hold it. From either
    // node, connections spread over a2 (node 1) and b3 (node 2), each
    // node translating for its own endpoint; and from a2, an endpoint
    // calling its own service, sent back to itself from the service's
    // address (hairpin).
    let service = "\n[[service]]\nname = \"web-k8s\"\nnetwork = \"blue\"\naddress = \"10.96.0.30\"\n\
                   endpoints = [\"10.1.0.3\", \"10.1.1.4\"]\nports = [{ proto = \"tcp\", port = 80, target = 8080 }]\n";
    for node in ["n1", "n2"] {
        let path = format!("{}/{node}/intent.toml", lab_dir());
        let intent = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, intent + service).unwrap();
    }
    let held = |node: &str, pod: &str| lab(&["vrctl", node, "vif", "get", pod], &[]).contains("10.96.0.30 in VRF");
    let applied = (0..30).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        held("n1", "t-a2") && held("n2", "t-b3")
    });
    assert!(applied, "the agents made the service address a floating IP of a2 and b3");
    for pod in ["a2", "b3"] {
        sh(pod, &format!("socat TCP-LISTEN:8080,reuseaddr,fork SYSTEM:'echo {pod}' >/dev/null 2>&1 &"));
    }
    std::thread::sleep(Duration::from_millis(300));
    for client in ["a1", "b1", "a2"] {
        let answers: Vec<String> = (0..12)
            .map(|_| sh(client, "timeout 3 socat -T 2 - TCP:10.96.0.30:80 </dev/null").1.trim().to_string())
            .collect();
        assert!(answers.iter().all(|a| a == "a2" || a == "b3"), "{client}: {answers:?}");
        assert!(answers.contains(&"a2".into()) && answers.contains(&"b3".into()), "{client}: {answers:?}");
    }

    // Bad input from a pod is dropped and counted; the others go on.
    send_garbage_from("a2", 200);
    assert!(ping("a1", "10.1.1.2"), "forwarding goes on after garbage from a2");
    lab(&["down"], &[]);
    let log = std::fs::read_to_string(format!("{}/n1/vrouterd.log", lab_dir())).unwrap();
    let a2 = log
        .lines()
        .rfind(|l| l.contains("vif counters") && l.contains("interface=t-a2"))
        .unwrap_or_else(|| panic!("{log}"));
    let drops: u64 = a2.split("drops=").nth(1).unwrap().trim().parse().unwrap();
    assert!(drops >= 200, "garbage from a2 counted as drops: {a2}");
    assert!(log.contains("all XDP programs detached"), "{log}");

    // MPLS over GRE from node 1.
    lab(&["up"], &[("LAB_ENCAP", "gre")]);
    assert!(ping("a1", "10.1.1.3"), "a1 -> b2 over GRE");
    let (ok, out) = tcp("b2", "a1", "10.1.1.3", 2);
    assert!(ok && out.contains("receiver"), "TCP over GRE:\n{out}");
    let rows = capture(&["ip.proto", "gre.proto", "mpls.label", "ip.ttl"], || {
        sh("a1", "ping -c 3 -i 0.2 -W 1 10.1.1.3");
    });
    assert!(
        rows.iter().any(|r| r.len() >= 4 && r[0] == "47,1" && r[1] == "0x8847" && r[2] == "17" && r[3] == "64,63"),
        "GRE on the wire: {rows:?}"
    );
}
