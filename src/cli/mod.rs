//! What the command-line tools share: aligned text tables and the way JSON
//! values are shown in them.

use serde_json::Value;
use std::fmt;
use std::io::{ErrorKind, Write};

/// A table whose columns are as wide as their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    min_widths: Vec<usize>,
    show_header: bool,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table::with_widths(header, &[])
    }

    /// A table whose columns are at least `widths` wide, so that tables
    /// printed one page at a time line up.
    pub fn with_widths(header: &[&str], widths: &[usize]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            min_widths: widths.to_vec(),
            show_header: true,
        }
    }

    /// Leaves the titles out (for the pages after the first).
    pub fn no_header(&mut self) {
        self.show_header = false;
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cols = self.header.len();
        let mut w: Vec<usize> = (0..cols).map(|i| self.min_widths.get(i).copied().unwrap_or(0)).collect();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, r: &[String]| -> fmt::Result {
            let mut s = String::new();
            for (i, c) in r.iter().enumerate().take(cols) {
                if i + 1 == cols {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:<width$}  ", width = w[i]));
                }
            }
            writeln!(f, "{}", s.trim_end())
        };
        if self.show_header {
            line(f, &self.header)?;
        }
        for r in &self.rows {
            line(f, r)?;
        }
        Ok(())
    }
}

/// Writes to standard output, and ends the program when it cannot.
///
/// Rust ignores SIGPIPE, so a reader that went away (`vrctl ... | head`)
/// would otherwise be an error at every write: a panic in `println!`, and
/// a loop printing rates once a second would go on for ever, unread. A
/// closed pipe ends the program quietly with success, as `head` meant it
/// to; any other failure to write is said on stderr and exits 1.
pub fn print(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("{}: standard output: {e}", program());
        std::process::exit(1);
    }
}

/// `println!` through [`print()`]: for the tools' output, so that a closed
/// pipe ends them cleanly.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::cli::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Whether a write failed because its reader went away, which a tool takes
/// as the end of its output, not as an error.
pub fn reader_gone(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::BrokenPipe
}

fn program() -> String {
    let arg0 = std::env::args_os().next().unwrap_or_default();
    std::path::Path::new(&arg0).file_name().unwrap_or_default().to_string_lossy().into_owned()
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn show(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON number as a count (0 when absent).
pub fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Sends the program's log to stderr (journald reads it there), filtered by
/// `filter`: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`), or
/// directives as `RUST_LOG` takes them, `TARGET=LEVEL` and a level for the
/// rest, joined by commas (`info,vrouter::api=debug`). A word that is not a
/// level is refused rather than read as a target that logs nothing. Blank
/// (as an empty `RUST_LOG=`) is `info`.
pub fn init_logging(filter: &str) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = if filter.trim().is_empty() { "info" } else { filter };
    let targets = parse_log_filter(filter)?;
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).finish().with(targets).init();
    Ok(())
}

/// The filter `init_logging` takes, read.
pub fn parse_log_filter(filter: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    let why = |d: &str| {
        format!(
            "cannot read log filter {filter:?} at {d:?}: give a level (error, warn, info, debug, trace, off), \
             or TARGET=LEVEL directives and a level joined by commas, as info,vrouter::api=debug"
        )
    };
    let is_level = |l: &str| !l.is_empty() && l.parse::<tracing_subscriber::filter::LevelFilter>().is_ok();
    for d in filter.split(',').map(str::trim) {
        let level = d.rsplit_once('=').map_or(d, |(target, level)| if target.is_empty() { "" } else { level });
        if !is_level(level) {
            return Err(why(d));
        }
    }
    filter.parse().map_err(|_| why(filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_filter_is_a_level_or_directives_and_nothing_else() {
        use tracing::Level;
        let on = |f: &str, target: &str, level: Level| parse_log_filter(f).unwrap().would_enable(target, &level);
        assert!(on("info", "vrouter::api::server", Level::INFO) && !on("info", "vrouter::api::server", Level::DEBUG));
        let f = "info,vrouter::api=debug";
        assert!(on(f, "vrouter::api::server", Level::DEBUG) && !on(f, "vrouter::daemon", Level::DEBUG));
        assert!(on(f, "vrouter::daemon", Level::INFO));
        assert!(!on("off", "vrouter::daemon", Level::ERROR));
        // A word that is not a level would be a target logging nothing.
        for bad in ["loud", "vrouter=loud", "=debug", "info,,debug"] {
            let e = parse_log_filter(bad).unwrap_err();
            assert!(e.starts_with(&format!("cannot read log filter {bad:?}")), "{e}");
        }
    }

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["1".into(), "a".into()]);
        t.row(vec!["100".into(), "bb".into()]);
        assert_eq!(t.to_string(), "ID   NAME\n1    a\n100  bb\n");
        assert_eq!(show(&Value::Null), "-");
        assert_eq!(show(&serde_json::json!("x")), "x");
        assert_eq!(show(&serde_json::json!(7)), "7");
    }
}
