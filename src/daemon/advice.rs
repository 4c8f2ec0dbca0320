//! What vrouterd tells the operator from its counters about problems that
//! lie outside it: it can see them, but not fix them.

use std::time::{Duration, Instant};

/// How often a warning that still holds is repeated.
pub const REPEAT: Duration = Duration::from_secs(60);

/// A count per vif whose rise the log tells of, such as pods' TCP SYNs and
/// UDP datagrams that came with their checksums left for a NIC to finish
/// (`DropReason::UnfinishedChecksum`), or frames the kernel dropped before
/// vrouterd saw them: each vif named at its first, then at most once every
/// `REPEAT` while more come from any, so that pods retrying their
/// connections do not flood the log.
#[derive(Debug, Default)]
pub struct RisingCounts {
    /// Per vif index, the count the last warning that named it reported.
    warned: Vec<u64>,
    /// When the last warning was given.
    at: Option<Instant>,
}

impl RisingCounts {
    /// The vifs the log should name now, each with its count so far, from
    /// `counts`: each vif's count so far, by index.
    pub fn due(&mut self, counts: impl IntoIterator<Item = (u32, u64)>, now: Instant) -> Vec<(u32, u64)> {
        if self.at.is_some_and(|at| now.duration_since(at) < REPEAT) {
            return Vec::new();
        }
        let mut rising = Vec::new();
        for (vif, n) in counts {
            let i = vif as usize;
            if self.warned.len() <= i {
                self.warned.resize(i + 1, 0);
            }
            // Fewer than were warned of: a new vif at the index, counting
            // from zero (`StatsBoard::restart_vif`), to be named afresh.
            if n < self.warned[i] {
                self.warned[i] = 0;
            }
            if n > self.warned[i] {
                self.warned[i] = n;
                rising.push((vif, n));
            }
        }
        if !rising.is_empty() {
            self.at = Some(now);
        }
        rising
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_vif_at_its_first_then_once_a_minute_while_more_come() {
        let mut w = RisingCounts::default();
        let t0 = Instant::now();
        assert_eq!(w.due([(3, 0)], t0), [], "nothing to say");
        assert_eq!(w.due([(3, 1)], t0), [(3, 1)], "the first");
        assert_eq!(w.due([(3, 5), (7, 2)], t0 + Duration::from_secs(30)), [], "more, but within the minute");
        assert_eq!(w.due([(3, 5), (7, 2)], t0 + REPEAT), [(3, 5), (7, 2)], "more, a minute on: both named");
        assert_eq!(w.due([(3, 5), (7, 2)], t0 + REPEAT * 3), [], "no more since");
        assert_eq!(w.due([(3, 5), (7, 3)], t0 + REPEAT * 3), [(7, 3)], "one more, long after: that vif alone");
        // A new vif took index 7: its count starts again, and its first is named.
        assert_eq!(w.due([(3, 5), (7, 0)], t0 + REPEAT * 5), [], "a new vif, no drops yet");
        assert_eq!(w.due([(3, 5), (7, 1)], t0 + REPEAT * 6), [(7, 1)], "the new vif's first");
    }
}
