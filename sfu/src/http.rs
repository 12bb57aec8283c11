//! HTTP: WebSocket signaling, WHIP/WHEP, metrics, health and (in
//! development mode) a token endpoint.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;
use tokio::sync::oneshot;
use tower_http::cors::{Any, CorsLayer};

use crate::app_state::AppState;
use crate::auth::{Grants, TokenAuthority, TokenError};
use crate::media::command::Command;
use crate::media::engine::SessionError;
use crate::media::placement::ShardId;
use crate::signal::websocket;

/// What a signaling connection reads from its socket at once. tungstenite
/// zeroes this much before every read, ready or not (128 KiB by default):
/// with hundreds of connections each receiving small relay messages that
/// was 28 % of the server's CPU while a room of 400 filled. Larger messages
/// still arrive whole; the buffer grows for them.
const WS_READ_BUFFER_BYTES: usize = 8 * 1024;

/// Every route.
pub fn router(state: AppState) -> Router {
    let max_ws = state
        .config
        .signaling
        .max_message_bytes
        .saturating_mul(4)
        .max(64 * 1024);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route(
            "/ws",
            get(
                move |ws: WebSocketUpgrade, State(state): State<AppState>| async move {
                    ws.max_message_size(max_ws)
                        .read_buffer_size(WS_READ_BUFFER_BYTES)
                        .on_upgrade(move |socket| websocket::serve(socket, state))
                },
            ),
        )
        .route("/dev/token", get(dev_token))
        .merge(whip_whep_routes())
        .merge(crate::files::routes::routes())
        .merge(crate::web::routes())
        .with_state(state)
}

/// WHIP/WHEP, open to pages of any origin (players and publishers are
/// often hosted elsewhere); the other routes stay same-origin.
fn whip_whep_routes() -> Router<AppState> {
    Router::new()
        .route("/whip/{room}", post(whip))
        .route("/whep/{room}", post(whep_room))
        .route("/whep/{room}/{participant}", post(whep_participant))
        .route(
            "/sessions/{id}",
            axum::routing::delete(end_session).patch(patch_session),
        )
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::POST, Method::PATCH, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .expose_headers([header::LOCATION, header::LINK]),
        )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        message.into() + "\n",
    )
        .into_response()
}

/// An HTTP error: status and a plain-text explanation.
struct HttpError(StatusCode, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        plain(self.0, self.1)
    }
}

fn http_error(status: StatusCode, message: impl Into<String>) -> HttpError {
    HttpError(status, message.into())
}

/// Grants from `Authorization: Bearer`, or full grants in development mode
/// when there is no header.
fn http_grants(
    state: &AppState,
    headers: &HeaderMap,
    room: &str,
    role: &str,
) -> Result<Grants, HttpError> {
    match crate::auth::bearer(headers) {
        Some(token) => state
            .auth
            .verify_for_room(token, room)
            .map_err(|e| match e {
                TokenError::Expired => http_error(StatusCode::UNAUTHORIZED, "token expired"),
                e => http_error(StatusCode::FORBIDDEN, e.to_string()),
            }),
        None if state.auth.is_development() => {
            let tag = Alphanumeric.sample_string(&mut rand::rng(), 8);
            let identity = format!("{role}-{tag}");
            Ok(TokenAuthority::grants(
                room,
                &identity,
                Duration::from_secs(86_400),
            ))
        }
        None => Err(http_error(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer <token> required",
        )),
    }
}

fn sdp_body(headers: &HeaderMap, body: &Bytes) -> Result<String, HttpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/sdp") {
        return Err(http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/sdp",
        ));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| http_error(StatusCode::BAD_REQUEST, "SDP is not UTF-8"))
}

/// Which shard a request goes to.
enum To<'a> {
    /// The shard holding this room (placing it if new).
    Room(&'a str),
    /// A known shard.
    Shard(ShardId),
}

async fn ask<T>(
    state: &AppState,
    to: To<'_>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, HttpError> {
    let (tx, rx) = oneshot::channel();
    let unavailable = || http_error(StatusCode::SERVICE_UNAVAILABLE, "media engine unavailable");
    let sent = match to {
        To::Room(room) => state.shards.send_for_room(room, make(tx)).await.map(drop),
        To::Shard(shard) => state.shards.send(shard, make(tx)).await,
    };
    sent.map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

fn session_response(
    state: &AppState,
    identity: &str,
    result: Result<(String, String), SessionError>,
) -> Response {
    match result {
        Ok((session, answer)) => {
            let mut response = (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_string()),
                    (header::LOCATION, format!("/sessions/{session}")),
                ],
                answer,
            )
                .into_response();
            let servers =
                crate::turn::ice_servers(&state.config.ice.servers, state.turn.as_ref(), identity);
            for server in &servers {
                for url in &server.urls {
                    let mut link = format!("<{url}>; rel=\"ice-server\"");
                    if let (Some(u), Some(c)) = (&server.username, &server.credential) {
                        link += &format!(
                            "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                        );
                    }
                    if let Ok(v) = HeaderValue::from_str(&link) {
                        response.headers_mut().append(header::LINK, v);
                    }
                }
            }
            response
        }
        Err(e) => session_error(e),
    }
}

fn session_error(e: SessionError) -> Response {
    match e {
        SessionError::BadSdp(m) => plain(StatusCode::BAD_REQUEST, format!("bad SDP: {m}")),
        SessionError::Forbidden(m) => plain(StatusCode::FORBIDDEN, m),
        SessionError::NotFound => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn whip(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    start_session(state, room, SessionKind::Whip, headers, body).await
}

/// What a WHIP/WHEP POST starts.
enum SessionKind {
    /// Publishing.
    Whip,
    /// Viewing the room, or one participant (id or identity).
    Whep(Option<String>),
}

async fn start_session(
    state: AppState,
    room: String,
    kind: SessionKind,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let role = match kind {
        SessionKind::Whip => "whip",
        SessionKind::Whep(_) => "whep",
    };
    let (grants, offer) = match http_grants(&state, &headers, &room, role)
        .and_then(|g| Ok((g, sdp_body(&headers, &body)?)))
    {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let identity = grants.identity.clone();
    let result = match kind {
        SessionKind::Whip => {
            ask(&state, To::Room(&room), |reply| Command::Whip {
                grants,
                offer,
                reply,
            })
            .await
        }
        SessionKind::Whep(target) => {
            let whep = |reply| Command::Whep {
                grants,
                target,
                offer,
                reply,
            };
            ask(&state, To::Room(&room), whep).await
        }
    };
    match result {
        Ok(result) => session_response(&state, &identity, result),
        Err(r) => r.into_response(),
    }
}

async fn whep_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    start_session(state, room, SessionKind::Whep(None), headers, body).await
}

async fn whep_participant(
    State(state): State<AppState>,
    Path((room, participant)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    start_session(
        state,
        room,
        SessionKind::Whep(Some(participant)),
        headers,
        body,
    )
    .await
}

async fn end_session(State(state): State<AppState>, Path(session): Path<String>) -> Response {
    let Some(shard) = state.shards.session_shard(&session) else {
        return plain(StatusCode::NOT_FOUND, "no such session");
    };
    match ask(&state, To::Shard(shard), |reply| Command::EndSession {
        session,
        reply,
    })
    .await
    {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => plain(StatusCode::NOT_FOUND, "no such session"),
        Err(r) => r.into_response(),
    }
}

async fn patch_session(
    State(state): State<AppState>,
    Path(session): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/trickle-ice-sdpfrag") {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/trickle-ice-sdpfrag",
        );
    }
    let Ok(fragment) = String::from_utf8(body.to_vec()) else {
        return plain(StatusCode::BAD_REQUEST, "fragment is not UTF-8");
    };
    let Some(shard) = state.shards.session_shard(&session) else {
        return session_error(SessionError::NotFound);
    };
    match ask(&state, To::Shard(shard), |reply| Command::PatchSession {
        session,
        fragment,
        reply,
    })
    .await
    {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => session_error(e),
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct DevTokenQuery {
    room: String,
    identity: String,
    name: Option<String>,
}

/// Development mode only: a token for anyone who asks.
async fn dev_token(State(state): State<AppState>, Query(q): Query<DevTokenQuery>) -> Response {
    if !state.auth.is_development() {
        return plain(
            StatusCode::NOT_FOUND,
            "development mode is off (auth.key is set)",
        );
    }
    let mut grants = TokenAuthority::grants(&q.room, &q.identity, Duration::from_secs(86_400));
    grants.name = q.name;
    match state.auth.mint(&grants) {
        Ok(token) => plain(StatusCode::OK, token),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
