//! Logging: tracing to stderr with the MPI rank in every line (text) or as a field (JSON).

use super::LogFormat;
use std::fmt;
use std::io::IsTerminal;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Text formatter that prefixes every line with `[rank r/n]`.
struct RankPrefixed<F> {
    inner: F,
    prefix: String,
}

impl<S, N, F> FormatEvent<S, N> for RankPrefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "{} ", self.prefix)?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Install the global subscriber. `verbose` 0 = info, 1 = debug, 2+ = trace; `RUST_LOG`
/// overrides. Returns a span to keep entered for the program's lifetime (it carries the
/// rank into JSON logs).
pub fn init(
    format: LogFormat,
    verbose: u8,
    rank: usize,
    size: usize,
) -> tracing::span::EnteredSpan {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    match format {
        LogFormat::Text => {
            let inner = tracing_subscriber::fmt::format()
                .with_target(false)
                .compact();
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .event_format(RankPrefixed {
                    inner,
                    prefix: format!("[rank {rank}/{size}]"),
                })
                .try_init();
        }
        LogFormat::Json => {
            let _ = tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
    tracing::info_span!("lamella", rank).entered()
}
