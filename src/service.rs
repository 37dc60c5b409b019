//! The running service, below the API: the engine, the store, the checkpointer, the settings,
//! readiness, the shutdown token and the API tokens, with the lifecycle of its pipelines.
//!
//! Rooms: `lifecycle` opens the store and recovers the stored pipelines at start;
//! `pipelines` creates, deletes and restores pipelines and answers their checkpoints;
//! `periodic` launches a pipeline with its periodic checkpoint loop and takes the final ones
//! at shutdown; `ticker` drives processing time; `health` answers readiness and builds the `/metrics`
//! text.
//!
//! It speaks engine, store and checkpoint errors through ONE [`ServiceError`]; the API turns
//! that into HTTP answers (`api::problem`). It may import `checkpoint`, `engine`, `store`,
//! `config`, `auth`, `metrics`, `spec`, `wal` and `clock`; never `api` or `app`.

pub mod assignment;
pub mod cluster;
mod health;
mod lifecycle;
pub mod owners;
mod periodic;
mod pipelines;
mod ticker;

pub use lifecycle::StartError;
pub use ticker::spawn_ticker;

use crate::auth::{Tokens, TokensError};
use crate::checkpoint::{CheckpointError, Checkpointer};
use crate::config::Config;
use crate::engine::{Engine, EngineError, FailedPipeline, Pipeline};
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

/// The running service; cheap to clone (every part is shared).
#[derive(Clone)]
pub struct Service {
    pub engine: Arc<Engine>,
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    /// Set once pipelines are loaded and recovered.
    pub ready: Arc<AtomicBool>,
    /// Cancelled when the service shuts down (ends long polls, streams and loops).
    pub shutdown: CancellationToken,
    pub checkpoints: Arc<Checkpointer>,
    /// API tokens; `None`: open access. Swapped whole on SIGHUP.
    pub tokens: Arc<RwLock<Option<Arc<Tokens>>>>,
    /// Cluster mode: this instance's part (leases, streams, routes); `None`: on its own.
    pub cluster: Option<Arc<cluster::Cluster>>,
}

/// A known pipeline: serving, or failed at start.
pub enum Served {
    Running(Arc<Pipeline>),
    Failed(Box<FailedPipeline>),
}

/// Why a service call did not happen. A wrapped error prints its cause once.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("pipeline {name:?} does not exist")]
    PipelineNotFound { name: String },
    /// It did not start (its WAL failed its check) or its WAL failed a write.
    #[error("pipeline {name:?} failed: {reason}")]
    PipelineFailed { name: String, reason: String },
    #[error("at most {limit} pipelines may exist")]
    TooManyPipelines { limit: usize },
    /// A new pipeline's WAL could not be opened; its stored definition was taken back.
    #[error("pipeline {name:?} cannot be opened")]
    Open {
        name: String,
        source: CheckpointError,
    },
    /// Recovery at start is not finished.
    #[error("recovery is not finished")]
    Recovering,
    /// The store does not answer a ping.
    #[error("the store does not answer")]
    StoreSilent { source: StoreError },
    /// A task the call waited for panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Cluster mode: the pipeline's leader cannot be reached right now.
    #[error("pipeline {name:?} has no reachable leader right now")]
    NoLeader { name: String },
    /// Cluster mode: a partition's owner cannot answer right now (it is moving to another
    /// instance, catching up with the log, or gone until its lease expires).
    #[error("partition {partition} of pipeline {name:?} cannot answer right now: {detail}")]
    PartitionUnavailable {
        name: String,
        partition: u16,
        detail: String,
    },
    /// Cluster mode: the pipeline's stream could not be created or deleted.
    #[error("the log stream of pipeline {name:?}: {detail}")]
    Stream { name: String, detail: String },
}

impl Service {
    /// The running pipeline `name` (a failed one is `PipelineFailed`).
    pub fn pipeline(&self, name: &str) -> Result<Arc<Pipeline>, ServiceError> {
        match self.served(name)? {
            Served::Running(pipeline) => Ok(pipeline),
            Served::Failed(failed) => Err(ServiceError::PipelineFailed {
                name: name.to_owned(),
                reason: failed.reason,
            }),
        }
    }

    /// The pipeline `name`, running or failed.
    pub fn served(&self, name: &str) -> Result<Served, ServiceError> {
        if let Some(pipeline) = self.engine.get(name) {
            return Ok(Served::Running(pipeline));
        }
        self.engine
            .failed(name)
            .map(|f| Served::Failed(Box::new(f)))
            .ok_or_else(|| ServiceError::PipelineNotFound {
                name: name.to_owned(),
            })
    }

    /// Every pipeline, running or failed, by name.
    pub fn served_list(&self) -> BTreeMap<String, Served> {
        let mut served: BTreeMap<String, Served> = self
            .engine
            .list()
            .into_iter()
            .map(|p| (p.name().to_owned(), Served::Running(p)))
            .collect();
        for failed in self.engine.failed_list() {
            served.insert(failed.spec.name.clone(), Served::Failed(Box::new(failed)));
        }
        served
    }

    /// Reads the tokens file again (SIGHUP); on error the old tokens stay.
    pub fn reload_tokens(&self) -> Result<usize, TokensError> {
        let Some(path) = &self.config.tokens_file else {
            return Ok(0);
        };
        let tokens = Tokens::load(path)?;
        let count = tokens.len();
        *self.tokens.write().expect("tokens lock") = Some(Arc::new(tokens));
        Ok(count)
    }

    /// The current API tokens (`None`: open access).
    pub fn tokens(&self) -> Option<Arc<Tokens>> {
        self.tokens.read().expect("tokens lock").clone()
    }
}
