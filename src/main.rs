//! The `eddy` binary: settings → telemetry → store → pipelines → serve, or `migrate`/`openapi`.

use clap::Parser;
use eddy::api::AppState;
use eddy::app;
use eddy::checkpoint::{Checkpointer, RepairReport};
use eddy::config::{Cli, Command, Config, Settings, TokenCommand, WalCommand};
use eddy::service::{self, Service};
use eddy::store;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match cli.config.as_deref().map(Settings::from_file).transpose() {
        Ok(file) => file.unwrap_or_default(),
        Err(e) => return fail(&e),
    };
    let config = match Config::resolve(cli.settings.or(file)) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    let run =
        |future: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>>>>| {
            eddy::telemetry::init(&config.log);
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(future) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&*e),
            }
        };
    match cli.command.unwrap_or(Command::Serve { insecure: false }) {
        Command::Openapi => {
            println!(
                "{}",
                eddy::api::openapi()
                    .to_pretty_json()
                    .expect("the document serialises")
            );
            ExitCode::SUCCESS
        }
        Command::Token(TokenCommand::New {
            name,
            scopes,
            pipelines,
        }) => match eddy::auth::new_token(&name, &scopes, pipelines.as_deref()) {
            Ok((token, line)) => {
                println!("token (shown once): {token}");
                println!("add this line to the tokens file:\n{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("eddy: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Replay {
            spec,
            input,
            output,
            batch,
        } => {
            // --shards is the global setting (EDDY_SHARDS).
            let shards = config.engine.shards;
            let args = eddy::replay::ReplayArgs {
                spec,
                input,
                output,
                shards,
                batch,
                retain: config.engine.output_retain,
            };
            run(Box::pin(async move {
                let (totals, rate) = eddy::replay::replay(&args).await?;
                println!("{}", totals.line());
                println!("events_per_s={rate:.0}");
                Ok(())
            }))
        }
        Command::Load(options) => match options.into_args() {
            Ok(args) => run(Box::pin(async move {
                let mut report = eddy::load::run(args).await?;
                println!("{}", report.summary());
                Ok(())
            })),
            Err(e) => {
                eprintln!("eddy: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Migrate => run(Box::pin(migrate(config.clone()))),
        Command::Wal(WalCommand::Repair { pipeline }) => {
            run(Box::pin(repair(config.clone(), pipeline)))
        }
        Command::Serve { insecure } => run(Box::pin(serve(config.clone(), insecure))),
    }
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("eddy: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        eprintln!("  caused by: {s}");
        source = s.source();
    }
    ExitCode::FAILURE
}

type BoxError = Box<dyn std::error::Error>;

async fn migrate(config: Config) -> Result<(), BoxError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let store = store::connect_with(&config.database_url, config.store_acquire_timeout).await?;
    store.migrate().await?;
    tracing::info!(database = %store::redact(&config.database_url), "migrations applied");
    Ok(())
}

/// `eddy wal repair PIPELINE`: prints what it cut and lost, or that there is nothing to do.
async fn repair(config: Config, pipeline: String) -> Result<(), BoxError> {
    let store = store::connect(&config.database_url).await?;
    store.migrate().await?;
    if !store.pipelines().await?.iter().any(|p| p.name == pipeline) {
        let url = store::redact(&config.database_url);
        return Err(format!("no pipeline {pipeline:?} is stored in {url}").into());
    }
    let checkpoints = Checkpointer::new(store, std::sync::Arc::new(config), None);
    match checkpoints.repair(&pipeline).await? {
        RepairReport::Whole => {
            println!("pipeline {pipeline:?}: the WAL is whole; nothing to repair")
        }
        RepairReport::Torn { path, bytes } => println!(
            "pipeline {pipeline:?}: the WAL ends in a torn tail ({bytes} bytes of {}), which \
             eddy serve cuts at start (it was never acknowledged); nothing to repair",
            path.display()
        ),
        RepairReport::Cut {
            cut,
            loss,
            next_offset,
        } => {
            println!(
                "pipeline {pipeline:?}: WAL damaged at byte {} of {}: {}",
                cut.position,
                cut.path.display(),
                cut.reason
            );
            println!(
                "cut {} bytes (from that byte on, and every later segment); kept in {}",
                cut.bytes,
                cut.copy.display()
            );
            let mut lost = format!("acknowledged events lost: {}", loss.events);
            if let Some((first, last)) = loss.offsets {
                lost += &format!(" (offsets {first} to {last})");
            }
            if loss.uncounted_at_most > 0 {
                lost += &format!(
                    "; up to {} more in records that could not be read",
                    loss.uncounted_at_most
                );
            }
            println!("{lost}");
            if !loss.keys.is_empty() {
                println!(
                    "idempotency keys of lost batches (a retry with one is applied again, once): {}",
                    loss.keys.join(", ")
                );
            }
            println!("next event offset: at least {next_offset} (offsets are never reused)");
            println!(
                "summary: lost_events={} uncounted_at_most={} cut_bytes={} next_offset={next_offset} copy={}",
                loss.events,
                loss.uncounted_at_most,
                cut.bytes,
                cut.copy.display()
            );
        }
    }
    Ok(())
}

async fn serve(config: Config, insecure: bool) -> Result<(), BoxError> {
    if !config.listen.ip().is_loopback() && config.tokens_file.is_none() && !insecure {
        return Err(format!(
            "refusing to listen on {} without a tokens file: access would be open to the network \
             (set EDDY_TOKENS_FILE, or pass --insecure to do it anyway)",
            config.listen
        )
        .into());
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, database = %store::redact(&config.database_url), "starting");
    let service = Service::open(config, shutdown.clone()).await?;
    // Serve at once (readyz answers 503) while the pipelines recover.
    let server = tokio::spawn(app::serve(
        listener,
        AppState::new(service.clone()),
        shutdown.clone().cancelled_owned(),
    ));
    if let Err(e) = service.recover().await {
        shutdown.cancel();
        let _ = server.await;
        return Err(e.into());
    }
    let ticker = service::spawn_ticker(&service);
    tokio::spawn(reload_on_sighup(service.clone()));
    tracing::info!("ready");
    server.await??;
    shutdown.cancel();
    ticker.await?;
    service.checkpoint_all(eddy::store::Trigger::Shutdown).await;
    service.leave_cluster().await;
    tracing::info!("stopped");
    Ok(())
}

/// Reads the tokens file again on every SIGHUP.
async fn reload_on_sighup(service: Service) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            match service.reload_tokens() {
                Ok(n) => tracing::info!(tokens = n, "tokens file reloaded"),
                Err(e) => {
                    tracing::error!(reason = %e, next = "the old tokens stay in force until a good file is reloaded (SIGHUP)", "tokens file not reloaded")
                }
            }
        }
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        term.recv().await;
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
    shutdown.cancel();
}
