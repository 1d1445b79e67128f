//! `pool replay --url`: an open-loop load generator against a running `pool serve`.
//!
//! A dispatcher puts each arrival in a shared queue at its scheduled time, whatever the
//! service has answered so far. A fixed set of HTTP/1.1 keep-alive connections takes
//! requests from the queue (up to `pipeline` at a time, written together) and reads
//! their answers. Latency runs from the moment a request was queued, so time spent
//! waiting for a free connection counts; how late the dispatcher itself queued
//! requests (timer granularity, a busy client) is reported apart. A sampler reads the
//! service's pool status every 100 ms for the ready count, provisions and store writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::ProgressBar;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ReplayError;
use super::report::{Arrival, RunData, percentile};
use super::trace::Trace;

/// How to drive the service.
#[derive(Debug, Clone)]
pub struct HttpParams {
    /// The service's base URL, `http://HOST:PORT[/PREFIX]`.
    pub url: String,
    /// The template every arrival asks for.
    pub template: String,
    /// `wait`, `fail` or `cold`.
    pub on_empty: &'static str,
    /// How long an arrival waits when the pool is empty.
    pub wait: Duration,
    /// The bearer token, if the service needs one.
    pub api_token: Option<String>,
    /// Keep-alive connections.
    pub concurrency: usize,
    /// Requests a connection writes before reading their answers.
    pub pipeline: usize,
    /// How many times faster than the trace to send.
    pub speed: f64,
}

/// Where the service is.
#[derive(Debug, Clone)]
struct Target {
    authority: String,
    prefix: String,
}

fn parse_url(url: &str) -> Result<Target, ReplayError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        ReplayError::Usage(format!("--url {url:?}: only http:// URLs are supported"))
    })?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(ReplayError::Usage(format!("--url {url:?} names no host")));
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let prefix = path.trim_end_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("/{prefix}")
    };
    Ok(Target { authority, prefix })
}

/// One request waiting for a connection.
#[derive(Debug, Clone, Copy)]
struct Job {
    index: usize,
    queued: Instant,
}

/// The outcome of one request.
#[derive(Debug, Clone)]
struct Done {
    index: usize,
    queued: Instant,
    answered: Instant,
    result: Result<bool, String>,
}

/// A parsed HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// One keep-alive connection with a read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(authority: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Reads one response.
    async fn read_response(&mut self) -> std::io::Result<Response> {
        loop {
            if let Some((resp, used)) = parse_response(&self.buf)? {
                self.buf.drain(..used);
                return Ok(resp);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the service closed the connection",
                ));
            }
        }
    }
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Parses one complete response at the start of `buf`; `None` if more bytes are needed.
/// Returns the response and how many bytes it used.
fn parse_response(buf: &[u8]) -> std::io::Result<Option<(Response, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(format!("malformed response: {e}"))),
    };
    let status = r.code.unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
            length = Some(v.ok_or_else(|| invalid("bad content-length"))?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        }
    }
    if chunked {
        return Ok(parse_chunked(&buf[head..])?
            .map(|(body, used)| (Response { status, body }, head + used)));
    }
    let length: usize = length.unwrap_or(0);
    if buf.len() < head + length {
        return Ok(None);
    }
    let body = buf[head..head + length].to_vec();
    Ok(Some((Response { status, body }, head + length)))
}

/// Decodes a chunked body at the start of `buf`; `None` if it is not complete yet.
fn parse_chunked(buf: &[u8]) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = find(&buf[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[at..at + eol]).map_err(|_| invalid("bad chunk"))?;
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("bad chunk size"))?;
        at += eol + 2;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let Some(end) = find(&buf[at..], b"\r\n") else {
                return Ok(None);
            };
            if end == 0 {
                return Ok(Some((body, at + 2)));
            }
            let Some(end) = find(&buf[at..], b"\r\n\r\n") else {
                return Ok(None);
            };
            return Ok(Some((body, at + end + 4)));
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What an allocation response says: warm or not, or the error code.
fn outcome(resp: &Response) -> Result<bool, String> {
    if (200..300).contains(&resp.status) {
        if find(&resp.body, b"\"warm\":true").is_some() {
            return Ok(true);
        }
        if find(&resp.body, b"\"warm\":false").is_some() {
            return Ok(false);
        }
        return Err("bad_reply".into());
    }
    let code = serde_json::from_slice::<Value>(&resp.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
    Err(code.unwrap_or_else(|| format!("http_{}", resp.status)))
}

struct Requests {
    target: Target,
    conversation_prefix: String,
    body: String,
    auth: String,
}

impl Requests {
    fn write(&self, out: &mut Vec<u8>, index: usize) {
        use std::io::Write as _;
        let _ = write!(
            out,
            "POST {}/v1/conversations/{}-{index}/project HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{}",
            self.target.prefix,
            self.conversation_prefix,
            self.target.authority,
            self.body.len(),
            self.auth,
            self.body
        );
    }

    fn get(&self, path: &str) -> Vec<u8> {
        format!(
            "GET {}{path} HTTP/1.1\r\nhost: {}\r\n{}\r\n",
            self.target.prefix, self.target.authority, self.auth
        )
        .into_bytes()
    }
}

/// One connection's loop: take up to `pipeline` queued requests, send them together,
/// read their answers; reconnect after a failure.
async fn worker(
    requests: Arc<Requests>,
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    done: mpsc::UnboundedSender<Done>,
    pipeline: usize,
) {
    let mut conn: Option<Conn> = None;
    let mut batch = Vec::with_capacity(pipeline);
    let mut out = Vec::with_capacity(512 * pipeline);
    loop {
        batch.clear();
        {
            let mut rx = queue.lock().await;
            match rx.recv().await {
                Some(job) => batch.push(job),
                None => return,
            }
            while batch.len() < pipeline {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        out.clear();
        for job in &batch {
            requests.write(&mut out, job.index);
        }
        let result = exchange(&mut conn, &requests.target.authority, &out, &batch, &done).await;
        if let Err((answered, e)) = result {
            conn = None;
            let code = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection_refused",
                std::io::ErrorKind::InvalidData => "bad_reply",
                _ => "connection_error",
            };
            for job in &batch[answered..] {
                let _ = done.send(Done {
                    index: job.index,
                    queued: job.queued,
                    answered: Instant::now(),
                    result: Err(code.into()),
                });
            }
        }
    }
}

/// Sends `out` (the requests of `batch`) and reads one response per request. On failure
/// returns how many were answered and the error.
async fn exchange(
    conn: &mut Option<Conn>,
    authority: &str,
    out: &[u8],
    batch: &[Job],
    done: &mpsc::UnboundedSender<Done>,
) -> Result<(), (usize, std::io::Error)> {
    if conn.is_none() {
        *conn = Some(Conn::open(authority).await.map_err(|e| (0, e))?);
    }
    let Some(c) = conn.as_mut() else {
        return Err((0, invalid("no connection")));
    };
    c.stream.write_all(out).await.map_err(|e| (0, e))?;
    for (i, job) in batch.iter().enumerate() {
        let resp = c.read_response().await.map_err(|e| (i, e))?;
        let _ = done.send(Done {
            index: job.index,
            queued: job.queued,
            answered: Instant::now(),
            result: outcome(&resp),
        });
    }
    Ok(())
}

/// Queues arrival `i` at `start + offsets[i] / speed`; returns how late each was queued.
fn dispatch(
    offsets: &[Duration],
    speed: f64,
    start: std::time::Instant,
    jobs: &mpsc::UnboundedSender<Job>,
) -> Vec<Duration> {
    let mut lag = Vec::with_capacity(offsets.len());
    for (index, offset) in offsets.iter().enumerate() {
        let due = start + offset.div_f64(speed);
        let now = std::time::Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let now = std::time::Instant::now();
        lag.push(now.saturating_duration_since(due));
        let queued = Instant::from_std(now);
        if jobs.send(Job { index, queued }).is_err() {
            break;
        }
    }
    lag
}

/// The ready counts sampled so far, and the latest full sample.
type Samples = (Vec<(Duration, u64)>, PoolSample);

/// What the service's pool status says at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct PoolSample {
    ready: u64,
    provisions: u64,
    saves: u64,
}

async fn sample(
    conn: &mut Option<Conn>,
    requests: &Requests,
    template: &str,
) -> Result<PoolSample, ReplayError> {
    let fail = |e: String| ReplayError::Http(format!("reading the pool status: {e}"));
    if conn.is_none() {
        let c = Conn::open(&requests.target.authority)
            .await
            .map_err(|e| fail(format!("connecting to {}: {e}", requests.target.authority)))?;
        *conn = Some(c);
    }
    let Some(c) = conn.as_mut() else {
        return Err(fail("no connection".into()));
    };
    let result = async {
        c.stream.write_all(&requests.get("/v1/pool")).await?;
        c.read_response().await
    }
    .await;
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            *conn = None;
            return Err(fail(e.to_string()));
        }
    };
    let v: Value = serde_json::from_slice(&resp.body)
        .map_err(|e| fail(format!("status {}: {e}", resp.status)))?;
    if resp.status != 200 {
        return Err(fail(format!("status {}: {v}", resp.status)));
    }
    let counts = &v["templates"][template]["counts"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    Ok(PoolSample {
        ready: n(&counts["available"]) + n(&counts["reserved"]),
        provisions: n(&v["metrics"]["provisions_started"]),
        saves: n(&v["metrics"]["saves"]),
    })
}

/// Replays `trace` against the service; blocks until every request is answered.
pub fn run(
    trace: &Trace,
    params: &HttpParams,
    progress: &ProgressBar,
) -> Result<RunData, ReplayError> {
    if !(params.speed.is_finite() && params.speed > 0.0) {
        return Err(ReplayError::Usage(format!(
            "--speed must be a positive number, not {}",
            params.speed
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ReplayError::Runtime)?;
    runtime.block_on(drive(trace, params, progress))
}

async fn drive(
    trace: &Trace,
    params: &HttpParams,
    progress: &ProgressBar,
) -> Result<RunData, ReplayError> {
    let target = parse_url(&params.url)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let body = serde_json::json!({
        "template": params.template,
        "on_empty": params.on_empty,
        "wait_ms": u64::try_from(params.wait.as_millis()).unwrap_or(u64::MAX),
    })
    .to_string();
    let auth = params
        .api_token
        .as_ref()
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let requests = Arc::new(Requests {
        target,
        conversation_prefix: format!("replay-{stamp:x}-{:x}", std::process::id()),
        body,
        auth,
    });

    let mut status_conn = None;
    let before = sample(&mut status_conn, &requests, &params.template).await?;

    let (job_tx, job_rx) = mpsc::unbounded_channel::<Job>();
    let job_rx = Arc::new(tokio::sync::Mutex::new(job_rx));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut workers = Vec::new();
    for _ in 0..params.concurrency {
        workers.push(tokio::spawn(worker(
            requests.clone(),
            job_rx.clone(),
            done_tx.clone(),
            params.pipeline,
        )));
    }
    drop(done_tx);

    let start = Instant::now();
    let samples: Arc<Mutex<Samples>> =
        Arc::new(Mutex::new((vec![(Duration::ZERO, before.ready)], before)));
    let sampler = {
        let (requests, samples, template) =
            (requests.clone(), samples.clone(), params.template.clone());
        tokio::spawn(async move {
            let mut conn = None;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if let Ok(s) = sample(&mut conn, &requests, &template).await {
                    let mut seen = samples.lock().unwrap_or_else(|p| p.into_inner());
                    seen.0.push((start.elapsed(), s.ready));
                    seen.1 = s;
                }
            }
        })
    };

    // Arrivals are queued by a thread of their own: tokio's timer wheel has a resolution
    // of a millisecond, which would release them in bursts (ten at a time at 10,000/s);
    // a thread's sleep keeps to the trace within tens of microseconds.
    let dispatcher = {
        let (offsets, speed) = (trace.offsets.clone(), params.speed);
        let start = start.into_std();
        std::thread::Builder::new()
            .name("replay-dispatch".into())
            .spawn(move || dispatch(&offsets, speed, start, &job_tx))
            .map_err(|e| ReplayError::Http(format!("starting the dispatcher: {e}")))?
    };
    let mut results: Vec<Option<Done>> = vec![None; trace.len()];
    let mut answered = 0usize;
    while let Some(d) = done_rx.recv().await {
        answered += 1;
        if answered % 64 == 0 {
            progress.set_position(answered as u64);
        }
        let at = d.index;
        results[at] = Some(d);
    }
    progress.set_position(answered as u64);
    // Every job was queued before the last answer came, so the thread has ended.
    let mut lag = dispatcher
        .join()
        .map_err(|_| ReplayError::Http("the dispatcher thread panicked".into()))?;
    for w in workers {
        let _ = w.await;
    }
    let last = results
        .iter()
        .flatten()
        .map(|d| d.answered)
        .max()
        .unwrap_or(start);
    sampler.abort();
    let latest = samples.lock().unwrap_or_else(|p| p.into_inner()).1;
    let after = match tokio::time::timeout(
        Duration::from_secs(10),
        sample(&mut status_conn, &requests, &params.template),
    )
    .await
    {
        Ok(Ok(s)) => s,
        failed => {
            let reason = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer within 10 s".into(),
            };
            tracing::warn!(%reason, "the final pool status could not be read; provisions and store writes are counted up to the last sample");
            latest
        }
    };

    let elapsed = last.saturating_duration_since(start);
    let mut arrivals = Vec::with_capacity(trace.len());
    for (i, d) in results.into_iter().enumerate() {
        let Some(d) = d else {
            return Err(ReplayError::Http(format!("request {i} was never answered")));
        };
        let latency = d.answered.saturating_duration_since(d.queued);
        let wait = if d.result == Ok(true) {
            Duration::ZERO
        } else {
            latency
        };
        arrivals.push(Arrival {
            at: trace.offsets[i].div_f64(params.speed),
            result: d.result,
            wait,
            latency,
        });
    }
    let mut ready = samples.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
    ready.push((elapsed, after.ready));
    lag.sort_unstable();
    let mut data = RunData {
        mode: "http",
        trace: trace.name.clone(),
        arrivals,
        ready,
        provisions: after.provisions.saturating_sub(before.provisions),
        store_writes: after.saves.saturating_sub(before.saves),
        end: elapsed,
        wall: elapsed,
        achieved_per_s: Some(trace.len() as f64 / elapsed.as_secs_f64().max(1e-9)),
        ..RunData::default()
    };
    data.dispatch_lag = Some((percentile(&lag, 0.5), percentile(&lag, 0.99)));
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_delimited_and_chunked_responses() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{\"warm\":true}HTTP/1.1 503 x\r\n";
        let (r, used) = parse_response(raw).unwrap().unwrap();
        assert_eq!((r.status, outcome(&r)), (200, Ok(true)));
        assert!(parse_response(&raw[used..]).unwrap().is_none());
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n\
            10\r\n{\"error\":{\"code\"\r\n13\r\n:\"pool_empty\"}}    \r\n0\r\n\r\n";
        let (r, used) = parse_response(chunked).unwrap().unwrap();
        assert_eq!(used, chunked.len());
        assert_eq!(outcome(&r), Err("pool_empty".to_string()));
        assert!(
            parse_response(&chunked[..chunked.len() - 3])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn urls_name_host_port_and_prefix() {
        let t = parse_url("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("127.0.0.1:8080", "")
        );
        let t = parse_url("http://localhost/pool/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("localhost:80", "/pool")
        );
        assert!(parse_url("https://x").is_err());
    }
}
