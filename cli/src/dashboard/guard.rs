//! Who may use the local dashboard endpoint: the holder of this run's random token, from the
//! dashboard's own origin. The checks are pure functions of the request's headers so each
//! refusal can be tested on its own.
//!
//! - The token reaches the browser once, in the URL `faultctl dashboard` prints; the first
//!   request trades it for an HttpOnly, SameSite=Strict cookie and a redirect to a clean URL.
//! - Every other request needs that cookie.
//! - A request that changes something (anything but GET/HEAD) also needs the token in the
//!   `X-Faultline-Token` header (the page reads it from its own HTML, which another site cannot)
//!   and, when the browser sends them, an `Origin` equal to the dashboard's and a
//!   `Sec-Fetch-Site` of `same-origin`.
//! - On a loopback listener the `Host` header must name the listener, which defeats DNS
//!   rebinding (a hostile name resolving to 127.0.0.1 carries its own name in `Host`).

use std::net::SocketAddr;

use hyper::header::{HeaderMap, COOKIE, HOST, ORIGIN};
use hyper::Method;

/// The cookie that carries the token after the first visit.
pub const COOKIE_NAME: &str = "faultline_dashboard";
/// The header a state-changing request repeats the token in.
pub const TOKEN_HEADER: &str = "x-faultline-token";

/// Why a request is refused (the text is shown to whoever made it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No valid token: open the URL faultctl printed.
    NoToken,
    /// The Host header does not name this listener.
    Host(String),
    /// A cross-site request.
    Origin(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NoToken => 401,
            Refusal::Host(_) | Refusal::Origin(_) => 403,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::NoToken => "this dashboard needs the token from the URL `faultctl dashboard` \
                                 printed; open that URL"
                .into(),
            Refusal::Host(h) => format!(
                "Host {h:?} does not name this dashboard's listener; open the URL `faultctl \
                 dashboard` printed"
            ),
            Refusal::Origin(o) => format!("cross-site request from {o:?} refused"),
        }
    }
}

/// The checks of one dashboard run.
#[derive(Debug, Clone)]
pub struct Guard {
    pub token: String,
    pub listen: SocketAddr,
    /// Listening on a non-loopback address (`--listen-any`): Host cannot be pinned.
    pub any_host: bool,
}

impl Guard {
    /// The Host values a loopback listener answers to.
    fn allowed_hosts(&self) -> Vec<String> {
        let port = self.listen.port();
        let mut hosts = vec![format!("{}:{port}", authority_ip(&self.listen))];
        if self.listen.ip().is_loopback() {
            hosts.push(format!("localhost:{port}"));
        }
        hosts
    }

    /// Checks `Host` (loopback listeners only).
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if self.any_host {
            return Ok(());
        }
        let host = header(headers, HOST.as_str()).unwrap_or_default();
        if self
            .allowed_hosts()
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host))
        {
            Ok(())
        } else {
            Err(Refusal::Host(host))
        }
    }

    /// True when `?token=` in the query carries this run's token.
    pub fn query_token_ok(&self, query: Option<&str>) -> bool {
        query
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .any(|(k, v)| k == "token" && constant_eq(v, &self.token))
    }

    /// Checks the cookie, and for state-changing methods the header token and the origin.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
        self.check_host(headers)?;
        if !cookie_token(headers).is_some_and(|t| constant_eq(&t, &self.token)) {
            return Err(Refusal::NoToken);
        }
        if method == Method::GET || method == Method::HEAD {
            return Ok(());
        }
        if let Some(site) = header(headers, "sec-fetch-site") {
            if site != "same-origin" {
                return Err(Refusal::Origin(format!("Sec-Fetch-Site {site}")));
            }
        }
        if let Some(origin) = header(headers, ORIGIN.as_str()) {
            let host = header(headers, HOST.as_str()).unwrap_or_default();
            if !origin.eq_ignore_ascii_case(&format!("http://{host}")) {
                return Err(Refusal::Origin(origin));
            }
        }
        match header(headers, TOKEN_HEADER) {
            Some(t) if constant_eq(&t, &self.token) => Ok(()),
            _ => Err(Refusal::NoToken),
        }
    }

    /// The Set-Cookie value that hands the token to the browser.
    pub fn set_cookie(&self) -> String {
        format!(
            "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/",
            self.token
        )
    }
}

/// `127.0.0.1` or `[::1]` as it appears in a URL authority.
pub fn authority_ip(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.to_string())
}

/// Compares without stopping at the first difference.
fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A fresh random token (256 bits, hex).
pub fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn guard() -> Guard {
        Guard {
            token: "t0k".into(),
            listen: "127.0.0.1:8080".parse().expect("addr"),
            any_host: false,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn a_get_needs_the_cookie_and_the_right_host() {
        let g = guard();
        let ok = headers(&[
            ("host", "127.0.0.1:8080"),
            ("cookie", "a=b; faultline_dashboard=t0k"),
        ]);
        assert_eq!(g.check(&Method::GET, &ok), Ok(()));
        let localhost = headers(&[
            ("host", "localhost:8080"),
            ("cookie", "faultline_dashboard=t0k"),
        ]);
        assert_eq!(g.check(&Method::GET, &localhost), Ok(()));
        let no_cookie = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(g.check(&Method::GET, &no_cookie), Err(Refusal::NoToken));
        let wrong = headers(&[
            ("host", "127.0.0.1:8080"),
            ("cookie", "faultline_dashboard=t0x"),
        ]);
        assert_eq!(g.check(&Method::GET, &wrong), Err(Refusal::NoToken));
        let rebound = headers(&[
            ("host", "evil.example:8080"),
            ("cookie", "faultline_dashboard=t0k"),
        ]);
        assert_eq!(
            g.check(&Method::GET, &rebound),
            Err(Refusal::Host("evil.example:8080".into()))
        );
    }

    #[test]
    fn a_post_needs_the_header_token_and_its_own_origin() {
        let g = guard();
        let base = [
            ("host", "127.0.0.1:8080"),
            ("cookie", "faultline_dashboard=t0k"),
        ];
        let mut ok = headers(&base);
        ok.append("origin", HeaderValue::from_static("http://127.0.0.1:8080"));
        ok.append("sec-fetch-site", HeaderValue::from_static("same-origin"));
        ok.append(TOKEN_HEADER, HeaderValue::from_static("t0k"));
        assert_eq!(g.check(&Method::POST, &ok), Ok(()));

        // The cookie alone (what a cross-site form would carry, were SameSite ignored) is not
        // enough.
        assert_eq!(
            g.check(&Method::POST, &headers(&base)),
            Err(Refusal::NoToken)
        );

        let mut other = headers(&base);
        other.append("origin", HeaderValue::from_static("http://evil.example"));
        other.append(TOKEN_HEADER, HeaderValue::from_static("t0k"));
        assert_eq!(
            g.check(&Method::POST, &other),
            Err(Refusal::Origin("http://evil.example".into()))
        );

        let mut cross = headers(&base);
        cross.append("sec-fetch-site", HeaderValue::from_static("cross-site"));
        cross.append(TOKEN_HEADER, HeaderValue::from_static("t0k"));
        assert!(matches!(
            g.check(&Method::POST, &cross),
            Err(Refusal::Origin(_))
        ));
    }

    #[test]
    fn the_query_token_is_matched_exactly() {
        let g = guard();
        assert!(g.query_token_ok(Some("token=t0k")));
        assert!(g.query_token_ok(Some("x=1&token=t0k")));
        assert!(!g.query_token_ok(Some("token=t0")));
        assert!(!g.query_token_ok(Some("token=t0kk")));
        assert!(!g.query_token_ok(None));
    }

    #[test]
    fn any_host_skips_only_the_host_check() {
        let g = Guard {
            any_host: true,
            listen: "0.0.0.0:8080".parse().expect("addr"),
            ..guard()
        };
        let h = headers(&[("host", "node-1.example:8080")]);
        assert_eq!(g.check(&Method::GET, &h), Err(Refusal::NoToken));
        let h = headers(&[
            ("host", "node-1.example:8080"),
            ("cookie", "faultline_dashboard=t0k"),
        ]);
        assert_eq!(g.check(&Method::GET, &h), Ok(()));
    }

    #[test]
    fn tokens_are_long_and_fresh() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
