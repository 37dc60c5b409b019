//! Start-up: the data dir, the store and its migrations, the tokens file, then recovery of
//! every stored pipeline (latest checkpoint, then its WAL) before the service is ready.

use super::Service;
use super::cluster::Cluster;
use crate::auth::{Tokens, TokensError};
use crate::checkpoint::{CheckpointError, Checkpointer};
use crate::config::Config;
use crate::engine::{Engine, EngineError};
use crate::spec::PipelineSpec;
use crate::store::{self, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

/// Failures of start-up. A wrapped error prints its cause once.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data dir {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored pipeline {name:?} is no longer valid: {detail}")]
    InvalidStoredSpec { name: String, detail: String },
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error("cluster mode cannot start")]
    Cluster(#[from] super::cluster::ClusterError),
    #[error("pipeline {name:?} cannot be recovered")]
    Recovery {
        name: String,
        source: CheckpointError,
    },
}

impl Service {
    /// Opens the store and applies migrations: a service that serves, not ready yet.
    pub async fn open(
        mut config: Config,
        shutdown: CancellationToken,
    ) -> Result<Service, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = store::connect_with(&config.database_url, config.store_acquire_timeout).await?;
        store.migrate().await?;
        let tokens = config
            .tokens_file
            .as_deref()
            .map(Tokens::load)
            .transpose()?
            .map(Arc::new);
        let cluster = match &config.cluster {
            Some(settings) => {
                let (node, url) = (config.node_at(config.listen), config.url_at(config.listen));
                let cluster = Cluster::connect(settings, &config.database_url, &node, &url).await?;
                // A record is one NATS message: a body must fit what the servers take.
                let fits = cluster
                    .streams
                    .max_payload()
                    .map(|m| m.saturating_sub(64 * 1024).max(1024));
                if let Some(fits) = fits
                    && config.max_body_bytes > fits
                {
                    tracing::info!(
                        max_body_bytes = fits,
                        "request bodies limited to what one NATS message holds"
                    );
                    config.max_body_bytes = fits;
                }
                tracing::info!(node = %node, url = %url, "cluster member");
                Some(Arc::new(cluster))
            }
            None => None,
        };
        let config = Arc::new(config);
        crate::metrics::install();
        let streams = cluster.as_ref().map(|c| c.streams.clone());
        Ok(Service {
            tokens: Arc::new(RwLock::new(tokens)),
            engine: Arc::new(Engine::default()),
            checkpoints: Arc::new(Checkpointer::new(store.clone(), config.clone(), streams)),
            cluster,
            store,
            config,
            ready: Arc::new(AtomicBool::new(false)),
            shutdown,
        })
    }

    /// Recovers every stored pipeline (latest checkpoint, then its WAL), then marks the
    /// service ready: until then `/readyz` and the API answer 503. A pipeline whose WAL or
    /// stored state fails its check stays failed (listed, its requests 503 `pipeline_failed`)
    /// while the others serve.
    ///
    /// In cluster mode the cluster loop starts instead: it takes the leases of pipelines no
    /// live instance leads and recovers those; the service is ready after its first round.
    pub async fn recover(&self) -> Result<(), StartError> {
        if let Some(cluster) = &self.cluster {
            tokio::spawn(self.clone().run_cluster(cluster.clone()));
            return Ok(());
        }
        for stored in self.store.pipelines().await? {
            let spec = PipelineSpec::from_json(&stored.spec).map_err(|errors| {
                StartError::InvalidStoredSpec {
                    name: stored.name.clone(),
                    detail: format!("{errors:?}"),
                }
            })?;
            match self.checkpoints.recover(spec.clone(), None).await {
                Ok(pipeline) => {
                    self.launch(pipeline);
                }
                Err(e) if fails_only_the_pipeline(&e) => {
                    let name = &stored.name;
                    tracing::error!(pipeline = %name, reason = %e, next = "pipeline stays failed until restored or repaired (eddy wal repair)", "pipeline failed to start");
                    self.engine.fail(spec, e.to_string());
                }
                Err(source) => {
                    return Err(StartError::Recovery {
                        name: stored.name.clone(),
                        source,
                    });
                }
            }
        }
        self.ready.store(true, Ordering::Release);
        Ok(())
    }
}

/// Whether a recovery failure is the pipeline's own (its WAL, what is logged in it, or its
/// stored state found damaged), so that the others can still serve; a store failure stops
/// start-up instead.
fn fails_only_the_pipeline(e: &CheckpointError) -> bool {
    matches!(
        e,
        CheckpointError::Wal(_)
            | CheckpointError::Engine(EngineError::Reapply { .. })
            | CheckpointError::Store(StoreError::DamagedState { .. })
    )
}
