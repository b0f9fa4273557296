//! Who connects: the startup of a Postgres connection.
//!
//! Without `auth:` in the pipeline anyone may connect, with any user name. With it, the
//! password is one of the pipeline's query tokens, sent in clear (over TLS when the
//! instance has a certificate: it then refuses connections without TLS), and the
//! connection reads what that token may read. The user name is not checked.

use crate::config::ViewGrant;
use crate::serve::auth::Auth;
use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::cleartext::CleartextPasswordAuth;
use pgwire::api::auth::driver::{AuthDriver, AuthOutcome};
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::fmt::Debug;
use std::sync::Arc;

/// What a connection may read, kept in its session once it is authenticated.
#[derive(Debug)]
pub(crate) struct Session {
    /// The views it may read (`None`: all).
    pub(crate) grant: Option<ViewGrant>,
}

/// Checks a password as a query token.
#[derive(Debug)]
struct Tokens(Arc<Auth>);

// The trait's methods take `&LoginInfo` with its lifetime elided; naming it here makes
// async-trait's lifetimes differ from the trait's.
#[allow(elided_lifetimes_in_paths)]
#[async_trait]
impl AuthSource<ViewGrant> for Tokens {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        // Tokens are kept as digests only; verify_password compares them.
        Err(PgWireError::ApiError(
            "query tokens are kept as digests and cannot be read back".into(),
        ))
    }

    async fn verify_password(
        &self,
        login: &LoginInfo,
        presented: &[u8],
    ) -> PgWireResult<Option<ViewGrant>> {
        let token = std::str::from_utf8(presented).unwrap_or_default();
        match self.0.grant_of(token) {
            Some(grant) => Ok(Some(grant)),
            None => Err(PgWireError::InvalidPassword(
                login.user().unwrap_or_default().to_string(),
            )),
        }
    }
}

/// The startup of every connection.
pub(crate) struct Startup {
    driver: AuthDriver<DefaultServerParameterProvider, ViewGrant>,
    tokens: Option<CleartextPasswordAuth<Tokens>>,
    tls_only: bool,
}

impl Startup {
    /// Startups checked by `auth`; with `tls_only`, connections without TLS are
    /// refused; connections are registered with `manager` (for cancel requests).
    pub(crate) fn new(auth: Arc<Auth>, tls_only: bool, manager: Arc<ConnectionManager>) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        // psql picks its catalog queries by this version; 15's are the ones answered.
        parameters.server_version = "15.0 (Projector)".into();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        Startup {
            driver: AuthDriver::new(parameters).with_connection_manager(manager),
            tokens: auth
                .enabled()
                .then(|| CleartextPasswordAuth::new(Arc::new(Tokens(auth)))),
            tls_only,
        }
    }
}

fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message.into(),
    )))
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.tls_only && !client.is_secure() {
                    return Err(fatal(
                        "28000",
                        "this server takes TLS connections only: connect with sslmode=require",
                    ));
                }
                match &self.tokens {
                    None => {
                        client.session_extensions().insert(Session { grant: None });
                        self.driver.complete_authentication(client, None).await?;
                    }
                    Some(tokens) => {
                        if let AuthOutcome::Authenticated {
                            identity,
                            final_message,
                        } = self
                            .driver
                            .begin_authentication(client, tokens.create())
                            .await?
                        {
                            client
                                .session_extensions()
                                .insert(Session { grant: identity });
                            self.driver
                                .complete_authentication(client, final_message)
                                .await?;
                        }
                    }
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                if let AuthOutcome::Authenticated {
                    identity,
                    final_message,
                } = self.driver.advance_authentication(client, password).await?
                {
                    let Some(grant) = identity else {
                        return Err(fatal("28P01", "password authentication failed"));
                    };
                    client
                        .session_extensions()
                        .insert(Session { grant: Some(grant) });
                    self.driver
                        .complete_authentication(client, final_message)
                        .await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
