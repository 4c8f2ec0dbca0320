//! vrpktgen, the binary, as a command-line tool. What it measures is the
//! benches' and the lab's business (`tests/traffic.rs`, `tests/lab.rs`).

mod common;

use common::run_into_closed_pipe;
use std::process::Command;
use std::time::Duration;

/// `vrpktgen pipeline --case all | head -3`: once the reader has gone,
/// vrpktgen ends quietly and with success, not with a panic's backtrace.
#[test]
fn a_closed_pipe_ends_vrpktgen_quietly() {
    for args in [&["pipeline", "--case", "local_forward", "--packets", "1000"][..], &["trace"]] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vrpktgen"));
        cmd.args(args);
        let (status, err) = run_into_closed_pipe(&mut cmd, Duration::from_secs(120));
        assert!(status.success() && err.is_empty(), "vrpktgen {args:?}: {status}: {err}");
    }
}
