//! Arrow between instances: Arrow IPC over HTTP (what Projector uses, see
//! `engine/src/serve/cluster/`) against Arrow Flight `DoGet`, the field standard, on
//! loopback in one process, for the same batches (BENCHMARKS.md, "Queries across
//! instances").
//!
//! ```text
//! cargo run --release -p projector-benches --bin transport -- [ROWS] [RUNS] [SMALL]
//! ```
//!
//! Both servers run on one tokio runtime (2 threads) and hold the same batches of a
//! `(account_id: utf8, balance: int64)` table, 4,096 rows each. Measured from one
//! client over one kept-alive connection (HTTP/1.1 for IPC, HTTP/2 for Flight):
//! - a one-row answer (a key lookup's size), SMALL times each: p50 and p99;
//! - the whole table (ROWS rows; a scan), RUNS times each: median and min, in rows/s;
//!   the client decodes every batch.
//!
//! The two alternate request by request, so both see the same machine.

use anyhow::{Context, Result};
use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightClient, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status, Streaming};

const CHUNK: usize = 4096;

/// The table: `rows` rows in batches of [`CHUNK`], and a one-row batch.
fn table(rows: usize) -> (Vec<RecordBatch>, RecordBatch) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("account_id", DataType::Utf8, false),
        Field::new("balance", DataType::Int64, true),
    ]));
    let batch = |from: usize, n: usize| {
        let ids: StringArray = (from..from + n)
            .map(|i| Some(format!("acc-{i:07}")))
            .collect();
        let balances: Int64Array = (from..from + n)
            .map(|i| Some(i as i64 * 7 % 10_000))
            .collect();
        RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(balances)])
            .expect("columns match")
    };
    let batches = (0..rows)
        .step_by(CHUNK)
        .map(|from| batch(from, CHUNK.min(rows - from)))
        .collect();
    (batches, batch(42, 1))
}

/// `b"all"` or `b"one"`: which batches a request wants.
#[derive(Clone)]
struct Data {
    all: Arc<Vec<RecordBatch>>,
    one: RecordBatch,
}

impl Data {
    fn pick(&self, which: &[u8]) -> Vec<RecordBatch> {
        match which {
            b"all" => self.all.to_vec(),
            _ => vec![self.one.clone()],
        }
    }
}

fn ipc(batches: &[RecordBatch]) -> Vec<u8> {
    let size: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let mut out = Vec::with_capacity(size + 4096);
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batches[0].schema())
        .expect("IPC writer");
    for b in batches {
        w.write(b).expect("IPC write");
    }
    w.finish().expect("IPC finish");
    drop(w);
    out
}

#[tonic::async_trait]
impl FlightService for Data {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let batches = self.pick(&request.into_inner().ticket);
        let stream = FlightDataEncoderBuilder::new()
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
            .map_err(Status::from);
        Ok(Response::new(stream.boxed()))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("handshake"))
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("list_flights"))
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("get_flight_info"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("do_put"))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("do_action"))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("list_actions"))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    let small: usize = args.next().map_or(Ok(2_000), |a| a.parse())?;
    let (all, one) = table(rows);
    let data = Data {
        all: Arc::new(all),
        one,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Arrow IPC over HTTP (axum), as between Projector instances.
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_addr = http.local_addr()?;
        let served = data.clone();
        let app = axum::Router::new().route(
            "/scan",
            axum::routing::post(move |body: axum::body::Bytes| {
                let served = served.clone();
                async move {
                    let bytes = ipc(&served.pick(&body));
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/vnd.apache.arrow.stream",
                        )],
                        bytes,
                    )
                }
            }),
        );
        tokio::spawn(async move { axum::serve(http, app).await });
        // Arrow Flight (tonic, HTTP/2).
        let flight = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let flight_addr = flight.local_addr()?;
        drop(flight);
        let server = tonic::transport::Server::builder()
            .add_service(FlightServiceServer::new(data.clone()))
            .serve(flight_addr);
        tokio::spawn(server);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let channel = tonic::transport::Channel::from_shared(format!("http://{flight_addr}"))?
            .connect()
            .await
            .context("connecting to the Flight server")?;
        let mut flight = FlightClient::new(channel);
        let client = reqwest::Client::new();
        let url = format!("http://{http_addr}/scan");

        async fn by_http(
            client: &reqwest::Client,
            url: &str,
            which: &'static [u8],
        ) -> Result<usize> {
            let body = client.post(url).body(which).send().await?.bytes().await?;
            let mut n = 0;
            for b in projector_engine::read_arrow(body)? {
                n += b.num_rows();
            }
            Ok(n)
        }
        async fn by_flight(flight: &mut FlightClient, which: &'static [u8]) -> Result<usize> {
            let batches: Vec<RecordBatch> = flight
                .do_get(Ticket::new(which))
                .await?
                .try_collect()
                .await?;
            Ok(batches.iter().map(|b| b.num_rows()).sum())
        }

        // Warm both connections.
        for _ in 0..50 {
            by_http(&client, &url, b"one").await?;
            by_flight(&mut flight, b"one").await?;
        }
        let (mut h, mut f) = (Vec::new(), Vec::new());
        for _ in 0..small {
            let t = Instant::now();
            assert_eq!(by_http(&client, &url, b"one").await?, 1);
            h.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            assert_eq!(by_flight(&mut flight, b"one").await?, 1);
            f.push(t.elapsed().as_secs_f64() * 1e3);
        }
        h.sort_by(f64::total_cmp);
        f.sort_by(f64::total_cmp);
        println!(
            "one-row answer, {small} each: IPC over HTTP p50 {:.3} ms p99 {:.3} ms; \
             Flight DoGet p50 {:.3} ms p99 {:.3} ms",
            percentile(&h, 0.5),
            percentile(&h, 0.99),
            percentile(&f, 0.5),
            percentile(&f, 0.99)
        );
        let (mut h, mut f) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            assert_eq!(by_http(&client, &url, b"all").await?, rows);
            h.push(rows as f64 / t.elapsed().as_secs_f64());
            let t = Instant::now();
            assert_eq!(by_flight(&mut flight, b"all").await?, rows);
            f.push(rows as f64 / t.elapsed().as_secs_f64());
        }
        h.sort_by(f64::total_cmp);
        f.sort_by(f64::total_cmp);
        println!(
            "{rows} rows, {runs} each: IPC over HTTP median {:.1}M rows/s (max {:.1}M); \
             Flight DoGet median {:.1}M rows/s (max {:.1}M)",
            percentile(&h, 0.5) / 1e6,
            h[h.len() - 1] / 1e6,
            percentile(&f, 0.5) / 1e6,
            f[f.len() - 1] / 1e6
        );
        Ok(())
    })
}
