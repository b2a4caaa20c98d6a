//! `minerva serve`: the OpenAI-compatible API and web chat.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use minerva_server::{Limits, ServeConfig, Server};

use crate::model_path::ModelChoice;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one; the address is printed)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require this key as `Authorization: Bearer KEY` on /v1/* [env: MINERVA_API_KEY]
    #[arg(long, env = "MINERVA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Generations run at once, in one continuous batch (one forward pass per step for all)
    #[arg(long, visible_alias = "max-batch", default_value_t = 16)]
    pub max_concurrent: usize,
    /// KV pool size in pages of 16 positions per full-attention layer [default: grow as
    /// needed]; when full, the newest generations are preempted and recomputed later
    #[arg(long)]
    pub kv_pages: Option<usize>,
    /// Compute every prompt in full, instead of reusing the KV pages of an earlier request
    /// that began with the same tokens (a shared system prompt, earlier turns)
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Requests waiting for a slot; beyond this the server answers 429
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// KV cache tokens per generation [default: the model's context length]
    #[arg(long)]
    pub max_context: Option<usize>,
    /// Model name clients send as `model` [default: the file or directory name]
    #[arg(long)]
    pub model_id: Option<String>,
    /// Delay model loading by this many milliseconds (tests of the 503 loading state)
    #[arg(long, default_value_t = 0, hide = true)]
    pub load_delay_ms: u64,
}

pub fn serve(choice: &ModelChoice, args: &ServeArgs) -> anyhow::Result<()> {
    let path = choice.path()?;
    let device = choice.device()?;
    if !path.exists() {
        anyhow::bail!("{}: no such file or directory", path.display());
    }
    let model_id = match &args.model_id {
        Some(id) => id.clone(),
        None => default_model_id(&path),
    };
    let config = ServeConfig {
        model: path,
        device,
        model_id: model_id.clone(),
        host: args.host.clone(),
        port: args.port,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        limits: Limits {
            max_concurrent: args.max_concurrent.max(1),
            max_queue: args.max_queue,
            max_context: args.max_context,
            kv_pages: args.kv_pages,
            prefix_cache: !args.no_prefix_cache,
        },
        kv: choice.kv_config()?,
        load_delay: Duration::from_millis(args.load_delay_ms),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("minerva-http")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        // Scripts read this line to find the port.
        eprintln!(
            "minerva: serving {model_id} on http://{}",
            server.local_addr()?
        );
        server.run(shutdown_signal()).await?;
        eprintln!("minerva: stopped");
        Ok(())
    })
}

/// The model's name without extension: `SmolLM2-135M-Instruct.Q4_1` for
/// `SmolLM2-135M-Instruct.Q4_1.gguf`, the directory name for a model directory.
fn default_model_id(path: &Path) -> String {
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
