//! Placing boot blobs in guest RAM, the way QEMU's `virt` machine does:
//! firmware at the start of RAM, a RISC-V Linux `Image` at the address
//! OpenSBI's `fw_jump` jumps to (or an ELF at its physical addresses), the
//! initramfs well above the kernel, and the device tree at the end of RAM.
//! Every placement is bounds-checked and reported as a typed error.

use ftvm_cpu::Ram;
use thiserror::Error;

use crate::layout::{KERNEL_OFFSET, RAM_BASE};

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} ({len} bytes at {addr:#x}) does not fit in guest RAM ({ram_size} bytes at {RAM_BASE:#x}); try a larger --memory")]
    DoesNotFit {
        what: &'static str,
        addr: u64,
        len: u64,
        ram_size: u64,
    },
    #[error("{what}: not a usable ELF file: {reason}")]
    BadElf { what: &'static str, reason: String },
    #[error("{what} overlaps {other}")]
    Overlap {
        what: &'static str,
        other: &'static str,
    },
}

/// Where things were placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub start: u64,
    pub end: u64,
}

const ELF_MAGIC: &[u8] = b"\x7fELF";

/// True if `data` starts like an ELF file.
pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(ELF_MAGIC)
}

/// True if `data` carries the RISC-V Linux `Image` header magic.
pub fn is_linux_image(data: &[u8]) -> bool {
    data.len() >= 0x40 && &data[0x38..0x3c] == b"RSC\x05"
}

fn does_not_fit(ram: &Ram, what: &'static str, addr: u64, len: u64) -> LoadError {
    LoadError::DoesNotFit {
        what,
        addr,
        len,
        ram_size: ram.size(),
    }
}

/// `len` bytes at `addr` lie inside RAM (checked before a size read from a
/// file is acted on).
fn fits(ram: &Ram, what: &'static str, addr: u64, len: u64) -> Result<(), LoadError> {
    match ram.offset_of(addr, len) {
        Some(_) => Ok(()),
        None => Err(does_not_fit(ram, what, addr, len)),
    }
}

fn place(
    ram: &mut Ram,
    what: &'static str,
    addr: u64,
    data: &[u8],
) -> Result<Placement, LoadError> {
    if !ram.write_bytes(addr, data) {
        return Err(does_not_fit(ram, what, addr, data.len() as u64));
    }
    Ok(Placement {
        start: addr,
        end: addr + data.len() as u64,
    })
}

/// Loads a raw binary at `addr`.
pub fn load_raw(
    ram: &mut Ram,
    what: &'static str,
    addr: u64,
    data: &[u8],
) -> Result<Placement, LoadError> {
    if data.is_empty() {
        return Err(LoadError::Empty { what });
    }
    place(ram, what, addr, data)
}

/// Loads the PT_LOAD segments of an ELF64 RISC-V file at their physical
/// addresses. Returns the entry point and the span covered.
pub fn load_elf(
    ram: &mut Ram,
    what: &'static str,
    data: &[u8],
) -> Result<(u64, Placement), LoadError> {
    use elf::abi::{EM_RISCV, PT_LOAD};
    use elf::endian::LittleEndian;
    let bad = |reason: String| LoadError::BadElf { what, reason };
    let file =
        elf::ElfBytes::<LittleEndian>::minimal_parse(data).map_err(|e| bad(e.to_string()))?;
    if file.ehdr.class != elf::file::Class::ELF64 {
        return Err(bad("not a 64-bit ELF".into()));
    }
    if file.ehdr.e_machine != EM_RISCV {
        return Err(bad(format!(
            "machine type {} is not RISC-V",
            file.ehdr.e_machine
        )));
    }
    let segments = file
        .segments()
        .ok_or_else(|| bad("no program headers".into()))?;
    let mut span: Option<Placement> = None;
    for ph in segments.iter().filter(|p| p.p_type == PT_LOAD) {
        let off = ph.p_offset as usize;
        let filesz = ph.p_filesz as usize;
        let bytes = data
            .get(
                off..off
                    .checked_add(filesz)
                    .ok_or_else(|| bad("segment size overflows".into()))?,
            )
            .ok_or_else(|| {
                bad(format!(
                    "segment at file offset {off:#x} runs past the end of the file"
                ))
            })?;
        if ph.p_memsz < ph.p_filesz {
            return Err(bad("segment memory size smaller than file size".into()));
        }
        // The whole segment must fit before anything is placed or zeroed:
        // its memory size comes from the file, so it bounds nothing.
        let end = ph
            .p_paddr
            .checked_add(ph.p_memsz)
            .ok_or_else(|| bad("segment address overflows".into()))?;
        fits(ram, what, ph.p_paddr, ph.p_memsz)?;
        place(ram, what, ph.p_paddr, bytes)?;
        // Zero the BSS part, a page at a time.
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut at = ph.p_paddr + ph.p_filesz;
        while at < end {
            let n = (end - at).min(ZEROS.len() as u64);
            place(ram, what, at, &ZEROS[..n as usize])?;
            at += n;
        }
        let (s, e) = (ph.p_paddr, end);
        span = Some(match span {
            None => Placement { start: s, end: e },
            Some(p) => Placement {
                start: p.start.min(s),
                end: p.end.max(e),
            },
        });
    }
    let span = span.ok_or_else(|| bad("no loadable segments".into()))?;
    Ok((file.ehdr.e_entry, span))
}

/// Kernel placement for the firmware boot path: an ELF at its physical
/// addresses, anything else (a Linux `Image`) at RAM_BASE + KERNEL_OFFSET.
pub fn load_kernel(ram: &mut Ram, data: &[u8]) -> Result<(u64, Placement), LoadError> {
    if data.is_empty() {
        return Err(LoadError::Empty { what: "kernel" });
    }
    if is_elf(data) {
        return load_elf(ram, "kernel", data);
    }
    let addr = RAM_BASE + KERNEL_OFFSET;
    let mut p = load_raw(ram, "kernel", addr, data)?;
    if is_linux_image(data) {
        // The header's image_size includes the BSS the kernel will clear.
        // It comes from the file: it must fit in RAM like the rest.
        let image_size = u64::from_le_bytes(data[0x10..0x18].try_into().unwrap_or([0; 8]));
        fits(ram, "kernel", addr, image_size)?;
        p.end = p.end.max(addr + image_size);
    }
    Ok((addr, p))
}

/// Address for the initramfs: half-way into RAM but at most 128 MiB above
/// its base (QEMU's rule), after the kernel, 4 KiB aligned.
pub fn initrd_address(ram_size: u64, kernel_end: u64, len: u64) -> u64 {
    let preferred = RAM_BASE + (ram_size / 2).min(128 << 20);
    let after_kernel = kernel_end.saturating_add(0xfff) & !0xfff;
    let mut addr = preferred.max(after_kernel);
    if addr.saturating_add(len) > RAM_BASE + ram_size {
        addr = after_kernel;
    }
    addr
}

/// Address for the device tree: the end of RAM, aligned down to 2 MiB.
pub fn fdt_address(ram_size: u64, fdt_len: u64) -> u64 {
    (RAM_BASE + ram_size).saturating_sub(fdt_len) & !((2 << 20) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_outside_ram_is_refused() {
        let mut ram = Ram::new(RAM_BASE, 1 << 20);
        let err = load_raw(&mut ram, "firmware", RAM_BASE + (1 << 20) - 2, &[1, 2, 3]).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        assert!(matches!(
            load_raw(&mut ram, "kernel", RAM_BASE, &[]),
            Err(LoadError::Empty { .. })
        ));
    }

    #[test]
    fn garbage_elf_is_refused() {
        let mut ram = Ram::new(RAM_BASE, 1 << 20);
        let mut data = b"\x7fELF".to_vec();
        data.extend_from_slice(&[0xff; 60]);
        let err = load_kernel(&mut ram, &data).unwrap_err();
        assert!(matches!(err, LoadError::BadElf { .. }), "{err}");
    }

    #[test]
    fn initrd_goes_high_but_fits() {
        let a = initrd_address(256 << 20, RAM_BASE + (8 << 20), 3 << 20);
        assert_eq!(a, RAM_BASE + (128 << 20));
        let b = initrd_address(16 << 20, RAM_BASE + (4 << 20), 10 << 20);
        assert_eq!(b, RAM_BASE + (4 << 20));
    }

    // Found by fuzzing (fuzz/regressions/loader/): an ELF whose segment
    // claims 2^60 bytes of BSS made the loader allocate them; a Linux
    // Image header whose image_size overflowed the kernel's end address.
    #[test]
    fn huge_segments_and_image_sizes_are_refused_without_allocating() {
        let mut ram = Ram::new(RAM_BASE, 1 << 20);
        for bytes in [
            include_bytes!(
                "../../../fuzz/regressions/loader/crash-658e8d566e8f342769f32666a7000249f8721083"
            )
            .as_slice(),
            include_bytes!(
                "../../../fuzz/regressions/loader/crash-93f25ce277e1115387edead7b6183804e807b147"
            )
            .as_slice(),
        ] {
            // The fuzz input's first byte picks the loader.
            let image = &bytes[1..];
            let r = if bytes[0] % 3 == 1 {
                load_elf(&mut ram, "kernel", image)
            } else {
                load_kernel(&mut ram, image)
            };
            assert!(
                matches!(
                    r,
                    Err(LoadError::DoesNotFit { .. } | LoadError::BadElf { .. })
                ),
                "{r:?}"
            );
        }
    }
}
