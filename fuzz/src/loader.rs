//! The image loaders (`ftvm_machine::loader`): kernels as ELF or Linux
//! `Image`, and raw images (firmware, initrd) at an address. A file that is
//! not what it claims must be refused with an error, never placed outside
//! RAM or over-read.

use ftvm_cpu::Ram;
use ftvm_machine::layout::RAM_BASE;
use ftvm_machine::loader::{
    fdt_address, initrd_address, is_elf, is_linux_image, load_elf, load_kernel, load_raw,
};

const RAM_SIZE: u64 = 4 << 20;

pub fn run(data: &[u8]) {
    let Some((&sel, image)) = data.split_first() else {
        return;
    };
    let _ = is_elf(image);
    let _ = is_linux_image(image);
    let mut ram = Ram::new(RAM_BASE, RAM_SIZE);
    match sel % 3 {
        0 => {
            if let Ok((entry, _)) = load_kernel(&mut ram, image) {
                let _ = entry;
            }
        }
        1 => {
            let _ = load_elf(&mut ram, "kernel", image);
        }
        _ => {
            let at = initrd_address(RAM_SIZE, RAM_BASE + (1 << 20), image.len() as u64);
            let _ = load_raw(&mut ram, "initrd", at, image);
            let _ = fdt_address(RAM_SIZE, image.len() as u64);
        }
    }
}
