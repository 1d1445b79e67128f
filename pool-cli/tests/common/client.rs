//! A small HTTP/1.1 client over `std::net`: one request per connection, bodies read
//! whole (with `Content-Length` or chunked), and a server-sent event reader.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A whole response.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// Header names (lower case) and values, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The decoded body.
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The `error.code` of a JSON error body; panics when the body is not one.
    pub(crate) fn error_code(&self) -> String {
        let v = self.json();
        let code = v["error"]["code"].as_str();
        let message = v["error"]["message"].as_str();
        match (code, message) {
            (Some(code), Some(m)) if !m.is_empty() => code.to_owned(),
            _ => panic!("not a JSON error body: {v}"),
        }
    }
}

/// Writes one request with `Connection: close`.
fn write_request(
    stream: &mut TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<()> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some(body) = body {
        // A server may answer (413) and close before reading a large body; its answer
        // is still read below.
        let _ = stream.write_all(body);
    }
    stream.flush()
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends one request and reads the whole response.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Response> {
    let mut stream = connect(addr)?;
    write_request(&mut stream, addr, method, path, headers, body)?;
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader)?;
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = Vec::new();
    if chunked {
        while let Some(chunk) = read_chunk(&mut reader)? {
            body.extend(chunk);
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no response"));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            return Ok((status, headers));
        }
        let (name, value) = trimmed
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header {trimmed:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// One chunk of a chunked body; `None` after the last.
fn read_chunk(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let size = line.trim().split(';').next().unwrap_or_default();
    let size =
        usize::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
    let mut chunk = vec![0; size + 2];
    if size == 0 {
        line.clear();
        reader.read_line(&mut line)?;
        return Ok(None);
    }
    reader.read_exact(&mut chunk)?;
    chunk.truncate(size);
    Ok(Some(chunk))
}

/// One server-sent event and when it arrived.
#[derive(Debug, Clone)]
pub(crate) struct SseEvent {
    /// Its `event:` name.
    pub(crate) event: String,
    /// Its `data:`.
    pub(crate) data: String,
    /// When the client had read it whole.
    pub(crate) at: Instant,
}

impl SseEvent {
    /// The data as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| {
            panic!("event {} data is not JSON ({e}): {}", self.event, self.data)
        })
    }
}

/// A response whose body is read as server-sent events while it arrives.
pub(crate) struct EventStream {
    reader: BufReader<TcpStream>,
    /// The status code.
    pub(crate) status: u16,
    /// Header names (lower case) and values.
    pub(crate) headers: Vec<(String, String)>,
    /// When the request was sent.
    pub(crate) sent: Instant,
    pending: Vec<u8>,
    ended: bool,
}

impl EventStream {
    /// Sends a GET for `path` and reads the response head.
    pub(crate) fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> io::Result<Self> {
        let mut stream = connect(addr)?;
        let sent = Instant::now();
        write_request(&mut stream, addr, "GET", path, headers, None)?;
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader)?;
        Ok(Self {
            reader,
            status,
            headers,
            sent,
            pending: Vec::new(),
            ended: false,
        })
    }

    /// The next event; `None` when the stream ends. Comments (keep-alives) are skipped.
    pub(crate) fn next_event(&mut self) -> io::Result<Option<SseEvent>> {
        loop {
            if let Some(end) = find(&self.pending, b"\n\n") {
                let raw: Vec<u8> = self.pending.drain(..end + 2).collect();
                if let Some(event) = parse_event(&String::from_utf8_lossy(&raw)) {
                    return Ok(Some(event));
                }
                continue;
            }
            if self.ended {
                return Ok(None);
            }
            match read_chunk(&mut self.reader)? {
                Some(chunk) => self.pending.extend(chunk),
                None => self.ended = true,
            }
        }
    }

    /// Every remaining event.
    pub(crate) fn collect(mut self) -> io::Result<Vec<SseEvent>> {
        let mut events = Vec::new();
        while let Some(e) = self.next_event()? {
            events.push(e);
        }
        Ok(events)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_event(raw: &str) -> Option<SseEvent> {
    let (mut event, mut data) = (None, Vec::new());
    for line in raw.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = Some(name.trim().to_owned());
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some(SseEvent {
        event: event.unwrap_or_else(|| "message".into()),
        data: data.join("\n"),
        at: Instant::now(),
    })
}
