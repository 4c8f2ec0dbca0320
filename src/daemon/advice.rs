//! What vrouterd tells the operator from its counters about problems that
//! lie outside it: it can see them, but not fix them.

use std::time::{Duration, Instant};

/// How often a warning that still holds is repeated.
pub const REPEAT: Duration = Duration::from_secs(60);

/// Pods' TCP SYNs and UDP datagrams that came with their checksums left
/// for a NIC to finish (`DropReason::UnfinishedChecksum`): said at the
/// first, then at most once every `REPEAT` while more come, so that a pod
/// retrying its connections does not flood the log.
#[derive(Debug, Default)]
pub struct UnfinishedChecksums {
    /// The count the last warning reported.
    warned: u64,
    /// When it was given.
    at: Option<Instant>,
}

impl UnfinishedChecksums {
    /// True if the log should say so now, `dropped` being the count so far.
    pub fn due(&mut self, dropped: u64, now: Instant) -> bool {
        let quiet = self.at.is_none_or(|at| now.duration_since(at) >= REPEAT);
        if dropped > self.warned && quiet {
            (self.warned, self.at) = (dropped, Some(now));
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_at_the_first_then_once_a_minute_while_more_come() {
        let mut w = UnfinishedChecksums::default();
        let t0 = Instant::now();
        assert!(!w.due(0, t0), "nothing to say");
        assert!(w.due(1, t0), "the first");
        assert!(!w.due(5, t0 + Duration::from_secs(30)), "more, but within the minute");
        assert!(w.due(5, t0 + REPEAT), "more, a minute on");
        assert!(!w.due(5, t0 + REPEAT * 3), "no more since");
        assert!(w.due(6, t0 + REPEAT * 3), "one more, long after");
    }
}
