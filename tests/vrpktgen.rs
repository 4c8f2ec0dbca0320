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

/// A count that would measure nothing, or a batch past what it was made
/// for, is refused with what is wanted, before anything runs (zero was
/// once taken as one, unsaid, and `route-load` cut its batch silently).
#[test]
fn counts_out_of_range_are_refused_with_what_is_wanted() {
    for (args, says) in [
        (&["pipeline", "--packets", "0"][..], "'--packets <PACKETS>': must be at least 1"),
        (&["pipeline", "--flows", "0"], "'--flows <FLOWS>': must be at least 1"),
        (&["pipeline", "--batch", "0"], "0 is not in 1..=4096"),
        (&["pipeline", "--batch", "5000"], "5000 is not in 1..=4096"),
        (&["tables", "--batch", "0"], "'--batch <BATCH>': must be at least 1"),
        (&["tables", "--vrfs", "0"], "'--vrfs <VRFS>': must be at least 1"),
        (&["route-load", "--batch", "200000"], "200000 is not in 1..=100000"),
        (&["pipeline", "--threads", "0"], "--threads must be 1..=64"),
        (&["pipeline", "--frame-len", "41"], "--frame-len must be 42..=1500"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vrpktgen")).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "vrpktgen {args:?}: {err}");
        assert!(err.contains(says), "vrpktgen {args:?}: {err}");
        assert!(out.stdout.is_empty(), "vrpktgen {args:?} measured nothing");
    }
}
