//! Where a worker's time goes, stage by stage, in the spirit of VPP's
//! `show runtime`: cycles per packet for receiving, parsing, looking up,
//! rewriting, queueing for transmission, and the kick that makes the kernel
//! send (in copy mode, where most of the kernel's cost lands).
//!
//! Reading the time costs about 25 ns on a virtual machine, so a worker
//! times one batch in `SAMPLE_EVERY` and counts the packets of those
//! batches only: cycles per packet stay unbiased at a small fraction of the
//! cost of timing every batch.

/// Batches per timed batch.
pub const SAMPLE_EVERY: u64 = 8;

/// The stages of a worker's round, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Taking descriptors from the rx ring and making frames of them.
    Rx = 0,
    /// The pipeline's first stage: the vif, the Ethernet and IP headers,
    /// ARP and ND, the fast-path checks.
    Parse,
    /// The pipeline's batched route lookups.
    Lookup,
    /// The pipeline's last stage: next hops, flows and NAT, encapsulation
    /// and decapsulation, MAC rewrite.
    Rewrite,
    /// Putting frames on tx rings, or handing them over.
    Tx,
    /// The end of a round: completions, the `sendto` kick (in copy mode
    /// the kernel copies and sends the frames in it, and runs the softirq
    /// work that follows), and refilling the fill rings. Timed in the
    /// rounds that had a timed batch, and charged to that batch's packets.
    Kick,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 6] = [Stage::Rx, Stage::Parse, Stage::Lookup, Stage::Rewrite, Stage::Tx, Stage::Kick];

    /// As `vrctl runtime` and the API name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Rx => "rx",
            Stage::Parse => "parse",
            Stage::Lookup => "lookup",
            Stage::Rewrite => "rewrite",
            Stage::Tx => "tx",
            Stage::Kick => "kick",
        }
    }
}

/// Cycles spent per stage over the timed batches, and their packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Runtime {
    /// Cycles (time-stamp counter ticks) per stage, by `Stage as usize`.
    pub cycles: [u64; Stage::ALL.len()],
    /// Packets of the timed batches.
    pub packets: u64,
    /// Timed batches.
    pub batches: u64,
}

impl Runtime {
    /// Mean cycles per packet in `stage`, if any packet was timed.
    pub fn per_packet(&self, stage: Stage) -> Option<f64> {
        (self.packets > 0).then(|| self.cycles[stage as usize] as f64 / self.packets as f64)
    }

    /// Adds another worker's (or round's) runtime.
    pub fn add(&mut self, o: &Runtime) {
        for (a, b) in self.cycles.iter_mut().zip(o.cycles) {
            *a += b;
        }
        self.packets += o.packets;
        self.batches += o.batches;
    }
}

/// A clock: time-stamp counter ticks, or any other monotonic count.
pub type Clock = fn() -> u64;

/// A stopwatch over consecutive stages: each `mark` charges the time since
/// the last one to a stage. Without a clock it does nothing at all, so the
/// pipeline stays deterministic and untimed unless its caller asks.
pub struct Stopwatch<'a> {
    /// The clock and where its readings go; none when off.
    on: Option<(Clock, &'a mut Runtime)>,
    last: u64,
}

impl<'a> Stopwatch<'a> {
    /// A stopwatch that records nothing.
    pub fn off() -> Stopwatch<'static> {
        Stopwatch { on: None, last: 0 }
    }

    /// Starts timing into `into`, reading `clock` (ticks).
    pub fn start(clock: Clock, into: &'a mut Runtime) -> Self {
        Self::started_at(clock, clock(), into)
    }

    /// As `start`, from an earlier reading `at` of the same clock.
    pub fn started_at(clock: Clock, at: u64, into: &'a mut Runtime) -> Self {
        Stopwatch { on: Some((clock, into)), last: at }
    }

    /// Charges the time since the last mark to `stage`.
    #[inline]
    pub fn mark(&mut self, stage: Stage) {
        if let Some((clock, rt)) = &mut self.on {
            let now = clock();
            rt.cycles[stage as usize] += now.wrapping_sub(self.last);
            self.last = now;
        }
    }

    /// True when it records.
    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    static TICKS: AtomicU64 = AtomicU64::new(0);
    fn ten_ticks_a_read() -> u64 {
        TICKS.fetch_add(10, Relaxed)
    }

    #[test]
    fn marks_charge_the_time_since_the_last_mark() {
        let mut rt = Runtime::default();
        let mut w = Stopwatch::start(ten_ticks_a_read, &mut rt);
        w.mark(Stage::Rx);
        w.mark(Stage::Parse);
        w.mark(Stage::Parse);
        assert_eq!(rt.cycles, [10, 20, 0, 0, 0, 0]);
        rt.packets = 4;
        assert_eq!(rt.per_packet(Stage::Parse), Some(5.0));
        let mut off = Stopwatch::off();
        off.mark(Stage::Tx);
        assert!(!off.is_on());
        assert_eq!(Runtime::default().per_packet(Stage::Rx), None);
    }
}
