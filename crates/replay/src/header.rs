//! The log header for a machine: the canonical encoding of its
//! [`MachineSpec`] with the paths its images were loaded from, and the
//! identity (size, SHA-256) of every image, so that a replay with different
//! images, or of a different machine, is refused before a single step runs.

use ftvm_log::{ImageId, LogHeader};
use ftvm_machine::{MachineConfig, MachineSpec};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum HeaderError {
    #[error("the log's machine description is unreadable: {0}")]
    Spec(String),
}

/// What the header's machine-config field holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedConfig {
    pub spec: MachineSpec,
    /// Where each image ("firmware", "kernel", "initrd") was loaded from.
    pub image_paths: Vec<(String, String)>,
}

/// Size and SHA-256 of an image, under a role name ("firmware", "kernel", …).
pub fn image_id(role: &str, bytes: &[u8]) -> ImageId {
    ImageId {
        role: role.to_string(),
        size: bytes.len() as u64,
        sha256: Sha256::digest(bytes).into(),
    }
}

/// Size and SHA-256 of a file read in chunks (disk images can be large).
pub fn file_image_id(role: &str, path: &std::path::Path) -> std::io::Result<ImageId> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(ImageId {
        role: role.to_string(),
        size,
        sha256: h.finalize().into(),
    })
}

/// The header describing `cfg`, whose images were read from `image_paths`;
/// `disks` identify the disk images' contents at the start of the run.
pub fn log_header(
    cfg: &MachineConfig,
    image_paths: Vec<(String, String)>,
    disks: Vec<ImageId>,
    digest_interval: u64,
    created_unix_ms: u64,
) -> LogHeader {
    let mut images = Vec::new();
    if let Some(b) = &cfg.bios {
        images.push(image_id("firmware", b));
    }
    images.push(image_id("kernel", &cfg.kernel));
    if let Some(i) = &cfg.initrd {
        images.push(image_id("initrd", i));
    }
    images.extend(disks);
    let rc = RecordedConfig {
        spec: cfg.spec(),
        image_paths,
    };
    LogHeader {
        machine_config: postcard::to_stdvec(&rc).unwrap_or_default(),
        images,
        created_unix_ms,
        producer: format!("ftvm {}", env!("CARGO_PKG_VERSION")),
        digest_interval,
    }
}

/// The recorded configuration stored in a header.
pub fn recorded_config(h: &LogHeader) -> Result<RecordedConfig, HeaderError> {
    postcard::from_bytes(&h.machine_config).map_err(|e| HeaderError::Spec(e.to_string()))
}

/// The identity two processes must share to form an FT pair over the same
/// machine: SHA-256 of the spec without what the backup takes from the
/// primary (the power-on RNG seed and wall clock, and the kernel command
/// line) and of every image. Image paths do not count: each host may keep
/// its copies elsewhere.
pub fn pair_identity(cfg: &MachineConfig) -> [u8; 32] {
    let mut spec = cfg.spec();
    spec.rng_seed = [0; 32];
    spec.boot_wallclock_ns = 0;
    spec.bootargs.clear();
    let mut h = Sha256::new();
    h.update(b"ftvm pair identity v1\0");
    h.update(postcard::to_stdvec(&spec).unwrap_or_default());
    let images = [
        ("firmware", cfg.bios.as_deref()),
        ("kernel", Some(cfg.kernel.as_slice())),
        ("initrd", cfg.initrd.as_deref()),
    ];
    for (role, bytes) in images {
        h.update(role.as_bytes());
        match bytes {
            Some(b) => h.update(image_id(role, b).sha256),
            None => h.update([0u8; 32]),
        }
    }
    h.finalize().into()
}
