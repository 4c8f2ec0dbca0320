//! Why a frame the pipeline routed out of a vif was not sent.
//!
//! The pipeline counts a frame sent (`tx_packets`) when it routes it; the
//! worker takes that back and counts `tx_dropped` when the frame finds no
//! way out. Some of those are congestion, as a full queue is in any
//! router: TCP backs off on them. The others are faults of the setup or of
//! vrouterd. The cause says which, without a packet capture.

macro_rules! unsent_causes {
    ($($(#[doc = $doc:literal])* $name:ident => $key:literal, $congestion:literal;)*) => {
        /// Why a routed frame was not sent (`WorkerCounters::unsent`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Unsent {
            $($(#[doc = $doc])* $name,)*
        }

        impl Unsent {
            /// Every cause, in counter order.
            pub const ALL: &'static [Unsent] = &[$(Unsent::$name,)*];
            /// Number of causes.
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name, for the API, metrics and logs.
            pub const fn as_str(self) -> &'static str {
                match self { $(Unsent::$name => $key,)* }
            }

            /// A queue or pool was full for a moment, as under a flood:
            /// the router's back-pressure, not a fault.
            pub const fn is_congestion(self) -> bool {
                match self { $(Unsent::$name => $congestion,)* }
            }
        }
    };
}

unsent_causes! {
    /// The port's tx ring was full: the kernel had not yet taken what
    /// was queued there.
    TxRingFull => "tx_ring_full", true;
    /// No free UMEM frame to copy the frame into: every frame was in a
    /// ring or on its way out.
    NoFrame => "no_frame", true;
    /// The worker that owns the way out had every hand-off buffer in its
    /// queue: it was behind.
    HandoffFull => "handoff_full", true;
    /// No worker has a port for the vif (its port closed, or is yet to
    /// open).
    NoPort => "no_port", false;
    /// Longer than the port can send: more frames than a chain holds, or a
    /// chain on a socket without multi-buffer.
    TooLong => "too_long", false;
    /// The link was down: the kernel refused to send what was queued.
    LinkDown => "link_down", false;
    /// Queued on a port that closed before the kernel took it.
    PortClosed => "port_closed", false;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_its_own_name_and_only_full_queues_are_congestion() {
        let mut names: Vec<_> = Unsent::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Unsent::COUNT);
        let congestion: Vec<_> = Unsent::ALL.iter().filter(|c| c.is_congestion()).map(|c| c.as_str()).collect();
        assert_eq!(congestion, ["tx_ring_full", "no_frame", "handoff_full"]);
    }
}
