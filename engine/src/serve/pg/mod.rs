//! The Postgres face (`projector run --pg ADDR`): the views over the Postgres wire
//! protocol, so that psql, every language's driver and BI tools query them.
//!
//! ```text
//!  connection ─▶ TLS? ─▶ startup (session.rs): password = a query token ─▶ grant
//!      │
//!      ├─ simple query ──┐   statement.rs: BEGIN/SET/SHOW answered here,
//!      └─ parse/bind/ ───┴─▶ pg_catalog queries rewritten ─▶ SqlEngine (the same
//!         execute                limits, grants and metrics as HTTP) ─▶ encode.rs
//! ```
//!
//! The protocol is pgwire's; what it says is ours (`query.rs`): a prepared statement is
//! planned once at `Parse` and run with each `Bind`'s parameters; errors carry
//! SQLSTATE codes (`sql.busy` is 53300, `sql.timeout` and a cancel 57014, ...).

mod encode;
mod query;
mod session;
pub(crate) mod statement;

use crate::serve::http::{AppState, TlsFiles};
use pgwire::api::PgWireServerHandlers;
use pgwire::api::cancel::DefaultCancelHandler;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The handlers of every connection.
struct Handlers {
    query: Arc<query::PgQuery>,
    startup: Arc<session::Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.query.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.query.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// Serves the Postgres protocol on `listener`, on `runtime`, for the pipeline `app`
/// answers for (following its rebuild switches), with its tokens; over TLS when `tls`
/// is given, and then only over TLS. Returns the bound address.
pub fn serve_pg(
    runtime: &tokio::runtime::Runtime,
    listener: TcpListener,
    app: AppState,
    tls: Option<&TlsFiles>,
) -> std::io::Result<std::net::SocketAddr> {
    let bound = listener.local_addr()?;
    let acceptor = match tls {
        None => None,
        Some(files) => {
            let mut config = runtime.block_on(crate::serve::http::tls_config(files))?;
            // libpq 17 offers ALPN "postgresql" (and requires it for a direct TLS
            // handshake); one that offers it and hears nothing back is refused.
            config.alpn_protocols = vec![b"postgresql".to_vec()];
            Some(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
        }
    };
    let manager = Arc::new(pgwire::api::ConnectionManager::new());
    let handlers = Arc::new(Handlers {
        query: Arc::new(query::PgQuery::new(app.clone())),
        startup: Arc::new(session::Startup::new(
            app.auth.clone(),
            acceptor.is_some(),
            manager.clone(),
        )),
        cancel: Arc::new(DefaultCancelHandler::new(manager)),
    });
    runtime.spawn(accept(listener, handlers, acceptor));
    Ok(bound)
}

/// Accepts connections until the runtime stops, within the limits of
/// [`accept_each`](crate::serve::listen::accept_each).
async fn accept(
    listener: TcpListener,
    handlers: Arc<Handlers>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
) {
    crate::serve::listen::accept_each(listener, "Postgres", move |stream| {
        let (handlers, tls) = (handlers.clone(), tls.clone());
        async move {
            // pgwire gives a client 60 s to finish its startup.
            if let Err(e) = pgwire::tokio::process_socket(stream, tls, handlers).await {
                tracing::debug!("Postgres connection: {e}");
            }
        }
    })
    .await
}
