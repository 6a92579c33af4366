//! `faultctl dashboard`: the web UI, served on localhost by faultctl itself and acting with the
//! identity faultctl already uses (no new server, no new credentials), the way `kubectl proxy`
//! does. The page is embedded in the binary ([`assets`]); every request passes [`guard`]; every
//! browser action becomes one gRPC call ([`api`]); the experiment page follows
//! `Experiments.Watch` as server-sent events.

mod api;
mod assets;
mod guard;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use faultline_identity::spiffe::identity_of_file;
use faultline_proto::pb;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::args::DashboardArgs;
use crate::client::Target;
use crate::error::CliError;
use api::{Api, Reply, Route};
use guard::Guard;

type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (an experiment document).
const MAX_BODY: usize = 1 << 20;

/// Runs until Ctrl-C. Prints the URL (with this run's token) first.
pub async fn run(
    target: &Target,
    args: &DashboardArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let listen = args.listen;
    if !listen.ip().is_loopback() && !args.listen_any {
        return Err(CliError::Usage {
            flag: "--listen",
            reason: format!(
                "{listen} is not a loopback address: whoever reaches the dashboard acts as \
                 identity {}; pass --listen-any as well to serve it there anyway",
                target.identity.stem()
            ),
        });
    }
    let identity = identity_of_file(&target.cert_paths().cert).map_err(CliError::Tls)?;
    let channel = target.channel().await?;
    let api = Api {
        experiments: pb::experiments_client::ExperimentsClient::new(channel.clone())
            .max_decoding_message_size(64 << 20),
        fleet: pb::fleet_client::FleetClient::new(channel.clone())
            .max_decoding_message_size(64 << 20),
        schedules: pb::schedules_client::SchedulesClient::new(channel.clone())
            .max_decoding_message_size(64 << 20),
        workflows: pb::workflows_client::WorkflowsClient::new(channel)
            .max_decoding_message_size(64 << 20),
        identity: identity.clone(),
        coordinator: target.url.clone(),
        timeout: target.timeout,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::Usage {
            flag: "--listen",
            reason: format!("cannot listen on {listen}: {e}"),
        })?;
    let bound = listener.local_addr().map_err(|e| CliError::Usage {
        flag: "--listen",
        reason: format!("{listen}: {e}"),
    })?;
    let guard = Guard {
        token: guard::new_token(),
        listen: bound,
        any_host: !bound.ip().is_loopback(),
    };
    let shown = if bound.ip().is_unspecified() {
        SocketAddr::new([127, 0, 0, 1].into(), bound.port())
    } else {
        bound
    };
    let url = format!(
        "http://{}:{}/#token={}",
        guard::authority_ip(&shown),
        shown.port(),
        guard.token
    );
    if args.listen_any {
        eprintln!(
            "warning: the dashboard listens on {bound} over plain HTTP: whoever reaches it \
             with the URL below, or reads its traffic, acts as {identity}; prefer the loopback \
             default and an SSH tunnel (ssh -L 8080:127.0.0.1:8080 HOST)"
        );
    }
    let _ = writeln!(out, "Faultline dashboard for {} as {identity}", target.url);
    let _ = writeln!(out, "{url}");
    let _ = writeln!(out, "Ctrl-C stops it.");
    let _ = out.flush();
    let mut launcher = None;
    if args.open {
        launcher = open_browser(&url);
    }
    let state = Arc::new((guard, api));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(serve(&state.0, &state.1, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        }
    }
    // The redirect file holds the token: it goes with the run.
    if let Some(dir) = launcher {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

/// Best effort: the URL is printed either way. The browser is handed a 0600 file that
/// redirects to the URL, not the URL itself: command lines are readable by every local user,
/// and the token must not be on one. Returns the file's directory, removed when the run ends.
fn open_browser(url: &str) -> Option<std::path::PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    // A fresh directory of our own (0700, refused if the name exists), then the 0600 file.
    let dir =
        std::env::temp_dir().join(format!("faultctl-dashboard-{}", &guard::new_token()[..16]));
    let launch = || -> std::io::Result<()> {
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let file = dir.join("open.html");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)?;
        write!(
            f,
            "<!doctype html><meta http-equiv=\"refresh\" content=\"0;url={url}\"><title>Faultline</title>"
        )?;
        std::process::Command::new("xdg-open")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(drop)
    };
    if let Err(e) = launch() {
        eprintln!("could not open a browser ({e}); open the URL above yourself");
    }
    Some(dir)
}

async fn serve(guard: &Guard, api: &Api, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let is_api = path.starts_with("/api/");
    if let Err(r) = guard.check_host(&parts.headers) {
        return refusal(&r, is_api);
    }
    // The page, its script and stylesheet carry no secret; the token arrives in the URL's
    // fragment, which the browser never sends.
    if !is_api {
        return match assets::get(&path) {
            Some((ctype, bytes)) => respond(200, ctype, Full::new(bytes).boxed()),
            None => respond(404, "text/plain; charset=utf-8", text_body("not found")),
        };
    }
    let stream_token = if path.ends_with("/watch") {
        guard::query_token(query.as_deref())
    } else {
        None
    };
    if let Err(r) = guard.check(&parts.method, &parts.headers, stream_token) {
        return refusal(&r, is_api);
    }
    let Some(route) = Route::parse(parts.method.as_str(), &path) else {
        return json_reply(Reply::error(
            404,
            format!("no API at {} {path}", parts.method),
        ));
    };
    if let Route::Watch(name) = route {
        return watch(api, name).await;
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_reply(Reply::error(
                413,
                format!("request body over {MAX_BODY} bytes"),
            ))
        }
    };
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return json_reply(Reply::error(400, format!("request body is not JSON: {e}")))
            }
        }
    };
    let query = api::parse_query(query.as_deref());
    json_reply(api.handle(route, &query, &body).await)
}

/// `Experiments.Watch` as server-sent events: one `data:` line of JSON per event; an `error`
/// event when the stream ends badly.
async fn watch(api: &Api, name: String) -> Response<Body> {
    let mut client = api.experiments.clone();
    let stream = match client.watch(pb::WatchExperimentRequest { name }).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            return json_reply(Reply::error(
                if s.code() == tonic::Code::NotFound {
                    404
                } else {
                    502
                },
                s.message().to_string(),
            ))
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut stream = stream;
        loop {
            let frame = match stream.message().await {
                Ok(Some(ev)) => format!("data: {}\n\n", crate::json::event(&ev)),
                Ok(None) => "event: end\ndata: {}\n\n".to_string(),
                Err(s) => format!(
                    "event: error\ndata: {}\n\n",
                    serde_json::json!({ "error": s.message() })
                ),
            };
            let last = !frame.starts_with("data:");
            if tx.send(Bytes::from(frame)).await.is_err() || last {
                return;
            }
        }
    });
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx);
    let body = StreamBody::new(tokio_stream::StreamExt::map(frames, |b| {
        Ok::<_, Infallible>(Frame::data(b))
    }));
    respond(200, "text/event-stream", BodyExt::boxed(body))
}

fn text_body(s: &str) -> Body {
    Full::new(Bytes::from(s.to_string())).boxed()
}

fn json_reply(r: Reply) -> Response<Body> {
    respond(r.status, "application/json", text_body(&r.body.to_string()))
}

fn refusal(r: &guard::Refusal, is_api: bool) -> Response<Body> {
    if is_api {
        json_reply(Reply::error(r.status(), r.message()))
    } else {
        respond(
            r.status(),
            "text/plain; charset=utf-8",
            text_body(&r.message()),
        )
    }
}

fn respond(status: u16, ctype: &str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(ctype) {
        h.insert(CONTENT_TYPE, v);
    }
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    resp
}
