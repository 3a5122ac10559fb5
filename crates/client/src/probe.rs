//! The health probe: `GET /healthz` to the server's VPN address through the tunnel, and the
//! parser of its reply.

use std::borrow::Cow;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use camwire_api::HealthResponse;
use camwire_tunnel::Tunnel;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// TCP port of the server's HTTP API on its VPN address.
pub const HEALTH_PORT: u16 = 80;

/// Largest reply the probe reads, in bytes; a health reply is a few hundred.
const MAX_REPLY_BYTES: usize = 16 * 1024;

/// Header slots for parsing the reply head; a reply with more headers is rejected.
const MAX_HEADERS: usize = 32;

/// Failure of a health probe, shown to the user as the reason the server is not answering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("no connection through the tunnel: {0}")]
    Connect(String),

    #[error("no complete reply within {} s", .0.as_secs_f64())]
    TimedOut(Duration),

    #[error("the connection failed: {0}")]
    Io(String),

    #[error("the connection closed before the reply was complete")]
    Truncated,

    #[error("the reply is not valid HTTP: {0}")]
    InvalidHttp(String),

    #[error("the reply is larger than {MAX_REPLY_BYTES} bytes")]
    TooLarge,

    #[error("the server replied with HTTP {0}")]
    Status(u16),

    #[error("the reply body is not {{\"status\":\"ok\"}}")]
    Body,
}

/// Progress of a reply that has not failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyProgress {
    /// More bytes are needed.
    Incomplete,
    /// Status `200` and a body of `{"status":"ok"}`.
    Healthy,
}

/// How the end of the reply body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    ContentLength(usize),
    Chunked,
    /// No length: the body ends when the server closes the connection.
    UntilClose,
}

/// Sends `GET /healthz` to `target` through `tunnel` and returns the time from the start of the
/// TCP handshake to a complete healthy reply, bounded by `timeout`.
pub async fn probe_health(
    tunnel: &Tunnel,
    target: SocketAddrV4,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let started = Instant::now();

    match tokio::time::timeout(timeout, exchange(tunnel, target)).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(ProbeError::TimedOut(timeout)),
    }
}

async fn exchange(tunnel: &Tunnel, target: SocketAddrV4) -> Result<(), ProbeError> {
    let mut stream = tunnel
        .dial(target)
        .await
        .map_err(|error| ProbeError::Connect(error.to_string()))?;

    let request = health_request(target);
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| ProbeError::Io(error.to_string()))?;

    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|error| ProbeError::Io(error.to_string()))?;
        received.extend_from_slice(&buffer[..read]);
        if received.len() > MAX_REPLY_BYTES {
            return Err(ProbeError::TooLarge);
        }

        let closed = read == 0;
        match parse_health_reply(&received, closed)? {
            ReplyProgress::Healthy => return Ok(()),
            ReplyProgress::Incomplete => {}
        }
    }
}

/// Returns the probe's request. `Connection: close` lets a reply without a length end at EOF.
fn health_request(target: SocketAddrV4) -> String {
    format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nUser-Agent: camwire/{}\r\nAccept: application/json\r\n\
         Connection: close\r\n\r\n",
        target.ip(),
        env!("CARGO_PKG_VERSION"),
    )
}

/// Parses the bytes of a health reply received so far; `closed` tells whether the server has
/// closed the connection, so that no more bytes will come.
///
/// A status other than 200 fails as soon as the head is complete. The body may be framed by
/// `Content-Length`, by chunked transfer encoding, or by the end of the connection.
pub fn parse_health_reply(received: &[u8], closed: bool) -> Result<ReplyProgress, ProbeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_length = match response.parse(received) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return incomplete(closed),
        Err(error) => return Err(ProbeError::InvalidHttp(error.to_string())),
    };

    let Some(status) = response.code else {
        return Err(ProbeError::InvalidHttp(
            "the status line has no code".to_owned(),
        ));
    };
    if status != 200 {
        return Err(ProbeError::Status(status));
    }

    let received_body = &received[head_length..];
    let body = match framing(response.headers)? {
        Framing::ContentLength(length) => {
            let Some(body) = received_body.get(..length) else {
                return incomplete(closed);
            };
            Cow::Borrowed(body)
        }
        Framing::Chunked => {
            let Some(body) = decode_chunked(received_body)? else {
                return incomplete(closed);
            };
            Cow::Owned(body)
        }
        Framing::UntilClose if !closed => return Ok(ReplyProgress::Incomplete),
        Framing::UntilClose => Cow::Borrowed(received_body),
    };

    let reply: HealthResponse = serde_json::from_slice(&body).map_err(|_| ProbeError::Body)?;
    if reply.status != "ok" {
        return Err(ProbeError::Body);
    }
    Ok(ReplyProgress::Healthy)
}

fn incomplete(closed: bool) -> Result<ReplyProgress, ProbeError> {
    if closed {
        Err(ProbeError::Truncated)
    } else {
        Ok(ReplyProgress::Incomplete)
    }
}

/// Reads the body framing from the headers, as RFC 9112 section 6.3 orders it: chunked
/// transfer encoding first, then `Content-Length`, else the body runs to the connection's end.
fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, ProbeError> {
    let mut content_length = None;
    let mut chunked = false;

    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = std::str::from_utf8(header.value).unwrap_or_default();
            let last_coding = value.rsplit(',').next().unwrap_or_default().trim();
            if !last_coding.eq_ignore_ascii_case("chunked") {
                return Err(ProbeError::InvalidHttp(format!(
                    "unsupported transfer encoding {:?}",
                    truncate(value, 40)
                )));
            }
            chunked = true;
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|value| value.trim().parse::<usize>().ok())
                .ok_or_else(|| ProbeError::InvalidHttp("invalid Content-Length".to_owned()))?;
            if content_length.is_some_and(|earlier| earlier != length) {
                return Err(ProbeError::InvalidHttp(
                    "two different Content-Length values".to_owned(),
                ));
            }
            content_length = Some(length);
        }
    }

    if chunked {
        return Ok(Framing::Chunked);
    }
    Ok(content_length.map_or(Framing::UntilClose, Framing::ContentLength))
}

/// Decodes a chunked body; `None` until the last (zero-size) chunk has arrived. Trailers after
/// the last chunk are ignored.
fn decode_chunked(mut rest: &[u8]) -> Result<Option<Vec<u8>>, ProbeError> {
    let mut body = Vec::new();

    loop {
        let (size_line, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(parsed)) => parsed,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ProbeError::InvalidHttp("invalid chunk size".to_owned())),
        };
        if size == 0 {
            return Ok(Some(body));
        }

        let size = usize::try_from(size).map_err(|_| ProbeError::TooLarge)?;
        if size > MAX_REPLY_BYTES {
            return Err(ProbeError::TooLarge);
        }
        let data_end = size_line + size;
        let Some(data) = rest.get(size_line..data_end) else {
            return Ok(None);
        };
        let Some(line_end) = rest.get(data_end..data_end + 2) else {
            return Ok(None);
        };
        if line_end != b"\r\n" {
            return Err(ProbeError::InvalidHttp(
                "a chunk does not end with CRLF".to_owned(),
            ));
        }

        body.extend_from_slice(data);
        rest = &rest[data_end + 2..];
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK_BODY: &str = r#"{"status":"ok"}"#;

    fn reply_with_length(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn healthy_reply_with_content_length() {
        let reply = reply_with_length("200 OK", OK_BODY);

        let progress = parse_health_reply(reply.as_bytes(), false);

        assert_eq!(progress, Ok(ReplyProgress::Healthy));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let reply = reply_with_length("200 OK", OK_BODY);

        for end in 0..reply.len() {
            let progress = parse_health_reply(&reply.as_bytes()[..end], false);
            assert_eq!(
                progress,
                Ok(ReplyProgress::Incomplete),
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn truncated_reply_fails_at_close() {
        let reply = reply_with_length("200 OK", OK_BODY);
        let cut = &reply.as_bytes()[..reply.len() - 3];

        assert_eq!(parse_health_reply(cut, true), Err(ProbeError::Truncated));
        assert_eq!(
            parse_health_reply(b"HTTP/1.1 2", true),
            Err(ProbeError::Truncated)
        );
        assert_eq!(parse_health_reply(b"", true), Err(ProbeError::Truncated));
    }

    #[test]
    fn error_status_fails_before_body() {
        let head = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\n";

        let progress = parse_health_reply(head.as_bytes(), false);

        assert_eq!(progress, Err(ProbeError::Status(503)));
    }

    #[test]
    fn other_status_values_fail() {
        let cases = [
            ("status is down", r#"{"status":"down"}"#),
            ("not JSON", "<html>ok</html>"),
            ("no status field", r#"{"healthy":true}"#),
            ("empty body", ""),
        ];

        for (case, body) in cases {
            let reply = reply_with_length("200 OK", body);
            let progress = parse_health_reply(reply.as_bytes(), false);
            assert_eq!(progress, Err(ProbeError::Body), "{case}");
        }
    }

    #[test]
    fn extra_fields_in_body_are_accepted() {
        let reply = reply_with_length("200 OK", r#"{"status":"ok","version":"1.2"}"#);

        assert_eq!(
            parse_health_reply(reply.as_bytes(), false),
            Ok(ReplyProgress::Healthy)
        );
    }

    #[test]
    fn body_until_close_waits_for_close() {
        let reply = format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{OK_BODY}");

        let open = parse_health_reply(reply.as_bytes(), false);
        let closed = parse_health_reply(reply.as_bytes(), true);

        assert_eq!(open, Ok(ReplyProgress::Incomplete));
        assert_eq!(closed, Ok(ReplyProgress::Healthy));
    }

    #[test]
    fn chunked_body_is_decoded() {
        let reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                     5\r\n{\"sta\r\na;ext=1\r\ntus\":\"ok\"}\r\n0\r\n\r\n";

        assert_eq!(
            parse_health_reply(reply.as_bytes(), false),
            Ok(ReplyProgress::Healthy)
        );
        let without_last_chunk = &reply[..reply.len() - 5];
        assert_eq!(
            parse_health_reply(without_last_chunk.as_bytes(), false),
            Ok(ReplyProgress::Incomplete)
        );
    }

    #[test]
    fn chunk_without_crlf_is_invalid() {
        let reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n";

        let progress = parse_health_reply(reply.as_bytes(), false);

        assert!(
            matches!(progress, Err(ProbeError::InvalidHttp(_))),
            "{progress:?}"
        );
    }

    #[test]
    fn chunked_takes_precedence_over_length() {
        let reply = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
                     f\r\n{\"status\":\"ok\"}\r\n0\r\n\r\n";

        assert_eq!(
            parse_health_reply(reply.as_bytes(), false),
            Ok(ReplyProgress::Healthy)
        );
    }

    #[test]
    fn conflicting_lengths_are_invalid() {
        let reply =
            format!("HTTP/1.1 200 OK\r\nContent-Length: 15\r\nContent-Length: 16\r\n\r\n{OK_BODY}");

        let progress = parse_health_reply(reply.as_bytes(), false);

        assert_eq!(
            progress,
            Err(ProbeError::InvalidHttp(
                "two different Content-Length values".to_owned()
            ))
        );
    }

    #[test]
    fn unsupported_encoding_is_invalid() {
        let reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx";

        let progress = parse_health_reply(reply.as_bytes(), true);

        assert!(
            matches!(&progress, Err(ProbeError::InvalidHttp(message)) if message.contains("gzip")),
            "{progress:?}"
        );
    }

    #[test]
    fn garbage_is_invalid_http() {
        let progress = parse_health_reply(b"\x00\xffSSH-2.0-OpenSSH\r\n\r\n", false);

        assert!(
            matches!(progress, Err(ProbeError::InvalidHttp(_))),
            "{progress:?}"
        );
    }

    #[test]
    fn request_names_host_and_closes() {
        let request = health_request(SocketAddrV4::new([10, 13, 0, 1].into(), HEALTH_PORT));

        assert!(
            request.starts_with("GET /healthz HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nHost: 10.13.0.1\r\n"), "{request}");
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
        assert!(request.ends_with("\r\n\r\n"), "{request}");
    }
}
