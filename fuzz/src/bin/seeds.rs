//! Writes the seed corpus of every fuzz target (`fuzz/corpus/<target>/`)
//! from ftvm's own encoders and from real sessions: an `NbdClient` and an
//! `ArbiterClient` talking to a real storage server through a recording
//! proxy give the NBD and arbiter seeds in both directions. Run with
//! `scripts/fuzz.sh --seeds`; the output is checked in.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ftvm_ft::wire::encode_entries;
use ftvm_ft::{Frame, GoodbyeReason, Hello, Message, Role};
use ftvm_log::Writer;
use ftvm_machine::{Input, Machine, MachineConfig};
use ftvm_replay::{log_header, EndReason, Record};
use ftvm_storage::arbiter::wire::{Reply, Request, VmStatus, Win};
use ftvm_storage::{ArbiterClient, NbdClient, StorageConfig, StorageServer};

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("corpus"));
    ftvm_fuzz::ignore_sigpipe();
    let mut c = Corpus { root };
    ft_wire(&mut c);
    log(&mut c);
    arbiter_wire(&mut c);
    sessions(&mut c);
    virtio(&mut c);
    loader(&mut c);
    snapshot(&mut c);
}

struct Corpus {
    root: PathBuf,
}

impl Corpus {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
}

fn program() -> Vec<u8> {
    // addi a0, a0, 1; sd a0, 0(zero) would fault: keep to registers.
    [0x0015_0513u32, 0xffdf_f06f]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

fn machine_config() -> MachineConfig {
    MachineConfig::new(ftvm_fuzz::snapshot::SEED_RAM, program())
}

fn entries() -> Vec<(u64, Record)> {
    vec![
        (0, Record::Input(Input::Time(1000))),
        (17, Record::Input(Input::ConsoleRx(b"ls -l\n".to_vec()))),
        (
            400,
            Record::Input(Input::NetRx {
                slot: 1,
                frame: vec![0xff; 60],
            }),
        ),
        (
            900,
            Record::Input(Input::BlkDone {
                slot: 0,
                id: 3,
                status: 0,
                data: vec![7; 512],
            }),
        ),
        (
            950,
            Record::Input(Input::RngData {
                slot: 2,
                id: 4,
                data: vec![1, 2, 3, 4],
            }),
        ),
        (
            1000,
            Record::Outputs {
                hash: 0x1234_5678_9abc,
                count: 5,
            },
        ),
    ]
}

fn ft_wire(c: &mut Corpus) {
    let cfg = machine_config();
    let header = log_header(&cfg, vec![], vec![], 1000, 0)
        .encode()
        .expect("encode header");
    let mut batch = Vec::new();
    let mut payloads = Vec::new();
    for (icount, rec) in entries() {
        let mut p = Vec::new();
        let kind = rec.encode(&mut p);
        payloads.push((icount, kind, p));
    }
    let refs: Vec<(u64, u8, &[u8])> = payloads
        .iter()
        .map(|(icount, kind, p)| (*icount, *kind, p.as_slice()))
        .collect();
    encode_entries(refs.iter().copied(), &mut batch).expect("encode entries");
    let messages = vec![
        Message::Hello(Hello {
            version: ftvm_ft::PROTOCOL_VERSION,
            vm: "vm0".into(),
            role: Role::Primary,
            machine_hash: [9; 32],
            seq: 41,
            log_header: header,
        }),
        Message::Log {
            first_seq: 42,
            entries: batch,
        },
        Message::Ack {
            seq: 42,
            executed_icount: 1_000_000,
        },
        Message::Heartbeat {
            now_ms: 1_700_000_000_000,
            icount: 1_000_500,
        },
        Message::Goodbye {
            reason: GoodbyeReason::Leaving,
            detail: "maintenance".into(),
        },
        Message::JoinRequest {
            vm: "vm0".into(),
            machine_hash: [9; 32],
            listen: "10.0.0.2:7000".into(),
        },
        Message::JoinPages {
            ram_size: 4 << 20,
            pages: vec![0, 5],
            data: vec![0x11; 8192],
        },
        Message::JoinState {
            icount: 77,
            state: vec![1, 2, 3],
        },
        Message::JoinDisk {
            slot: 0,
            offset: 4096,
            data: vec![0x22; 512],
        },
    ];
    let mut stream = Vec::new();
    for (i, message) in messages.into_iter().enumerate() {
        let f = Frame {
            generation: 3,
            message,
        };
        let bytes = f.to_bytes().expect("encode frame");
        c.put("ft_wire", &format!("frame-{i}"), &bytes);
        stream.extend_from_slice(&bytes);
    }
    c.put("ft_wire", "stream", &stream);
}

fn log(c: &mut Corpus) {
    let header = log_header(&machine_config(), vec![], vec![], 1000, 0);
    let mut w = Writer::new(Vec::new(), &header).expect("log writer");
    let mut p = Vec::new();
    for (icount, rec) in entries() {
        let kind = rec.encode(&mut p);
        w.append(icount, kind, &p).expect("append");
    }
    let mut m = Machine::new(&machine_config()).expect("seed machine");
    let _ = m.run(100);
    let kind = Record::Digest(Box::new(m.digest())).encode(&mut p);
    w.append(1100, kind, &p).expect("append digest");
    let kind = Record::End(EndReason::PowerOff).encode(&mut p);
    w.append(1200, kind, &p).expect("append end");
    let bytes = w.finish().expect("finish log");
    c.put("log", "recording", &bytes);
    // A recording cut short: no end marker.
    c.put("log", "cut-short", &bytes[..bytes.len() * 2 / 3]);
}

fn arbiter_wire(c: &mut Corpus) {
    let requests = [
        Request::TestAndSet {
            vm: "vm0".into(),
            generation: 4,
            claimant: "h2".into(),
        },
        Request::Query { vm: "vm0".into() },
        Request::Advance {
            vm: "vm0".into(),
            generation: 5,
        },
        Request::History { vm: "vm0".into() },
    ];
    for (i, r) in requests.iter().enumerate() {
        let mut b = vec![0u8];
        b.extend(r.encode());
        c.put("arbiter_wire", &format!("request-{i}"), &b);
    }
    let replies = [
        Reply::Won { generation: 4 },
        Reply::Lost {
            generation: 4,
            holder: "h1".into(),
        },
        Reply::Status(VmStatus {
            generation: 4,
            holder: Some("h1".into()),
            history_count: 3,
        }),
        Reply::Advanced { generation: 5 },
        Reply::History(vec![Win {
            generation: 1,
            claimant: "h1".into(),
            at_unix_ms: 1_700_000_000_000,
        }]),
        Reply::Error {
            code: 1,
            message: "malformed".into(),
        },
    ];
    for (i, r) in replies.iter().enumerate() {
        let mut b = vec![1u8];
        b.extend(r.encode());
        c.put("arbiter_wire", &format!("reply-{i}"), &b);
    }
}

/// A one-connection TCP proxy to `upstream` that records both directions.
struct Recording {
    addr: SocketAddr,
    done: std::thread::JoinHandle<(Vec<u8>, Vec<u8>)>,
}

fn record_one(upstream: SocketAddr) -> Recording {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    let done = std::thread::spawn(move || {
        let (client, _) = listener.accept().expect("accept");
        let server = TcpStream::connect(upstream).expect("connect upstream");
        let up = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(Mutex::new(Vec::new()));
        let t1 = pump(
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
            Arc::clone(&up),
        );
        let t2 = pump(server, client, Arc::clone(&down));
        let _ = t1.join();
        let _ = t2.join();
        let up = up.lock().expect("lock").clone();
        let down = down.lock().expect("lock").clone();
        (up, down)
    });
    Recording { addr, done }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    log: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    log.lock().expect("lock").extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    })
}

fn storage(dir: &Path) -> StorageServer {
    std::fs::create_dir_all(dir).expect("scratch dir");
    std::fs::write(dir.join("disk.img"), vec![0u8; 1 << 20]).expect("disk.img");
    let lo: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    StorageServer::start(
        StorageConfig::new(dir.to_path_buf(), lo, lo),
        ftvm_storage::Shutdown::new(),
    )
    .expect("storage server")
}

fn sessions(c: &mut Corpus) {
    let dir = std::env::temp_dir().join(format!("ftvm-fuzz-seeds-{}", std::process::id()));
    let server = storage(&dir);

    let rec = record_one(server.nbd_addr());
    {
        let client = NbdClient::connect(rec.addr, "disk").expect("nbd connect");
        let mut buf = vec![0u8; 4096];
        client.read_at(8192, &mut buf).expect("read");
        client.write_at(0, &[0x5a; 1024], false).expect("write");
        client
            .write_at(4096, &[0xa5; 512], true)
            .expect("fua write");
        client.flush().expect("flush");
        client.trim(65536, 4096).expect("trim");
        client.disconnect();
    }
    let (up, down) = rec.done.join().expect("proxy");
    let mut s = vec![0u8];
    s.extend(&up);
    c.put("nbd_server", "nbd-session", &s);
    c.put("nbd_client", "nbd-session", &down);

    let rec = record_one(server.arbiter_addr());
    {
        let client = ArbiterClient::connect(rec.addr).expect("arbiter connect");
        let t = Duration::from_secs(5);
        client
            .test_and_set("vm0", 1, "h1", t)
            .expect("test-and-set");
        client
            .test_and_set("vm0", 1, "h2", t)
            .expect("test-and-set");
        client.query("vm0", t).expect("query");
        client.history("vm0", t).expect("history");
        client.advance("vm0", 2, t).expect("advance");
    }
    let (up, _) = rec.done.join().expect("proxy");
    let mut s = vec![1u8];
    s.extend(&up);
    c.put("nbd_server", "arbiter-session", &s);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

fn virtio(c: &mut Corpus) {
    // Per device: bring queue 0 up with 8 entries at fixed ring addresses,
    // put a two-descriptor chain in it, publish, notify, process, complete.
    for dev in 0u8..3 {
        let mut s = vec![dev, 0];
        // op 3: features lo, hi, queue 0, size 2^3, desc/avail/used offsets.
        s.extend([3]);
        s.extend(0xffff_ffffu32.to_le_bytes());
        s.extend([0x01, 0, 3]);
        s.extend(0x0000u16.to_le_bytes());
        s.extend(0x1000u16.to_le_bytes());
        s.extend(0x2000u16.to_le_bytes());
        // op 2: descriptors at 0x0000: [0x8000, 16, NEXT, 1], [0x9000, 512, WRITE, 0].
        let mut desc = Vec::new();
        for (addr, len, flags, next) in [(0x8000u64, 16u32, 1u16, 1u16), (0x9000, 512, 2, 0)] {
            desc.extend((0x8000_0000u64 + addr).to_le_bytes());
            desc.extend(len.to_le_bytes());
            desc.extend(flags.to_le_bytes());
            desc.extend(next.to_le_bytes());
        }
        s.extend([2]);
        s.extend(0x0000u16.to_le_bytes());
        s.push(desc.len() as u8);
        s.extend(&desc);
        // A blk request header: read sector 1.
        s.extend([2]);
        s.extend(0x8000u16.to_le_bytes());
        s.push(16);
        s.extend(0u32.to_le_bytes());
        s.extend(0u32.to_le_bytes());
        s.extend(1u64.to_le_bytes());
        // avail ring at 0x1000: flags 0, idx 1, ring[0] = 0.
        s.extend([2]);
        s.extend(0x1000u16.to_le_bytes());
        s.push(6);
        s.extend([0, 0, 1, 0, 0, 0]);
        // notify 0, process, complete, process.
        s.extend([4, 0, 5, 6, 0, 5]);
        c.put("virtio", &format!("device-{dev}"), &s);
    }
    // A received frame for the net device.
    c.put("virtio", "net-rx", &[1, 0, 7, 60, 0]);
}

fn elf_image() -> Vec<u8> {
    // ELF64 little-endian RISC-V executable with one PT_LOAD of the program.
    let prog = program();
    let mut e = vec![0u8; 64 + 56];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // 64-bit
    e[5] = 1; // little-endian
    e[6] = 1;
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[18..20].copy_from_slice(&243u16.to_le_bytes()); // EM_RISCV
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..32].copy_from_slice(&0x8000_0000u64.to_le_bytes()); // entry
    e[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    e[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    e[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    e[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
    let ph = &mut e[64..];
    ph[..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    ph[8..16].copy_from_slice(&120u64.to_le_bytes()); // offset
    ph[16..24].copy_from_slice(&0x8000_0000u64.to_le_bytes()); // vaddr
    ph[24..32].copy_from_slice(&0x8000_0000u64.to_le_bytes()); // paddr
    ph[32..40].copy_from_slice(&(prog.len() as u64).to_le_bytes()); // filesz
    ph[40..48].copy_from_slice(&(prog.len() as u64).to_le_bytes()); // memsz
    ph[48..56].copy_from_slice(&4u64.to_le_bytes()); // align
    e.extend(prog);
    e
}

fn linux_image() -> Vec<u8> {
    // The RISC-V Linux Image header: code0/1, text_offset, image_size,
    // flags, version, reserved, magic "RISCV\0\0\0", magic2 "RSC\x05".
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(&0x0015_0513u32.to_le_bytes());
    h[8..16].copy_from_slice(&0x20_0000u64.to_le_bytes());
    h[16..24].copy_from_slice(&4096u64.to_le_bytes());
    h[32..36].copy_from_slice(&2u32.to_le_bytes());
    h[48..56].copy_from_slice(b"RISCV\0\0\0");
    h[56..60].copy_from_slice(b"RSC\x05");
    h.resize(4096, 0);
    h
}

fn loader(c: &mut Corpus) {
    let elf = elf_image();
    for sel in 0u8..2 {
        let mut s = vec![sel];
        s.extend(&elf);
        c.put("loader", &format!("elf-{sel}"), &s);
    }
    let mut s = vec![0u8];
    s.extend(linux_image());
    c.put("loader", "image", &s);
    c.put("loader", "initrd", &[2, 0x30, 0x37, 0x30, 0x37, 0x30, 0x31]);
}

fn snapshot(c: &mut Corpus) {
    let mut m = Machine::new(&machine_config()).expect("seed machine");
    let _ = m.run(1000);
    let mut snap = vec![0u8];
    m.save_snapshot(&mut snap).expect("save snapshot");
    c.put("snapshot", "snapshot", &snap);
    let mut state = vec![1u8];
    state.extend(m.save_state_without_ram());
    c.put("snapshot", "state", &state);
}
