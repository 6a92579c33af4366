//! URLs for guards, checks and notifications: `http[s]://host[:port][/path][?query]`.

use std::fmt;

/// An HTTP or HTTPS URL: `http[s]://host[:port][/path][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// True for `https://` (TLS; default port 443).
    pub https: bool,
    /// Host name or address; IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// Starts with `/`; includes the query string if any.
    pub path_and_query: String,
}

impl HttpUrl {
    /// The `Host` header value.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Parses `text`; errors say what is wrong (the caller prefixes the field path).
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        let https = lower.starts_with("https://");
        let rest = if https {
            &t["https://".len()..]
        } else if lower.starts_with("http://") {
            &t["http://".len()..]
        } else {
            return Err(format!(
                "{t:?} is not an http:// or https:// URL (e.g. http://127.0.0.1:9090)"
            ));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if tail.contains('#') {
            return Err(format!("{t:?}: a URL fragment (#...) is not allowed"));
        }
        if authority.contains('@') {
            return Err(format!("{t:?}: user information (user@) is not allowed"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{t:?}: unclosed '[' in the host"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{t:?}: {h:?} is not an IPv6 address"));
            }
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let host_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':';
        if host.is_empty() || !host.chars().all(host_ok) {
            return Err(format!("{t:?}: the host is missing or invalid"));
        }
        let port = match port {
            None if https => 443,
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{t:?}: port {p:?} is outside 1..=65535"))?,
        };
        let path_and_query = if tail.starts_with('/') {
            tail.to_string()
        } else {
            format!("/{tail}")
        };
        if path_and_query
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "{t:?}: the path contains spaces or control characters"
            ));
        }
        Ok(HttpUrl {
            https,
            host: host.to_string(),
            port,
            path_and_query,
        })
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:9090").expect("url");
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("127.0.0.1", 9090, "/")
        );
        let u = HttpUrl::parse("HTTP://Example.org/healthz?x=1").expect("url");
        assert_eq!((u.port, u.path_and_query.as_str()), (80, "/healthz?x=1"));
        assert_eq!(u.to_string(), "http://Example.org:80/healthz?x=1");
        let u = HttpUrl::parse("http://[::1]:8080/p").expect("v6");
        assert_eq!(
            (u.host.as_str(), u.authority()),
            ("::1", "[::1]:8080".to_string())
        );
        let u = HttpUrl::parse("https://prom.example:9443/api").expect("https");
        assert!(u.https);
        assert_eq!(u.to_string(), "https://prom.example:9443/api");
        assert_eq!(HttpUrl::parse("HTTPS://x").expect("https").port, 443);
        assert!(!HttpUrl::parse("http://x").expect("http").https);
        assert!(HttpUrl::parse("ftp://x")
            .expect_err("ftp")
            .contains("is not an http:// or https:// URL"));
        assert!(HttpUrl::parse("http://x:0")
            .expect_err("port")
            .contains("outside 1..=65535"));
        assert!(HttpUrl::parse("http://u@x")
            .expect_err("user")
            .contains("user"));
        assert!(HttpUrl::parse("http:///p")
            .expect_err("host")
            .contains("host"));
    }
}
