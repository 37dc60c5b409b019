//! Tracing set-up: an `EnvFilter` from `EDDY_LOG`, human-readable lines, or JSON lines when
//! `LOG_FORMAT=json`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call does nothing (tests share one process).
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // Already installed by an earlier call in this process: keep it.
    drop(result);
}
