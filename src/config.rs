//! Configuration: command-line flags and environment variables (clap), over an optional TOML
//! file (`--config`), over defaults. Validated once at start; a bad value fails with its name.
//!
//! Over 400 lines for a reason: every setting is one clap field with its flag, variable, default
//! and doc, and one validation beside it, so that a setting is read, documented and checked in
//! one place; about a fifth are unit tests.

use crate::engine::EngineConfig;
use crate::spec::Span;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// eddy: a stateful stream-processing service.
#[derive(Debug, Parser)]
#[command(name = "eddy", version, about)]
pub struct Cli {
    /// A TOML file with settings; flags and environment variables win over it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do (default: serve).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve {
        /// Listen beyond loopback even without a tokens file (open access).
        #[arg(long)]
        insecure: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run a pipeline over a file of events (NDJSON) through the engine, no HTTP, no WAL;
    /// flush with the max watermark, write the output records, print events_per_s and totals.
    Replay {
        /// The pipeline spec (JSON).
        #[arg(long)]
        spec: PathBuf,
        /// The events, one JSON object per line.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the output records (NDJSON); discarded when absent.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Lines per batch.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
    /// Inspect and repair a pipeline's write-ahead log (the server must be stopped).
    #[command(subcommand)]
    Wal(WalCommand),
    /// Load a running server: post a generated click stream from many connections and report
    /// events/s, latency percentiles and the server's RSS.
    Load(LoadOptions),
}

/// Options of `eddy load`.
#[derive(Debug, Args)]
pub struct LoadOptions {
    /// The server's base URL, or a comma-separated list of them (cluster mode): connection i
    /// posts to URL i mod n; the pipeline is created at the first.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The pipeline to create (the contract's example) and load.
    #[arg(long, default_value = "load")]
    pipeline: String,
    /// How long, e.g. "30s".
    #[arg(long, default_value = "30s")]
    duration: String,
    /// Events per request.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Distinct users in the stream.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Partitions of the pipeline created (cluster mode spreads them over the instances).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    partitions: u16,
    /// Open loop: batches per second over all connections (latency from the intended send
    /// time); without it, each connection sends as soon as it is answered.
    #[arg(long)]
    rate: Option<f64>,
    /// Also query state and long-poll the output.
    #[arg(long)]
    queries: bool,
    /// Take a checkpoint this often, e.g. "10s".
    #[arg(long)]
    checkpoint_every: Option<String>,
    /// Bearer token.
    #[arg(long, env = "EDDY_TOKEN")]
    token: Option<String>,
    /// The server's pid, to report its RSS.
    #[arg(long)]
    server_pid: Option<u32>,
}

impl LoadOptions {
    /// The load to run; the error names a bad duration or URL list.
    pub fn into_args(self) -> Result<crate::load::LoadArgs, String> {
        let span = |text: &str| Span::parse(text).map(|s| Duration::from_millis(s.millis() as u64));
        Ok(crate::load::LoadArgs {
            duration: span(&self.duration)?,
            checkpoint_every: self.checkpoint_every.as_deref().map(span).transpose()?,
            urls: crate::load::parse_urls(&self.url)?,
            pipeline: self.pipeline,
            batch: self.batch,
            connections: self.connections,
            users: self.users,
            partitions: self.partitions,
            rate: self.rate,
            queries: self.queries,
            token: self.token,
            server_pid: self.server_pid,
        })
    }
}

/// WAL commands.
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Cut a corrupt WAL at its first damaged record: every cut byte is moved to
    /// `EDDY_DATA_DIR/wal/PIPELINE/repaired-<time>/`, the events lost are reported, and offsets
    /// stay above every offset ever handed out. Says so when there is nothing to repair.
    Repair {
        /// The pipeline whose WAL to repair.
        pipeline: String,
    },
}

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh random token (once) and the line to add to the tokens file.
    New {
        /// A name for the token (one word).
        name: String,
        /// Comma-separated scopes: ingest, read, admin.
        #[arg(long)]
        scopes: String,
        /// Comma-separated pipelines the token may touch [default: all].
        #[arg(long)]
        pipelines: Option<String>,
    },
}

/// Settings, each from a flag, its environment variable, or the TOML file.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "EDDY_LISTEN", global = true)]
    pub listen: Option<String>,
    /// Directory of the WAL and the SQLite file [default: ./data].
    #[arg(long, env = "EDDY_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// postgres://… or sqlite://… [default: sqlite://$EDDY_DATA_DIR/eddy.db].
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Tracing filter [default: info].
    #[arg(long, env = "EDDY_LOG", global = true)]
    pub log: Option<String>,
    /// Shard threads per pipeline [default: number of cores].
    #[arg(long, env = "EDDY_SHARDS", global = true)]
    pub shards: Option<usize>,
    /// Batches a shard queues before ingest answers 503 [default: 64].
    #[arg(long, env = "EDDY_SHARD_QUEUE", global = true)]
    pub shard_queue: Option<usize>,
    /// Largest request body of an events post, in bytes [default: 16777216].
    #[arg(long, env = "EDDY_MAX_BODY_BYTES", global = true)]
    pub max_body_bytes: Option<usize>,
    /// Longest time a request may take to answer, e.g. "90s" [default: 90s].
    #[arg(long, env = "EDDY_REQUEST_TIMEOUT", global = true)]
    pub request_timeout: Option<String>,
    /// Output records kept per pipeline [default: 100000].
    #[arg(long, env = "EDDY_OUTPUT_RETAIN", global = true)]
    pub output_retain: Option<usize>,
    /// Most events in one batch [default: no limit: every valid body under the body limit is
    /// accepted, however many events it holds]; more is 413.
    #[arg(long, env = "EDDY_MAX_BATCH_EVENTS", global = true)]
    pub max_batch_events: Option<usize>,
    /// Most bytes of one event [default: no limit beyond the body limit]; a larger event is
    /// invalid (400).
    #[arg(long, env = "EDDY_MAX_EVENT_BYTES", global = true)]
    pub max_event_bytes: Option<usize>,
    /// Requests served at once [default: 1024]; more are shed with 503.
    #[arg(long, env = "EDDY_MAX_CONCURRENT_REQUESTS", global = true)]
    pub max_concurrent_requests: Option<usize>,
    /// Most pipelines [default: 100]; creating more is 507.
    #[arg(long, env = "EDDY_MAX_PIPELINES", global = true)]
    pub max_pipelines: Option<usize>,
    /// Most keys with state per pipeline, over all operators [default: 20000000]; a batch that
    /// arrives at the limit is 507.
    #[arg(long, env = "EDDY_MAX_KEYS_PER_PIPELINE", global = true)]
    pub max_keys_per_pipeline: Option<usize>,
    /// Most entries of one key of a `map` operator [default: 10000]; new entries beyond it are
    /// ignored (and counted).
    #[arg(long, env = "EDDY_MAX_MAP_ENTRIES", global = true)]
    pub max_map_entries: Option<usize>,
    /// File of API tokens; without it access is open (and serve stays on loopback).
    #[arg(long, env = "EDDY_TOKENS_FILE", global = true)]
    pub tokens_file: Option<PathBuf>,
    /// Require a read token for /metrics too [default: false].
    #[arg(long, env = "EDDY_METRICS_AUTH", global = true)]
    pub metrics_auth: Option<bool>,
    /// fdatasync the WAL before acknowledging [default: true]; false only for benchmarks.
    #[arg(long, env = "EDDY_WAL_FSYNC", global = true)]
    pub wal_fsync: Option<bool>,
    /// WAL segment size in bytes at which a new segment starts [default: 67108864].
    #[arg(long, env = "EDDY_WAL_SEGMENT_BYTES", global = true)]
    pub wal_segment_bytes: Option<u64>,
    /// Longest wait for a store connection, e.g. "2s" [default: 2s]; past it the store counts
    /// as unreachable (a checkpoint trigger answers 503 `store_unavailable`).
    #[arg(long, env = "EDDY_STORE_ACQUIRE_TIMEOUT", global = true)]
    pub store_acquire_timeout: Option<String>,
    /// Origins whose browser pages may call the API (CORS): comma-separated exact origins
    /// such as `https://app.example.com`, or `*` [default: none, CORS off].
    #[arg(long, env = "EDDY_CORS_ORIGINS", global = true)]
    pub cors_origins: Option<String>,
    /// This instance's name in `GET /v1/cluster` [default: host name and listen port].
    #[arg(long, env = "EDDY_NODE_ID", global = true)]
    pub node_id: Option<String>,
    /// The `http://host:port` other instances and clients reach this one at [default: from
    /// EDDY_LISTEN].
    #[arg(long, env = "EDDY_ADVERTISE_URL", global = true)]
    pub advertise_url: Option<String>,
    /// Cluster mode: the NATS servers (comma-separated nats:// URLs); needs a PostgreSQL
    /// DATABASE_URL [default: none, one instance on its own].
    #[arg(long, env = "EDDY_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// Replicas of the JetStream streams eddy creates (1 to 5) [default: 1].
    #[arg(long, env = "EDDY_NATS_REPLICAS", global = true)]
    pub nats_replicas: Option<usize>,
    /// How soon a dead instance's leases expire and its pipelines move [default: 5s].
    #[arg(long, env = "EDDY_LEASE_TIMEOUT", global = true)]
    pub lease_timeout: Option<String>,
    /// Prefix of the NATS streams and subjects of this cluster, so that several clusters
    /// can share NATS servers ([A-Za-z0-9_-]) [default: eddy].
    #[arg(long, env = "EDDY_CLUSTER_NAME", global = true)]
    pub cluster_name: Option<String>,
}

impl Settings {
    /// These settings, with any unset one taken from `file`.
    pub fn or(self, file: Settings) -> Settings {
        Settings {
            listen: self.listen.or(file.listen),
            data_dir: self.data_dir.or(file.data_dir),
            database_url: self.database_url.or(file.database_url),
            log: self.log.or(file.log),
            shards: self.shards.or(file.shards),
            shard_queue: self.shard_queue.or(file.shard_queue),
            max_body_bytes: self.max_body_bytes.or(file.max_body_bytes),
            request_timeout: self.request_timeout.or(file.request_timeout),
            output_retain: self.output_retain.or(file.output_retain),
            wal_fsync: self.wal_fsync.or(file.wal_fsync),
            wal_segment_bytes: self.wal_segment_bytes.or(file.wal_segment_bytes),
            tokens_file: self.tokens_file.or(file.tokens_file),
            max_batch_events: self.max_batch_events.or(file.max_batch_events),
            max_event_bytes: self.max_event_bytes.or(file.max_event_bytes),
            max_concurrent_requests: self
                .max_concurrent_requests
                .or(file.max_concurrent_requests),
            max_pipelines: self.max_pipelines.or(file.max_pipelines),
            max_keys_per_pipeline: self.max_keys_per_pipeline.or(file.max_keys_per_pipeline),
            max_map_entries: self.max_map_entries.or(file.max_map_entries),
            metrics_auth: self.metrics_auth.or(file.metrics_auth),
            store_acquire_timeout: self.store_acquire_timeout.or(file.store_acquire_timeout),
            cors_origins: self.cors_origins.or(file.cors_origins),
            node_id: self.node_id.or(file.node_id),
            advertise_url: self.advertise_url.or(file.advertise_url),
            nats_url: self.nats_url.or(file.nats_url),
            nats_replicas: self.nats_replicas.or(file.nats_replicas),
            lease_timeout: self.lease_timeout.or(file.lease_timeout),
            cluster_name: self.cluster_name.or(file.cluster_name),
        }
    }

    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Toml {
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }
}

/// A bad setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Toml { path: PathBuf, detail: String },
    #[error("{name}: {detail}")]
    Invalid { name: &'static str, detail: String },
}

/// Largest `EDDY_MAX_BODY_BYTES`: a body is logged whole in one WAL record, and a record
/// larger than the WAL reads back would be acknowledged yet unrecoverable.
pub const MAX_BODY_LIMIT: usize = crate::wal::MAX_PAYLOAD - 64 * 1024;

/// `EDDY_MAX_BODY_BYTES`, 1 to [`MAX_BODY_LIMIT`] (default 16 MiB).
fn body_limit(value: Option<usize>) -> Result<usize, ConfigError> {
    match value.unwrap_or(16 * 1024 * 1024) {
        n @ 1..=MAX_BODY_LIMIT => Ok(n),
        n => Err(ConfigError::Invalid {
            name: "EDDY_MAX_BODY_BYTES",
            detail: format!(
                "must be 1 to {MAX_BODY_LIMIT} bytes (a body must fit one WAL record), not {n}"
            ),
        }),
    }
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub log: String,
    pub engine: EngineConfig,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Whether WAL appends are fdatasync'ed before they are acknowledged.
    pub wal_fsync: bool,
    /// Size at which the WAL starts a new segment.
    pub wal_segment_bytes: u64,
    pub tokens_file: Option<PathBuf>,
    /// Whether /metrics needs a read token.
    pub metrics_auth: bool,
    pub max_batch_events: usize,
    pub max_event_bytes: usize,
    pub max_concurrent_requests: usize,
    pub max_pipelines: usize,
    /// Longest wait for a store connection before the store counts as unreachable.
    pub store_acquire_timeout: Duration,
    /// Origins allowed to call the API from a browser; `None`: CORS off.
    pub cors: Option<CorsOrigins>,
    /// `EDDY_NODE_ID`; `None`: derived from the host name and the port listened on.
    pub node_id: Option<String>,
    /// `EDDY_ADVERTISE_URL`; `None`: derived from the address listened on.
    pub advertise_url: Option<String>,
    /// Cluster mode (`EDDY_NATS_URL` set), or `None`.
    pub cluster: Option<ClusterConfig>,
}

/// Cluster mode's settings.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `EDDY_NATS_URL`, comma-separated.
    pub nats_url: String,
    pub replicas: usize,
    pub lease_timeout: Duration,
    /// `EDDY_CLUSTER_NAME`: the prefix of its streams and subjects.
    pub name: String,
}

/// The origins of `EDDY_CORS_ORIGINS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin (no credentials: tokens travel in `Authorization`, set by the page).
    Any,
    /// Exact origins, `scheme://host[:port]`, compared as the browser sends them.
    Exact(Vec<String>),
}

impl CorsOrigins {
    /// Parses a comma-separated list of origins, or `*`; `None` when it names none.
    pub fn parse(text: &str) -> Result<Option<CorsOrigins>, String> {
        let origins: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .collect();
        match origins.as_slice() {
            [] => Ok(None),
            ["*"] => Ok(Some(CorsOrigins::Any)),
            many if many.contains(&"*") => Err("`*` stands alone: it allows every origin".into()),
            many => many
                .iter()
                .map(|o| check_origin(o))
                .collect::<Result<Vec<_>, _>>()
                .map(|list| Some(CorsOrigins::Exact(list))),
        }
    }
}

/// An origin as browsers send it: `http` or `https`, a host, an optional port, nothing else.
fn check_origin(origin: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("{origin:?} is not an origin ({why})"));
    let Some((scheme, rest)) = origin.split_once("://") else {
        return bad("expected scheme://host[:port]");
    };
    if scheme != "http" && scheme != "https" {
        return bad("the scheme must be http or https");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return bad("an origin has a host and an optional port, no path, no slash at the end");
    }
    if let Some((_, port)) = rest.rsplit_once(':')
        && !rest.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return bad("the port must be a number");
    }
    // Browsers send origins in lower case (hosts are case-insensitive).
    Ok(origin.to_ascii_lowercase())
}

/// Cluster mode's settings, when `EDDY_NATS_URL` is set; it needs PostgreSQL.
fn cluster(s: &Settings, database_url: &str) -> Result<Option<ClusterConfig>, ConfigError> {
    let invalid = |name, detail: String| ConfigError::Invalid { name, detail };
    let Some(nats_url) = s.nats_url.clone().filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
        return Err(invalid(
            "DATABASE_URL",
            "cluster mode (EDDY_NATS_URL) needs a PostgreSQL DATABASE_URL (postgres://…): \
             leases, definitions and checkpoints live there"
                .into(),
        ));
    }
    let replicas = s.nats_replicas.unwrap_or(1);
    if !(1..=5).contains(&replicas) {
        return Err(invalid(
            "EDDY_NATS_REPLICAS",
            format!("must be 1 to 5, not {replicas}"),
        ));
    }
    let lease = s.lease_timeout.as_deref().unwrap_or("5s");
    let lease = Span::parse(lease).map_err(|e| invalid("EDDY_LEASE_TIMEOUT", e))?;
    if lease.millis() < 100 {
        return Err(invalid(
            "EDDY_LEASE_TIMEOUT",
            "must be at least 100ms".into(),
        ));
    }
    let name = s.cluster_name.clone().unwrap_or_else(|| "eddy".into());
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(invalid(
            "EDDY_CLUSTER_NAME",
            format!("{name:?} must match [A-Za-z0-9_-]{{1,64}}"),
        ));
    }
    Ok(Some(ClusterConfig {
        nats_url,
        replicas,
        lease_timeout: Duration::from_millis(lease.millis() as u64),
        name,
    }))
}

impl Config {
    /// This instance's id when it listens on `addr`: `EDDY_NODE_ID`, or host name and port.
    pub fn node_at(&self, addr: SocketAddr) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", host_name(), addr.port()))
    }

    /// Where others reach this instance when it listens on `addr`: `EDDY_ADVERTISE_URL`, or
    /// `http://addr`.
    pub fn url_at(&self, addr: SocketAddr) -> String {
        self.advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"))
    }

    /// Resolves settings against the defaults.
    pub fn resolve(s: Settings) -> Result<Config, ConfigError> {
        let invalid = |name, detail: String| ConfigError::Invalid { name, detail };
        let listen = s.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen = listen
            .parse()
            .map_err(|e| invalid("EDDY_LISTEN", format!("{listen:?} is not an address: {e}")))?;
        let data_dir = s
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./data"));
        let database_url = s
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("eddy.db").display()));
        let timeout = s.request_timeout.as_deref().unwrap_or("90s");
        let timeout = Span::parse(timeout).map_err(|e| invalid("EDDY_REQUEST_TIMEOUT", e))?;
        let acquire = s.store_acquire_timeout.as_deref().unwrap_or("2s");
        let acquire = Span::parse(acquire).map_err(|e| invalid("EDDY_STORE_ACQUIRE_TIMEOUT", e))?;
        if acquire.millis() == 0 {
            return Err(invalid(
                "EDDY_STORE_ACQUIRE_TIMEOUT",
                "must be above 0".into(),
            ));
        }
        let cluster = cluster(&s, &database_url)?;
        let defaults = EngineConfig::default();
        let positive = |name, value: Option<usize>, default: usize| match value {
            Some(0) => Err(invalid(name, "must be at least 1".into())),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(Config {
            listen,
            data_dir,
            database_url,
            log: s.log.unwrap_or_else(|| "info".into()),
            engine: EngineConfig {
                shards: positive("EDDY_SHARDS", s.shards, defaults.shards)?,
                shard_queue: positive("EDDY_SHARD_QUEUE", s.shard_queue, defaults.shard_queue)?,
                output_retain: positive(
                    "EDDY_OUTPUT_RETAIN",
                    s.output_retain,
                    defaults.output_retain,
                )?,
                max_keys: positive(
                    "EDDY_MAX_KEYS_PER_PIPELINE",
                    s.max_keys_per_pipeline,
                    defaults.max_keys,
                )?,
                max_map_entries: positive(
                    "EDDY_MAX_MAP_ENTRIES",
                    s.max_map_entries,
                    defaults.max_map_entries,
                )?,
            },
            max_body_bytes: body_limit(s.max_body_bytes)?,
            request_timeout: Duration::from_millis(timeout.millis() as u64),
            wal_fsync: s.wal_fsync.unwrap_or(true),
            wal_segment_bytes: match s.wal_segment_bytes {
                Some(0) => {
                    return Err(invalid(
                        "EDDY_WAL_SEGMENT_BYTES",
                        "must be at least 1".into(),
                    ));
                }
                Some(n) => n,
                None => crate::wal::SEGMENT_BYTES,
            },
            tokens_file: s.tokens_file,
            metrics_auth: s.metrics_auth.unwrap_or(false),
            // The body limit is the promise (any valid body under it is accepted): these two
            // only bound what an operator chooses to bound lower.
            max_batch_events: positive("EDDY_MAX_BATCH_EVENTS", s.max_batch_events, usize::MAX)?,
            max_event_bytes: positive("EDDY_MAX_EVENT_BYTES", s.max_event_bytes, usize::MAX)?,
            max_concurrent_requests: positive(
                "EDDY_MAX_CONCURRENT_REQUESTS",
                s.max_concurrent_requests,
                1024,
            )?,
            max_pipelines: positive("EDDY_MAX_PIPELINES", s.max_pipelines, 100)?,
            store_acquire_timeout: Duration::from_millis(acquire.millis() as u64),
            node_id: s.node_id.filter(|n| !n.is_empty()),
            advertise_url: match s.advertise_url.filter(|u| !u.is_empty()) {
                Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                    return Err(invalid(
                        "EDDY_ADVERTISE_URL",
                        format!("{url:?} is not an http:// or https:// URL"),
                    ));
                }
                url => url,
            },
            cluster,
            cors: match s.cors_origins.as_deref() {
                Some(text) => {
                    CorsOrigins::parse(text).map_err(|e| invalid("EDDY_CORS_ORIGINS", e))?
                }
                None => None,
            },
        })
    }

    /// A configuration for tests: loopback, the given data dir and database.
    pub fn for_tests(data_dir: PathBuf, database_url: String) -> Config {
        let settings = Settings {
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(data_dir),
            database_url: Some(database_url),
            shards: Some(2),
            ..Settings::default()
        };
        Config::resolve(settings).expect("test settings are valid")
    }
}

/// The machine's host name (Linux), or `localhost`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let c = Config::resolve(Settings::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://./data/eddy.db");
        assert_eq!(c.max_body_bytes, 16 * 1024 * 1024);
        // No other limit refuses a valid body the body limit admits.
        assert_eq!(
            (c.max_batch_events, c.max_event_bytes),
            (usize::MAX, usize::MAX)
        );
    }

    #[test]
    fn flags_and_environment_win_over_the_file() {
        let cli = Settings {
            listen: Some("127.0.0.1:1".into()),
            ..Settings::default()
        };
        let file: Settings = toml::from_str("listen = \"127.0.0.1:2\"\nshards = 3").unwrap();
        let c = Config::resolve(cli.or(file)).unwrap();
        assert_eq!((c.listen.port(), c.engine.shards), (1, 3));
    }

    #[test]
    fn the_store_acquire_timeout_defaults_to_two_seconds_and_is_never_zero() {
        let c = Config::resolve(Settings::default()).unwrap();
        assert_eq!(c.store_acquire_timeout, Duration::from_secs(2));
        for bad in ["0s", "2 s"] {
            let settings = Settings {
                store_acquire_timeout: Some(bad.into()),
                ..Settings::default()
            };
            let e = Config::resolve(settings).unwrap_err().to_string();
            assert!(e.starts_with("EDDY_STORE_ACQUIRE_TIMEOUT"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        let bad = Settings {
            request_timeout: Some("5 s".into()),
            ..Settings::default()
        };
        assert!(
            Config::resolve(bad)
                .unwrap_err()
                .to_string()
                .starts_with("EDDY_REQUEST_TIMEOUT")
        );
        let bad = Settings {
            shards: Some(0),
            ..Settings::default()
        };
        assert!(
            Config::resolve(bad)
                .unwrap_err()
                .to_string()
                .starts_with("EDDY_SHARDS")
        );
        assert!(toml::from_str::<Settings>("nope = 1").is_err());
    }

    #[test]
    fn a_body_limit_beyond_what_one_wal_record_holds_is_refused() {
        let with = |n| {
            Config::resolve(Settings {
                max_body_bytes: Some(n),
                ..Settings::default()
            })
        };
        assert_eq!(with(MAX_BODY_LIMIT).unwrap().max_body_bytes, MAX_BODY_LIMIT);
        for bad in [0, MAX_BODY_LIMIT + 1] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.starts_with("EDDY_MAX_BODY_BYTES: must be 1 to"), "{e}");
        }
    }

    #[test]
    fn an_advertise_url_must_be_http() {
        let with = |url: &str| {
            Config::resolve(Settings {
                advertise_url: Some(url.into()),
                ..Settings::default()
            })
        };
        let ok = with("http://10.0.0.7:8080").unwrap();
        assert_eq!(ok.advertise_url.as_deref(), Some("http://10.0.0.7:8080"));
        let e = with("10.0.0.7:8080").unwrap_err().to_string();
        assert!(e.starts_with("EDDY_ADVERTISE_URL"), "{e}");
    }

    #[test]
    fn cors_is_off_unless_origins_are_named() {
        assert_eq!(Config::resolve(Settings::default()).unwrap().cors, None);
        assert_eq!(CorsOrigins::parse(" , ").unwrap(), None);
        assert_eq!(CorsOrigins::parse("*").unwrap(), Some(CorsOrigins::Any));
        assert_eq!(
            CorsOrigins::parse("https://App.example.com, http://localhost:5173").unwrap(),
            Some(CorsOrigins::Exact(vec![
                "https://app.example.com".into(),
                "http://localhost:5173".into()
            ]))
        );
        assert!(CorsOrigins::parse("http://[::1]:3000").unwrap().is_some());
    }

    #[test]
    fn bad_cors_origins_are_refused_with_their_variable() {
        for bad in [
            "example.com",
            "ftp://example.com",
            "https://example.com/",
            "https://example.com/app",
            "https://example.com:http",
            "https://a.example, *",
            "https://",
        ] {
            let settings = Settings {
                cors_origins: Some(bad.into()),
                ..Settings::default()
            };
            let err = Config::resolve(settings).unwrap_err().to_string();
            assert!(err.starts_with("EDDY_CORS_ORIGINS"), "{bad}: {err}");
        }
    }
}
