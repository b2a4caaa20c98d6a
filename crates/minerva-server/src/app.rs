//! The HTTP application: shared state, routes, API-key check and request metrics.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minerva_engine::{Engine, GenerateOptions};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::request::{self, Plan, Prompt};
use crate::respond::{response_id, Endpoint, Reply};
use crate::scheduler::{Job, Scheduler};

/// Request bodies larger than this are refused with 413 before they are read whole.
pub const BODY_LIMIT: usize = 4 << 20;

const WEB_CHAT: &str = include_str!("web/index.html");

pub struct App {
    /// The name clients pass as `model`.
    pub model_id: String,
    pub api_key: Option<String>,
    pub metrics: Arc<Metrics>,
    /// Set once the model has loaded; until then generation endpoints answer 503.
    pub ready: OnceLock<Ready>,
    pub created: u64,
}

pub struct Ready {
    pub engine: Arc<Engine>,
    pub scheduler: Scheduler,
}

impl App {
    pub fn new(model_id: String, api_key: Option<String>) -> App {
        App {
            model_id,
            api_key,
            metrics: Arc::new(Metrics::default()),
            ready: OnceLock::new(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    fn ready(&self) -> Result<&Ready, ApiError> {
        self.ready.get().ok_or_else(ApiError::loading)
    }

    fn check_model(&self, requested: &str) -> Result<(), ApiError> {
        if requested == self.model_id {
            Ok(())
        } else {
            Err(ApiError::unknown_model(requested, &self.model_id))
        }
    }
}

pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_key));
    Router::new()
        .route("/", get(|| async { Html(WEB_CHAT) }))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(api)
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                ..ApiError::invalid(None, "This method is not allowed on this endpoint.")
            }
        })
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// 401 unless the request carries `Authorization: Bearer KEY` (when a key is set). The
/// comparison takes the same time wherever the first difference is.
async fn require_key(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

async fn count_requests(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    app.metrics
        .count_request(&endpoint, response.status().as_u16());
    response
}

async fn health(State(app): State<Arc<App>>) -> Response {
    match app.ready.get() {
        Some(_) => Json(json!({"status": "ok", "model": app.model_id})).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading", "model": app.model_id})),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

fn model_card(app: &App) -> serde_json::Value {
    json!({"id": app.model_id, "object": "model", "created": app.created, "owned_by": "minerva"})
}

async fn list_models(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(json!({"object": "list", "data": [model_card(&app)]}))
}

async fn get_model(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    app.check_model(&id)?;
    Ok(Json(model_card(&app)))
}

/// The checks every generation request passes first: a readable body, a loaded model, and
/// the right model name.
fn accept(
    app: &App,
    body: Result<Bytes, BytesRejection>,
) -> Result<(request::Request, &Ready), ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(BODY_LIMIT)
        } else {
            ApiError::invalid(
                None,
                format!("Could not read the request body: {rejection}."),
            )
        }
    })?;
    let req = request::parse(&body)?;
    let ready = app.ready()?;
    app.check_model(req.model()?)?;
    Ok((req, ready))
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (req, ready) = accept(&app, body)?;
    let logprobs = req.chat_logprobs()?;
    let plan = req.plan(req.max_completion_tokens.or(req.max_tokens), None, logprobs)?;
    let messages = req.chat_messages()?;
    let options = req.chat_options()?;
    let engine = ready.engine.clone();
    let prompt = blocking(move || engine.encode_chat(&messages, &options))
        .await?
        .map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
    generate(&app, ready, Endpoint::Chat, &plan, vec![(prompt, None)]).await
}

async fn completions(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (req, ready) = accept(&app, body)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(
            Some("suffix"),
            "suffix (fill-in-the-middle) is not supported.",
        ));
    }
    let logprobs = req.completion_logprobs()?;
    // OpenAI's default for this endpoint.
    let plan = req.plan(req.max_tokens, Some(16), logprobs)?;
    let echo = req.echo.unwrap_or(false);
    let prompt = req
        .prompt
        .ok_or_else(|| ApiError::invalid(Some("prompt"), "prompt is required."))?;
    let engine = ready.engine.clone();
    let prompts = blocking(move || encode_prompts(&engine, prompt, echo)).await??;
    generate(&app, ready, Endpoint::Completion, &plan, prompts).await
}

/// A prompt's token ids, and its text when it is to be echoed.
type EncodedPrompt = (Vec<u32>, Option<String>);

fn encode_prompts(
    engine: &Engine,
    prompt: Prompt,
    echo: bool,
) -> Result<Vec<EncodedPrompt>, ApiError> {
    let invalid = |e: minerva_engine::EngineError| ApiError::invalid(Some("prompt"), e.to_string());
    let from_text = |text: String| {
        let ids = engine.encode_raw(&text).map_err(invalid)?;
        Ok((ids, echo.then_some(text)))
    };
    let from_ids = |ids: Vec<u32>| {
        let vocab = engine.tokenizer().vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ApiError::invalid(
                Some("prompt"),
                format!("Token id {bad} is outside the vocabulary (size {vocab})."),
            ));
        }
        let text = match echo {
            true => Some(
                engine
                    .tokenizer()
                    .decode(&ids, false)
                    .map_err(|e| invalid(e.into()))?,
            ),
            false => None,
        };
        Ok((ids, text))
    };
    let prompts: Vec<_> = match prompt {
        Prompt::Text(text) => vec![from_text(text)?],
        Prompt::Texts(texts) => texts.into_iter().map(from_text).collect::<Result<_, _>>()?,
        Prompt::Tokens(ids) => vec![from_ids(ids)?],
        Prompt::TokenLists(lists) => lists.into_iter().map(from_ids).collect::<Result<_, _>>()?,
    };
    if prompts.is_empty() || prompts.iter().any(|(ids, _)| ids.is_empty()) {
        return Err(ApiError::invalid(Some("prompt"), "The prompt is empty."));
    }
    Ok(prompts)
}

/// Queues `plan.n` choices for each prompt and answers with their events.
async fn generate(
    app: &App,
    ready: &Ready,
    endpoint: Endpoint,
    plan: &Plan,
    prompts: Vec<EncodedPrompt>,
) -> Result<Response, ApiError> {
    let context = context_limit(ready);
    if let Some((ids, _)) = prompts.iter().find(|(ids, _)| ids.len() > context) {
        return Err(ApiError::context_exceeded(ids.len(), context));
    }
    let prompt_tokens = prompts.iter().map(|(ids, _)| ids.len()).sum();
    let mut jobs = Vec::new();
    let mut echo = Vec::new();
    for (ids, text) in prompts {
        for choice in 0..plan.n {
            jobs.push(Job {
                prompt: ids.clone(),
                options: choice_options(&plan.options, choice),
            });
            echo.push(text.clone());
        }
    }
    let limits = ready.scheduler.limits();
    let capacity = limits.max_concurrent + limits.max_queue;
    if jobs.len() > capacity {
        return Err(ApiError::invalid(
            Some("n"),
            format!(
                "The request needs {} generations but this server holds at most {capacity} at once.",
                jobs.len()
            ),
        ));
    }
    let receivers = ready
        .scheduler
        .submit(jobs)
        .map_err(|_| ApiError::queue_full())?;
    let reply = Reply {
        endpoint,
        model: app.model_id.clone(),
        engine: ready.engine.clone(),
        prompt_tokens,
        echo,
        logprobs: plan.options.logprobs.is_some(),
        id: response_id(),
    };
    Ok(reply.respond(plan, receivers).await)
}

/// Choice `i` of a seeded request gets its own seed, so `n` choices differ yet repeat.
fn choice_options(options: &GenerateOptions, choice: usize) -> GenerateOptions {
    let mut options = options.clone();
    if let Some(seed) = &mut options.sampler.seed {
        *seed = seed.wrapping_add(choice as u64);
    }
    options
}

fn context_limit(ready: &Ready) -> usize {
    let model = ready.engine.model().info().context_length;
    ready
        .scheduler
        .limits()
        .max_context
        .map_or(model, |c| c.min(model))
}

/// Runs CPU work (tokenizing a long prompt) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))
}
