//! Queries over the Postgres protocol: the simple protocol (psql, text results) and the
//! extended one (drivers: a statement planned once at `Parse`, run at each `Execute`
//! with its `Bind`'s parameters, results in the formats the client asks for).

use super::encode;
use super::session::Session;
use super::statement::{self, Statement};
use crate::serve::http::{AppState, Face};
use crate::serve::query::{Prepared, QueryError, QueryErrorKind, QueryOptions, QueryResult};
use async_trait::async_trait;
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::Execute;
use std::fmt::Debug;
use std::sync::Arc;

/// A statement of the extended protocol.
#[derive(Debug, Clone)]
pub(crate) enum PgStatement {
    /// A query, planned by the engine that answered at `Parse` (its text kept to plan
    /// it again if a rebuild has switched engines since).
    Planned {
        /// The query as the engine got it.
        sql: String,
        /// Its plan.
        prepared: Arc<Prepared>,
        /// The engine it was planned by.
        engine: usize,
    },
    /// A statement answered here.
    Here(Statement),
}

impl PgStatement {
    /// The columns its result has.
    fn columns(&self) -> usize {
        match self {
            PgStatement::Planned { prepared, .. } => prepared.schema.fields().len(),
            PgStatement::Here(Statement::Show(..)) => 1,
            PgStatement::Here(Statement::Empty(columns)) => columns.len(),
            PgStatement::Here(_) => 0,
        }
    }
}

/// Answers queries for the pipeline of an [`AppState`].
pub(crate) struct PgQuery {
    app: AppState,
    parser: Arc<Parser>,
}

impl PgQuery {
    /// Queries answered for `app`'s pipeline.
    pub(crate) fn new(app: AppState) -> Self {
        PgQuery {
            parser: Arc::new(Parser { app: app.clone() }),
            app,
        }
    }
}

/// Plans the statements of `Parse` messages.
pub(crate) struct Parser {
    app: AppState,
}

/// What the connection may read.
fn options<C: ClientInfo>(client: &C) -> PgWireResult<QueryOptions> {
    let session = client
        .session_extensions()
        .get::<Session>()
        .ok_or_else(|| error("28000", "the connection is not authenticated"))?;
    Ok(QueryOptions {
        grant: session.grant.clone(),
        ..QueryOptions::default()
    })
}

/// An error with SQLSTATE `code`.
fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message.into(),
    )))
}

/// The SQLSTATE of a query error.
pub(crate) fn sqlstate(e: &QueryError) -> &'static str {
    let m = e.message.as_str();
    match e.kind {
        QueryErrorKind::Parse => "42601",
        QueryErrorKind::Plan if m.contains("table") && m.contains("not found") => "42P01",
        QueryErrorKind::Plan if m.contains("No field named") => "42703",
        QueryErrorKind::Plan if m.contains("Invalid function") => "42883",
        QueryErrorKind::Plan => "42000",
        QueryErrorKind::Unsupported => "0A000",
        QueryErrorKind::ResourcesExhausted => "53200",
        QueryErrorKind::Execution if m.contains("Divide by zero") => "22012",
        QueryErrorKind::Execution if m.contains("Cannot cast") => "22P02",
        QueryErrorKind::Execution => "22000",
        QueryErrorKind::ReadOnly => "25006",
        QueryErrorKind::TooManyRows | QueryErrorKind::ResultTooLarge => "54000",
        QueryErrorKind::TooComplex => "54001",
        QueryErrorKind::Timeout => "57014",
        QueryErrorKind::Busy => "53300",
        QueryErrorKind::Unavailable => "57P03",
        QueryErrorKind::Internal => "XX000",
        QueryErrorKind::PartitionUnavailable => "58000",
        QueryErrorKind::Forbidden => "42501",
    }
}

/// A query error as the client sees it: its SQLSTATE, message, and Projector's code.
fn query_error(e: QueryError) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".into(), sqlstate(&e).into(), e.message.clone());
    info.detail = Some(format!("projector code: {}", e.code()));
    if e.kind == QueryErrorKind::ReadOnly {
        info.hint = Some("Projector's views are read-only: only queries are allowed".into());
    }
    PgWireError::UserError(Box::new(info))
}

/// A result's rows as a response, with columns in `format` (`None`: text).
fn result(r: QueryResult, format: Option<&Format>) -> PgWireResult<Response> {
    let fields = Arc::new(encode::fields(&r.schema, format));
    let rows = encode::rows(fields.clone(), r.batches)?;
    Ok(Response::Query(QueryResponse::new(
        fields,
        futures::stream::iter(rows),
    )))
}

/// An answer of text columns `names` with `rows`.
fn text_rows(
    names: &[String],
    rows: Vec<Vec<String>>,
    format: Option<&Format>,
) -> PgWireResult<Response> {
    let fields = Arc::new(encode::text_fields(names, format));
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        for value in &row {
            encoder.encode_field(value)?;
        }
        out.push(Ok(encoder.take_row()));
    }
    Ok(Response::Query(QueryResponse::new(
        fields,
        futures::stream::iter(out),
    )))
}

/// The answer to a statement answered here, or to a query run with `face`.
async fn answer(
    face: &Face,
    statement: Statement,
    options: &QueryOptions,
    format: Option<&Format>,
) -> PgWireResult<Response> {
    Ok(match statement {
        Statement::Query(sql) => {
            let r = face.query("pg", &sql, options).await.map_err(query_error)?;
            result(r, format)?
        }
        Statement::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Statement::End(tag) => Response::TransactionEnd(Tag::new(tag)),
        Statement::Accepted(tag) => Response::Execution(Tag::new(&tag)),
        Statement::Show(name, value) => text_rows(&[name], vec![vec![value]], format)?,
        Statement::Empty(columns) => text_rows(&columns, Vec::new(), format)?,
    })
}

#[async_trait]
impl SimpleQueryHandler for PgQuery {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let options = options(client)?;
        let face = self.app.face();
        let mut out = Vec::new();
        for text in statement::split(query) {
            let statement = statement::classify(&text);
            if let Statement::Accepted(tag) = &statement {
                forget(client, tag, &text);
            }
            match answer(&face, statement, &options, None).await {
                Ok(r) => out.push(r),
                // The statements before it stand; those after it are not run.
                Err(e) if out.is_empty() => return Err(e),
                Err(PgWireError::UserError(info)) => {
                    out.push(Response::Error(info));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// `DEALLOCATE name` frees that prepared statement, `DEALLOCATE ALL` and `DISCARD ALL`
/// the open portals (pgwire's store cannot list its statements to free them all).
fn forget<C>(client: &mut C, tag: &str, text: &str)
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    match tag {
        "DEALLOCATE" => {
            let name = text
                .split_whitespace()
                .skip(1)
                .find(|w| !w.eq_ignore_ascii_case("prepare"))
                .map(|w| w.trim_end_matches(';').trim_matches('"'));
            match name {
                Some(n) if !n.eq_ignore_ascii_case("all") => client.portal_store().rm_statement(n),
                _ => client.portal_store().clear_portals(),
            }
        }
        "DISCARD ALL" => client.portal_store().clear_portals(),
        _ => {}
    }
}

/// An identity for the engine an `Arc` points at (to see that a rebuild switched).
fn engine_id(face: &Face) -> usize {
    Arc::as_ptr(&face.sql) as usize
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let options = options(client)?;
        match statement::classify(sql) {
            Statement::Query(sql) => {
                let face = self.app.face();
                let prepared = face
                    .sql
                    .prepare(&sql, &options)
                    .await
                    .map_err(query_error)?;
                Ok(Some(PgStatement::Planned {
                    sql,
                    prepared: Arc::new(prepared),
                    engine: engine_id(&face),
                }))
            }
            other => Ok(Some(PgStatement::Here(other))),
        }
    }

    fn get_parameter_types(&self, statement: &PgStatement) -> PgWireResult<Vec<Type>> {
        Ok(match statement {
            PgStatement::Planned { prepared, .. } => prepared
                .params
                .iter()
                .map(|t| t.as_ref().map_or(Type::TEXT, encode::pg_type))
                .collect(),
            PgStatement::Here(_) => Vec::new(),
        })
    }

    fn get_result_schema(
        &self,
        statement: &PgStatement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        if let Some(format) = format {
            encode::formats_fit(format, statement.columns(), "result columns")?;
        }
        Ok(match statement {
            PgStatement::Planned { prepared, .. } => encode::fields(&prepared.schema, format),
            PgStatement::Here(Statement::Show(name, _)) => {
                encode::text_fields(std::slice::from_ref(name), format)
            }
            PgStatement::Here(Statement::Empty(columns)) => encode::text_fields(columns, format),
            PgStatement::Here(_) => Vec::new(),
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgQuery {
    type Statement = PgStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn on_execute<C>(&self, client: &mut C, mut message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // pgwire reserves room for `max_rows` rows before fetching them: a client's
        // 2^31 - 1 would abort the process. No result has more rows than
        // `query.max_rows`, so asking for as many or more is asking for all (0).
        let cap = self.app.face().sql.limits().max_rows;
        if message.max_rows < 0 || message.max_rows as usize >= cap {
            message.max_rows = 0;
        }
        self._on_execute(client, message).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let options = options(client)?;
        let face = self.app.face();
        let format = Some(&portal.result_column_format);
        // Checked before any value is read or written with them.
        encode::formats_fit(
            &portal.result_column_format,
            portal.statement.statement.columns(),
            "result columns",
        )?;
        encode::formats_fit(
            &portal.parameter_format,
            portal.parameters.len(),
            "parameters",
        )?;
        match &portal.statement.statement {
            PgStatement::Here(s) => answer(&face, s.clone(), &options, format).await,
            PgStatement::Planned {
                sql,
                prepared,
                engine,
            } => {
                let replanned;
                let prepared = if *engine == engine_id(&face) {
                    prepared.as_ref()
                } else {
                    // A rebuild switched engines since Parse: plan against the new one.
                    replanned = face.sql.prepare(sql, &options).await.map_err(query_error)?;
                    &replanned
                };
                let sent = &portal.statement.parameter_types;
                let mut params = Vec::with_capacity(prepared.params.len());
                for (i, target) in prepared.params.iter().enumerate() {
                    let bytes = portal.parameters.get(i).ok_or_else(|| {
                        error(
                            "08P01",
                            format!(
                                "the statement has {} parameters; {} were bound",
                                prepared.params.len(),
                                portal.parameters.len()
                            ),
                        )
                    })?;
                    let sent = sent
                        .get(i)
                        .cloned()
                        .flatten()
                        .unwrap_or_else(|| target.as_ref().map_or(Type::TEXT, encode::pg_type));
                    params.push(encode::parameter(
                        i,
                        bytes.as_deref(),
                        portal.parameter_format.is_binary(i),
                        &sent,
                        target.as_ref(),
                    )?);
                }
                let r = face
                    .run_prepared("pg", prepared, params, &options)
                    .await
                    .map_err(query_error)?;
                result(r, format)
            }
        }
    }
}
