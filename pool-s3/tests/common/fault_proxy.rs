//! A small HTTP/1.1 proxy on 127.0.0.1 between a store and the emulator that answers or
//! mistreats the next requests as told, and forwards the rest unchanged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What to do with one request.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer `503 SlowDown` without forwarding.
    SlowDown,
    /// Answer `500 InternalError` without forwarding.
    InternalError,
    /// Forward nothing and answer nothing for this long, then close the connection.
    Stall(Duration),
    /// Forward the request, then close the connection without passing on the answer.
    DropResponse,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<VecDeque<Fault>>,
    requests: AtomicUsize,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    endpoint: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream.clone(), state.clone()));
            }
        });
        Self {
            endpoint,
            shared,
            task,
        }
    }

    /// The proxy's address, to use as the store's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Applies `faults` to the next requests, one each, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.faults.lock().expect("faults").extend(faults);
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Faults not yet applied.
    pub fn pending_faults(&self) -> usize {
        self.shared.faults.lock().expect("faults").len()
    }
}

async fn serve(mut client: TcpStream, upstream: String, shared: Arc<Shared>) {
    while let Some(request) = read_request(&mut client).await {
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let fault = shared.faults.lock().expect("faults").pop_front();
        match fault {
            Some(Fault::SlowDown) => {
                let body = concat!(
                    "<Error><Code>SlowDown</Code>",
                    "<Message>Reduce your request rate.</Message></Error>"
                );
                let _ = client
                    .write_all(error_response("503 Slow Down", body).as_bytes())
                    .await;
            }
            Some(Fault::InternalError) => {
                let body = "<Error><Code>InternalError</Code><Message>Try again.</Message></Error>";
                let _ = client
                    .write_all(error_response("500 Internal Server Error", body).as_bytes())
                    .await;
            }
            Some(Fault::Stall(d)) => {
                tokio::time::sleep(d).await;
                return;
            }
            Some(Fault::DropResponse) => {
                let _ = forward(&upstream, &request).await;
                return;
            }
            None => {
                let Some(response) = forward(&upstream, &request).await else {
                    return;
                };
                if client.write_all(&response).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn error_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one request (head and a `Content-Length` body); `None` at end of stream.
async fn read_request(client: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "the proxy needs Content-Length"
    );
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| {
            v.trim().parse::<usize>().expect("numeric Content-Length")
        });
    while buf.len() < head_end + length {
        let mut chunk = vec![0u8; 65536];
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

/// Sends `request` upstream on a new connection that closes after the answer, and
/// returns the whole answer.
async fn forward(upstream: &str, request: &[u8]) -> Option<Vec<u8>> {
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&request[..head_end]);
    let mut rewritten: String = head
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    rewritten.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(upstream).await.ok()?;
    server.write_all(rewritten.as_bytes()).await.ok()?;
    server.write_all(&request[head_end..]).await.ok()?;
    let mut response = Vec::new();
    server.read_to_end(&mut response).await.ok()?;
    Some(response)
}
