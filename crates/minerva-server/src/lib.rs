//! Minerva's OpenAI-compatible server: `/v1/chat/completions`, `/v1/completions`,
//! `/v1/models`, `/health`, `/metrics` and a web chat page at `/`.
//!
//! The server listens at once and loads the model in the background (generation endpoints
//! answer 503 until it is ready). One scheduler thread runs the model (see [`scheduler`]);
//! the async side only parses, tokenizes and streams.

pub mod app;
pub mod error;
pub mod metrics;
pub mod request;
pub mod respond;
pub mod scheduler;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use minerva_engine::{Device, Engine, EngineError, KvConfig};
use tokio::net::TcpListener;

pub use app::{router, App, Ready};
pub use scheduler::Limits;

pub struct ServeConfig {
    pub model: PathBuf,
    /// Where the model runs.
    pub device: Device,
    /// The name clients use for the model (`model` field, `/v1/models`).
    pub model_id: String,
    pub host: String,
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on `/v1/*`.
    pub api_key: Option<String>,
    pub limits: Limits,
    /// How the KV cache stores keys and values.
    pub kv: KvConfig,
    /// Wait this long before loading (lets tests observe the loading state).
    pub load_delay: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Load(#[from] EngineError),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("loading the model panicked")]
    LoadPanicked,
}

/// A bound server, not yet serving.
pub struct Server {
    listener: TcpListener,
    config: ServeConfig,
}

impl Server {
    pub async fn bind(config: ServeConfig) -> Result<Server, ServeError> {
        let addr = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Server { listener, config })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes (in-flight responses finish first), or returns the
    /// error if the model fails to load.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let config = self.config;
        let app = Arc::new(App::new(config.model_id.clone(), config.api_key.clone()));
        let serving =
            axum::serve(self.listener, router(app.clone())).with_graceful_shutdown(shutdown);
        let server = tokio::spawn(async move { serving.await });
        let (path, delay, device) = (config.model.clone(), config.load_delay, config.device);
        let kv = config.kv;
        let loaded = tokio::task::spawn_blocking(move || {
            std::thread::sleep(delay);
            let mut engine = Engine::load_on(&path, device, &mut |_, _| {})?;
            engine.set_kv_config(kv);
            Ok::<_, minerva_engine::EngineError>(engine)
        })
        .await;
        let engine = match loaded {
            Ok(Ok(engine)) => Arc::new(engine),
            Ok(Err(err)) => {
                server.abort();
                return Err(err.into());
            }
            Err(_) => {
                server.abort();
                return Err(ServeError::LoadPanicked);
            }
        };
        tracing::info!(
            "model {} loaded in {:.0} ms",
            config.model_id,
            engine.load_time().as_secs_f64() * 1e3
        );
        let scheduler =
            scheduler::Scheduler::start(engine.clone(), config.limits, app.metrics.clone());
        let _ = app.ready.set(Ready { engine, scheduler });
        match server.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ServeError::Io(std::io::Error::other(
                "the server task panicked",
            ))),
        }
    }
}
