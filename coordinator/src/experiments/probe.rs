//! What guards and checks ask over HTTP(S) (through [`crate::http`]): Prometheus instant
//! queries and their answers, and HTTP probes with their method, body and headers.

use std::time::Duration;

use faultline_core::experiment::{HttpAccess, HttpMethod, HttpUrl};
use hyper::body::Bytes;
use serde::Deserialize;

use crate::http::{self, Request};

/// An HTTP probe: the status, or why there is none.
pub async fn probe(
    url: &HttpUrl,
    method: HttpMethod,
    body: Option<&str>,
    access: &HttpAccess,
    timeout: Duration,
) -> Result<u16, String> {
    let req = Request {
        url,
        path_and_query: &url.path_and_query,
        method: method.as_str(),
        headers: &[],
        body: body.map(|b| Bytes::from(b.to_string())),
        access,
        timeout,
    };
    http::send(&req).await.map(|(status, _)| status)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path of an instant query under a Prometheus base URL.
pub fn query_path(base: &HttpUrl, query: &str) -> String {
    format!(
        "{}/api/v1/query?query={}",
        base.path_and_query.trim_end_matches('/'),
        encode_component(query)
    )
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

fn sample_value(v: &serde_json::Value) -> Result<f64, String> {
    let text = v
        .get(1)
        .and_then(|s| s.as_str())
        .ok_or_else(|| format!("a sample is not [time, \"value\"]: {v}"))?;
    text.parse::<f64>()
        .map_err(|_| format!("sample value {text:?} is not a number"))
}

/// The values of an instant query's answer: every series of a vector, or the scalar. An empty
/// vector is an empty list (no data).
pub fn parse_answer(status: u16, body: &[u8]) -> Result<Vec<f64>, String> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        format!("HTTP {status}: not a Prometheus API answer ({e}): {text:?}")
    })?;
    if answer.status != "success" {
        return Err(format!(
            "HTTP {status}: Prometheus says {}: {}",
            answer.error_type.as_deref().unwrap_or("error"),
            answer.error.as_deref().unwrap_or("(no message)")
        ));
    }
    let data = answer
        .data
        .ok_or_else(|| format!("HTTP {status}: a success answer without data"))?;
    match data.result_type.as_str() {
        "vector" => data
            .result
            .as_array()
            .ok_or("a vector result that is not a list")?
            .iter()
            .map(|s| sample_value(s.get("value").unwrap_or(&serde_json::Value::Null)))
            .collect(),
        "scalar" => Ok(vec![sample_value(&data.result)?]),
        other => Err(format!(
            "the query returned a {other}; guards need an instant vector or a scalar"
        )),
    }
}

/// Runs an instant query: the values, or why the guard cannot be evaluated.
pub async fn prometheus(
    url: &HttpUrl,
    query: &str,
    access: &HttpAccess,
    timeout: Duration,
) -> Result<Vec<f64>, String> {
    let path = query_path(url, query);
    let req = Request {
        url,
        path_and_query: &path,
        method: "GET",
        headers: &[],
        body: None,
        access,
        timeout,
    };
    let (status, body) = http::send(&req).await?;
    if let Some(hint) = http::auth_hint(status, access) {
        return Err(format!("prometheus {url}: {hint}"));
    }
    parse_answer(status, &body).map_err(|e| format!("prometheus {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_queries() {
        assert_eq!(
            encode_component("rate(x{a=\"b c\"}[5s]) > 0.05"),
            "rate%28x%7Ba%3D%22b%20c%22%7D%5B5s%5D%29%20%3E%200.05"
        );
        let base = HttpUrl::parse("http://p:9090/prom/").expect("url");
        assert_eq!(query_path(&base, "up"), "/prom/api/v1/query?query=up");
    }

    #[test]
    fn parses_the_real_api_shapes() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up","job":"a"},"value":[1435781451.781,"1"]},
            {"metric":{"job":"b"},"value":[1435781451.781,"0.25"]}]}}"#;
        assert_eq!(parse_answer(200, vector), Ok(vec![1.0, 0.25]));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_answer(200, empty), Ok(vec![]));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1435781451.781,"NaN"]}}"#;
        assert!(parse_answer(200, scalar).expect("scalar")[0].is_nan());
        let inf = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#;
        assert_eq!(parse_answer(200, inf), Ok(vec![f64::INFINITY]));
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        assert_eq!(
            parse_answer(400, bad),
            Err("HTTP 400: Prometheus says bad_data: parse error at char 5".into())
        );
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse_answer(200, matrix)
            .expect_err("matrix")
            .contains("returned a matrix"));
        assert!(parse_answer(502, b"<html>bad gateway</html>")
            .expect_err("html")
            .starts_with("HTTP 502: not a Prometheus API answer"));
    }
}
