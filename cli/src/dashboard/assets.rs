//! The page, embedded in the binary: no CDN, no font service, nothing fetched from elsewhere
//! (clusters are often air-gapped). `index.html` carries this run's token in a meta tag, which
//! the page repeats in the `X-Faultline-Token` header of every state-changing request.

use hyper::body::Bytes;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The content type and bytes served at `path`.
pub fn get(path: &str, token: &str) -> Option<(&'static str, Bytes)> {
    match path {
        "/" | "/index.html" => Some((
            "text/html; charset=utf-8",
            Bytes::from(INDEX.replace("{{TOKEN}}", token)),
        )),
        "/app.js" => Some((
            "text/javascript; charset=utf-8",
            Bytes::from_static(APP_JS.as_bytes()),
        )),
        "/app.css" => Some((
            "text/css; charset=utf-8",
            Bytes::from_static(APP_CSS.as_bytes()),
        )),
        _ => None,
    }
}

/// Bytes of every asset as served (before compression).
#[cfg(test)]
pub fn total_size() -> usize {
    INDEX.len() + APP_JS.len() + APP_CSS.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_placed_and_nothing_external_is_referenced() {
        let (_, html) = get("/", "abc123").expect("index");
        let html = String::from_utf8(html.to_vec()).expect("utf8");
        assert!(html.contains(r#"content="abc123""#));
        for asset in [INDEX, APP_JS, APP_CSS] {
            // The SVG namespace is a name, not something fetched.
            let asset = asset.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !asset.contains("http://") && !asset.contains("https://"),
                "external URL"
            );
        }
        assert!(get("/etc/passwd", "t").is_none());
        assert!(
            total_size() < 300 * 1024,
            "assets are {} bytes",
            total_size()
        );
    }
}
