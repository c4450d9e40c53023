//! The `--metrics HOST:PORT` endpoint: an HTTP server (tiny_http, on its
//! own threads, off the guest's loop) that answers `GET /metrics` with the
//! registry encoded in the OpenMetrics text format at the moment of the
//! scrape. `/` says where the metrics are; any other path is a 404, any
//! other method a 405. A scrape never blocks the drivers: they only touch
//! atomics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use thiserror::Error;
use tiny_http::{Header, Method, Response, Server};

/// The content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot listen for metrics scrapes on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("cannot start the metrics thread: {0}")]
    Thread(std::io::Error),
}

/// A running metrics endpoint (it serves until the process exits).
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// The address bound (the port is the real one when 0 was asked).
    pub addr: SocketAddr,
}

/// Serves `registry` on `addr`.
pub fn serve(addr: SocketAddr, registry: Registry) -> Result<Endpoint, ServeError> {
    let server = Server::http(addr).map_err(|e| ServeError::Bind {
        addr,
        reason: e.to_string(),
    })?;
    let local = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| ServeError::Bind {
            addr,
            reason: "not an IP listener".into(),
        })?;
    let registry = Arc::new(registry);
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let resp = answer(req.method(), req.url(), &registry);
                if let Err(e) = req.respond(resp) {
                    tracing::debug!("metrics scrape answered to a closed connection: {e}");
                }
            }
        })
        .map_err(ServeError::Thread)?;
    Ok(Endpoint { addr: local })
}

fn header(name: &str, value: &str) -> Header {
    // Both are fixed ASCII strings of this module.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn answer(method: &Method, url: &str, registry: &Registry) -> Response<std::io::Cursor<Vec<u8>>> {
    if !matches!(method, Method::Get | Method::Head) {
        return Response::from_string("only GET\n")
            .with_status_code(405)
            .with_header(header("Allow", "GET, HEAD"));
    }
    let path = url.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let mut body = String::new();
            match encode(&mut body, registry) {
                Ok(()) => {
                    Response::from_string(body).with_header(header("Content-Type", CONTENT_TYPE))
                }
                Err(_) => {
                    Response::from_string("cannot encode the metrics\n").with_status_code(500)
                }
            }
        }
        "/" => Response::from_string("ftvm metrics: GET /metrics (OpenMetrics text)\n")
            .with_header(header("Content-Type", "text/plain; charset=utf-8")),
        _ => {
            Response::from_string("not found; the metrics are at /metrics\n").with_status_code(404)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn get(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_registry_at_scrape_time() {
        let mut r = crate::vm_registry("vm7");
        let c = Counter::<u64>::default();
        r.register("ftvm_test_things", "Things", c.clone());
        let ep = serve("127.0.0.1:0".parse().unwrap(), r).unwrap();
        c.inc_by(41);
        c.inc();
        let out = get(
            ep.addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("application/openmetrics-text"), "{out}");
        assert!(
            out.contains("ftvm_test_things_total{vm=\"vm7\"} 42"),
            "{out}"
        );
        assert!(out.trim_end().ends_with("# EOF"), "{out}");
        let out = get(
            ep.addr,
            "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        let out = get(
            ep.addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    }

    #[test]
    fn a_busy_port_is_a_clear_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let e = serve(addr, Registry::default()).unwrap_err();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }
}
