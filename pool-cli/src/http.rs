//! The JSON HTTP API of `pool serve`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use pool_core::{AllocationToken, ConversationId, ProjectId, TemplateName};
use pool_runtime::{Health, ManagerError, OnEmpty, PoolManager};
use pool_storage::Metadata;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::metrics::{Histogram, render};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The pool manager.
    pub manager: PoolManager,
    /// The bearer token, if one is required.
    pub token: Option<Arc<str>>,
    /// The template used when a request names none.
    pub default_template: TemplateName,
    /// Allocate latency, for /metrics.
    pub allocate_latency: Arc<Histogram>,
}

/// An error as the API returns it: a status and `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        let status = match e.code() {
            "pool_empty" | "wait_timed_out" | "halted" | "shutting_down" => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            "token_mismatch" | "invalid_transition" => StatusCode::CONFLICT,
            "unknown_project" | "no_metadata" => StatusCode::NOT_FOUND,
            "unknown_template" => StatusCode::BAD_REQUEST,
            "provision_failed" => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            ManagerError::Store(s) => format!("{e}: {s}"),
            _ => e.to_string(),
        };
        Self::new(status, e.code(), message)
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        };
        Self::new(status, code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(r.status(), "invalid_id", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(r.status(), "bad_query", r.body_text())
    }
}

/// The API's routes over `state`; bodies larger than `max_body` are refused.
pub fn router(state: AppState, max_body: usize) -> Router {
    let guarded = Router::new()
        .route(
            "/v1/conversations/{conversation_id}/project",
            post(allocate),
        )
        .route("/v1/conversations/{conversation_id}/stream", get(stream))
        .route("/v1/projects/{project_id}/active", post(mark_active))
        .route("/v1/projects/{project_id}/archive", post(archive))
        .route("/v1/projects/{project_id}/metadata", get(metadata))
        .route("/v1/pool", get(pool_status))
        .route("/metrics", get(metrics));
    // Without a token there is nothing to check: no layer, no cost per request.
    let guarded = if state.token.is_some() {
        guarded.route_layer(middleware::from_fn_with_state(state.clone(), authorize))
    } else {
        guarded
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            let message = "the endpoint does not take this method";
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                message,
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Requires `Authorization: Bearer <token>` when a token is configured.
async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        return next.run(req).await;
    }
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid bearer token is required",
    )
    .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn conversation(raw: &str) -> Result<ConversationId, ApiError> {
    ConversationId::new(raw).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))
}

fn project(raw: &str) -> Result<ProjectId, ApiError> {
    ProjectId::new(raw).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))
}

/// The optional body of an allocation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocateBody {
    template: Option<String>,
    on_empty: Option<String>,
    wait_ms: Option<u64>,
}

fn parse_body<T: Default + for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("bad_body", e.to_string()))
}

fn policy(on_empty: Option<&str>, wait_ms: Option<u64>) -> Result<OnEmpty, ApiError> {
    match on_empty {
        None | Some("fail") => Ok(OnEmpty::Fail),
        Some("wait") => Ok(OnEmpty::Wait(Duration::from_millis(
            wait_ms.unwrap_or(10_000).min(300_000),
        ))),
        Some("cold") => Ok(OnEmpty::Cold),
        Some(other) => Err(ApiError::bad_request(
            "bad_body",
            format!("on_empty must be fail, wait or cold, not {other:?}"),
        )),
    }
}

fn template(state: &AppState, name: Option<&str>) -> Result<TemplateName, ApiError> {
    match name {
        None => Ok(state.default_template.clone()),
        Some(n) => {
            TemplateName::new(n).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))
        }
    }
}

/// The answer to an allocation, serialised without copying the metadata document.
#[derive(Debug, Serialize)]
struct AllocationReply {
    project_id: ProjectId,
    token: AllocationToken,
    warm: bool,
    repeat: bool,
    template: TemplateName,
    /// `null` when the project has no readable metadata.
    #[serde(serialize_with = "shared_document")]
    metadata: Option<Arc<Metadata>>,
}

fn shared_document<S: serde::Serializer>(
    m: &Option<Arc<Metadata>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    m.as_deref().serialize(s)
}

async fn allocate_reply(
    state: &AppState,
    conversation: &ConversationId,
    template: &TemplateName,
    on_empty: OnEmpty,
) -> Result<AllocationReply, ApiError> {
    let started = Instant::now();
    let a = state
        .manager
        .allocate(conversation, template, on_empty)
        .await;
    state.allocate_latency.observe(started.elapsed());
    let a = a?;
    // A project the manager provisioned comes with its document; any other is read
    // through the cache.
    let metadata = match a.metadata {
        Some(m) => Some(m),
        None => state.manager.metadata(&a.project).await.ok(),
    };
    Ok(AllocationReply {
        project_id: a.project,
        token: a.token,
        warm: a.warm,
        repeat: a.repeat,
        template: a.template,
        metadata,
    })
}

async fn allocate(
    State(state): State<AppState>,
    conversation_id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AllocationReply>, ApiError> {
    let Path(conversation_id) = conversation_id?;
    let conversation = conversation(&conversation_id)?;
    let body: AllocateBody = parse_body(&body?)?;
    let template = template(&state, body.template.as_deref())?;
    let on_empty = policy(body.on_empty.as_deref(), body.wait_ms)?;
    Ok(Json(
        allocate_reply(&state, &conversation, &template, on_empty).await?,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: Option<String>,
}

fn token_of(body: &Bytes) -> Result<AllocationToken, ApiError> {
    let parsed: TokenBody = parse_body(body)?;
    let raw = parsed
        .token
        .ok_or_else(|| ApiError::bad_request("bad_body", "the body needs a token"))?;
    raw.parse()
        .map_err(|e: pool_core::TokenError| ApiError::bad_request("bad_body", e.to_string()))
}

/// The project a request names and the holder's token from its body.
fn held(
    project_id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(ProjectId, AllocationToken), ApiError> {
    let Path(project_id) = project_id?;
    Ok((project(&project_id)?, token_of(&body?)?))
}

async fn mark_active(
    State(state): State<AppState>,
    project_id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (project, token) = held(project_id, body)?;
    state.manager.mark_active(&project, token).await?;
    Ok(Json(json!({"project_id": project, "state": "active"})))
}

async fn archive(
    State(state): State<AppState>,
    project_id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (project, token) = held(project_id, body)?;
    state.manager.archive(&project, token).await?;
    Ok(Json(json!({"project_id": project, "state": "archived"})))
}

async fn metadata(
    State(state): State<AppState>,
    project_id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(project_id) = project_id?;
    let project = project(&project_id)?;
    let m = state.manager.metadata(&project).await?;
    Ok(Json((*m).clone()))
}

async fn pool_status(State(state): State<AppState>) -> Json<pool_runtime::Status> {
    Json(state.manager.status())
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = render(&state.manager.status(), &state.allocate_latency);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"status": "ok", "health": state.manager.status().health}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.manager.status().health {
        Health::Halted { reason } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "halted", reason).into_response()
        }
        health => Json(json!({"ready": true, "health": health})).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    template: Option<String>,
    on_empty: Option<String>,
    wait_ms: Option<u64>,
}

enum StreamStep {
    Start,
    Allocate,
    Chunk(u32),
    Done,
}

/// Starts a server-sent event stream at once, then hands the conversation a project
/// and streams a short reply, as a chat API would: the first event never waits for
/// the pool or for storage.
async fn stream(
    State(state): State<AppState>,
    conversation_id: Result<Path<String>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Path(conversation_id) = conversation_id?;
    let conversation = conversation(&conversation_id)?;
    let Query(q) = query?;
    let template = template(&state, q.template.as_deref())?;
    let on_empty = policy(q.on_empty.as_deref(), q.wait_ms)?;
    let opened = Instant::now();
    let events = futures_util::stream::unfold(StreamStep::Start, move |step| {
        let (state, conversation, template) =
            (state.clone(), conversation.clone(), template.clone());
        async move {
            let micros = || opened.elapsed().as_micros() as u64;
            let (event, next) = match step {
                StreamStep::Start => {
                    let data = json!({"conversation_id": conversation, "elapsed_us": micros()});
                    (
                        Event::default().event("started").data(data.to_string()),
                        StreamStep::Allocate,
                    )
                }
                StreamStep::Allocate => {
                    let reply = allocate_reply(&state, &conversation, &template, on_empty).await;
                    match reply.and_then(|r| {
                        serde_json::to_value(r).map_err(|e| {
                            let status = StatusCode::INTERNAL_SERVER_ERROR;
                            ApiError::new(status, "internal", e.to_string())
                        })
                    }) {
                        Ok(mut v) => {
                            v["elapsed_us"] = json!(micros());
                            (
                                Event::default().event("project").data(v.to_string()),
                                StreamStep::Chunk(0),
                            )
                        }
                        Err(e) => {
                            let data = json!({"code": e.code, "message": e.message});
                            (
                                Event::default().event("error").data(data.to_string()),
                                StreamStep::Done,
                            )
                        }
                    }
                }
                StreamStep::Chunk(n) if n < 3 => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let data = json!({"text": format!("part {}", n + 1)});
                    (
                        Event::default().event("message").data(data.to_string()),
                        StreamStep::Chunk(n + 1),
                    )
                }
                StreamStep::Chunk(_) => {
                    (Event::default().event("done").data("{}"), StreamStep::Done)
                }
                StreamStep::Done => return None,
            };
            Some((Ok(event), next))
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
