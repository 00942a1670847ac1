//! The dashboard's static files, embedded in the binary (`crates/weft-server/ui/`): plain
//! HTML, CSS and JavaScript, no build step, nothing fetched from elsewhere. They need no token:
//! they hold no data. The page asks for a token (or takes it from the URL fragment) and sends
//! it with every api call.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `(name, content type, bytes)`.
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../ui/app.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../ui/favicon.svg")),
];

/// Only our own files, no inline scripts, api calls to this origin only.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn serve(name: &str) -> Response {
    let Some((_, ctype, bytes)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no dashboard file {name:?}\n"),
        )
            .into_response();
    };
    let mut resp = (StatusCode::OK, *bytes).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    // Small files from the binary itself: always revalidate, so an upgrade shows at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

pub async fn index() -> Response {
    serve("index.html")
}

pub async fn asset(Path(file): Path<String>) -> Response {
    serve(&file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_embedded_and_typed() {
        for (name, ctype, bytes) in FILES {
            assert!(!bytes.is_empty(), "{name} is empty");
            let r = serve(name);
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], *ctype);
        }
        assert_eq!(serve("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        let html = std::str::from_utf8(FILES[0].2).unwrap();
        // Nothing from elsewhere (no CDN): every script and stylesheet is ours.
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(html.contains("/ui/app.js") && html.contains("/ui/app.css"));
    }
}
