//! The page, embedded in the binary: no CDN, no font service, nothing fetched from elsewhere
//! (clusters are often air-gapped). Nothing here is secret: the page takes this run's token
//! from the URL's fragment.

use hyper::body::Bytes;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The content type and bytes served at `path`.
pub fn get(path: &str) -> Option<(&'static str, Bytes)> {
    match path {
        "/" | "/index.html" => Some((
            "text/html; charset=utf-8",
            Bytes::from_static(INDEX.as_bytes()),
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
    fn nothing_secret_or_external_is_in_the_assets() {
        let (_, html) = get("/").expect("index");
        let html = String::from_utf8(html.to_vec()).expect("utf8");
        assert!(!html.contains("token"), "the page carries no token");
        for asset in [INDEX, APP_JS, APP_CSS] {
            // The SVG namespace is a name, not something fetched.
            let asset = asset.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !asset.contains("http://") && !asset.contains("https://"),
                "external URL"
            );
        }
        assert!(get("/etc/passwd").is_none());
        assert!(
            total_size() < 300 * 1024,
            "assets are {} bytes",
            total_size()
        );
    }
}
