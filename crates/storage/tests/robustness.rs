//! Hostile and broken peers on both ports: garbage, wrong magic, wrong
//! version, bad CRC, absurd lengths, frames cut short by a vanishing peer or
//! stalled halfway, idle handshakes, and seeded random byte streams. Each
//! must close only its own connection; a well-behaved client is served
//! normally afterwards.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use ftvm_storage::arbiter::wire::{self, encode_frame, Reply, Request as ArbRequest};
use ftvm_storage::nbd::proto::*;
use ftvm_storage::{ArbiterClient, NbdClient, StorageServer};

const T: Duration = Duration::from_secs(5);

fn server(dir: &TempDir) -> StorageServer {
    make_image(dir.path(), "disk", 1 << 20, 0);
    let mut c = config(dir.path());
    c.stall_timeout = Duration::from_millis(500);
    c.handshake_timeout = Duration::from_millis(700);
    c.arbiter_idle_timeout = Some(Duration::from_secs(60));
    start_with(c)
}

fn nbd_still_serves(addr: SocketAddr) {
    let c = NbdClient::connect(addr, "disk").unwrap();
    c.write_at(4096, b"still here", false).unwrap();
    let mut b = [0u8; 10];
    c.read_at(4096, &mut b).unwrap();
    assert_eq!(&b, b"still here");
}

fn arbiter_still_serves(addr: SocketAddr) {
    let c = ArbiterClient::connect(addr).unwrap();
    let s = c.query("vm-ok", T).unwrap();
    assert!(c
        .test_and_set("vm-ok", s.generation + 1, "good-client", T)
        .unwrap()
        .is_won());
}

#[test]
fn nbd_handshake_garbage() {
    let dir = TempDir::new("rob-hs");
    let srv = server(&dir);
    let addr = srv.nbd_addr();

    // An HTTP client: its first bytes are not valid client flags.
    let mut s = connect(addr);
    read_n(&mut s, 18);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(is_closed(&mut s));

    // Good flags, then an option without the IHAVEOPT magic.
    let mut s = connect(addr);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE);
    s.write_all(&[0x55; 16]).unwrap();
    assert!(is_closed(&mut s));

    // An option claiming 4 GiB of data.
    let mut s = connect(addr);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE);
    let mut h = IHAVEOPT.to_be_bytes().to_vec();
    h.extend_from_slice(&OPT_GO.to_be_bytes());
    h.extend_from_slice(&u32::MAX.to_be_bytes());
    s.write_all(&h).unwrap();
    assert!(is_closed(&mut s));

    // Half an option, then the peer vanishes.
    let mut s = connect(addr);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE);
    s.write_all(&option_request(OPT_GO, &go_data("disk", &[]))[..9])
        .unwrap();
    drop(s);

    // Half an option, then silence: closed after the stall limit.
    let mut s = connect(addr);
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE);
    s.write_all(&option_request(OPT_LIST, &[])[..5]).unwrap();
    let t = Instant::now();
    assert!(is_closed(&mut s));
    assert!(t.elapsed() < Duration::from_secs(4));

    // Connects and says nothing: closed after the handshake limit.
    let mut s = connect(addr);
    read_n(&mut s, 18);
    assert!(is_closed(&mut s));

    nbd_still_serves(addr);
}

#[test]
fn nbd_transmission_garbage() {
    let dir = TempDir::new("rob-tx");
    let srv = server(&dir);
    let addr = srv.nbd_addr();
    let img = dir.path().join("disk.img");

    // Wrong request magic.
    let mut s = connect(addr);
    go(&mut s, "disk");
    s.write_all(&[0xde; 28]).unwrap();
    assert!(is_closed(&mut s));

    // A WRITE claiming 1 GiB: closed without reading a byte of it.
    let mut s = connect(addr);
    go(&mut s, "disk");
    send_req(&mut s, CMD_WRITE, 0, 1, 0, 1 << 30, &[]);
    assert!(is_closed(&mut s));

    // A READ of 64 MiB: over the 32 MiB limit, closed.
    let mut s = connect(addr);
    go(&mut s, "disk");
    send_req(&mut s, CMD_READ, 0, 1, 0, 64 << 20, &[]);
    assert!(is_closed(&mut s));

    // Truncated request header, peer gone.
    let mut s = connect(addr);
    go(&mut s, "disk");
    let r = Request {
        flags: 0,
        command: CMD_READ,
        handle: 1,
        offset: 0,
        length: 512,
    };
    s.write_all(&r.encode()[..13]).unwrap();
    drop(s);

    // A WRITE whose payload stops halfway, then the peer vanishes: nothing
    // of it reaches the disk.
    let mut s = connect(addr);
    go(&mut s, "disk");
    send_req(&mut s, CMD_WRITE, 0, 1, 8192, 4096, &[0x77; 2048]);
    drop(s);

    // A WRITE whose payload stalls: closed after the stall limit.
    let mut s = connect(addr);
    go(&mut s, "disk");
    send_req(&mut s, CMD_WRITE, 0, 1, 16384, 4096, &[0x66; 100]);
    let t = Instant::now();
    assert!(is_closed(&mut s));
    assert!(t.elapsed() < Duration::from_secs(4));

    // The replies already owed are still delivered before a bad frame closes.
    let mut s = connect(addr);
    go(&mut s, "disk");
    let mut burst = Request {
        flags: 0,
        command: CMD_FLUSH,
        handle: 5,
        offset: 0,
        length: 0,
    }
    .encode()
    .to_vec();
    burst.extend_from_slice(b"garbage that is not a request!");
    s.write_all(&burst).unwrap();
    assert_eq!(read_reply(&mut s), (0, 5));
    assert!(is_closed(&mut s));

    std::thread::sleep(Duration::from_millis(100));
    let file = std::fs::read(&img).unwrap();
    assert!(file[8192..8192 + 4096].iter().all(|&b| b == 0));
    assert!(file[16384..16384 + 4096].iter().all(|&b| b == 0));
    nbd_still_serves(addr);
}

/// A small deterministic generator for the random-bytes test.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_bytes_on_both_ports() {
    let dir = TempDir::new("rob-random");
    let srv = server(&dir);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..40 {
        for addr in [srv.nbd_addr(), srv.arbiter_addr()] {
            let mut s = connect(addr);
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let n = (rng.next() % 300) as usize;
            let mut bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            // Sometimes start with a valid prefix so the damage is deeper in.
            if round % 3 == 0 && addr == srv.arbiter_addr() {
                let mut f = ArbRequest::Query { vm: "x".into() }.encode();
                f.truncate((rng.next() % f.len() as u64) as usize);
                bytes.splice(0..0, f);
            }
            let _ = s.write_all(&bytes);
            let mut sink = [0u8; 512];
            let _ = s.read(&mut sink);
        }
    }
    nbd_still_serves(srv.nbd_addr());
    arbiter_still_serves(srv.arbiter_addr());
}

fn read_frame(s: &mut std::net::TcpStream) -> Option<Reply> {
    let mut h = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut h).ok()?;
    let (kind, len) = wire::parse_header(&h, wire::MAX_REPLY_BODY).ok()?;
    let mut rest = vec![0u8; len as usize + wire::CRC_LEN];
    s.read_exact(&mut rest).ok()?;
    let body = wire::check_crc(&h, &rest).ok()?;
    Reply::decode(kind, body).ok()
}

fn expect_error(s: &mut std::net::TcpStream, code: u16) {
    match read_frame(s) {
        Some(Reply::Error { code: c, message }) => {
            assert_eq!(c, code, "{message}");
        }
        other => panic!("expected an error frame with code {code}, got {other:?}"),
    }
}

#[test]
fn arbiter_garbage_versions_and_truncation() {
    let dir = TempDir::new("rob-arb");
    let srv = server(&dir);
    let addr = srv.arbiter_addr();

    // Garbage: closed without an answer.
    let mut s = connect(addr);
    s.write_all(b"hello arbiter, please let me win").unwrap();
    assert!(is_closed(&mut s));

    // Wrong version: an error frame saying so, then closed.
    let mut s = connect(addr);
    let mut f = ArbRequest::TestAndSet {
        vm: "vm".into(),
        generation: 1,
        claimant: "intruder".into(),
    }
    .encode();
    f[4] = 9;
    s.write_all(&f).unwrap();
    expect_error(&mut s, wire::E_VERSION);
    assert!(is_closed(&mut s));

    // Bad CRC: closed without an answer, and certainly not a win.
    let mut s = connect(addr);
    let mut f = ArbRequest::TestAndSet {
        vm: "vm".into(),
        generation: 1,
        claimant: "intruder".into(),
    }
    .encode();
    let last = f.len() - 1;
    f[last] ^= 0xff;
    s.write_all(&f).unwrap();
    assert!(is_closed(&mut s));

    // Absurd length: an error frame, then closed.
    let mut s = connect(addr);
    let mut f = ArbRequest::Query { vm: "vm".into() }.encode();
    f[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    s.write_all(&f[..12]).unwrap();
    expect_error(&mut s, wire::E_MALFORMED);
    assert!(is_closed(&mut s));

    // Unknown message type with a valid CRC.
    let mut s = connect(addr);
    s.write_all(&encode_frame(0x33, b"")).unwrap();
    expect_error(&mut s, wire::E_UNKNOWN_TYPE);
    assert!(is_closed(&mut s));

    // Valid frame, malformed body (trailing bytes).
    let mut s = connect(addr);
    s.write_all(&encode_frame(wire::T_QUERY, &[1, 0, b'v', 0]))
        .unwrap();
    expect_error(&mut s, wire::E_MALFORMED);
    assert!(is_closed(&mut s));

    // Truncated frame, peer gone.
    let mut s = connect(addr);
    s.write_all(&ArbRequest::Query { vm: "vm".into() }.encode()[..7])
        .unwrap();
    drop(s);

    // Truncated frame, peer silent: closed after the stall limit.
    let mut s = connect(addr);
    s.write_all(&ArbRequest::Query { vm: "vm".into() }.encode()[..14])
        .unwrap();
    let t = Instant::now();
    assert!(is_closed(&mut s));
    assert!(t.elapsed() < Duration::from_secs(4));

    // A refused request (empty VM name) keeps the connection usable.
    let mut s = connect(addr);
    s.write_all(&ArbRequest::Query { vm: String::new() }.encode())
        .unwrap();
    expect_error(&mut s, wire::E_INVALID);
    s.write_all(&ArbRequest::Query { vm: "vm".into() }.encode())
        .unwrap();
    match read_frame(&mut s) {
        Some(Reply::Status(st)) => assert_eq!(st.history_count, 0),
        other => panic!("{other:?}"),
    }

    // None of the hostile frames won anything.
    let c = ArbiterClient::connect(addr).unwrap();
    assert_eq!(c.query("vm", T).unwrap().history_count, 0);
    arbiter_still_serves(addr);
}
