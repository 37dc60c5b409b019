//! The dashboard at `/ui`: static files from `ui/`, embedded in the binary at build time (no
//! front-end build step, no network at run time). Each file carries an `ETag` (a hash of its
//! content, computed once) and is revalidated on every load (`Cache-Control: no-cache`), so an
//! upgraded binary never serves a stale script while an unchanged one costs a 304.

use crate::api::AppState;
use crate::api::problem::ApiError;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// One embedded file.
struct Asset {
    path: &'static str,
    body: &'static [u8],
    content_type: &'static str,
}

macro_rules! assets {
    ($($path:literal => $type:expr),* $(,)?) => {
        &[$(Asset {
            path: $path,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)),
            content_type: $type,
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `ui/` (a test checks that none is missing).
static ASSETS: &[Asset] = assets![
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "app.js" => JS,
    "api.js" => JS,
    "format.js" => JS,
    "dom.js" => JS,
    "charts.js" => JS,
    "views/pipelines.js" => JS,
    "views/pipeline.js" => JS,
    "views/create.js" => JS,
    "views/state.js" => JS,
    "views/output.js" => JS,
    "views/windows.js" => JS,
    "views/checkpoints.js" => JS,
    "views/cluster.js" => JS,
    "vendor/uPlot.esm.js" => JS,
    "vendor/uPlot.min.css" => "text/css; charset=utf-8",
    "vendor/LICENSE" => "text/plain; charset=utf-8",
    "vendor/README.md" => "text/markdown; charset=utf-8",
];

/// `"<first 128 bits of the SHA-256 in hex>"`, per asset, in `ASSETS` order.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let hash = Sha256::digest(a.body);
            HeaderValue::try_from(format!("\"{}\"", hex::encode(&hash[..16])))
                .expect("hex is a valid header value")
        })
        .collect()
});

/// The page only talks to its own origin; this makes the browser refuse anything else.
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'";

/// `/ui` (redirected to `/ui/`, so that the page's relative imports resolve), `/ui/` (the
/// page) and `/ui/<file>`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/ui/{*file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move {
                serve(&file, &headers)
            }),
        )
}

fn serve(file: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == file) else {
        return ApiError::RouteNotFound {
            path: format!("/ui/{file}"),
        }
        .into_response();
    };
    let (asset, etag) = (&ASSETS[i], &ETAGS[i]);
    let common = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if headers.get_all(header::IF_NONE_MATCH).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| etag_matches(v, etag.to_str().unwrap_or("")))
    }) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let security = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    (common, security, asset.body).into_response()
}

/// Whether an `If-None-Match` value names `etag` (RFC 9110: weak comparison, `*` matches).
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        let tag = "\"abc\"";
        assert!(etag_matches("\"abc\"", tag));
        assert!(etag_matches("W/\"abc\"", tag));
        assert!(etag_matches("\"x\", \"abc\"", tag));
        assert!(etag_matches("*", tag));
        assert!(!etag_matches("\"abd\"", tag));
        assert!(!etag_matches("abc", tag));
    }

    #[test]
    fn every_file_under_ui_is_embedded() {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    let rel = path.strip_prefix(base).unwrap();
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut on_disk = Vec::new();
        walk(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "ui/ and ASSETS in src/ui.rs differ");
    }

    #[test]
    fn etags_are_distinct_per_content() {
        let mut tags: Vec<_> = ETAGS.iter().collect();
        tags.sort_by_key(|t| t.as_bytes().to_vec());
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
