//! vrouter-agent: fills vrouterd's tables from a declarative intent.
//!
//! - `intent`: what the node should look like, and where that comes from
//!   ([`IntentSource`]: a file now, a cluster store later);
//! - `desired`: the tables that intent needs, with stable id allocation;
//! - `reconcile`: what vrouterd holds, and the smallest batch to fix it.
//!
//! The loop here keeps them together: it reconciles when the intent
//! changes, when it (re)connects, and when vrouterd's boot id changes. If
//! the agent is gone, vrouterd keeps forwarding with what it has.

pub mod desired;
pub mod intent;
pub mod reconcile;

pub use desired::{desired, Snapshot};
pub use intent::{FileSource, Intent, IntentSource};

use crate::api::client::{Client, ClientError};
use crate::api::schema::OpDef;
use crate::tables::Limits;
use crate::wire::MacAddr;
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// What one reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Objects added.
    pub added: usize,
    /// Objects updated.
    pub updated: usize,
    /// Objects deleted.
    pub deleted: usize,
}

impl Outcome {
    fn of(ops: &[OpDef]) -> Outcome {
        let mut o = Outcome::default();
        for op in ops {
            match op {
                OpDef::Add(_) => o.added += 1,
                OpDef::Update(_) => o.updated += 1,
                OpDef::Delete(_) => o.deleted += 1,
            }
        }
        o
    }

    /// Total operations.
    pub fn total(&self) -> usize {
        self.added + self.updated + self.deleted
    }
}

/// The fabric MAC: from the intent, else from the interface.
pub fn fabric_mac(intent: &Intent) -> Result<MacAddr, String> {
    if let Some(m) = intent.node.fabric_mac {
        return Ok(m);
    }
    let path = format!("/sys/class/net/{}/address", intent.node.fabric);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "fabric interface {:?}: {e} (set node.fabric_mac, or run the agent in the node's namespace)",
            intent.node.fabric
        )
    })?;
    text.trim().parse().map_err(|_| format!("{path}: {:?} is not a MAC address", text.trim()))
}

fn limits(c: &mut Client) -> Result<Limits, ClientError> {
    let i = c.call("info", json!({}))?;
    let n = |k: &str| i["limits"][k].as_u64().unwrap_or(0) as usize;
    Ok(Limits {
        vifs: n("vifs"),
        vrfs: n("vrfs"),
        nexthops: n("nexthops"),
        labels: n("labels"),
        routes_per_vrf: n("routes_per_vrf"),
    })
}

/// The batch that would bring vrouterd to `intent`, without applying it.
pub fn plan(c: &mut Client, intent: &Intent, fabric: MacAddr) -> Result<Vec<OpDef>, String> {
    let now = reconcile::fetch(c).map_err(|e| e.to_string())?;
    let lim = limits(c).map_err(|e| e.to_string())?;
    let want = desired(intent, fabric, &lim, &now)?;
    Ok(reconcile::diff(&now, &want))
}

/// Brings vrouterd to `intent` in one atomic batch.
pub fn reconcile_once(c: &mut Client, intent: &Intent, fabric: MacAddr) -> Result<Outcome, String> {
    let ops = plan(c, intent, fabric)?;
    if !ops.is_empty() {
        c.call("batch", json!({ "ops": ops })).map_err(|e| format!("vrouterd refused the batch: {e}"))?;
    }
    Ok(Outcome::of(&ops))
}

/// The agent's settings.
pub struct AgentConfig {
    /// vrouterd's API socket.
    pub socket: PathBuf,
    /// How often to check that vrouterd is there and the same one.
    pub check_every: Duration,
}

/// Runs until `stop` is set; `refresh` (SIGHUP) rereads the intent.
pub fn run(
    cfg: &AgentConfig,
    source: &mut dyn IntentSource,
    stop: &AtomicBool,
    refresh: &AtomicBool,
) -> Result<(), String> {
    let mut intent: Option<Intent> = None;
    let mut client: Option<Client> = None;
    let mut boot_id = String::new();
    let mut dirty = true;
    let mut last_check = Instant::now();
    let mut last_poll = Instant::now() - Duration::from_secs(60);
    let mut said_waiting = false;
    let mut last_error = String::new();
    info!(intent = %source.describe(), socket = %cfg.socket.display(), "vrouter-agent started");
    while !stop.load(Ordering::Relaxed) {
        if refresh.swap(false, Ordering::Relaxed) {
            source.refresh();
            last_poll = Instant::now() - Duration::from_secs(60);
        }
        if last_poll.elapsed() >= Duration::from_secs(1) {
            last_poll = Instant::now();
            match source.poll() {
                Ok(Some(i)) => {
                    last_error.clear();
                    info!(pods = i.pod.len(), remotes = i.remote.len(), services = i.service.len(), "intent loaded");
                    intent = Some(i);
                    dirty = true;
                }
                Ok(None) => {}
                // Said once per distinct problem, not once a second.
                Err(e) if e != last_error => {
                    error!("intent unusable, keeping the last good one: {e}");
                    last_error = e;
                }
                Err(_) => {}
            }
        }
        if client.is_none() {
            match Client::connect(&cfg.socket, "vrouter-agent") {
                Ok(c) => {
                    c.set_timeout(Some(Duration::from_secs(30)));
                    if c.boot_id() != boot_id {
                        if !boot_id.is_empty() {
                            info!("vrouterd restarted; pushing the full state");
                        }
                        boot_id = c.boot_id().to_string();
                    }
                    info!(boot_id = %boot_id, "connected to vrouterd");
                    client = Some(c);
                    dirty = true;
                    said_waiting = false;
                }
                Err(e) => {
                    if !said_waiting {
                        warn!("waiting for vrouterd: {e}");
                        said_waiting = true;
                    }
                }
            }
        } else if last_check.elapsed() >= cfg.check_every || client.as_mut().is_some_and(|c| c.closed()) {
            // A restarted vrouterd has empty tables: its closing our
            // connection is noticed at once, not at the next check.
            last_check = Instant::now();
            let alive = client.as_mut().map(|c| c.call("info", json!({})));
            match alive {
                Some(Ok(i)) if i["boot_id"].as_str() == Some(boot_id.as_str()) => {}
                Some(Ok(_)) => {
                    info!("vrouterd restarted; pushing the full state");
                    client = None;
                    continue;
                }
                _ => {
                    warn!("lost the connection to vrouterd; reconnecting (a vrouterd still running forwards with the tables it has)");
                    client = None;
                    continue;
                }
            }
        }
        if let (true, Some(c), Some(i)) = (dirty, client.as_mut(), intent.as_ref()) {
            match fabric_mac(i).and_then(|m| reconcile_once(c, i, m)) {
                Ok(o) if o.total() == 0 => {
                    info!("tables already match the intent");
                    dirty = false;
                }
                Ok(o) => {
                    info!(added = o.added, updated = o.updated, deleted = o.deleted, "tables reconciled");
                    dirty = false;
                }
                Err(e) => {
                    error!("reconciling: {e}");
                    // Try again from a fresh connection, a little later.
                    client = None;
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    info!("vrouter-agent stopped; vrouterd keeps its tables");
    Ok(())
}

/// Flags set by SIGTERM/SIGINT and SIGHUP.
pub fn signals() -> Result<(Arc<AtomicBool>, Arc<AtomicBool>), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let refresh = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, refresh.clone()).map_err(|e| e.to_string())?;
    Ok((stop, refresh))
}
