//! systemd's notify protocol: `READY=1` once the ports are up, `WATCHDOG=1`
//! at half the watchdog interval, `STOPPING=1` on the way out. Without
//! `NOTIFY_SOCKET` (not under systemd) it does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

pub(super) struct Notifier {
    socket: Option<(UnixDatagram, String)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    pub(super) fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            // An abstract socket is written with a leading '@'; std takes a
            // path, so only filesystem sockets are supported here.
            if path.starts_with('@') {
                tracing::warn!("abstract NOTIFY_SOCKET {path} is not supported; readiness will not be sent");
                return None;
            }
            UnixDatagram::unbound().ok().map(|s| (s, path))
        });
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|us| Duration::from_micros(us / 2));
        Notifier { socket, watchdog }
    }

    fn send(&self, msg: &str) {
        if let Some((s, path)) = &self.socket {
            if let Err(e) = s.send_to(msg.as_bytes(), path) {
                tracing::warn!("systemd notify {msg:?}: {e}");
            }
        }
    }

    pub(super) fn ready(&self) {
        self.send("READY=1");
    }

    pub(super) fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub(super) fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub(super) fn watchdog_due(&self, last: Instant) -> bool {
        self.watchdog.is_some_and(|every| last.elapsed() >= every)
    }
}
