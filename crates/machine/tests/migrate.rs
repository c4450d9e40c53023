//! Live-migration primitives: the dirty-page log, state without RAM, and a
//! machine rebuilt from state plus RAM copied by iterative pre-copy, which
//! must continue exactly like the source.
//!
//! The bare-metal workload is a hand-encoded loop (run with `--bios none`
//! semantics: a raw image at the RAM base, M-mode, no paging) that stores
//! xorshift values at pseudo-random doublewords of a 1 MiB region (256 pages,
//! all of which stay in the store TLB, so most stores take the fast path)
//! and AMO-adds a counter on another page.

use ftvm_machine::layout::RAM_BASE;
use ftvm_machine::{Input, Machine, MachineConfig, Output, SnapshotError, Stop};

const PAGE: usize = 4096;
const RAM: u64 = 8 << 20;
/// The store region: pages 256..512.
const REGION_PAGES: std::ops::Range<u32> = 256..512;
/// The AMO counter's page.
const AMO_PAGE: u32 = 512;

fn r_op(funct7: u32, rs2: u32, rs1: u32, funct3: u32, rd: u32, opcode: u32) -> u32 {
    (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode
}
fn i_op(imm: i32, rs1: u32, funct3: u32, rd: u32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | 0x13
}
fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
    i_op(imm, rs1, 0, rd)
}
fn slli(rd: u32, rs1: u32, sh: i32) -> u32 {
    i_op(sh, rs1, 1, rd)
}
fn srli(rd: u32, rs1: u32, sh: i32) -> u32 {
    i_op(sh, rs1, 5, rd)
}
fn add(rd: u32, rs1: u32, rs2: u32) -> u32 {
    r_op(0, rs2, rs1, 0, rd, 0x33)
}
fn xor(rd: u32, rs1: u32, rs2: u32) -> u32 {
    r_op(0, rs2, rs1, 4, rd, 0x33)
}
fn lui(rd: u32, imm20: u32) -> u32 {
    (imm20 << 12) | (rd << 7) | 0x37
}
fn sd(rs2: u32, rs1: u32, imm: i32) -> u32 {
    let imm = imm as u32;
    (((imm >> 5) & 0x7f) << 25) | (rs2 << 20) | (rs1 << 15) | (3 << 12) | ((imm & 31) << 7) | 0x23
}
/// amoadd.d rd, rs2, (rs1)
fn amoadd_d(rd: u32, rs2: u32, rs1: u32) -> u32 {
    r_op(0, rs2, rs1, 3, rd, 0x2f)
}
/// jal x0, offset
fn j(offset: i32) -> u32 {
    let i = offset as u32;
    (((i >> 20) & 1) << 31)
        | (((i >> 1) & 0x3ff) << 21)
        | (((i >> 11) & 1) << 20)
        | (((i >> 12) & 0xff) << 12)
        | 0x6f
}

const T0: u32 = 5;
const T1: u32 = 6;
const T2: u32 = 7;
const S0: u32 = 8;
const A2: u32 = 12;

fn program() -> Vec<u8> {
    let mut p = vec![
        addi(T0, 0, 1),
        slli(T0, T0, 31), // t0 = RAM base
        lui(T1, 0x100),   // t1 = 1 MiB
        add(T0, T0, T1),  // t0 = store region (page 256)
        add(T2, T0, T1),  // t2 = AMO counter (page 512)
        addi(S0, 0, 0x5a5),
        addi(A2, 0, 0),
    ];
    let top = p.len();
    p.extend([
        // xorshift64
        slli(T1, S0, 13),
        xor(S0, S0, T1),
        srli(T1, S0, 7),
        xor(S0, S0, T1),
        slli(T1, S0, 17),
        xor(S0, S0, T1),
        // t1 = region + (s0 >> 44) & !7
        srli(T1, S0, 44),
        srli(T1, T1, 3),
        slli(T1, T1, 3),
        add(T1, T1, T0),
        sd(S0, T1, 0),
        addi(A2, A2, 1),
        amoadd_d(0, A2, T2),
    ]);
    let back = -4 * (p.len() - top) as i32;
    p.push(j(back));
    p.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn machine() -> Machine {
    Machine::new(&MachineConfig::new(RAM, program())).expect("build machine")
}

/// Time inputs arrive at every multiple of this step.
const TIME_EVERY: u64 = 7_919;

/// Runs `steps` more steps, applying the same time input at every multiple
/// of [`TIME_EVERY`] steps, as a driver would. How a run is split into calls
/// does not change where inputs land.
fn advance(m: &mut Machine, steps: u64) {
    let end = m.icount() + steps;
    while m.icount() < end {
        if m.icount().is_multiple_of(TIME_EVERY) {
            let t = m.guest_time() + 50;
            m.apply(&Input::Time(t));
        }
        let next = (m.icount() / TIME_EVERY + 1) * TIME_EVERY;
        assert_eq!(m.run(next.min(end)), Stop::Limit);
    }
}

fn changed_pages(before: &[u8], after: &[u8]) -> Vec<u32> {
    before
        .chunks(PAGE)
        .zip(after.chunks(PAGE))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i as u32)
        .collect()
}

/// The digest of a cold copy of `m` (which hashes all of RAM afresh).
fn fresh_digest(m: &Machine) -> ftvm_machine::StateDigest {
    let state = m.save_state_without_ram();
    let mut copy = Machine::from_state_and_ram(&state, m.ram.as_bytes().to_vec()).expect("copy");
    copy.digest()
}

#[test]
fn dirty_log_is_exact() {
    let mut m = machine();
    assert!(m.take_dirty_log().is_empty(), "no log running");
    advance(&mut m, 30_000);
    m.start_dirty_log();
    assert!(m.take_dirty_log().is_empty(), "nothing written since start");

    // Host-side writes (the path device DMA takes), one across a boundary.
    assert!(m.ram.write_bytes(RAM_BASE + 5 * 4096 + 100, &[1, 2, 3]));
    assert!(m.ram.write_bytes(RAM_BASE + 7 * 4096 - 2, &[4, 5, 6, 7]));
    assert_eq!(m.take_dirty_log(), vec![5, 6, 7]);
    assert!(m.take_dirty_log().is_empty());

    for round in 0..8 {
        let before = m.ram.as_bytes().to_vec();
        advance(&mut m, 20_000);
        if round % 2 == 1 {
            // The digest takes RAM's bitmap too: it must not steal pages
            // from the log.
            let d = m.digest();
            assert_eq!(d, fresh_digest(&m), "round {round}: digest mid-round");
        }
        if round % 3 == 2 {
            m.flush_caches();
        }
        advance(&mut m, 20_000);
        let log = m.take_dirty_log();
        // Every stored value differs from what was there, so exactly the
        // written pages changed.
        let changed = changed_pages(&before, m.ram.as_bytes());
        assert_eq!(log, changed, "round {round}");
        assert!(log.len() > 200, "round {round}: the loop covers the region");
        assert!(log.contains(&AMO_PAGE));
        assert!(log
            .iter()
            .all(|p| REGION_PAGES.contains(p) || *p == AMO_PAGE));
        assert!(m.take_dirty_log().is_empty(), "round {round}: second take");
        // ... and the pages the log took are still rehashed by the digest.
        let d = m.digest();
        assert_eq!(d, fresh_digest(&m), "round {round}: digest after take");
    }

    m.stop_dirty_log();
    advance(&mut m, 10_000);
    assert!(m.take_dirty_log().is_empty(), "log stopped");
    assert_eq!(m.digest(), fresh_digest(&m));
}

/// Priming the digest cache (what the FT drivers do right after building a
/// machine, off the deterministic schedule) is invisible: digests taken
/// after it equal a cold machine's, even when it happens mid-run while the
/// store TLB holds translations that later stores reach without marking
/// their pages, and the run itself is unchanged.
#[test]
fn a_primed_digest_cache_gives_the_same_digests() {
    let mut primed_at_build = machine();
    primed_at_build.prime_digest();
    let mut primed_mid_run = machine();
    let mut plain = machine();
    for round in 0..6 {
        advance(&mut primed_at_build, 25_000);
        advance(&mut primed_mid_run, 25_000);
        advance(&mut plain, 25_000);
        if round == 1 || round == 4 {
            // The loop's 256 pages are in the store TLB now.
            primed_mid_run.prime_digest();
            advance(&mut primed_mid_run, 5_000);
            advance(&mut primed_at_build, 5_000);
            advance(&mut plain, 5_000);
        }
        let expected = fresh_digest(&plain);
        assert_eq!(plain.digest(), expected, "round {round}: plain");
        assert_eq!(
            primed_at_build.digest(),
            expected,
            "round {round}: primed at build"
        );
        assert_eq!(
            primed_mid_run.digest(),
            expected,
            "round {round}: primed mid-run"
        );
    }
}

/// Pre-copy migration of `src`: full copy after starting the log, `rounds`
/// rounds of `steps` steps each followed by copying the logged pages, then
/// the final round with the guest stopped. Returns the state bytes and the
/// RAM image.
fn migrate(src: &mut Machine, rounds: usize, steps: u64) -> (Vec<u8>, Vec<u8>) {
    src.start_dirty_log();
    let mut ram = src.ram.as_bytes().to_vec();
    let copy = |ram: &mut Vec<u8>, src: &Machine, pages: &[u32]| {
        for &p in pages {
            let r = p as usize * PAGE..(p as usize + 1) * PAGE;
            ram[r.clone()].copy_from_slice(&src.ram.as_bytes()[r]);
        }
    };
    for _ in 0..rounds {
        advance(src, steps);
        let pages = src.take_dirty_log();
        assert!(!pages.is_empty());
        copy(&mut ram, src, &pages);
    }
    // Stop-and-copy: the guest is paused (between runs).
    let pages = src.take_dirty_log();
    copy(&mut ram, src, &pages);
    src.stop_dirty_log();
    src.flush_caches();
    let _ = src.take_outputs();
    (src.save_state_without_ram(), ram)
}

#[test]
fn migrated_machine_continues_exactly_like_the_source() {
    let mut src = machine();
    let mut control = machine(); // never logged, flushed or migrated
    advance(&mut src, 200_000);
    advance(&mut control, 200_000);

    let (state, ram) = migrate(&mut src, 4, 60_000);
    advance(&mut control, 4 * 60_000);
    let mut dst = Machine::from_state_and_ram(&state, ram).expect("rebuild");
    assert_eq!(dst.icount(), src.icount());
    let expected = src.digest();
    assert_eq!(dst.digest(), expected, "right after migration");
    assert_eq!(control.digest(), expected, "logging perturbed the source");

    for point in 0..5 {
        advance(&mut src, 50_000 + point * 1_001);
        advance(&mut dst, 50_000 + point * 1_001);
        advance(&mut control, 50_000 + point * 1_001);
        let d = src.digest();
        let diff = d.differences(&dst.digest());
        assert!(diff.is_empty(), "point {point}: {diff:?}");
        assert_eq!(control.digest(), d, "point {point}: control");
    }
}

#[test]
fn migration_missing_dirty_pages_is_detected() {
    // The equivalence test has teeth: without a round's pages, the copy
    // differs.
    let mut src = machine();
    advance(&mut src, 100_000);
    src.start_dirty_log();
    let ram = src.ram.as_bytes().to_vec();
    advance(&mut src, 30_000);
    assert!(!src.take_dirty_log().is_empty()); // not copied
    src.stop_dirty_log();
    let state = src.save_state_without_ram();
    let mut dst = Machine::from_state_and_ram(&state, ram).expect("rebuild");
    assert_ne!(dst.digest().ram, src.digest().ram);
}

#[test]
fn state_bytes_round_trip_and_reject_damage() {
    let mut m = machine();
    advance(&mut m, 12_345);
    let state = m.save_state_without_ram();
    let ram = m.ram.as_bytes().to_vec();
    let mut ok = Machine::from_state_and_ram(&state, ram.clone()).expect("round trip");
    assert_eq!(ok.digest(), m.digest());
    assert_eq!(ok.save_state_without_ram(), state, "stable encoding");

    // Every truncation.
    for len in 0..state.len() {
        assert!(
            Machine::from_state_and_ram(&state[..len], ram.clone()).is_err(),
            "truncated to {len} bytes"
        );
    }
    // Every single-byte corruption.
    for i in 0..state.len() {
        let mut bad = state.clone();
        bad[i] ^= 0x41;
        match Machine::from_state_and_ram(&bad, ram.clone()) {
            Err(
                SnapshotError::BadMagic
                | SnapshotError::Version { .. }
                | SnapshotError::Checksum { .. },
            ) => {}
            Err(e) => panic!("byte {i}: unexpected error {e}"),
            Ok(_) => panic!("byte {i}: corruption accepted"),
        }
    }
    // Trailing garbage.
    let mut long = state.clone();
    long.push(0);
    assert!(Machine::from_state_and_ram(&long, ram.clone()).is_err());
    // Snapshots share the state encoding and still round-trip...
    let mut snap = Vec::new();
    m.save_snapshot(&mut snap).expect("snapshot");
    let mut restored = Machine::load_snapshot(&snap[..]).expect("load snapshot");
    assert_eq!(restored.digest(), m.digest());
    assert!(Machine::load_snapshot(&snap[..snap.len() - 1]).is_err());
    assert!(Machine::load_snapshot(&state[..]).is_err());
    // ... but a snapshot is not bare state.
    assert!(matches!(
        Machine::from_state_and_ram(&snap, ram.clone()),
        Err(SnapshotError::BadMagic)
    ));
    // Wrong RAM lengths.
    for len in [0, ram.len() - 1, ram.len() - PAGE, ram.len() + PAGE] {
        let mut r = ram.clone();
        r.resize(len, 0);
        match Machine::from_state_and_ram(&state, r) {
            Err(SnapshotError::RamLength { expected, found }) => {
                assert_eq!(expected, RAM);
                assert_eq!(found, len as u64);
            }
            Err(e) => panic!("RAM length {len}: unexpected error {e}"),
            Ok(_) => panic!("RAM length {len} accepted"),
        }
    }
}

/// Container bytes (magic, version, state length, state, CRC32C) around
/// arbitrary state bytes: past the checksum, the decoder must still refuse.
fn container(magic: &[u8; 8], version: u32, len: u64, state: &[u8]) -> Vec<u8> {
    let mut b = magic.to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(state);
    let crc = crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// CRC32C (Castagnoli), bitwise.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn well_checksummed_nonsense_is_an_error() {
    let m = machine();
    let good = m.save_state_without_ram();
    let enc = &good[20..good.len() - 4];
    // Our CRC matches the real one.
    assert_eq!(container(b"FTVMSTAT", 1, enc.len() as u64, enc), good);

    let ram = vec![0u8; RAM as usize];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "other version",
            container(b"FTVMSTAT", 2, enc.len() as u64, enc),
        ),
        (
            "length past end",
            container(b"FTVMSTAT", 1, enc.len() as u64 + 1, enc),
        ),
        ("huge length", container(b"FTVMSTAT", 1, u64::MAX, enc)),
        ("short state", container(b"FTVMSTAT", 1, 10, &enc[..10])),
        ("garbage state", container(b"FTVMSTAT", 1, 64, &[0xff; 64])),
        ("empty state", container(b"FTVMSTAT", 1, 0, &[])),
        ("state then garbage", {
            let mut s = enc.to_vec();
            s.extend_from_slice(&[1, 2, 3]);
            container(b"FTVMSTAT", 1, enc.len() as u64, &s)
        }),
    ];
    for (what, bytes) in cases {
        assert!(
            Machine::from_state_and_ram(&bytes, ram.clone()).is_err(),
            "{what} accepted"
        );
    }
    // A zero RAM size in the state (postcard varint 0 as the first field)
    // is refused before any RAM length comparison.
    let mut zero = vec![0u8];
    let first_len = 1 + enc.iter().position(|b| b & 0x80 == 0).unwrap_or(0);
    zero.extend_from_slice(&enc[first_len..]);
    let bytes = container(b"FTVMSTAT", 1, zero.len() as u64, &zero);
    assert!(matches!(
        Machine::from_state_and_ram(&bytes, Vec::new()),
        Err(SnapshotError::Decode(_))
    ));
}

// ------------------------------------------------------------------ Linux

fn guest_dir() -> Option<std::path::PathBuf> {
    let dir = match std::env::var_os("FTVM_GUEST_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let script =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest/build.sh");
            let out = std::process::Command::new("bash")
                .arg(script)
                .arg("--print-dir")
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            let s = String::from_utf8_lossy(&out.stdout);
            std::path::PathBuf::from(s.lines().next()?.trim())
        }
    };
    ["fw_jump.bin", "Image", "initrd.cpio.gz"]
        .iter()
        .all(|f| dir.join(f).is_file())
        .then_some(dir)
}

/// A Linux driver: answers device requests one chunk late (so requests can
/// be in flight across a migration), records every input with the step it
/// was applied at, and keeps the outputs.
#[derive(Default)]
struct Driver {
    /// Device requests not answered yet.
    pending: Vec<Output>,
    log: Vec<(u64, Input)>,
    console: Vec<u8>,
    /// Non-console outputs, in order.
    requests: Vec<Output>,
    answered: usize,
}

/// Splits outputs into console bytes and the rest.
fn sort_outputs(outs: Vec<Output>, console: &mut Vec<u8>, rest: &mut Vec<Output>) {
    for o in outs {
        match o {
            Output::Console(b) => console.extend_from_slice(&b),
            other => rest.push(other),
        }
    }
}

impl Driver {
    /// Drives `m` to step `end`.
    fn drive(&mut self, m: &mut Machine, end: u64) {
        while m.icount() < end {
            let stop = m.run((m.icount() + 1_000_000).min(end));
            let mut fresh = Vec::new();
            sort_outputs(m.take_outputs(), &mut self.console, &mut fresh);
            self.requests.extend(fresh.iter().cloned());
            let t = match stop {
                Stop::Limit => m.guest_time() + 100_000,
                Stop::Idle { wake_at } => wake_at
                    .unwrap_or(m.guest_time() + 10_000)
                    .max(m.guest_time() + 1),
                Stop::Finished(f) => panic!("guest finished: {f:?}"),
            };
            let mut inputs = vec![Input::Time(t)];
            for req in std::mem::replace(&mut self.pending, fresh) {
                self.answered += 1;
                inputs.push(match req {
                    Output::Rng { slot, id, len } => Input::RngData {
                        slot,
                        id,
                        data: (0..len).map(|i| (i as u64 ^ id) as u8).collect(),
                    },
                    Output::Blk { slot, id, op } => Input::BlkDone {
                        slot,
                        id,
                        status: 0,
                        data: match op {
                            ftvm_machine::BlkOp::Read { len, .. } => vec![0; len as usize],
                            _ => Vec::new(),
                        },
                    },
                    other => panic!("unexpected output {other:?}"),
                });
            }
            for input in inputs {
                m.apply(&input);
                self.log.push((m.icount(), input));
            }
        }
    }
}

/// Replays `log` (from a [`Driver`]) on `m` to step `end`, as a backup does;
/// returns console bytes and the other outputs.
fn replay(m: &mut Machine, log: &[(u64, Input)], end: u64) -> (Vec<u8>, Vec<Output>) {
    let (mut console, mut rest) = (Vec::new(), Vec::new());
    for (at, input) in log {
        while m.icount() < *at {
            match m.run(*at) {
                Stop::Limit => {}
                Stop::Idle { .. } if m.icount() == *at => {}
                other => panic!(
                    "replay stopped at {}: {other:?} (input due at {at})",
                    m.icount()
                ),
            }
        }
        sort_outputs(m.take_outputs(), &mut console, &mut rest);
        m.apply(input);
    }
    while m.icount() < end {
        assert_eq!(m.run(end), Stop::Limit);
    }
    sort_outputs(m.take_outputs(), &mut console, &mut rest);
    (console, rest)
}

fn copy_pages(ram: &mut [u8], src: &Machine, pages: &[u32]) -> usize {
    for &p in pages {
        let r = p as usize * PAGE..(p as usize + 1) * PAGE;
        ram[r.clone()].copy_from_slice(&src.ram.as_bytes()[r]);
    }
    pages.len()
}

#[test]
fn linux_migrates_mid_run() {
    let Some(dir) = guest_dir() else {
        eprintln!("skipped: no guest image (set FTVM_GUEST_DIR or run guest/build.sh)");
        return;
    };
    let read = |f: &str| std::fs::read(dir.join(f)).expect("read guest image");
    let mut cfg = MachineConfig::new(256 << 20, read("Image"));
    cfg.bios = Some(read("fw_jump.bin"));
    cfg.initrd = Some(read("initrd.cpio.gz"));
    cfg.bootargs = "console=ttyS0".into();
    // Devices whose DMA writes guest RAM (and whose queue state migrates).
    cfg.virtio = vec![
        ftvm_machine::DeviceConfig::Rng,
        ftvm_machine::DeviceConfig::Blk {
            capacity_bytes: 1 << 20,
            read_only: false,
        },
    ];
    let mut src = Machine::new(&cfg).expect("build");
    let mut drv = Driver::default();
    drv.drive(&mut src, 100_000_000);
    let console = String::from_utf8_lossy(&drv.console).into_owned();
    assert!(
        console.contains("Linux version"),
        "the kernel did not boot: {console}"
    );
    eprintln!(
        "{} inputs ({} device answers) in 100M steps; console tail: {:?}",
        drv.log.len(),
        drv.answered,
        &console[console.len().saturating_sub(200)..]
    );

    // Pre-copy with the guest running between rounds.
    src.start_dirty_log();
    let mut ram = src.ram.as_bytes().to_vec();
    let mut copied = 0usize;
    for round in 0..3u64 {
        drv.drive(&mut src, 100_000_000 + (round + 1) * 2_000_000);
        let pages = src.take_dirty_log();
        copied += copy_pages(&mut ram, &src, &pages);
    }
    assert!(copied > 0, "Linux writes memory");
    // Stop and copy.
    let pages = src.take_dirty_log();
    copy_pages(&mut ram, &src, &pages);
    src.stop_dirty_log();
    src.flush_caches();
    let state = src.save_state_without_ram();
    let mut dst = Machine::from_state_and_ram(&state, ram).expect("rebuild");
    assert_eq!(dst.digest(), src.digest());
    eprintln!(
        "pre-copy rounds copied {copied} pages; {} device requests in flight at the switch",
        drv.pending.len()
    );

    let start = src.icount();
    let mut after = Driver {
        pending: std::mem::take(&mut drv.pending),
        ..Driver::default()
    };
    let (mut dst_console, mut dst_requests) = (Vec::new(), Vec::new());
    for k in 1..=5u64 {
        let end = start + k * 10_000_000;
        let from = after.log.len();
        after.drive(&mut src, end);
        let (c, r) = replay(&mut dst, &after.log[from..], end);
        dst_console.extend(c);
        dst_requests.extend(r);
        let d = src.digest();
        let diff = d.differences(&dst.digest());
        assert!(
            diff.is_empty(),
            "{} steps after migration: {diff:?}",
            end - start
        );
    }
    assert_eq!(dst_console, after.console, "console output");
    assert_eq!(dst_requests, after.requests, "device requests");
    let text = String::from_utf8_lossy(&after.console);
    eprintln!(
        "{} device answers after migration; console after migration (tail): {:?}",
        after.answered,
        &text[text.len().saturating_sub(300)..]
    );
}
