//! The Picket fleet backend's management web UI: a single-page console
//! (sign-in, overview, devices, alerts with live updates and triage, rule
//! bundles and their staged rollouts, rules seen in alerts, administration)
//! served by the backend itself.
//!
//! # No build step
//!
//! The UI is plain ES modules and one CSS file under `assets/`, embedded in
//! the binary with `include_bytes!` and served as they are. There is no npm,
//! bundler or transpiler between the source and what the browser runs:
//! every browser the console targets loads ES modules natively, the code is
//! small (tens of KiB), HTTP/1.1 keep-alive on loopback or a LAN makes a
//! dozen module requests cheap, and the immutable cache headers below make
//! every load after the first one free. What is reviewed is what runs, and
//! the Rust build stays the only build. The one generated file,
//! `assets/js/attack.js` (ATT&CK tactics and technique names from
//! picket-rules), is written by `tests/attack_js.rs` and checked by it.
//!
//! # Serving
//!
//! [`router()`] answers:
//!
//! - `/assets/<build>/<file>`: the embedded files with their content type
//!   and `Cache-Control: public, max-age=31536000, immutable`. `<build>` is
//!   a hash of every embedded file computed at compile time ([`BUILD_ID`]),
//!   so a new build gets new URLs and relative module imports stay
//!   consistent within one build. A request naming another build is a 404.
//! - everything else (`/`, `/alerts`, ...) except `/api/...`: `index.html`
//!   with `Cache-Control: no-cache`; the UI routes on the URL hash
//!   (`#/alerts/<id>`), so any path loads the app.
//! - `/api/...`: a 404, for when the router is mounted alone (the backend
//!   mounts the API router in front of it with `picket_api::router_with_ui`).
//!
//! Every answer carries a strict Content-Security-Policy ([`CSP`]: no inline
//! script or style, connections only to this origin), `X-Content-Type-Options:
//! nosniff`, `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`.
//!
//! # Handling hostile data
//!
//! Command lines, paths, host names and every other field come from the
//! monitored machines, which an attacker may control. The scripts build the
//! DOM with `createElement` and `textContent` only (`assets/js/dom.js`);
//! nothing assigns `innerHTML` or builds HTML strings, and the CSP would
//! refuse an injected script anyway.
//!
//! # Example
//!
//! ```no_run
//! # async fn serve() -> std::io::Result<()> {
//! // Alone (the API would be mounted in front of it in the backend):
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, picket_ui::router()).await
//! # }
//! ```

use axum::body::Body;
use axum::extract::Path;
use axum::http::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'self'";

/// An embedded file: its path under `assets/` and its bytes.
struct Asset {
    path: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(Asset { path: $path, bytes: include_bytes!(concat!("../assets/", $path)) }),*]
    };
}

/// Every embedded file (`index.html` included: it is served at `/`).
const ASSETS: &[Asset] = assets![
    "index.html",
    "app.css",
    "icon.svg",
    "js/app.js",
    "js/api.js",
    "js/dom.js",
    "js/format.js",
    "js/live.js",
    "js/attack.js",
    "js/chart.js",
    "js/pages/login.js",
    "js/pages/overview.js",
    "js/pages/devices.js",
    "js/pages/device.js",
    "js/pages/alerts.js",
    "js/pages/alert.js",
    "js/pages/rules.js",
    "js/pages/hunts.js",
    "js/pages/rollouts.js",
    "js/pages/admin.js",
];

/// FNV-1a, 64 bits: stable across builds and Rust versions (unlike
/// `DefaultHasher`), and evaluable at compile time.
const fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

const fn build_hash() -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < ASSETS.len() {
        h = fnv1a(h, ASSETS[i].path.as_bytes());
        h = fnv1a(h, ASSETS[i].bytes);
        i += 1;
    }
    h
}

const fn hex16(v: u64) -> [u8; 16] {
    let digits = b"0123456789abcdef";
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = digits[((v >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

const BUILD_HEX: [u8; 16] = hex16(build_hash());

/// The asset URL segment of this build: 16 hex digits of a hash over every
/// embedded file.
pub const BUILD_ID: &str = match std::str::from_utf8(&BUILD_HEX) {
    Ok(s) => s,
    Err(_) => panic!("hex digits are UTF-8"),
};

/// The placeholder in `index.html` replaced with [`BUILD_ID`].
const BUILD_PLACEHOLDER: &str = "__BUILD__";

fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, text).into_response();
    security_headers(r.headers_mut());
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `index.html` with this build's asset URLs, built once.
fn index_html() -> &'static str {
    static INDEX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        let raw = asset("index.html").map_or(&[][..], |a| a.bytes);
        String::from_utf8_lossy(raw).replace(BUILD_PLACEHOLDER, BUILD_ID)
    })
}

fn index_etag() -> HeaderValue {
    // The index embeds BUILD_ID, so its tag changes with every build.
    HeaderValue::from_str(&format!("\"{BUILD_ID}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"index\""))
}

async fn serve_index(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let etag = index_etag();
    let mut r = if headers.get(IF_NONE_MATCH) == Some(&etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(index_html()))
    };
    let h = r.headers_mut();
    security_headers(h);
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(content_type("index.html")),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(ETAG, etag);
    r
}

async fn serve_asset(Path((build, path)): Path<(String, String)>) -> Response {
    if build != BUILD_ID {
        // An old page asking for its own build's files after an upgrade:
        // a reload fetches the new index.
        return plain(StatusCode::NOT_FOUND, "asset from another build: reload");
    }
    let Some(a) = asset(&path).filter(|a| a.path != "index.html") else {
        return plain(StatusCode::NOT_FOUND, "no such asset");
    };
    let mut r = Response::new(Body::from(a.bytes));
    let h = r.headers_mut();
    security_headers(h);
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(a.path)));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    r
}

/// The UI router: `/assets/<build>/...` and `index.html` for every other
/// path outside `/api/` (see the crate docs).
pub fn router() -> axum::Router {
    axum::Router::new()
        .route("/assets/{build}/{*path}", get(serve_asset))
        .fallback(serve_index)
}
