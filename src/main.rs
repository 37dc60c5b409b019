//! The `eddy` binary: settings → telemetry → store → pipelines → serve, or `migrate`/`openapi`.

use clap::Parser;
use eddy::app;
use eddy::config::{Cli, Command, Config, Settings};
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
    let command = cli.command.unwrap_or(Command::Serve { insecure: false });
    if let Command::Openapi = command {
        println!(
            "{}",
            eddy::api::openapi()
                .to_pretty_json()
                .expect("the document serialises")
        );
        return ExitCode::SUCCESS;
    }
    eddy::telemetry::init(&config.log);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match command {
        Command::Migrate => runtime.block_on(migrate(config)),
        Command::Serve { insecure } => runtime.block_on(serve(config, insecure)),
        Command::Openapi => unreachable!("answered above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&*e),
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
    let store = store::connect(&config.database_url).await?;
    store.migrate().await?;
    tracing::info!(database = %store::redact(&config.database_url), "migrations applied");
    Ok(())
}

async fn serve(config: Config, insecure: bool) -> Result<(), BoxError> {
    if !config.listen.ip().is_loopback() && !insecure {
        return Err(format!(
            "refusing to listen on {} without a tokens file: access would be open to the network \
             (pass --insecure to do it anyway)",
            config.listen
        )
        .into());
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, database = %store::redact(&config.database_url), "starting");
    let state = app::open(config, shutdown.clone()).await?;
    // Serve at once (readyz answers 503) while the pipelines recover.
    let server = tokio::spawn(app::serve(
        listener,
        state.clone(),
        shutdown.clone().cancelled_owned(),
    ));
    if let Err(e) = app::recover(&state).await {
        shutdown.cancel();
        let _ = server.await;
        return Err(e.into());
    }
    let ticker = app::spawn_ticker(&state);
    tracing::info!("ready");
    server.await??;
    shutdown.cancel();
    ticker.await?;
    state.checkpoint_all(eddy::store::Trigger::Shutdown).await;
    tracing::info!("stopped");
    Ok(())
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
