//! A scripted HTTP server on 127.0.0.1 that answers like the blob service would, one
//! request per connection, recording what it was sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One scripted answer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reply {
    /// An error status with a service error code.
    Status(u16, &'static str),
    /// Never answer.
    Hang,
    /// 201 Created with this ETag.
    Created(&'static str),
    /// 200 with this ETag and the write id the first PUT carried as blob metadata.
    PropertiesOfFirstPut(&'static str),
    /// 200 with this ETag and some other writer's id.
    PropertiesOfAnotherWriter(&'static str),
}

#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) requests: Vec<String>,
    pub(crate) first_write_id: Option<String>,
}

/// Serves `script` in order, one request per connection; repeats the last answer.
pub(crate) async fn serve(script: Vec<Reply>) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let reply = script[n.min(script.len() - 1)];
            tokio::spawn(answer(socket, reply, log.clone()));
        }
    });
    (addr, seen)
}

async fn answer(mut socket: TcpStream, reply: Reply, seen: Arc<Mutex<Seen>>) {
    let head = read_request(&mut socket).await;
    let first_line = head.lines().next().unwrap_or_default().to_owned();
    let write_id = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("x-ms-meta-poolwriteid:")
            .map(str::trim)
            .map(str::to_owned)
    });
    let first_write_id = {
        let mut s = seen.lock().expect("request log");
        s.requests.push(first_line);
        if s.first_write_id.is_none() {
            s.first_write_id = write_id;
        }
        s.first_write_id.clone().unwrap_or_default()
    };
    let (status, headers) = match reply {
        Reply::Hang => return std::future::pending().await,
        Reply::Status(status, code) => (status, format!("x-ms-error-code: {code}\r\n")),
        Reply::Created(etag) => (201, format!("ETag: {etag}\r\n")),
        Reply::PropertiesOfFirstPut(etag) => (
            200,
            format!("ETag: {etag}\r\nx-ms-meta-poolwriteid: {first_write_id}\r\n"),
        ),
        Reply::PropertiesOfAnotherWriter(etag) => (
            200,
            format!("ETag: {etag}\r\nx-ms-meta-poolwriteid: someone-else\r\n"),
        ),
    };
    let response =
        format!("HTTP/1.1 {status} X\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = socket.write_all(response.as_bytes()).await;
}

/// Reads the request head and its body; returns the head.
async fn read_request(socket: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0_u8; 8192];
    loop {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length || n == 0 {
                return head;
            }
        } else if n == 0 {
            return text;
        }
    }
}
