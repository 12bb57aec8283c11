//! The web client: static files from `sfu/web/`, embedded in the binary so
//! `/` serves a working end-to-end encrypted call page with nothing else to
//! install.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file: path under `/web/`, content type, bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal) => {
        Asset {
            path: $path,
            content_type: content_type($path),
            body: include_bytes!(concat!("../web/", $path)),
        }
    };
}

/// The content type of an embedded file, by its extension (html, css, js).
const fn content_type(path: &str) -> &'static str {
    let b = path.as_bytes();
    match b {
        [.., b'h', b't', b'm', b'l'] => "text/html; charset=utf-8",
        [.., b'c', b's', b's'] => "text/css; charset=utf-8",
        [.., b'.', b'j', b's'] => "text/javascript; charset=utf-8",
        // Evaluated for a `static`: an asset of another type fails the build.
        _ => panic!("embedded web asset of unknown type"),
    }
}

static ASSETS: &[Asset] = &[
    asset!("index.html"),
    asset!("style.css"),
    asset!("adaptive.js"),
    asset!("app.js"),
    asset!("call.js"),
    asset!("chat.js"),
    asset!("files.js"),
    asset!("file-download.js"),
    asset!("media.js"),
    asset!("signaling.js"),
    asset!("ui.js"),
    asset!("e2ee/bytes.js"),
    asset!("e2ee/filecrypt.js"),
    asset!("e2ee/keys.js"),
    asset!("e2ee/sframe.js"),
    asset!("e2ee/transform.js"),
    asset!("e2ee/worker.js"),
];

/// The page may load only its own scripts and talk only to its own origin;
/// media and downloads come from blob: and mediastream: URLs.
const CSP: &str = "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; \
     connect-src 'self' blob:; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn serve(path: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            // Revalidate on every load so a new binary never mixes old and new modules.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Links carry the room and possibly a token: never leak them.
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        asset.body,
    )
        .into_response()
}

/// `/` (the call page) and `/web/{path}` (its modules and styles).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { serve("index.html") }))
        .route(
            "/web/{*path}",
            get(|Path(path): Path<String>| async move { serve(&path) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        // Each relative import in an embedded module must resolve to an embedded file.
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).expect("UTF-8 source");
            let dir = asset.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            for import in text
                .split("from \"./")
                .skip(1)
                .chain(text.split("new URL(\"./").skip(1))
            {
                let name = import.split('"').next().unwrap_or_default();
                let full = if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                };
                assert!(
                    ASSETS.iter().any(|a| a.path == full),
                    "{} imports {full}, which is not embedded",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn unknown_paths_are_404() {
        assert_eq!(serve("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(serve("index.html").status(), StatusCode::OK);
    }
}
