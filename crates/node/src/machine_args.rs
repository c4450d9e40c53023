//! Command-line description of a machine, shared by `run`, `record` and
//! (for image overrides) `replay`: firmware, kernel, initramfs, command
//! line, memory, paging mode and virtio devices, with the default guest
//! image from `guest/build.sh` filled in where nothing is given.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use ftvm_cpu::Engine;
use ftvm_machine::{MachineConfig, MmuType};

use crate::console;
use crate::devices::{self, Backends, DriveSpec, NetSpec};
use crate::guest;

#[derive(Args, Debug, Clone)]
pub struct MachineArgs {
    /// Firmware: a path to OpenSBI fw_jump.bin (or an ELF), or "none" to
    /// run --kernel directly in M-mode (bare-metal programs). Default: the
    /// guest image's fw_jump.bin.
    #[arg(long, value_name = "PATH|none")]
    pub bios: Option<String>,
    /// Kernel: a RISC-V Linux Image, or an ELF. Default: the guest image's Image.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk. Default: the guest image's initramfs when the kernel is the default one.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "ARGS", default_value = "console=ttyS0")]
    pub append: String,
    /// Guest RAM: a number of MiB, or a size with K/M/G suffix.
    #[arg(long, short = 'm', value_name = "SIZE", default_value = "256M")]
    pub memory: String,
    /// Paging mode advertised in the device tree.
    #[arg(long, value_parser = ["sv39", "sv48"], default_value = "sv48")]
    pub mmu: String,
    /// A virtio-blk disk (repeatable; the first is /dev/vda): a raw image
    /// file, or an export of an NBD server such as `ftvm storage` or
    /// qemu-nbd (PORT defaults to 10809; the empty EXPORT is the server's
    /// default). An NBD server must answer at start; if it goes away later,
    /// disk I/O waits for it to come back.
    #[arg(
        long = "drive",
        value_name = "file=PATH[,readonly] | nbd://HOST[:PORT]/EXPORT[,readonly]"
    )]
    pub drives: Vec<DriveSpec>,
    /// A virtio-net card backed by a host TAP device (repeatable).
    #[arg(long = "net", value_name = "tap:NAME[,mac=MAC]")]
    pub nets: Vec<NetSpec>,
    /// Leave out the virtio-rng device.
    #[arg(long)]
    pub no_rng: bool,
    /// CPU engine: the interpreter, or the translator (identical results).
    /// A host setting, not part of the machine: a log recorded with one
    /// replays with the other.
    #[arg(
        long,
        value_name = "interp|jit",
        env = "FTVM_CPU",
        default_value = "jit"
    )]
    pub cpu: Engine,
    /// TLS for NBD drives, set by the command from its TLS options
    /// (`None`: plain NBD).
    #[arg(skip)]
    pub nbd_tls: Option<ftvm_tls::ClientTls>,
}

impl MachineArgs {
    /// Whether a drive is an NBD export (the command then needs TLS
    /// options or `--insecure`).
    pub fn has_nbd(&self) -> bool {
        self.drives
            .iter()
            .any(|d| matches!(d.source, devices::DriveSource::Nbd { .. }))
    }
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>> {
    let data =
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if data.is_empty() {
        bail!("{what} {} is empty", path.display());
    }
    Ok(data)
}

fn host_random_seed() -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    ftvm_host::entropy::fill(&mut seed).context("cannot get entropy for the guest RNG seed")?;
    Ok(seed)
}

/// Paths of the images a machine is built from.
#[derive(Clone, Debug)]
pub struct ImagePaths {
    pub bios: Option<PathBuf>,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
}

impl ImagePaths {
    pub fn as_pairs(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if let Some(b) = &self.bios {
            v.push(("firmware".into(), b.display().to_string()));
        }
        v.push(("kernel".into(), self.kernel.display().to_string()));
        if let Some(i) = &self.initrd {
            v.push(("initrd".into(), i.display().to_string()));
        }
        v
    }
}

impl MachineArgs {
    /// Resolves image paths, filling in the default guest image.
    pub fn image_paths(&self) -> Result<ImagePaths> {
        let bare = self.bios.as_deref() == Some("none");
        let (kernel, default_kernel) = match &self.kernel {
            Some(k) => (k.clone(), false),
            None => {
                if bare {
                    bail!("--bios none needs --kernel PROGRAM.elf");
                }
                (guest::default_dir()?.join("Image"), true)
            }
        };
        let bios = if bare {
            None
        } else {
            Some(match &self.bios {
                Some(p) => PathBuf::from(p),
                None => guest::default_dir()?.join("fw_jump.bin"),
            })
        };
        let initrd = match &self.initrd {
            Some(p) => Some(p.clone()),
            None if default_kernel => Some(guest::default_dir()?.join("initrd.cpio.gz")),
            None => None,
        };
        Ok(ImagePaths {
            bios,
            kernel,
            initrd,
        })
    }

    /// Builds the machine config (reading every image) and opens the device
    /// backends. Power-on values (RNG seed, wall clock) come from the host.
    pub fn build(&self) -> Result<(MachineConfig, ImagePaths, Backends)> {
        let (virtio, backends) = devices::open(
            &self.drives,
            &self.nets,
            !self.no_rng,
            self.nbd_tls.as_ref(),
        )?;
        let (cfg, paths) = self.config(virtio)?;
        Ok((cfg, paths, backends))
    }

    /// Like [`build`](Self::build), but only probes the devices (see
    /// [`devices::probe`]): a backup's machine, whose devices the primary holds.
    pub fn build_probed(&self) -> Result<(MachineConfig, ImagePaths)> {
        let virtio = devices::probe(
            &self.drives,
            &self.nets,
            !self.no_rng,
            self.nbd_tls.as_ref(),
        )?;
        self.config(virtio)
    }

    fn config(
        &self,
        virtio: Vec<ftvm_machine::DeviceConfig>,
    ) -> Result<(MachineConfig, ImagePaths)> {
        // Every hart this process builds or restores from here on.
        ftvm_cpu::set_default_engine(self.cpu);
        let ram_size = console::parse_size(&self.memory)?;
        let paths = self.image_paths()?;
        let kernel = read_file("kernel", &paths.kernel)?;
        let bios = paths
            .bios
            .as_ref()
            .map(|p| read_file("firmware", p))
            .transpose()?;
        let initrd = paths
            .initrd
            .as_ref()
            .map(|p| read_file("initrd", p))
            .transpose()?;
        let mut cfg = MachineConfig::new(ram_size, kernel);
        cfg.bios = bios;
        cfg.initrd = initrd;
        cfg.bootargs = self.append.clone();
        cfg.rng_seed = host_random_seed()?;
        cfg.boot_wallclock_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        cfg.mmu = if self.mmu == "sv39" {
            MmuType::Sv39
        } else {
            MmuType::Sv48
        };
        cfg.virtio = virtio;
        Ok((cfg, paths))
    }
}
