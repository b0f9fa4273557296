//! The HTTP connections: accepted here, each within limits, so that clients that
//! connect and say nothing cannot starve the ones that ask for `/health`.
//!
//! * At most [`MAX_CONNECTIONS`] are open at once; one more is closed at once.
//! * A client has [`HEADER_TIMEOUT`] to send a request's headers, the first one and
//!   each next one on a kept-alive connection; a connection that idles longer is
//!   closed. A TLS handshake has as long, and a request's body [`BODY_TIMEOUT`]
//!   (applied by the router, `http.rs`).
//!
//! HTTP/1.1 only (HTTPS offers no other protocol in ALPN): the API has no use for
//! HTTP/2's streams.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections open at once.
pub(crate) const MAX_CONNECTIONS: usize = 1024;

/// Time a client has for a request's headers, or for a TLS handshake; also the most a
/// kept-alive connection idles.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client has to send a request's whole body (at most 2 MB).
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections on `listener` and serves `app` on each, over TLS when `tls` is
/// given, until the runtime stops.
pub(crate) async fn accept(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    accept_each(listener, "HTTP", move |stream| {
        let (app, tls) = (app.clone(), tls.clone());
        async move {
            let result = match tls {
                None => serve(TokioIo::new(stream), app).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve(TokioIo::new(stream), app).await,
                        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!("HTTP connection: {e}");
            }
        }
    })
    .await
}

/// Accepts connections on `listener` until the runtime stops, at most
/// [`MAX_CONNECTIONS`] open at once (one more is closed at once), each served by
/// `serve` on a task of its own; `what` names them in logs.
pub(crate) async fn accept_each<F, Fut>(listener: TcpListener, what: &str, serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or the peer gave up during the handshake:
                // pause briefly rather than spin, then go on accepting.
                tracing::debug!("accepting a {what} connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = serve(stream);
        tokio::spawn(async move {
            let _permit = permit;
            connection.await;
        });
    }
}

/// Serves HTTP/1.1 requests on one connection until it closes.
async fn serve<I>(io: TokioIo<I>, app: Router) -> Result<(), String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, TowerToHyperService::new(app))
        .with_upgrades()
        .await
        .map_err(|e| e.to_string())
}
