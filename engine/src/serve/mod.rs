//! The query side: the published views ([`catalog`]), SQL over them with DataFusion
//! ([`query`]), the other instances' partitions ([`cluster`]), the HTTP API ([`http`])
//! behind its token guard ([`auth`]) with its status document ([`status`]) and its
//! Prometheus metrics ([`metrics`]) on
//! connections accepted within limits ([`listen`]), the Postgres wire protocol
//! ([`pg`]), live subscriptions to the views ([`subscribe`]), the web console at `/`
//! ([`console`]), and result rendering for the CLI and HTTP ([`output`]).

pub(crate) mod auth;
pub(crate) mod catalog;
pub(crate) mod cluster;
pub(crate) mod console;
pub(crate) mod http;
pub(crate) mod listen;
pub(crate) mod metrics;
pub(crate) mod output;
pub(crate) mod pg;
pub(crate) mod query;
pub(crate) mod status;
pub(crate) mod subscribe;
