//! The live dashboard in a real headless browser, during a demo failover.
//! `ftvm demo --interactive` runs a pair with its dashboard; Debian's
//! chromium, driven through chromedriver's WebDriver API (plain HTTP and
//! JSON), loads the page once and keeps it open: it must show h1 as the
//! primary and h2 as the backup of generation 1; after a SIGKILL of the
//! primary the same page — updated by server-sent events alone — must show
//! h2 as the primary, h1 no longer primary, and a failover row in the
//! timeline. A screenshot is taken (kept in the scratch dir; copied to
//! docs/dashboard.png with FTVM_UPDATE_SCREENSHOT=1).
//!
//! Needs root, the guest image, `chromium` and `chromedriver`
//! (scripts/host-deps.sh installs them); without them it prints a note and
//! passes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

mod common;

use common::guest_dir;
use common::lab::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A WebDriver session of a chromedriver on `port`.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("reach chromedriver");
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send to chromedriver");
        // The head, then exactly Content-Length bytes: chromedriver may keep
        // the connection open.
        let mut r = BufReader::new(s);
        let (mut head, mut len) = (String::new(), 0usize);
        loop {
            let mut l = String::new();
            r.read_line(&mut l).expect("read chromedriver's answer");
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            head.push_str(&l);
            if l == "\r\n" || l.is_empty() {
                break;
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).expect("read chromedriver's answer");
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("not JSON from chromedriver ({e}): {head}"))
    }

    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "chromedriver never listened"
            );
            sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1100"]
        }}}});
        let v = Browser::http(port, "POST", "/session", Some(&caps));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            driver,
            port,
            session,
        }
    }

    fn call(&self, method: &str, what: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        Browser::http(self.port, method, &path, body)["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page; returns its value.
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call("GET", "screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("a base64 screenshot"))
            .expect("decode the screenshot")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Browser::http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The demo, stopped (SIGINT: it removes its lab) when the test ends,
/// passed or not.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let t = Instant::now();
        while self.0.try_wait().ok().flatten().is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                let _ = self.0.kill();
                let _ = self.0.wait();
                break;
            }
            sleep(Duration::from_millis(100));
        }
    }
}

/// The roles the page shows, as "h1=primary,h2=backup".
const ROLES: &str = "return [...document.querySelectorAll('.role')].map(e => e.dataset.target + '=' + e.dataset.role).join(',');";

fn wait_page(b: &Browser, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
    let t = Instant::now();
    loop {
        let roles = b.eval(ROLES).as_str().unwrap_or_default().to_string();
        if ok(&roles) {
            return roles;
        }
        assert!(
            t.elapsed() < timeout,
            "the page never showed {what}: roles {roles}"
        );
        sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_dashboard_shows_the_roles_swap_in_a_browser() {
    let test = "the_dashboard_shows_the_roles_swap_in_a_browser";
    if !network_tests_possible(test) {
        return;
    }
    if !guest_dir().join("Image").exists() {
        eprintln!("note: skipping {test}: no guest image");
        return;
    }
    for tool in ["chromium", "chromedriver"] {
        if !on_path(tool) {
            eprintln!("note: skipping {test}: `{tool}` is not installed (apt-get install chromium chromium-driver)");
            return;
        }
    }
    let _vm = vm_lock();
    let dir = Scratch::new("dashboard");
    let port = free_port();
    let mut demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_ftvm"))
            .args(["demo", "--interactive", "--prefix", "dbt"])
            .arg("--dir")
            .arg(dir.path("demo"))
            .arg("--dashboard")
            .arg(format!("127.0.0.1:{port}"))
            .env("FTVM_GUEST_DIR", guest_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path("demo.err")).expect("log"))
            .spawn()
            .expect("start the demo"),
    );
    // The demo prints the primary's pid and the dashboard's URL once the
    // guest is up.
    let mut out = BufReader::new(demo.0.stdout.take().expect("stdout"));
    let (mut pid, mut url) = (None, None);
    let mut line = String::new();
    while pid.is_none() || url.is_none() {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            panic!(
                "the demo ended early: {}",
                std::fs::read_to_string(dir.path("demo.err")).unwrap_or_default()
            );
        }
        let l = line.trim();
        if let Some(p) = l.strip_prefix("kill -9 ") {
            pid = p.trim().parse::<i32>().ok();
        }
        if l.starts_with(&format!("http://127.0.0.1:{port}/")) {
            url = Some(l.to_string());
        }
    }
    // Keep draining the demo's output so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = out.read_to_string(&mut sink);
    });
    let (pid, url) = (pid.expect("pid"), url.expect("url"));
    let b = Browser::start();
    b.go(&url);
    let roles = wait_page(&b, "h1 primary, h2 backup", Duration::from_secs(30), |r| {
        r == "h1=primary,h2=backup"
    });
    eprintln!("before the kill: {roles}");
    let generation = b.eval("return document.querySelector('.gen').dataset.generation;");
    assert_eq!(generation, json!("1"));
    let live = b.eval("return document.getElementById('conn').textContent;");
    assert_eq!(live, json!("live"), "the event stream is not open");
    // SAFETY: kill(2) with a pid the demo printed for this purpose.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill the primary"
    );
    let roles = wait_page(&b, "h2 primary", Duration::from_secs(60), |r| {
        r.contains("h2=primary") && !r.contains("h1=primary")
    });
    eprintln!("after the kill: {roles}");
    let failovers = b.eval(
        "return [...document.querySelectorAll('tr.event')].filter(r => r.dataset.kind === 'failover' && r.dataset.target === 'h2').length;",
    );
    assert!(
        failovers.as_u64().unwrap_or(0) >= 1,
        "no failover row in the timeline"
    );
    // Let the replacement backup join and the charts fill, then the picture.
    let _ = wait_page(&b, "h1 backup again", Duration::from_secs(60), |r| {
        r == "h1=backup,h2=primary"
    });
    sleep(Duration::from_secs(3));
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
    std::fs::write(dir.path("dashboard.png"), &png).expect("save the screenshot");
    if std::env::var_os("FTVM_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(common::repo_root().join("docs/dashboard.png"), &png)
            .expect("update docs/dashboard.png");
    }
    drop(b);
    drop(demo);
}
