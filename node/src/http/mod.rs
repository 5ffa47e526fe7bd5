//! The edge plane: HTTP for viewers ([`live`]), encoders ([`ingest`]) and operators
//! ([`admin`]), with CORS on every response so browser players work from any origin.

pub mod admin;
pub mod auth;
pub mod conns;
pub mod ingest;
pub mod live;
pub mod multivariant;
pub mod query;
pub mod range;
pub mod route;
pub mod session;
pub mod stream_info;
pub mod viewer_token;
pub mod watch;

use crate::node::Shared;
use axum::Router;
use axum::body::Body;
use axum::extract::Request as AxumRequest;
use axum::extract::{ConnectInfo, State};
use axum::http::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use tracing::{debug, warn};

/// The router of the viewers' listener: viewers, encoders, and the operators'
/// endpoints unless they have a listener of their own (see [`admin::on_viewer_listener`]).
pub fn router(node: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/ingest/{stream}/{file}",
            put(ingest::put).post(ingest::put).delete(ingest::delete),
        )
        .route("/live/{stream}/info.json", get(stream_info::get))
        .route("/live/{stream}/master.m3u8", get(multivariant::get))
        .route("/live/{stream}/{file}", get(live::get))
        .route("/watch/{stream}", get(watch::page))
        .route("/route/{stream}", get(route::get))
        .merge(admin::routes().route_layer(middleware::from_fn_with_state(
            node.clone(),
            admin::on_viewer_listener,
        )))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { HttpError::NotFound("no such endpoint") })
        .layer(middleware::from_fn(cors))
        .with_state(node)
}

/// `GET /readyz`: 200 while the node takes new viewers, 503 once it drains, so a load
/// balancer or Kubernetes' readiness probe stops sending it new ones (`/healthz` stays
/// 200: the process is alive and still serves its viewers).
async fn readyz(State(node): State<Arc<Shared>>) -> Response {
    match node.core().drain() {
        None => "ready\n".into_response(),
        Some(phase) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("draining ({phase:?})\n"),
        )
            .into_response(),
    }
}

/// The router of the operators' listener (`--admin-http`).
pub fn admin_router(node: Arc<Shared>) -> Router {
    admin::routes()
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { HttpError::NotFound("no such endpoint") })
        .with_state(node)
}

/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest read buffer of one connection (request heads are far smaller; bodies stream
/// through it): bounds what a connection can hold.
const MAX_CONN_BUFFER: usize = 64 * 1024;

/// Serves HTTP until `shutdown` flips.
///
/// hyper is driven directly rather than through `axum::serve` for two reasons:
/// `half_close` (ffmpeg shuts down its sending side right after each upload,
/// FIELD-NOTES, and hyper's default treats that as an abort and drops the request
/// unanswered), and connection bounds ([`conns`]): a connection can be told to give way
/// to a new one.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Arc<Shared>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let conns = node.conns.clone();
    accept(listener, router(node), conns, shutdown).await
}

/// Serves the operators' listener until `shutdown` flips, with connection bounds of its
/// own: a flood of viewers cannot lock operators out.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    node: Arc<Shared>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let conns = conns::Conns::new(conns::Limits {
        max: 256,
        per_addr: 64,
        ..conns::Limits::default()
    });
    accept(listener, admin_router(node), conns, shutdown).await
}

/// Accepts connections on `listener` and serves `app` on each, within `conns`' bounds.
async fn accept(
    listener: tokio::net::TcpListener,
    app: Router,
    conns: Arc<conns::Conns>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let slot = match conns.admit(remote.ip(), std::time::Instant::now()) {
            Ok(slot) => slot,
            Err(_) => {
                warn!(%remote, "too many connections; closing a new one");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let conn = slot.conn.clone();
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                conn.on_request();
                request.extensions_mut().insert(ConnectInfo(remote));
                request.extensions_mut().insert(conn.clone());
                app.clone().oneshot(request.map(Body::new))
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .keep_alive(true)
                .max_buf_size(MAX_CONN_BUFFER)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let first_request = tokio::time::sleep(slot.first_request);
            tokio::pin!(first_request);
            let (mut waiting_first, mut closing) = (true, false);
            let result = loop {
                tokio::select! {
                    result = &mut connection => break result,
                    _ = &mut first_request, if waiting_first => {
                        waiting_first = false;
                        if slot.conn.requests() == 0 {
                            debug!(%remote, "no request in time; closed");
                            break Ok(());
                        }
                    }
                    _ = slot.conn.shed(), if !closing => {
                        closing = true;
                        if slot.conn.requests() == 0 {
                            break Ok(());
                        }
                        // Finish what is in flight, then close.
                        connection.as_mut().graceful_shutdown();
                    }
                }
            };
            if let Err(e) = result {
                debug!(%remote, error = %e, "http connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// CORS headers on every response: any origin may play, seek (Range) and read lengths.
const CORS: [(header::HeaderName, &str); 5] = [
    (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
    (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS"),
    (
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        "Range, Origin, Accept, Content-Type",
    ),
    (
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        "Content-Length, Content-Range, Accept-Ranges",
    ),
    (header::ACCESS_CONTROL_MAX_AGE, "86400"),
];

/// Adds CORS headers to every response and answers preflight requests.
async fn cors(request: AxumRequest, next: Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    for (name, value) in CORS {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// An HTTP error with a clear plain-text message.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: wrong credentials.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404.
    #[error("{0}")]
    NotFound(&'static str),
    /// 408: the body did not arrive in time.
    #[error("request body timed out")]
    Timeout,
    /// 413.
    #[error("body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// 415.
    #[error("{0}")]
    Unsupported(&'static str),
    /// 502: the mesh could not supply it.
    #[error("{0}")]
    BadGateway(String),
    /// 503.
    #[error("{0}")]
    Unavailable(&'static str),
    /// 507: a storage budget is spent.
    #[error("{0}")]
    InsufficientStorage(String),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match &self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::Timeout => StatusCode::REQUEST_TIMEOUT,
            HttpError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        };
        let mut response = (status, format!("{self}\n")).into_response();
        if let HttpError::Unauthorized(_) = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Reads a whole body, refusing more than `limit` bytes or a stall longer than `timeout`.
pub async fn read_body(
    body: Body,
    limit: u64,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, HttpError> {
    use futures::StreamExt;
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| HttpError::BadRequest(format!("reading body: {e}")))?;
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(HttpError::TooLarge(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| HttpError::Timeout)?
}
