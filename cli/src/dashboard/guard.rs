//! Who may use the local dashboard endpoint: the holder of this run's random token, from the
//! dashboard's own page. The checks are pure functions of the request's headers so each refusal
//! can be tested on its own.
//!
//! - The token reaches the browser in the fragment of the URL `faultctl dashboard` prints
//!   (`/#token=...`): a fragment is never sent to any server. The page moves it into its
//!   `sessionStorage`, which belongs to this origin including its port, and clears the address
//!   bar.
//! - Every API request carries it in the `X-Faultline-Token` header (the live stream, which a
//!   browser opens without custom headers, in its `token` query parameter). No cookie is used:
//!   cookies are shared by every port of a host, so another local user's server on another
//!   port could read one.
//! - A request that changes something (anything but GET/HEAD) is also refused when the
//!   browser's `Origin` is not the dashboard's or its `Sec-Fetch-Site` is not `same-origin`.
//! - On a loopback listener the `Host` header must name the listener, which defeats DNS
//!   rebinding (a hostile name resolving to 127.0.0.1 carries its own name in `Host`).
//! - The page and its script and stylesheet carry no secret and are served to anyone who
//!   names the listener in `Host`.

use std::net::SocketAddr;

use hyper::header::{HeaderMap, HOST, ORIGIN};
use hyper::Method;

/// The header every API request carries the token in.
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

    /// Checks an API request: `Host`, the token (from the header, or for the live stream from
    /// `query_token`), and for state-changing methods the origin.
    pub fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<(), Refusal> {
        self.check_host(headers)?;
        let token = header(headers, TOKEN_HEADER).or_else(|| query_token.map(str::to_string));
        if !token.is_some_and(|t| constant_eq(&t, &self.token)) {
            return Err(Refusal::NoToken);
        }
        if method == Method::GET || method == Method::HEAD {
            return Ok(());
        }
        if query_token.is_some() && header(headers, TOKEN_HEADER).is_none() {
            // The query form is for the stream only; a write needs the header.
            return Err(Refusal::NoToken);
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
        Ok(())
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

/// `token=...` from a query string.
pub fn query_token(query: Option<&str>) -> Option<&str> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v)
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
    fn a_get_needs_the_header_token_and_the_right_host() {
        let g = guard();
        let ok = headers(&[("host", "127.0.0.1:8080"), (TOKEN_HEADER, "t0k")]);
        assert_eq!(g.check(&Method::GET, &ok, None), Ok(()));
        let localhost = headers(&[("host", "localhost:8080"), (TOKEN_HEADER, "t0k")]);
        assert_eq!(g.check(&Method::GET, &localhost, None), Ok(()));
        let none = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(g.check(&Method::GET, &none, None), Err(Refusal::NoToken));
        // A cookie is not a credential here (cookies are shared by every port of a host).
        let cookie = headers(&[
            ("host", "127.0.0.1:8080"),
            ("cookie", "faultline_dashboard=t0k"),
        ]);
        assert_eq!(g.check(&Method::GET, &cookie, None), Err(Refusal::NoToken));
        let wrong = headers(&[("host", "127.0.0.1:8080"), (TOKEN_HEADER, "t0x")]);
        assert_eq!(g.check(&Method::GET, &wrong, None), Err(Refusal::NoToken));
        let rebound = headers(&[("host", "evil.example:8080"), (TOKEN_HEADER, "t0k")]);
        assert_eq!(
            g.check(&Method::GET, &rebound, None),
            Err(Refusal::Host("evil.example:8080".into()))
        );
        // The stream's query form.
        assert_eq!(g.check(&Method::GET, &none, Some("t0k")), Ok(()));
        assert_eq!(
            g.check(&Method::GET, &none, Some("t0")),
            Err(Refusal::NoToken)
        );
    }

    #[test]
    fn a_post_needs_the_header_token_and_its_own_origin() {
        let g = guard();
        let base = [("host", "127.0.0.1:8080"), (TOKEN_HEADER, "t0k")];
        let mut ok = headers(&base);
        ok.append("origin", HeaderValue::from_static("http://127.0.0.1:8080"));
        ok.append("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert_eq!(g.check(&Method::POST, &ok, None), Ok(()));

        let no_header = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(
            g.check(&Method::POST, &no_header, Some("t0k")),
            Err(Refusal::NoToken),
            "the query form does not make a write"
        );

        let mut other = headers(&base);
        other.append("origin", HeaderValue::from_static("http://evil.example"));
        assert_eq!(
            g.check(&Method::POST, &other, None),
            Err(Refusal::Origin("http://evil.example".into()))
        );

        let mut same_site = headers(&base);
        same_site.append("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(matches!(
            g.check(&Method::POST, &same_site, None),
            Err(Refusal::Origin(_))
        ));
    }

    #[test]
    fn the_query_token_is_found_exactly() {
        assert_eq!(query_token(Some("token=t0k")), Some("t0k"));
        assert_eq!(query_token(Some("x=1&token=t0k")), Some("t0k"));
        assert_eq!(query_token(Some("tokens=t0k")), None);
        assert_eq!(query_token(None), None);
    }

    #[test]
    fn any_host_skips_only_the_host_check() {
        let g = Guard {
            any_host: true,
            listen: "0.0.0.0:8080".parse().expect("addr"),
            ..guard()
        };
        let h = headers(&[("host", "node-1.example:8080")]);
        assert_eq!(g.check(&Method::GET, &h, None), Err(Refusal::NoToken));
        let h = headers(&[("host", "node-1.example:8080"), (TOKEN_HEADER, "t0k")]);
        assert_eq!(g.check(&Method::GET, &h, None), Ok(()));
    }

    #[test]
    fn tokens_are_long_and_fresh() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
