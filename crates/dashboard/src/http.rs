//! The dashboard's HTTP side (tiny_http): `/` the page, `/app.js`,
//! `/app.css`, `/uplot.js`, `/uplot.css` (embedded assets), `/api/state`
//! the history as JSON, and `/events` a server-sent-event stream with one
//! `data:` line per round. An event stream takes the connection over on a
//! thread of its own and is written to directly (tiny_http's chunked
//! responses buffer), so a round reaches every open page at once; the
//! [`Hub`] hands each round to every stream and forgets closed ones.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use crate::state::State;
use crate::DashboardError;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");

/// The open event streams.
#[derive(Clone, Default)]
pub struct Hub(Arc<Mutex<Vec<Sender<String>>>>);

impl Hub {
    fn subscribe(&self) -> Receiver<String> {
        let (tx, rx) = channel();
        if let Ok(mut v) = self.0.lock() {
            v.push(tx);
        }
        rx
    }

    /// Sends `msg` to every stream; drops the ones that closed.
    pub fn publish(&self, msg: &str) {
        if let Ok(mut v) = self.0.lock() {
            v.retain(|tx| tx.send(msg.to_string()).is_ok());
        }
    }
}

/// Serves the dashboard on `addr`; returns the address bound.
pub fn serve(
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    hub: Hub,
) -> Result<SocketAddr, DashboardError> {
    let server = Server::http(addr).map_err(|e| DashboardError::Bind {
        addr,
        why: e.to_string(),
    })?;
    let local = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| DashboardError::Bind {
            addr,
            why: "not an IP listener".into(),
        })?;
    thread::Builder::new()
        .name("dashboard-http".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                answer(req, &state, &hub);
            }
        })
        .map_err(DashboardError::Thread)?;
    Ok(local)
}

fn header(name: &str, value: &str) -> Header {
    // Both are fixed ASCII strings of this module.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn asset(body: &str, content_type: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-cache"))
}

fn answer(req: Request, state: &Arc<Mutex<State>>, hub: &Hub) {
    if !matches!(req.method(), Method::Get | Method::Head) {
        let _ = req.respond(Response::from_string("only GET\n").with_status_code(405));
        return;
    }
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let resp = match path.as_str() {
        "/" | "/index.html" => asset(INDEX, "text/html; charset=utf-8"),
        "/app.js" => asset(APP_JS, "text/javascript; charset=utf-8"),
        "/app.css" => asset(APP_CSS, "text/css; charset=utf-8"),
        "/uplot.js" => asset(UPLOT_JS, "text/javascript; charset=utf-8"),
        "/uplot.css" => asset(UPLOT_CSS, "text/css; charset=utf-8"),
        "/api/state" => {
            let json = state
                .lock()
                .ok()
                .and_then(|s| serde_json::to_string(&*s).ok())
                .unwrap_or_else(|| "{}".into());
            asset(&json, "application/json")
        }
        "/events" => {
            let rx = hub.subscribe();
            let _ = thread::Builder::new()
                .name("dashboard-sse".into())
                .spawn(move || stream(req, rx));
            return;
        }
        _ => Response::from_string("not found\n").with_status_code(404),
    };
    let _ = req.respond(resp);
}

/// Writes every round to one event stream until the page goes away.
fn stream(req: Request, rx: Receiver<String>) {
    let mut w = req.into_writer();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n: ftvm dashboard\n\n";
    if w.write_all(head.as_bytes())
        .and_then(|_| w.flush())
        .is_err()
    {
        return;
    }
    loop {
        let msg = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(m) => format!("data: {m}\n\n"),
            // A comment keeps proxies and the browser from timing out.
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => ": keep-alive\n\n".into(),
            Err(_) => return,
        };
        if w.write_all(msg.as_bytes()).and_then(|_| w.flush()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{start, Target};
    use std::io::{BufRead, BufReader, Read};
    use std::net::{TcpListener, TcpStream};

    /// A status endpoint that answers every connection with one report.
    fn fake_status(phase: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let r = ftvm_node::ft::status::Report {
                    vm: "vm0".into(),
                    phase: phase.into(),
                    started_as: "primary".into(),
                    generation: 3,
                    mips: 42.0,
                    ..Default::default()
                };
                let _ = writeln!(c, "{}", serde_json::to_string(&r).unwrap());
            }
        });
        addr
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_page_the_state_and_live_rounds() {
        let a = fake_status("paired");
        let t: Target = format!("h1={a}").parse().unwrap();
        let gone: Target = "h2=127.0.0.1:1".parse().unwrap();
        let d = start("127.0.0.1:0".parse().unwrap(), vec![vec![t, gone]]).unwrap();
        let page = get(d.addr, "/");
        assert!(
            page.starts_with("HTTP/1.1 200") && page.contains("/uplot.js"),
            "{page}"
        );
        assert!(get(d.addr, "/uplot.js").contains("uPlot"));
        assert!(get(d.addr, "/nope").starts_with("HTTP/1.1 404"));
        // A first live round: h1 primary, h2 down.
        let mut s = TcpStream::connect(d.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        let data = loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if let Some(d) = line.strip_prefix("data: ") {
                let v: serde_json::Value = serde_json::from_str(d).unwrap();
                if v["round"]["samples"][0]["role"] == "primary" {
                    break v;
                }
            }
        };
        let s = &data["round"]["samples"];
        assert_eq!(s[0]["generation"], 3);
        assert_eq!(s[0]["mips"], 42.0);
        assert_eq!(s[1]["role"], "down");
        let state = get(d.addr, "/api/state");
        let body = state.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["targets"], serde_json::json!(["h1", "h2"]));
        assert_eq!(v["groups"], serde_json::json!([[0, 1]]));
        assert!(!v["rounds"].as_array().unwrap().is_empty());
    }
}
