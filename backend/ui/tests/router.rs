//! The UI router: what it serves, with which headers, and that the embedded
//! scripts never turn data into markup.
#![allow(clippy::unwrap_used, clippy::panic)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let r = picket_ui::router()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn assert_security_headers(h: &axum::http::HeaderMap) {
    assert_eq!(h[header::CONTENT_SECURITY_POLICY], picket_ui::CSP);
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
}

#[tokio::test]
async fn index_for_root_and_client_routes() {
    for path in ["/", "/alerts", "/devices/abc", "/favicon.ico"] {
        let (status, h, body) = get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_security_headers(&h);
        assert!(body.contains(&format!("/assets/{}/js/app.js", picket_ui::BUILD_ID)));
        assert!(!body.contains("__BUILD__"));
    }
}

#[tokio::test]
async fn index_revalidates_with_its_etag() {
    let (_, h, _) = get("/").await;
    let etag = h[header::ETAG].clone();
    let r = picket_ui::router()
        .oneshot(
            Request::get("/alerts")
                .header(header::IF_NONE_MATCH, etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn api_paths_are_not_the_app() {
    for path in ["/api", "/api/v1/nothing"] {
        let (status, h, _) = get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_security_headers(&h);
    }
}

#[tokio::test]
async fn assets_have_types_and_immutable_caching() {
    let b = picket_ui::BUILD_ID;
    for (path, ty) in [
        ("js/app.js", "text/javascript; charset=utf-8"),
        ("js/pages/alerts.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let (status, h, body) = get(&format!("/assets/{b}/{path}")).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(h[header::CONTENT_TYPE], ty, "{path}");
        assert_eq!(
            h[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_security_headers(&h);
        assert!(!body.is_empty());
    }
    for path in [
        format!("/assets/{b}/nope.js"),
        format!("/assets/{b}/index.html"),
        "/assets/0000000000000000/js/app.js".to_owned(),
        format!("/assets/{b}/../Cargo.toml"),
    ] {
        let (status, h, _) = get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
    }
}

#[test]
fn build_id_is_hex() {
    assert_eq!(picket_ui::BUILD_ID.len(), 16);
    assert!(picket_ui::BUILD_ID.bytes().all(|c| c.is_ascii_hexdigit()));
}

/// Every embedded script and the page itself: no HTML parsing of strings,
/// no eval, no inline script or style (the CSP would refuse them anyway).
#[test]
fn assets_never_parse_markup() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/assets");
    let mut files = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let forbidden = [
        ".innerHTML",
        ".outerHTML",
        "insertAdjacentHTML(",
        "document.write",
        "eval(",
        "new Function",
        "createContextualFragment",
        "DOMParser",
        "setAttribute('style'",
        "javascript:",
    ];
    let mut checked = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for bad in forbidden {
            assert!(!text.contains(bad), "{} contains {bad}", f.display());
        }
        if f.extension().is_some_and(|e| e == "html") {
            assert!(!text.contains("style="), "inline style in {}", f.display());
            assert!(
                !text.contains("<script>"),
                "inline script in {}",
                f.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 10);
}

/// Every file under assets/ is embedded (a new module not listed in
/// `ASSETS` would 404 in the browser).
#[tokio::test]
async fn every_asset_file_is_served() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/assets"));
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if rel == "index.html" {
                continue;
            }
            let (status, _, _) = get(&format!("/assets/{}/{rel}", picket_ui::BUILD_ID)).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{rel} is not embedded: add it to ASSETS"
            );
        }
    }
}
