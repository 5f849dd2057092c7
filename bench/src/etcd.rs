//! `keel-bench etcd`: the same load as `keel-bench local`, driven against an etcd cluster
//! through etcd's v3 JSON gateway (`POST /v3/kv/put`) over HTTP/1.1 keep-alive connections,
//! one connection per client, clients spread round-robin over the members (as etcd's own
//! `benchmark` tool spreads them over `--endpoints`). Every put is durable and committed by
//! a majority when etcd answers.
//!
//! The HTTP client is minimal on purpose (one request in flight per connection, `Content-Length`
//! or chunked responses): the load driver must cost far less than etcd's own work, and the
//! JSON gateway is what etcd offers without a gRPC stack.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::load::{RequestError, Session, Target};

/// Standard base64 (RFC 4648, with padding), as etcd's JSON gateway expects for bytes.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The put request body for `key` and `value`.
pub fn put_body(key: &[u8], value: &[u8]) -> String {
    format!(
        "{{\"key\":\"{}\",\"value\":\"{}\"}}",
        base64(key),
        base64(value)
    )
}

/// An etcd cluster reached through its members' client URLs.
pub struct Etcd {
    /// Client endpoints (`host:port`).
    pub endpoints: Vec<SocketAddr>,
    /// Distinct keys per client (keys are reused cyclically).
    pub keys_per_client: u64,
}

/// One keep-alive HTTP/1.1 connection to an etcd member.
pub struct EtcdSession {
    host: String,
    client: usize,
    keys: u64,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    request: Vec<u8>,
    line: String,
    body: Vec<u8>,
}

impl Target for Etcd {
    type Session = EtcdSession;

    fn session(&self, client: usize) -> Result<EtcdSession, RequestError> {
        assert!(!self.endpoints.is_empty(), "at least one endpoint");
        let addr = self.endpoints[client % self.endpoints.len()];
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(EtcdSession {
            host: addr.to_string(),
            client,
            keys: self.keys_per_client.max(1),
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            request: Vec::with_capacity(512),
            line: String::new(),
            body: Vec::new(),
        })
    }
}

/// An HTTP answer that is not a success.
#[derive(Debug, thiserror::Error)]
#[error("etcd answered {status}: {body}")]
pub struct HttpStatusError {
    /// The status line.
    pub status: String,
    /// The start of the body.
    pub body: String,
}

impl EtcdSession {
    fn read_line(&mut self) -> Result<&str, RequestError> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err("etcd closed the connection".into());
        }
        Ok(self.line.trim_end())
    }

    /// Reads one response; returns the status line and leaves the body in `self.body`.
    fn read_response(&mut self) -> Result<String, RequestError> {
        let status = self.read_line()?.to_string();
        let mut content_length = None;
        let mut chunked = false;
        loop {
            let h = self.read_line()?;
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                content_length = Some(v.trim().parse::<usize>()?);
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        self.body.clear();
        if chunked {
            loop {
                let size_line = self.read_line()?;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap_or(""), 16)?;
                let mut chunk = vec![0u8; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                self.body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let n = content_length.ok_or("response without Content-Length")?;
            self.body.resize(n, 0);
            self.reader.read_exact(&mut self.body)?;
        }
        Ok(status)
    }
}

impl Session for EtcdSession {
    fn request(&mut self, seq: u64, payload: &[u8]) -> Result<(), RequestError> {
        let key = format!("keel-bench/{}/{}", self.client, seq % self.keys);
        let body = put_body(key.as_bytes(), payload);
        self.request.clear();
        write!(
            self.request,
            "POST /v3/kv/put HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: keep-alive\r\n\r\n{}",
            self.host,
            body.len(),
            body
        )?;
        self.writer.write_all(&self.request)?;
        let status = self.read_response()?;
        if !status.starts_with("HTTP/1.1 200") {
            return Err(Box::new(HttpStatusError {
                status,
                body: String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into(),
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn put_body_is_the_gateway_json() {
        assert_eq!(put_body(b"k", b"v"), r#"{"key":"aw==","value":"dg=="}"#);
    }

    #[test]
    fn a_session_parses_content_length_and_chunked_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let answers = [
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_string(),
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
                    .to_string(),
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".to_string(),
            ];
            for a in answers {
                // Read one request: headers, then Content-Length bytes.
                let mut len = 0;
                loop {
                    let mut l = String::new();
                    r.read_line(&mut l).unwrap();
                    if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if l == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                assert!(String::from_utf8(body).unwrap().starts_with("{\"key\":"));
                w.write_all(a.as_bytes()).unwrap();
            }
        });
        let etcd = Etcd {
            endpoints: vec![addr],
            keys_per_client: 10,
        };
        let mut s = etcd.session(0).unwrap();
        s.request(0, b"value").unwrap();
        s.request(1, b"value").unwrap();
        let err = s.request(2, b"value").unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        server.join().unwrap();
    }
}
