//! The NBD server spoken to byte by byte: the fixed-newstyle greeting, every
//! supported option and the errors for the rest, and every command with its
//! error codes, against an in-process server on 127.0.0.1 with port 0.

mod common;

use std::io::Write;

use common::*;
use ftvm_storage::nbd::proto::*;

#[test]
fn greeting_advertises_fixed_newstyle_and_no_zeroes() {
    let dir = TempDir::new("greet");
    let srv = start(dir.path());
    let mut s = connect(srv.nbd_addr());
    let flags = greet(&mut s, FLAG_C_FIXED_NEWSTYLE);
    assert_eq!(flags, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
}

#[test]
fn export_name_with_and_without_zeroes() {
    let dir = TempDir::new("expname");
    make_image(dir.path(), "disk", 1 << 20, 0);
    let srv = start(dir.path());

    // With NO_ZEROES: exactly 10 bytes, then transmission.
    let mut s = connect(srv.nbd_addr());
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    s.write_all(&option_request(OPT_EXPORT_NAME, b"disk"))
        .unwrap();
    let b = read_n(&mut s, 10);
    assert_eq!(u64_at(&b, 0), 1 << 20);
    let flags = u16_at(&b, 8);
    assert_eq!(
        flags,
        FLAG_HAS_FLAGS
            | FLAG_SEND_FLUSH
            | FLAG_SEND_FUA
            | FLAG_SEND_TRIM
            | FLAG_SEND_WRITE_ZEROES
            | FLAG_CAN_MULTI_CONN
    );
    send_req(&mut s, CMD_FLUSH, 0, 9, 0, 0, &[]);
    assert_eq!(read_reply(&mut s), (0, 9));

    // Without NO_ZEROES: 124 zero bytes follow.
    let mut s = connect(srv.nbd_addr());
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE);
    s.write_all(&option_request(OPT_EXPORT_NAME, b"disk"))
        .unwrap();
    let b = read_n(&mut s, 134);
    assert_eq!(u64_at(&b, 0), 1 << 20);
    assert!(b[10..].iter().all(|&z| z == 0));
    send_req(&mut s, CMD_FLUSH, 0, 1, 0, 0, &[]);
    assert_eq!(read_reply(&mut s), (0, 1));
}

#[test]
fn export_name_for_an_unknown_export_closes() {
    let dir = TempDir::new("expname-unknown");
    let srv = start(dir.path());
    let mut s = connect(srv.nbd_addr());
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    s.write_all(&option_request(OPT_EXPORT_NAME, b"nope"))
        .unwrap();
    assert!(is_closed(&mut s));
    // Path tricks are unknown exports too.
    let mut s = connect(srv.nbd_addr());
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    s.write_all(&option_request(OPT_EXPORT_NAME, b"../../etc/passwd"))
        .unwrap();
    assert!(is_closed(&mut s));
}

#[test]
fn list_names_every_image() {
    let dir = TempDir::new("list");
    make_image(dir.path(), "b-disk", 4096, 0);
    make_image(dir.path(), "a-disk", 4096, 0);
    std::fs::write(dir.path().join("notes.txt"), b"not an image").unwrap();
    let srv = start(dir.path());
    let mut s = connect(srv.nbd_addr());
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    s.write_all(&option_request(OPT_LIST, &[])).unwrap();
    let mut names = Vec::new();
    loop {
        let (opt, rep, data) = read_opt_reply(&mut s);
        assert_eq!(opt, OPT_LIST);
        if rep == REP_ACK {
            assert!(data.is_empty());
            break;
        }
        assert_eq!(rep, REP_SERVER);
        let n = u32_at(&data, 0) as usize;
        assert_eq!(n, data.len() - 4);
        names.push(String::from_utf8(data[4..].to_vec()).unwrap());
    }
    assert_eq!(names, ["a-disk", "b-disk"]);

    // LIST with data is invalid; haggling continues.
    s.write_all(&option_request(OPT_LIST, b"x")).unwrap();
    let (_, rep, _) = read_opt_reply(&mut s);
    assert_eq!(rep, REP_ERR_INVALID);
    s.write_all(&option_request(OPT_ABORT, &[])).unwrap();
    let (opt, rep, _) = read_opt_reply(&mut s);
    assert_eq!((opt, rep), (OPT_ABORT, REP_ACK));
    assert!(is_closed(&mut s));
}

#[test]
fn info_then_go() {
    let dir = TempDir::new("info");
    make_image(dir.path(), "disk", 3 * 4096, 0);
    let srv = start(dir.path());
    let mut s = connect(srv.nbd_addr());
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);

    // Unknown export: ERR_UNKNOWN with a message, no INFO.
    s.write_all(&option_request(OPT_INFO, &go_data("missing", &[])))
        .unwrap();
    let (opt, rep, msg) = read_opt_reply(&mut s);
    assert_eq!((opt, rep), (OPT_INFO, REP_ERR_UNKNOWN));
    assert!(String::from_utf8_lossy(&msg).contains("missing"));

    // Malformed: name length past the end.
    let mut bad = go_data("disk", &[]);
    bad[3] = 200;
    s.write_all(&option_request(OPT_INFO, &bad)).unwrap();
    assert_eq!(read_opt_reply(&mut s).1, REP_ERR_INVALID);
    // Malformed: request count does not match.
    let mut bad = go_data("disk", &[INFO_NAME]);
    bad.truncate(bad.len() - 1);
    s.write_all(&option_request(OPT_INFO, &bad)).unwrap();
    assert_eq!(read_opt_reply(&mut s).1, REP_ERR_INVALID);

    // Good INFO, asking for the name and the block size.
    s.write_all(&option_request(
        OPT_INFO,
        &go_data("disk", &[INFO_NAME, INFO_BLOCK_SIZE]),
    ))
    .unwrap();
    let mut saw = Vec::new();
    loop {
        let (opt, rep, data) = read_opt_reply(&mut s);
        assert_eq!(opt, OPT_INFO);
        if rep == REP_ACK {
            break;
        }
        assert_eq!(rep, REP_INFO);
        let kind = u16_at(&data, 0);
        saw.push(kind);
        match kind {
            INFO_EXPORT => {
                assert_eq!(data.len(), 12);
                assert_eq!(u64_at(&data, 2), 3 * 4096);
                assert_ne!(u16_at(&data, 10) & FLAG_HAS_FLAGS, 0);
            }
            INFO_NAME => assert_eq!(&data[2..], b"disk"),
            INFO_BLOCK_SIZE => {
                assert_eq!(data.len(), 14);
                assert_eq!(u32_at(&data, 2), 1);
                assert_eq!(u32_at(&data, 6), 4096);
                assert_eq!(u32_at(&data, 10), 32 << 20);
            }
            other => panic!("unexpected info {other}"),
        }
    }
    saw.sort();
    assert_eq!(saw, [INFO_EXPORT, INFO_NAME, INFO_BLOCK_SIZE]);

    // Options still work after INFO, and GO enters transmission.
    let (size, flags) = go_after_greet(&mut s, "disk");
    assert_eq!(size, 3 * 4096);
    assert_eq!(flags & FLAG_READ_ONLY, 0);
    send_req(&mut s, CMD_READ, 0, 77, 0, 4096, &[]);
    assert_eq!(read_reply(&mut s), (0, 77));
    assert_eq!(read_n(&mut s, 4096), vec![0u8; 4096]);
}

#[test]
fn unsupported_options_are_refused_politely() {
    let dir = TempDir::new("unsup");
    make_image(dir.path(), "disk", 4096, 0);
    let srv = start(dir.path());
    let mut s = connect(srv.nbd_addr());
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    for (opt, data, want) in [
        (OPT_STRUCTURED_REPLY, &b""[..], REP_ERR_UNSUP),
        (OPT_STRUCTURED_REPLY, &b"x"[..], REP_ERR_INVALID),
        (OPT_STARTTLS, &b""[..], REP_ERR_UNSUP),
        (OPT_SET_META_CONTEXT, &b"\0\0\0\0"[..], REP_ERR_UNSUP),
        (4, &b""[..], REP_ERR_UNSUP),
        (0xdead_beef, &b"some data"[..], REP_ERR_UNSUP),
    ] {
        s.write_all(&option_request(opt, data)).unwrap();
        let (o, rep, _) = read_opt_reply(&mut s);
        assert_eq!((o, rep), (opt, want), "option {opt}");
    }
    // Still usable.
    let (size, _) = go_after_greet(&mut s, "disk");
    assert_eq!(size, 4096);
}

#[test]
fn default_export_serves_the_empty_name() {
    let dir = TempDir::new("default");
    make_image(dir.path(), "root", 8192, 0);
    let srv = start(dir.path());
    let mut s = connect(srv.nbd_addr());
    greet(&mut s, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    s.write_all(&option_request(OPT_GO, &go_data("", &[])))
        .unwrap();
    assert_eq!(read_opt_reply(&mut s).1, REP_ERR_UNKNOWN);
    drop(srv);

    let mut c = config(dir.path());
    c.default_export = Some("root".into());
    let srv = start_with(c);
    let mut s = connect(srv.nbd_addr());
    assert_eq!(go(&mut s, "").0, 8192);
}

#[test]
fn commands_and_their_errors() {
    let dir = TempDir::new("cmds");
    let img = make_image(dir.path(), "disk", 1 << 20, 0x11);
    let srv = start(dir.path());
    let mut s = connect(srv.nbd_addr());
    let (size, _) = go(&mut s, "disk");
    assert_eq!(size, 1 << 20);

    // WRITE (durable before the reply), then READ it back and see it in the file.
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    send_req(&mut s, CMD_WRITE, 0, 1, 4096, 8192, &data);
    assert_eq!(read_reply(&mut s), (0, 1));
    send_req(&mut s, CMD_READ, 0, 2, 4096, 8192, &[]);
    assert_eq!(read_reply(&mut s), (0, 2));
    assert_eq!(read_n(&mut s, 8192), data);
    let file = std::fs::read(&img).unwrap();
    assert_eq!(&file[4096..4096 + 8192], &data[..]);
    assert!(file[..4096].iter().all(|&b| b == 0x11));

    // FUA write.
    send_req(&mut s, CMD_WRITE, CMD_FLAG_FUA, 3, 0, 3, b"fua");
    assert_eq!(read_reply(&mut s), (0, 3));
    assert_eq!(&std::fs::read(&img).unwrap()[..3], b"fua");

    // Unaligned, last byte of the export, zero-length read.
    send_req(&mut s, CMD_WRITE, 0, 4, (1 << 20) - 1, 1, b"z");
    assert_eq!(read_reply(&mut s), (0, 4));
    send_req(&mut s, CMD_READ, 0, 5, 0, 0, &[]);
    assert_eq!(read_reply(&mut s), (0, 5));

    // Out of range: READ → EINVAL, WRITE → ENOSPC (payload consumed), TRIM → EINVAL.
    send_req(&mut s, CMD_READ, 0, 6, (1 << 20) - 1, 2, &[]);
    assert_eq!(read_reply(&mut s), (EINVAL, 6));
    send_req(&mut s, CMD_READ, 0, 7, u64::MAX, 1, &[]);
    assert_eq!(read_reply(&mut s), (EINVAL, 7));
    send_req(&mut s, CMD_WRITE, 0, 8, 1 << 20, 4, b"oops");
    assert_eq!(read_reply(&mut s), (ENOSPC, 8));
    send_req(&mut s, CMD_TRIM, 0, 9, 1 << 20, 4096, &[]);
    assert_eq!(read_reply(&mut s), (EINVAL, 9));
    send_req(&mut s, CMD_WRITE_ZEROES, 0, 10, (1 << 20) - 10, 4096, &[]);
    assert_eq!(read_reply(&mut s), (ENOSPC, 10));

    // Flags not valid for the command → EINVAL; the payload is still consumed.
    send_req(&mut s, CMD_WRITE, CMD_FLAG_DF, 11, 0, 2, b"xx");
    assert_eq!(read_reply(&mut s), (EINVAL, 11));
    send_req(&mut s, CMD_READ, CMD_FLAG_NO_HOLE, 12, 0, 2, &[]);
    assert_eq!(read_reply(&mut s), (EINVAL, 12));
    send_req(&mut s, CMD_FLUSH, 0, 13, 0, 5, &[]);
    assert_eq!(read_reply(&mut s), (EINVAL, 13));
    send_req(&mut s, CMD_FLUSH, 0, 14, 0, 0, &[]);
    assert_eq!(read_reply(&mut s), (0, 14));

    // Unknown and unadvertised commands → EINVAL.
    send_req(&mut s, 42, 0, 15, 0, 0, &[]);
    assert_eq!(read_reply(&mut s), (EINVAL, 15));
    send_req(&mut s, CMD_BLOCK_STATUS, 0, 16, 0, 4096, &[]);
    assert_eq!(read_reply(&mut s), (EINVAL, 16));

    // TRIM and WRITE_ZEROES read back as zeroes.
    send_req(&mut s, CMD_TRIM, 0, 17, 65536, 65536, &[]);
    assert_eq!(read_reply(&mut s), (0, 17));
    send_req(
        &mut s,
        CMD_WRITE_ZEROES,
        CMD_FLAG_NO_HOLE,
        18,
        4096,
        100,
        &[],
    );
    assert_eq!(read_reply(&mut s), (0, 18));
    send_req(&mut s, CMD_WRITE_ZEROES, 0, 19, 200_000, 5000, &[]);
    assert_eq!(read_reply(&mut s), (0, 19));
    let file = std::fs::read(&img).unwrap();
    assert!(file[65536..131072].iter().all(|&b| b == 0));
    assert!(file[4096..4196].iter().all(|&b| b == 0));
    assert_eq!(file[4196], data[100]);
    assert!(file[200_000..205_000].iter().all(|&b| b == 0));

    // Pipelined requests: all answered, in order, each with its handle.
    let mut burst = Vec::new();
    for i in 0..20u64 {
        let r = Request {
            flags: 0,
            command: CMD_WRITE,
            handle: 100 + i,
            offset: i * 512,
            length: 512,
        };
        burst.extend_from_slice(&r.encode());
        burst.extend_from_slice(&[i as u8; 512]);
    }
    s.write_all(&burst).unwrap();
    for i in 0..20u64 {
        assert_eq!(read_reply(&mut s), (0, 100 + i));
    }
    let file = std::fs::read(&img).unwrap();
    for i in 0..20usize {
        assert!(file[i * 512..(i + 1) * 512].iter().all(|&b| b == i as u8));
    }

    // DISC: no reply, the server closes.
    send_req(&mut s, CMD_DISC, 0, 99, 0, 0, &[]);
    assert!(is_closed(&mut s));
}

#[test]
fn read_only_exports_refuse_writes() {
    let dir = TempDir::new("ro");
    let img = make_image(dir.path(), "base", 65536, 0x5a);
    make_image(dir.path(), "rw", 65536, 0);
    let mut c = config(dir.path());
    c.read_only_exports = vec!["base".into()];
    let srv = start_with(c);

    let mut s = connect(srv.nbd_addr());
    let (_, flags) = go(&mut s, "base");
    assert_ne!(flags & FLAG_READ_ONLY, 0);
    assert_eq!(flags & (FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES), 0);
    send_req(&mut s, CMD_WRITE, 0, 1, 0, 4, b"nope");
    assert_eq!(read_reply(&mut s), (EPERM, 1));
    send_req(&mut s, CMD_TRIM, 0, 2, 0, 4096, &[]);
    assert_eq!(read_reply(&mut s), (EPERM, 2));
    send_req(&mut s, CMD_WRITE_ZEROES, 0, 3, 0, 4096, &[]);
    assert_eq!(read_reply(&mut s), (EPERM, 3));
    send_req(&mut s, CMD_READ, 0, 4, 0, 4, &[]);
    assert_eq!(read_reply(&mut s), (0, 4));
    assert_eq!(read_n(&mut s, 4), [0x5a; 4]);
    assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 0x5a));

    let mut s = connect(srv.nbd_addr());
    let (_, flags) = go(&mut s, "rw");
    assert_eq!(flags & FLAG_READ_ONLY, 0);
}

#[test]
fn many_clients_at_once() {
    let dir = TempDir::new("many");
    let img = make_image(dir.path(), "disk", 64 * 4096, 0);
    let srv = start(dir.path());
    let addr = srv.nbd_addr();
    let threads: Vec<_> = (0..16u8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                go(&mut s, "disk");
                for k in 0..4u64 {
                    let off = (u64::from(t) * 4 + k) * 4096;
                    send_req(&mut s, CMD_WRITE, 0, k, off, 4096, &[t + 1; 4096]);
                    assert_eq!(read_reply(&mut s), (0, k));
                }
                send_req(&mut s, CMD_DISC, 0, 0, 0, 0, &[]);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let file = std::fs::read(&img).unwrap();
    for t in 0..16usize {
        assert!(file[t * 4 * 4096..(t + 1) * 4 * 4096]
            .iter()
            .all(|&b| b == t as u8 + 1));
    }
}
