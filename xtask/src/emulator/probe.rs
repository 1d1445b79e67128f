//! Free ports and readiness checks over plain TCP.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::supervised::Supervised;

/// Distinct free ports on 127.0.0.1, found by binding port 0 and releasing the listeners.
///
/// The port could in principle be taken by someone else before the emulator binds it; the
/// emulator then fails to start and says so in its log.
pub(crate) fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding 127.0.0.1:0 to find a free port")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// The status code of a `GET path` to 127.0.0.1:`port`, if an HTTP server answers.
pub(crate) fn http_status(port: u16, path: &str) -> Option<u16> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).ok()?;
    parse_status(&head)
}

/// The status code of an HTTP/1.x status line's first 12 bytes (`HTTP/1.1 200`).
fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let code = text.strip_prefix("HTTP/1.")?.get(2..5)?;
    code.parse().ok()
}

/// Waits until the emulator answers HTTP on `port`, failing early if it exits.
pub(crate) fn wait_ready(
    emulator: &mut Supervised,
    port: u16,
    path: &str,
    limit: Duration,
) -> Result<u16> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(report) = emulator.exit_report() {
            bail!("during start-up, {report}");
        }
        if let Some(code) = http_status(port, path) {
            return Ok(code);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not answer on 127.0.0.1:{port} within {}s; last log lines:\n{}",
                emulator.name(),
                limit.as_secs(),
                emulator.log_tail(30)
            );
        }
        sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports = free_ports(2).unwrap();
        assert_ne!(ports[0], ports[1]);
        for port in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }

    #[test]
    fn reads_the_status_of_a_local_http_server() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0_u8; 256];
            let read = stream.read(&mut request).unwrap();
            let request = String::from_utf8_lossy(&request[..read]).into_owned();
            stream
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            request
        });
        assert_eq!(http_status(port, "/probe?x=1"), Some(403));
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /probe?x=1 HTTP/1.1\r\n")
        );
    }

    #[test]
    fn nothing_listening_is_not_ready() {
        let port = free_ports(1).unwrap()[0];
        assert_eq!(http_status(port, "/"), None);
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-Open"), None);
    }
}
