//! Embedded assets, served under a path that holds a hash of their content
//! so they can be cached for a year and a new binary never serves stale
//! ones. Only names embedded at build time exist: nothing reads the disk.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// The content type of an asset we serve, by its name; others are not served.
fn content_type(name: &str) -> Option<&'static str> {
    match name.rsplit_once('.')?.1 {
        "js" => Some("text/javascript; charset=utf-8"),
        "css" => Some("text/css; charset=utf-8"),
        _ => None,
    }
}

/// The first 16 hex digits of the asset's SHA-256.
fn hash_of(name: &str) -> Option<String> {
    let file = Assets::get(name)?;
    Some(
        file.metadata.sha256_hash()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Where templates link asset `name`: `/assets/{hash}/{name}`.
pub fn asset_path(name: &str) -> String {
    format!(
        "/assets/{}/{name}",
        hash_of(name).unwrap_or_else(|| "missing".into())
    )
}

pub async fn serve(Path((hash, name)): Path<(String, String)>) -> Response {
    let (Some(kind), Some(file)) = (content_type(&name), Assets::get(&name)) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    if hash_of(&name).as_deref() != Some(hash.as_str()) {
        // An old page asking for an old version: send it to the current one.
        return (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            "no such asset version\n",
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        file.data,
    )
        .into_response()
}
