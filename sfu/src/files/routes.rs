//! The HTTP API of the encrypted-blob store (docs/protocol.md section 20):
//! create with a room token, append with resumable PATCH requests, read the
//! upload offset with HEAD, download with GET (Range) by capability, delete.
//! Bodies are streamed to and from disk; disk I/O runs on the blocking pool.
//! A download may start while the upload runs: it follows the committed
//! offset and ends with an error if the upload stalls.

// A refused request is answered with its response, built where the refusal
// is decided; one per request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use futures_util::StreamExt;

use super::store::{BlobId, BlobStore, Reader, StoreError, Upload};
use crate::app_state::AppState;
use crate::auth::{unix_now, Grants, TokenError};
use platform::drop_behind::DropBehind;

/// Bytes gathered before one disk write.
const WRITE_BYTES: usize = 4 * 1024 * 1024;
/// An upload request that sends nothing for this long is ended.
const IDLE: Duration = Duration::from_secs(30);
/// Read size when streaming a download.
const READ_BYTES: usize = 1024 * 1024;
/// How often a running upload request tells waiting downloads it is alive.
const TOUCH_EVERY: Duration = Duration::from_secs(1);

const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");

/// `/files` and `/files/{id}`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/files", post(create).delete(delete_room))
        .route(
            "/files/{id}",
            delete(delete_one)
                .patch(upload)
                .head(progress)
                .get(download),
        )
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        message.into() + "\n",
    )
        .into_response()
}

fn store_error(e: StoreError) -> Response {
    let status = match &e {
        StoreError::NotFound => StatusCode::NOT_FOUND,
        StoreError::TooLarge { .. } | StoreError::Overflow { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        StoreError::UserQuota { .. } | StoreError::TotalQuota { .. } => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        StoreError::Forbidden => StatusCode::FORBIDDEN,
        StoreError::Busy => StatusCode::CONFLICT,
        StoreError::Stalled { offset, length, .. } => {
            let mut r = text(StatusCode::CONFLICT, e.to_string());
            r.headers_mut()
                .insert(UPLOAD_OFFSET, HeaderValue::from(*offset));
            r.headers_mut()
                .insert(UPLOAD_LENGTH, HeaderValue::from(*length));
            return r;
        }
        StoreError::Offset { committed, .. } => {
            let mut r = text(StatusCode::CONFLICT, e.to_string());
            r.headers_mut()
                .insert(UPLOAD_OFFSET, HeaderValue::from(*committed));
            return r;
        }
        StoreError::Io(err) => {
            tracing::warn!("file store: {err}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    text(status, e.to_string())
}

fn store(state: &AppState) -> Result<Arc<BlobStore>, Response> {
    state.files.clone().ok_or_else(|| {
        text(
            StatusCode::NOT_FOUND,
            "file sharing is disabled on this server",
        )
    })
}

/// The grants of `Authorization: Bearer` (required, also in development mode:
/// quotas are per identity).
fn grants(state: &AppState, headers: &HeaderMap) -> Result<Grants, Response> {
    let token = crate::auth::bearer(headers).ok_or_else(|| {
        text(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer <room token> required",
        )
    })?;
    state.auth.verify(token).map_err(|e| match e {
        TokenError::Expired => text(StatusCode::UNAUTHORIZED, "token expired"),
        e => text(StatusCode::UNAUTHORIZED, e.to_string()),
    })
}

fn number(headers: &HeaderMap, name: &HeaderName) -> Result<u64, Response> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            text(
                StatusCode::BAD_REQUEST,
                format!("{name}: <non-negative integer> required"),
            )
        })
}

fn blob_id(id: &str) -> Result<BlobId, Response> {
    BlobId::parse(id).ok_or_else(|| store_error(StoreError::NotFound))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "storage task failed"))
}

/// `POST /files` with `Upload-Length`: reserves space, returns the capability.
async fn create(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let run = async {
        let store = store(&state)?;
        let grants = grants(&state, &headers)?;
        let length = number(&headers, &UPLOAD_LENGTH)?;
        let (id, meta) =
            blocking(move || store.create(&grants.room, &grants.identity, length, unix_now()))
                .await?
                .map_err(store_error)?;
        state.metrics.files_created.inc();
        let body = serde_json::json!({
            "id": id.as_str(),
            "url": format!("/files/{}", id.as_str()),
            "length": meta.length,
            "expires": meta.expires,
        });
        Ok::<_, Response>(
            (
                StatusCode::CREATED,
                [
                    (header::LOCATION, format!("/files/{}", id.as_str())),
                    (header::CONTENT_TYPE, "application/json".to_string()),
                    (UPLOAD_EXPIRES, meta.expires.to_string()),
                ],
                body.to_string(),
            )
                .into_response(),
        )
    };
    run.await.unwrap_or_else(|r| r)
}

/// `HEAD /files/{id}`: `Upload-Offset`, `Upload-Length`, `Upload-Expires`.
async fn progress(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let run = async {
        let store = store(&state)?;
        let id = blob_id(&id)?;
        let p = store.progress(&id, unix_now()).map_err(store_error)?;
        Ok::<_, Response>(
            (
                StatusCode::NO_CONTENT,
                [
                    (UPLOAD_OFFSET, p.offset),
                    (UPLOAD_LENGTH, p.length),
                    (UPLOAD_EXPIRES, p.expires),
                ],
                [(header::CACHE_CONTROL, "no-store")],
            )
                .into_response(),
        )
    };
    run.await.unwrap_or_else(|r| r)
}

/// `PATCH /files/{id}` with `Upload-Offset` equal to the committed offset:
/// appends the body. What arrived before a dropped connection stays committed.
async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let store = store(&state)?;
        let id = blob_id(&id)?;
        let grants = grants(&state, &headers)?;
        let offset = number(&headers, &UPLOAD_OFFSET)?;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let (Some(n), Ok(p)) = (declared, store.progress(&id, unix_now())) {
            // Refused before a byte is written; a chunked body that runs
            // over is cut at the declared length instead.
            if offset.saturating_add(n) > p.length {
                return Err(store_error(StoreError::Overflow { length: p.length }));
            }
        }
        let up = {
            let (id, store) = (id.clone(), store.clone());
            blocking(move || {
                store.begin_upload(&id, &grants.identity, &grants.room, offset, unix_now())
            })
            .await?
            .map_err(store_error)?
        };
        let (committed, result) = append(up, body, &state).await;
        match result {
            Ok(()) => Ok::<_, Response>(
                (StatusCode::NO_CONTENT, [(UPLOAD_OFFSET, committed)]).into_response(),
            ),
            Err(r) => Err(r),
        }
    };
    run.await.unwrap_or_else(|r| r)
}

/// Streams `body` into `up` in large blocking writes; returns the committed
/// offset and how the request ended. The body's pieces are written as they
/// came (no copy into a staging buffer).
async fn append(mut up: Upload, body: Body, state: &AppState) -> (u64, Result<(), Response>) {
    let mut stream = body.into_data_stream();
    let mut parts: Vec<Bytes> = Vec::new();
    let mut held = 0usize; // bytes in `parts`
    let mut touched = std::time::Instant::now();
    let mut ended: Result<(), Response> = Ok(());
    // Bounded: every round consumes body bytes (at most the declared length
    // before an overflow ends it) or ends on the idle timeout.
    loop {
        let next = tokio::time::timeout(IDLE, stream.next()).await;
        let chunk = match next {
            Ok(Some(Ok(chunk))) => Some(chunk),
            Ok(None) => None,
            Ok(Some(Err(_))) => {
                ended = Err(text(StatusCode::BAD_REQUEST, "upload interrupted"));
                None
            }
            Err(_) => {
                ended = Err(text(StatusCode::REQUEST_TIMEOUT, "upload idle too long"));
                None
            }
        };
        let more = chunk.is_some();
        if let Some(mut chunk) = chunk {
            if (held + chunk.len()) as u64 > up.remaining() {
                // Keep what fits, refuse the rest.
                chunk.truncate((up.remaining() as usize).saturating_sub(held));
                ended = Err(store_error(StoreError::Overflow {
                    length: up.offset() + up.remaining(),
                }));
            }
            held += chunk.len();
            if !chunk.is_empty() {
                parts.push(chunk);
            }
            if touched.elapsed() >= TOUCH_EVERY {
                // A slow upload between two commits is not a stalled one
                // for the downloads waiting for it.
                up.touch();
                touched = std::time::Instant::now();
            }
        }
        let last = !more || ended.is_err();
        if held > 0 && (held >= WRITE_BYTES || last) {
            let n = held as u64;
            // Counted where the bytes are committed: a request whose
            // connection is dropped may be cancelled while this runs.
            let uploaded = state.metrics.files_uploaded_bytes.clone();
            let written = tokio::task::spawn_blocking(move || {
                let r = up.write(&parts);
                if r.is_ok() {
                    uploaded.inc_by(n);
                }
                parts.clear();
                (up, parts, r)
            })
            .await;
            match written {
                Ok((u, p, r)) => {
                    up = u;
                    parts = p;
                    held = 0;
                    if let Err(e) = r {
                        return (up.offset(), Err(store_error(e)));
                    }
                }
                Err(_) => {
                    // The write task failed and took the upload with it
                    // (its drop ended the request): report, commit nothing more.
                    let r = text(StatusCode::INTERNAL_SERVER_ERROR, "storage task failed");
                    return (0, Err(r));
                }
            }
        }
        if last {
            return (up.offset(), ended);
        }
    }
}

/// A parsed `Range: bytes=a-b` (single range).
fn range(headers: &HeaderMap, length: u64) -> Result<Option<(u64, u64)>, Response> {
    let Some(v) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let unsatisfiable = || {
        (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{length}"))],
            "range not satisfiable\n",
        )
            .into_response()
    };
    let spec = v
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("bytes="))
        .ok_or_else(unsatisfiable)?;
    let (a, b) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| unsatisfiable())?;
            (length.saturating_sub(n), length.saturating_sub(1))
        }
        (a, "") => (
            a.parse().map_err(|_| unsatisfiable())?,
            length.saturating_sub(1),
        ),
        (a, b) => (
            a.parse().map_err(|_| unsatisfiable())?,
            b.parse::<u64>()
                .map_err(|_| unsatisfiable())?
                .min(length.saturating_sub(1)),
        ),
    };
    if start >= length || end < start {
        return Err(unsatisfiable());
    }
    Ok(Some((start, end)))
}

/// `GET /files/{id}`: the ciphertext, whole or one `Range`. While the
/// upload runs, the response follows it: bytes are sent as they are
/// committed, and the response breaks off (the client sees an incomplete
/// body) if the blob is deleted or expires, or once the upload has received
/// nothing for `files.stall_s`; asked again, a stalled blob gets `409`.
async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let store = store(&state)?;
        let id = blob_id(&id)?;
        let reader = {
            let (store, id) = (store.clone(), id.clone());
            blocking(move || store.open_read(&id, unix_now()))
                .await?
                .map_err(store_error)?
        };
        let length = reader.length;
        let range = range(&headers, length)?;
        let (start, end) = range.unwrap_or((0, length.saturating_sub(1)));
        let count = if length == 0 { 0 } else { end - start + 1 };
        let metrics = state.metrics.clone();
        let follow = Follow {
            stall: store.limits().stall,
            store,
            id,
            reader: Arc::new(reader),
            at: start,
            end: start + count,
            drop_behind: DropBehind::at(start),
        };
        let stream = futures_util::stream::unfold(follow, |mut f| async move {
            match f.next().await {
                Ok(Some(bytes)) => Some((Ok(bytes), f)),
                Ok(None) => None,
                Err(e) => {
                    tracing::debug!("file download ended early: {e}");
                    // The last item: `at` moves to the end.
                    f.at = f.end;
                    Some((Err(e), f))
                }
            }
        })
        .inspect(move |r| {
            if let Ok(b) = r {
                metrics.files_downloaded_bytes.inc_by(b.len() as u64);
            }
        });
        let mut response = Response::new(Body::from_stream(stream));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if range.is_some() {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{length}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        Ok::<_, Response>(response)
    };
    run.await.unwrap_or_else(|r| r)
}

/// A download's position in a blob that may still be growing.
struct Follow {
    store: Arc<BlobStore>,
    id: BlobId,
    reader: Arc<Reader>,
    stall: Duration,
    /// Next byte to send.
    at: u64,
    /// One past the last byte to send.
    end: u64,
    /// Pages sent leave the page cache (see [`DropBehind`]).
    drop_behind: DropBehind,
}

impl Follow {
    /// The next piece of the range, waiting for the upload if needed; None at its end.
    async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        if self.at >= self.end {
            return Ok(None);
        }
        // Bounded: each round sees new bytes, or waits at most the rest of
        // the stall bound and then ends; an upload that trickles bytes keeps
        // it going only until the blob expires.
        let available = loop {
            let committed = *self.reader.committed.borrow();
            if committed > self.at {
                break committed;
            }
            let idle = self.store.idle(&self.id, unix_now());
            let Some(idle) = idle else {
                // Complete since (the loop sees it next round), or gone.
                if *self.reader.committed.borrow() > self.at {
                    continue;
                }
                return Err(std::io::Error::other("the file was deleted or expired"));
            };
            if idle >= self.stall {
                return Err(std::io::Error::other(format!(
                    "upload stalled: nothing received for {} s",
                    idle.as_secs()
                )));
            }
            let mut committed = self.reader.committed.clone();
            let wait = self.stall - idle + Duration::from_millis(20);
            let at = self.at;
            let waited = tokio::time::timeout(wait, async move {
                committed.wait_for(|&c| c > at).await.is_ok()
            })
            .await;
            if waited == Ok(false) {
                return Err(std::io::Error::other("the file was deleted or expired"));
            }
        };
        let n = (available.min(self.end) - self.at).min(READ_BYTES as u64) as usize;
        let (reader, at, mut drop_behind) = (self.reader.clone(), self.at, self.drop_behind);
        let (bytes, drop_behind) = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; n];
            reader.file.read_exact_at(&mut buf, at)?;
            drop_behind.advance(&reader.file, at + n as u64);
            Ok::<_, std::io::Error>((buf, drop_behind))
        })
        .await
        .map_err(std::io::Error::other)??;
        self.drop_behind = drop_behind;
        self.at += n as u64;
        Ok(Some(Bytes::from(bytes)))
    }
}

/// `DELETE /files/{id}`: by its uploader or the room's operator.
async fn delete_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let store = store(&state)?;
        let id = blob_id(&id)?;
        let grants = grants(&state, &headers)?;
        blocking(move || {
            store.delete(&id, unix_now(), |m| {
                m.room == grants.room && (m.owner == grants.identity || grants.room_admin)
            })
        })
        .await?
        .map_err(store_error)?;
        state.metrics.files_deleted.inc();
        Ok::<_, Response>(StatusCode::NO_CONTENT.into_response())
    };
    run.await.unwrap_or_else(|r| r)
}

/// `DELETE /files`: every file of the token's room; operator tokens only.
async fn delete_room(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let run = async {
        let store = store(&state)?;
        let grants = grants(&state, &headers)?;
        if !grants.room_admin {
            return Err(text(
                StatusCode::FORBIDDEN,
                "deleting a room's files needs an operator token (room_admin)",
            ));
        }
        let n = blocking(move || store.delete_room(&grants.room)).await?;
        state.metrics.files_deleted.inc_by(n as u64);
        Ok::<_, Response>(text(StatusCode::OK, format!("{n} files deleted")))
    };
    run.await.unwrap_or_else(|r| r)
}
