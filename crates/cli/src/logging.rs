//! Structured logs with tracing, on standard error, as text or JSON lines.
//! Standard output is kept for what the operator must read once (the bootstrap key, command
//! results), so a log shipper reading standard error never receives a secret.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `filter` is a validated tracing filter.
///
/// Lines are written by a background thread, so request threads never wait on the terminal or a
/// pipe; the queue is not lossy (a full queue makes callers wait rather than drop lines). The
/// returned guard flushes what is queued when dropped: keep it until the process exits.
pub fn init(format: LogFormat, filter: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(64 * 1024)
        // Buffered: the writer thread flushes whenever it has drained the queue, so a burst of
        // lines costs one write system call instead of one per line.
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests, embedded use) keeps the first subscriber.
    drop(result);
    guard
}
