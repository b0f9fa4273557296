//! The web console at `/`, in a real browser: headless Chromium (Debian's, installed
//! by `scripts/chromium.sh`) driven through chromedriver's WebDriver protocol. Over a
//! Kafka topic (a real Tansu broker) the page shows the pipeline's status with live
//! throughput and per-partition lag charts, the views with their columns and a SQL
//! editor whose results match the view; a screenshot shows the charts drawn. Behind
//! `auth:` it asks for a token and works once given one.

mod common;

use base64::Engine as _;
use common::cluster::{Broker, Running, free_port, get_json, pipeline, produce, repo, wait_for};
use common::{generator_pipeline, replace_line};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The key of a web element in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless Chromium session in it.
struct Browser {
    driver: Child,
    base: String,
    agent: ureq::Agent,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a 1280x1000 headless window.
    fn start() -> Browser {
        let found = Command::new("bash")
            .arg(repo().join("scripts/chromium.sh"))
            .arg("install")
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/chromium.sh");
        let chromedriver = String::from_utf8_lossy(&found.stdout).trim().to_string();
        assert!(
            found.status.success() && !chromedriver.is_empty(),
            "the console tests need Chromium and chromedriver: `scripts/chromium.sh install` \
             failed ({}); they do not skip",
            found.status
        );
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            agent,
        };
        assert!(
            wait_for(30, || browser
                .call("GET", "/status", None)
                .is_ok_and(|v| v["ready"] == true)),
            "chromedriver did not start"
        );
        let session = browser
            .call(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"args": [
                        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                        "--disable-gpu", "--window-size=1280,1000", "--hide-scrollbars",
                    ]},
                }}})),
            )
            .expect("a Chromium session");
        let id = session["sessionId"].as_str().expect("a session id");
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    /// One WebDriver command: its `value`, or the error it answered.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self
                .agent
                .post(&url)
                .content_type("application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let mut response = response.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if status == 200 {
            Ok(value["value"].clone())
        } else {
            Err(format!("{method} {path}: {status} {}", value["value"]))
        }
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })))
            .expect("open the page");
    }

    /// The element `css` selects.
    fn find(&self, css: &str) -> String {
        let found = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .unwrap_or_else(|e| panic!("no element {css}: {e}"));
        found[ELEMENT].as_str().expect("an element id").to_string()
    }

    /// Script `js` (a function body) run in the page: what it returns.
    fn js(&self, js: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .unwrap_or_else(|e| panic!("script failed: {e}\n{js}"))
    }

    /// The rendered text of the element `css` selects ("" when hidden).
    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.call("GET", &format!("/element/{id}/text"), None)
            .expect("text")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Types `text` into the field `css` selects, replacing what it held.
    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/clear"), None)
            .expect("clear");
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .expect("type");
    }

    /// Clicks the element `css` selects (found again if the page redrew it between).
    fn click(&self, css: &str) {
        let mut tries = 0;
        loop {
            let id = self.find(css);
            match self.call("POST", &format!("/element/{id}/click"), None) {
                Ok(_) => return,
                Err(e) if e.contains("stale element") && tries < 3 => tries += 1,
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Where the element `css` selects is on the page, in CSS pixels: x, y, w, h.
    fn rect(&self, css: &str) -> (u32, u32, u32, u32) {
        let id = self.find(css);
        let r = self
            .call("GET", &format!("/element/{id}/rect"), None)
            .expect("rect");
        let n = |k: &str| r[k].as_f64().expect("a number").round() as u32;
        (n("x"), n("y"), n("width"), n("height"))
    }

    /// A PNG of the window.
    fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call("GET", "/screenshot", None).expect("screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64"))
            .expect("a PNG")
    }

    /// Waits up to `secs` for `check`; panics with `what` and the page's text if it
    /// never holds.
    fn wait(&self, secs: u64, what: &str, mut check: impl FnMut(&Browser) -> bool) {
        if !wait_for(secs, || check(self)) {
            let page = self.js("return document.body.innerText;");
            panic!("{what}: not within {secs} s; the page reads:\n{page}");
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `projector run PIPELINE` serving HTTP on a free port, once it answers.
fn run(dir: &Path, pipeline: &Path) -> (Running, u16) {
    let port = free_port();
    let running = Running::start(pipeline, &dir.join("state"), port, 2);
    assert!(
        wait_for(60, || get_json(port, "/health").is_some()),
        "the instance did not start"
    );
    (running, port)
}

/// Pixels of `png` inside `rect` within 40 (per channel, summed) of one of `colors`.
fn pixels_of(png: &[u8], rect: (u32, u32, u32, u32), colors: &[[u8; 3]]) -> usize {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    assert!(channels >= 3, "a colour screenshot: {:?}", info.color_type);
    let (x0, y0, w, h) = rect;
    let mut n = 0;
    for y in y0..(y0 + h).min(info.height) {
        for x in x0..(x0 + w).min(info.width) {
            let at = (y as usize * info.width as usize + x as usize) * channels;
            let px = &buf[at..at + 3];
            let near = colors.iter().any(|c| {
                c.iter()
                    .zip(px)
                    .map(|(a, b)| (*a as i32 - *b as i32).abs())
                    .sum::<i32>()
                    < 40
            });
            n += usize::from(near);
        }
    }
    n
}

#[test]
fn the_console_shows_the_pipeline_and_runs_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    produce(&broker, "console", 20_000, 300, 7);
    let (mut running, port) = run(dir.path(), &pipeline(dir.path(), &broker, "console"));
    let browser = Browser::start();
    browser.open(&format!("http://127.0.0.1:{port}/"));

    // The status: the pipeline's name and state, the events read, the partitions.
    let name = get_json(port, "/status").expect("status")["pipeline"]
        .as_str()
        .expect("a name")
        .to_string();
    browser.wait(60, "the pipeline's name and state", |b| {
        b.text("#pipeline") == name && b.text("#state") == "running"
    });
    let read = |b: &Browser| -> u64 { b.text("#read").replace(',', "").parse().unwrap_or(0) };
    browser.wait(60, "the topic read", |b| read(b) == 20_000);
    // More events while the page watches: counts, rates and lags move.
    std::thread::scope(|scope| {
        let more = scope.spawn(|| produce(&broker, "console", 200_000, 300, 8));
        browser.wait(120, "events read going up", |b| read(b) > 20_000);
        browser.wait(60, "a throughput rate", |b| {
            b.text("#read-rate").ends_with(" /s")
        });
        browser.wait(60, "a checkpoint", |b| {
            b.text("#checkpoint").starts_with("epoch ")
        });
        more.join().expect("the producer");
    });
    browser.wait(120, "the topic read again", |b| read(b) == 220_000);
    assert_eq!(browser.text("#dead"), "0");
    assert_eq!(browser.text("#parked"), "0");
    assert_eq!(browser.text("#rebuild"), "none");
    let status = get_json(port, "/status").expect("status");
    let partitions = status["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 4);
    let shown = browser.js(
        "return [...document.querySelectorAll('#partitions tbody tr')]\
         .map(r => r.cells[0].textContent);",
    );
    let expected: Vec<Value> = partitions.iter().map(|p| p["partition"].clone()).collect();
    assert_eq!(shown, Value::Array(expected.clone()));

    // Live charts: both rate lines and the lag line have points, and keep getting them.
    let points = |b: &Browser, chart: &str| -> u64 {
        b.js(&format!(
            "const l = document.querySelector('#{chart} polyline');\
             return l ? l.getAttribute('points').trim().split(' ').length : 0;"
        ))
        .as_u64()
        .unwrap_or(0)
    };
    browser.wait(30, "the throughput chart drawn", |b| {
        points(b, "rate-chart") >= 5
    });
    let line = |b: &Browser| {
        b.js("const l = document.querySelector('#rate-chart polyline');\
              return l ? l.getAttribute('points') : '';")
    };
    let before = line(&browser);
    browser.wait(30, "the throughput chart moving", |b| line(b) != before);
    browser.wait(30, "the lag chart drawn", |b| points(b, "lag-chart") >= 5);
    // One lag line per partition, named in the legend.
    assert_eq!(
        browser.js("return document.querySelectorAll('#lag-chart polyline').length;"),
        json!(4)
    );
    let mut legend = browser
        .js("return [...document.querySelectorAll('#lag-legend span')].map(s => s.textContent);");
    legend
        .as_array_mut()
        .expect("names")
        .sort_by_key(|v| v.to_string());
    let mut names = expected.clone();
    names.sort_by_key(|v| v.to_string());
    assert_eq!(legend, Value::Array(names));
    assert_eq!(
        browser.js("return document.querySelectorAll('#rate-chart polyline').length;"),
        json!(2)
    );

    // The views with their columns, as GET /views has them.
    let views = get_json(port, "/views").expect("views");
    browser.wait(30, "the views listed", |b| {
        b.js("return document.querySelectorAll('#views li').length;")
            == json!(views.as_array().expect("views").len())
    });
    let listed = browser.text("#views");
    for v in views.as_array().expect("views") {
        assert!(
            listed.contains(v["name"].as_str().expect("name")),
            "{listed}"
        );
        for c in v["columns"].as_array().expect("columns") {
            let column = format!(
                "{} {}",
                c["name"].as_str().expect("a name"),
                c["type"].as_str().expect("a type")
            );
            assert!(listed.contains(&column), "{column} not in: {listed}");
        }
    }

    // The SQL editor: typed, run with the button; values and NULL in the table.
    // A column named like an integer keeps its place (a JS object would move it first).
    browser.type_into(
        "#sql",
        "SELECT 6 * 7 AS answer, 'forty two' AS \"2\", NULL AS nothing",
    );
    browser.click("#run");
    browser.wait(30, "the query's result", |b| {
        b.text("#sql-info").starts_with("1 row ")
    });
    assert_eq!(
        browser.js("return [...document.querySelectorAll('#results tr')]\
             .map(r => [...r.cells].map(c => c.textContent));"),
        json!([["answer", "2", "nothing"], ["42", "forty two", "NULL"]])
    );

    // A view's name fills in a query of it and runs it: 100 rows with its columns.
    browser.click("#views li a");
    let first_view = &views[0];
    browser.wait(30, "the view's rows", |b| {
        b.text("#sql-info").starts_with("100 rows")
    });
    assert_eq!(
        browser.js("return document.getElementById('sql').value;"),
        json!(format!(
            "SELECT * FROM \"{}\" LIMIT 100",
            first_view["name"].as_str().expect("name")
        ))
    );
    let header = browser
        .js("return [...document.querySelectorAll('#results thead th')].map(c => c.textContent);");
    let columns: Vec<Value> = first_view["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(header, Value::Array(columns));

    // A bad query: its error, and the page goes on.
    browser.type_into("#sql", "SELECT nope FROM accounts");
    browser.click("#run");
    browser.wait(30, "the query's error", |b| {
        b.text("#sql-error").contains("nope")
    });
    let error = browser.text("#sql-error");
    assert!(error.starts_with("sql."), "an error code first: {error}");
    let facts = browser.text("#facts");
    browser.wait(30, "the status still live", |b| b.text("#facts") != facts);

    // The screenshot: the throughput and lag lines are drawn in their colours.
    let png = browser.screenshot();
    // Kept for a person to look at: target/tmp/console.png.
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    std::fs::write(&kept, &png).expect("keep the screenshot");
    let rates = pixels_of(
        &png,
        browser.rect("#rate-chart"),
        &[[0x2c, 0x6b, 0xed], [0x1f, 0x8a, 0x4c]],
    );
    assert!(rates >= 100, "the throughput lines: {rates} pixels");
    let lags = pixels_of(
        &png,
        browser.rect("#lag-chart"),
        &[
            [0x2c, 0x6b, 0xed],
            [0x1f, 0x8a, 0x4c],
            [0xc5, 0x30, 0x30],
            [0xb7, 0x79, 0x1f],
        ],
    );
    assert!(lags >= 100, "the lag lines: {lags} pixels");
    drop(browser);
    assert_eq!(running.terminate(30), Some(0));
}

#[test]
fn the_console_asks_for_a_token_behind_auth() {
    const TOKEN: &str = "console-token-0123456789";
    let dir = tempfile::tempdir().expect("tempdir");
    let text = replace_line(&generator_pipeline(500_000_000), "  keys:", "keys: 300").replace(
        "views:",
        &format!("auth:\n  tokens:\n    - {{name: ops, token: {TOKEN}, views: [\"*\"]}}\nviews:"),
    );
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, text).expect("pipeline");
    let (mut running, port) = run(dir.path(), &path);
    let browser = Browser::start();
    browser.open(&format!("http://127.0.0.1:{port}/"));
    browser.wait(30, "the token prompt", |b| {
        b.text("#login-why").contains("send a token")
    });
    assert_eq!(browser.text("#read"), "–", "no data without a token");

    browser.type_into("#token", "not-the-token");
    browser.click("#login-form button");
    browser.wait(30, "the wrong token refused", |b| {
        b.text("#login-why").contains("refused")
    });

    browser.type_into("#token", TOKEN);
    browser.click("#login-form button");
    browser.wait(30, "the status with the token", |b| {
        b.text("#pipeline") == "bank-accounts" && b.text("#login").is_empty()
    });
    browser.wait(30, "the views with the token", |b| {
        b.text("#views").contains("accounts")
    });
    drop(browser);
    assert_eq!(running.terminate(30), Some(0));
}
