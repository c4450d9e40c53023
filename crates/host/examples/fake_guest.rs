//! A stand-in for a guest on a TAP device: answers ARP requests and ICMP
//! echo requests (ping) for one IPv4 address, so the test network can be
//! checked end to end through the TAP backend before any VM exists.
//!
//! Usage (as root, inside a VM host namespace of scripts/netns.sh):
//!
//! ```text
//! ip netns exec PREFIX-h1 fake_guest [TAP] [IP] [SECONDS]
//! ip netns exec PREFIX-c ping 10.77.0.2
//! ```
//!
//! Defaults: `tap0`, `10.77.0.2`, 30 seconds. Exits after SECONDS or on
//! SIGINT/SIGTERM (the default action). It announces its address with a
//! gratuitous ARP when it starts, so starting it on another host moves the
//! guest's MAC there, as a failover does.

use ftvm_host::{Recv, TapDevice};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x00, 0x02];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tap = args.first().map_or("tap0", String::as_str);
    let ip: Ipv4Addr = match args
        .get(1)
        .map_or(Ok(Ipv4Addr::new(10, 77, 0, 2)), |s| s.parse())
    {
        Ok(ip) => ip,
        Err(e) => {
            eprintln!("fake_guest: bad IP address: {e}");
            return ExitCode::from(2);
        }
    };
    let secs: u64 = match args.get(2).map_or(Ok(30), |s| s.parse()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake_guest: bad SECONDS: {e}");
            return ExitCode::from(2);
        }
    };
    match run(tap, ip, Duration::from_secs(secs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake_guest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(name: &str, ip: Ipv4Addr, for_how_long: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let tap = TapDevice::open(name)?;
    tap.set_up()?;
    let t0 = Instant::now();
    if !tap.wait_running(Duration::from_secs(5))? {
        return Err(format!("{name} has no carrier after 5 s").into());
    }
    eprintln!("fake_guest: {name} running after {:?}", t0.elapsed());
    eprintln!(
        "fake_guest: {ip} at {} on {name} for {}s",
        hex_mac(&MAC),
        for_how_long.as_secs()
    );
    // Announce the address, as a guest does at boot and a backup does when
    // it goes live, so that the bridges learn where the MAC is now.
    tap.send(&gratuitous_arp(ip))?;
    let end = Instant::now() + for_how_long;
    let mut buf = vec![0u8; ftvm_host::tap::MAX_FRAME];
    let (mut arps, mut pings) = (0u32, 0u32);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let n = match tap.recv_timeout(&mut buf, Some(left))? {
            Recv::Frame(n) => n,
            Recv::Timeout | Recv::Stopped => break,
        };
        let frame = &buf[..n];
        if let Some(reply) = answer_arp(frame, ip) {
            tap.send(&reply)?;
            arps += 1;
        } else if let Some(reply) = answer_ping(frame, ip) {
            tap.send(&reply)?;
            pings += 1;
        }
    }
    eprintln!("fake_guest: answered {arps} ARP request(s) and {pings} ping(s)");
    Ok(())
}

fn hex_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A broadcast ARP request for our own address.
fn gratuitous_arp(ip: Ipv4Addr) -> Vec<u8> {
    let mut r = Vec::with_capacity(60);
    r.extend_from_slice(&[0xff; 6]);
    r.extend_from_slice(&MAC);
    r.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    r.extend_from_slice(&MAC);
    r.extend_from_slice(&ip.octets());
    r.extend_from_slice(&[0; 6]);
    r.extend_from_slice(&ip.octets());
    r.resize(60, 0);
    r
}

/// An ARP reply if `f` is an Ethernet/IPv4 ARP request for `ip`.
fn answer_arp(f: &[u8], ip: Ipv4Addr) -> Option<Vec<u8>> {
    if f.len() < 42 || f[12..14] != [0x08, 0x06] {
        return None;
    }
    let arp = &f[14..42];
    // htype 1, ptype IPv4, hlen 6, plen 4, op 1 (request), target = ip
    if arp[..8] != [0, 1, 8, 0, 6, 4, 0, 1] || arp[24..28] != ip.octets() {
        return None;
    }
    let (sha, spa) = (&arp[8..14], &arp[14..18]);
    let mut r = Vec::with_capacity(60);
    r.extend_from_slice(sha);
    r.extend_from_slice(&MAC);
    r.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
    r.extend_from_slice(&MAC);
    r.extend_from_slice(&ip.octets());
    r.extend_from_slice(sha);
    r.extend_from_slice(spa);
    r.resize(60, 0);
    Some(r)
}

/// An echo reply if `f` is an unfragmented ICMP echo request to `ip`.
fn answer_ping(f: &[u8], ip: Ipv4Addr) -> Option<Vec<u8>> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] || f[..6] != MAC {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let frag = u16::from_be_bytes([f[20], f[21]]) & 0x3fff;
    if f[14] >> 4 != 4 || ihl < 20 || total < ihl + 8 || 14 + total > f.len() || frag != 0 {
        return None;
    }
    if f[23] != 1 || f[30..34] != ip.octets() || f[14 + ihl] != 8 {
        return None;
    }
    let mut r = f[..14 + total].to_vec();
    r.copy_within(6..12, 0); // destination = the request's source
    r[6..12].copy_from_slice(&MAC);
    let (src, dst) = (14 + 12, 14 + 16);
    for k in 0..4 {
        r.swap(src + k, dst + k);
    }
    r[14 + 8] = 64; // TTL
    r[14 + 10..14 + 12].fill(0);
    let c = checksum(&r[14..14 + ihl]);
    r[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    let icmp = 14 + ihl;
    r[icmp] = 0; // echo reply
    r[icmp + 2..icmp + 4].fill(0);
    let c = checksum(&r[icmp..14 + total]);
    r[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    Some(r)
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        let lo = pair.get(1).map_or(0, |&b| u32::from(b));
        sum += hi | lo;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
