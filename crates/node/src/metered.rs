//! Host backends that count their I/O: a disk or a network card wrapped so
//! that every request it serves and every frame it carries is counted, by
//! guest device name, in the process's [`DeviceMetrics`]. The wrapping is
//! done once, when the backends are set up ([`Backends::meter`]); the
//! counting is a few relaxed atomic adds on the thread that does the I/O.

use std::os::fd::RawFd;
use std::time::Instant;

use anyhow::Result;
use ftvm_metrics::{DeviceMetrics, Direction, DiskMeter, DiskOp, NetMeter};

use crate::devices::{Backends, DiskBackend, DiskError, NetBackend};
use crate::reactor::FrameSource;

/// The guest's name for the `i`th disk: `vda`, `vdb`, ... (`vd27` past z).
pub fn disk_name(i: usize) -> String {
    match u8::try_from(i).ok().filter(|&i| i < 26) {
        Some(i) => format!("vd{}", (b'a' + i) as char),
        None => format!("vd{i}"),
    }
}

impl Backends {
    /// Wraps every backend so that it counts its I/O in `m`: disks by slot
    /// order as `vda`, `vdb`..., network cards as `eth0`, `eth1`... Call
    /// before the disk worker starts and the frames are registered.
    pub fn meter(&mut self, m: &DeviceMetrics) {
        let disks = std::mem::take(&mut self.disks);
        for (i, (slot, inner)) in disks.into_iter().enumerate() {
            let meter = m.disk(&disk_name(i));
            self.disks
                .insert(slot, Box::new(MeteredDisk { inner, meter }));
        }
        let nets = std::mem::take(&mut self.nets);
        for (i, (slot, inner)) in nets.into_iter().enumerate() {
            let meter = m.net(&format!("eth{i}"));
            self.nets
                .insert(slot, Box::new(MeteredNet { inner, meter }));
        }
    }
}

struct MeteredDisk {
    inner: Box<dyn DiskBackend>,
    meter: DiskMeter,
}

impl MeteredDisk {
    fn count<T>(
        &self,
        op: DiskOp,
        bytes: u64,
        f: impl FnOnce() -> Result<T, DiskError>,
    ) -> Result<T, DiskError> {
        let t = Instant::now();
        let r = f();
        self.meter
            .served(op, bytes, t.elapsed().as_secs_f64(), r.is_ok());
        r
    }
}

impl DiskBackend for MeteredDisk {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        self.count(DiskOp::Read, len as u64, || self.inner.read_at(offset, len))
    }
    fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), DiskError> {
        self.count(DiskOp::Write, data.len() as u64, || {
            self.inner.write_at(offset, data, fua)
        })
    }
    fn flush(&self) -> Result<(), DiskError> {
        self.count(DiskOp::Flush, 0, || self.inner.flush())
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.count(DiskOp::Discard, 0, || self.inner.discard(offset, len))
    }
}

struct MeteredNet {
    inner: Box<dyn NetBackend>,
    meter: NetMeter,
}

impl NetBackend for MeteredNet {
    fn transmit(&self, frame: &[u8]) {
        self.meter.frame(Direction::Tx, frame.len());
        self.inner.transmit(frame);
    }
    fn source(&self) -> Result<Box<dyn FrameSource>> {
        Ok(Box::new(MeteredSource {
            inner: self.inner.source()?,
            meter: self.meter.clone(),
        }))
    }
}

struct MeteredSource {
    inner: Box<dyn FrameSource>,
    meter: NetMeter,
}

impl FrameSource for MeteredSource {
    fn raw_fd(&self) -> RawFd {
        self.inner.raw_fd()
    }
    fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        let r = self.inner.try_recv(buf);
        if let Ok(Some(n)) = r {
            self.meter.frame(Direction::Rx, n);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names_follow_the_guest() {
        assert_eq!(disk_name(0), "vda");
        assert_eq!(disk_name(25), "vdz");
        assert_eq!(disk_name(26), "vd26");
    }
}
