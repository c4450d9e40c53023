//! The flattened device tree the board hands to OpenSBI and Linux. It
//! describes what `layout` places, with the node names, compatibles,
//! `reg`/`interrupts` properties and phandle wiring of QEMU's `virt` machine
//! (as dumped by QEMU 7.2), restricted to the devices ftvm has: one hart
//! with its local interrupt controller, RAM, CLINT, PLIC, the NS16550A
//! console, the Goldfish RTC, the SiFive test device behind
//! `syscon-poweroff`/`syscon-reboot`, and one `virtio,mmio` node per
//! populated slot (in slot order, so slot 0 is probed first). `/chosen`
//! carries the kernel command line, the console path, a 32-byte RNG seed and
//! the initrd range. The result is a pure function of `FdtConfig`.

use crate::layout;
use vm_fdt::FdtWriter;

/// Instruction set advertised in `riscv,isa`: RV64GC spelled out, with the
/// Zicsr/Zifencei split and the base counters (Zicntr) named explicitly
/// (Linux 6.1 and OpenSBI parse the multi-letter extensions after `_`).
/// Nothing else is claimed: no Sstc, no Zihpm counters beyond the
/// hardwired-zero ones, no debug triggers (Sdtrig's CSRs exist and say so).
pub const RISCV_ISA: &str = "rv64imafdc_zicntr_zicsr_zifencei";
/// UART input clock, as QEMU advertises it (3.6864 MHz).
pub const UART_CLOCK_HZ: u32 = 0x38_4000;

const PHANDLE_CPU0: u32 = 1;
const PHANDLE_CPU0_INTC: u32 = 2;
const PHANDLE_PLIC: u32 = 3;
const PHANDLE_TEST: u32 = 4;

// Local interrupt numbers on the hart's interrupt controller (mip bits).
const IRQ_M_SOFT: u32 = 3;
const IRQ_M_TIMER: u32 = 7;
const IRQ_S_EXT: u32 = 9;
const IRQ_M_EXT: u32 = 11;

/// Paging mode advertised in the cpu node's `mmu-type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MmuType {
    Sv39,
    #[default]
    Sv48,
}

impl MmuType {
    pub fn as_str(self) -> &'static str {
        match self {
            MmuType::Sv39 => "riscv,sv39",
            MmuType::Sv48 => "riscv,sv48",
        }
    }
}

/// Everything that varies between boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdtConfig {
    pub ram_base: u64,
    pub ram_size: u64,
    /// Kernel command line (`/chosen/bootargs`; omitted when empty).
    pub bootargs: String,
    /// Initrd `(start, end)` physical addresses, end exclusive.
    pub initrd: Option<(u64, u64)>,
    /// Seed for the kernel's RNG (`/chosen/rng-seed`).
    pub rng_seed: [u8; 32],
    /// Populated virtio-mmio slot indices (each < `layout::VIRTIO_SLOTS`).
    pub virtio_slots: Vec<u32>,
    pub mmu_type: MmuType,
}

#[derive(Debug, thiserror::Error)]
pub enum FdtError {
    #[error("device tree writer: {0}")]
    Writer(#[from] vm_fdt::Error),
    #[error("virtio slot {0} out of range (the board has {max})", max = layout::VIRTIO_SLOTS)]
    VirtioSlotOutOfRange(u32),
    #[error("virtio slot {0} listed twice")]
    DuplicateVirtioSlot(u32),
    #[error("initrd range {start:#x}..{end:#x} is empty or reversed")]
    InvalidInitrd { start: u64, end: u64 },
    #[error("timebase frequency {0} Hz does not fit the 32-bit property")]
    TimebaseTooLarge(u64),
}

/// Path of the console node (`/chosen/stdout-path`, `/aliases/serial0`).
pub fn uart_path() -> String {
    format!("/soc/serial@{:x}", layout::UART_BASE)
}

fn reg(fdt: &mut FdtWriter, base: u64, size: u64) -> Result<(), vm_fdt::Error> {
    fdt.property_array_u64("reg", &[base, size])
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Builds the DTB for `cfg`.
pub fn build(cfg: &FdtConfig) -> Result<Vec<u8>, FdtError> {
    let mut slots = cfg.virtio_slots.clone();
    slots.sort_unstable();
    for (i, &s) in slots.iter().enumerate() {
        if s >= layout::VIRTIO_SLOTS {
            return Err(FdtError::VirtioSlotOutOfRange(s));
        }
        if i > 0 && slots[i - 1] == s {
            return Err(FdtError::DuplicateVirtioSlot(s));
        }
    }
    if let Some((start, end)) = cfg.initrd {
        if end <= start {
            return Err(FdtError::InvalidInitrd { start, end });
        }
    }
    let timebase = u32::try_from(layout::TIMEBASE_HZ)
        .map_err(|_| FdtError::TimebaseTooLarge(layout::TIMEBASE_HZ))?;

    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "riscv-virtio")?;
    fdt.property_string("model", "riscv-virtio,ftvm")?;

    // /chosen
    let chosen = fdt.begin_node("chosen")?;
    if !cfg.bootargs.is_empty() {
        fdt.property_string("bootargs", &cfg.bootargs)?;
    }
    fdt.property_string("stdout-path", &uart_path())?;
    fdt.property("rng-seed", &cfg.rng_seed)?;
    if let Some((start, end)) = cfg.initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", end)?;
    }
    fdt.end_node(chosen)?;

    // /aliases
    let aliases = fdt.begin_node("aliases")?;
    fdt.property_string("serial0", &uart_path())?;
    fdt.end_node(aliases)?;

    // /poweroff and /reboot through the test device's syscon.
    for (name, compatible, value) in [
        ("poweroff", "syscon-poweroff", 0x5555u32),
        ("reboot", "syscon-reboot", 0x7777u32),
    ] {
        let node = fdt.begin_node(name)?;
        fdt.property_u32("value", value)?;
        fdt.property_u32("offset", 0)?;
        fdt.property_u32("regmap", PHANDLE_TEST)?;
        fdt.property_string("compatible", compatible)?;
        fdt.end_node(node)?;
    }

    // /memory
    let memory = fdt.begin_node(&format!("memory@{:x}", cfg.ram_base))?;
    fdt.property_string("device_type", "memory")?;
    reg(&mut fdt, cfg.ram_base, cfg.ram_size)?;
    fdt.end_node(memory)?;

    // /cpus
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_u32("timebase-frequency", timebase)?;
    let cpu = fdt.begin_node("cpu@0")?;
    fdt.property_phandle(PHANDLE_CPU0)?;
    fdt.property_string("device_type", "cpu")?;
    fdt.property_u32("reg", 0)?;
    fdt.property_string("status", "okay")?;
    fdt.property_string("compatible", "riscv")?;
    fdt.property_string("riscv,isa", RISCV_ISA)?;
    fdt.property_string("mmu-type", cfg.mmu_type.as_str())?;
    let intc = fdt.begin_node("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 1)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_string("compatible", "riscv,cpu-intc")?;
    fdt.property_phandle(PHANDLE_CPU0_INTC)?;
    fdt.end_node(intc)?;
    fdt.end_node(cpu)?;
    let cpu_map = fdt.begin_node("cpu-map")?;
    let cluster = fdt.begin_node("cluster0")?;
    let core = fdt.begin_node("core0")?;
    fdt.property_u32("cpu", PHANDLE_CPU0)?;
    fdt.end_node(core)?;
    fdt.end_node(cluster)?;
    fdt.end_node(cpu_map)?;
    fdt.end_node(cpus)?;

    // /soc
    let soc = fdt.begin_node("soc")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "simple-bus")?;
    fdt.property_null("ranges")?;

    let rtc = fdt.begin_node(&format!("rtc@{:x}", layout::RTC_BASE))?;
    fdt.property_u32("interrupts", layout::RTC_IRQ)?;
    fdt.property_u32("interrupt-parent", PHANDLE_PLIC)?;
    reg(&mut fdt, layout::RTC_BASE, layout::RTC_SIZE)?;
    fdt.property_string("compatible", "google,goldfish-rtc")?;
    fdt.end_node(rtc)?;

    let serial = fdt.begin_node(&format!("serial@{:x}", layout::UART_BASE))?;
    fdt.property_u32("interrupts", layout::UART_IRQ)?;
    fdt.property_u32("interrupt-parent", PHANDLE_PLIC)?;
    fdt.property_u32("clock-frequency", UART_CLOCK_HZ)?;
    reg(&mut fdt, layout::UART_BASE, layout::UART_SIZE)?;
    fdt.property_string("compatible", "ns16550a")?;
    fdt.end_node(serial)?;

    let test = fdt.begin_node(&format!("test@{:x}", layout::TEST_BASE))?;
    fdt.property_phandle(PHANDLE_TEST)?;
    reg(&mut fdt, layout::TEST_BASE, layout::TEST_SIZE)?;
    fdt.property_string_list(
        "compatible",
        strings(&["sifive,test1", "sifive,test0", "syscon"]),
    )?;
    fdt.end_node(test)?;

    for &slot in &slots {
        let base = layout::VIRTIO_BASE + slot as u64 * layout::VIRTIO_STRIDE;
        let node = fdt.begin_node(&format!("virtio_mmio@{base:x}"))?;
        fdt.property_u32("interrupts", layout::VIRTIO_IRQ_BASE + slot)?;
        fdt.property_u32("interrupt-parent", PHANDLE_PLIC)?;
        reg(&mut fdt, base, layout::VIRTIO_STRIDE)?;
        fdt.property_string("compatible", "virtio,mmio")?;
        fdt.end_node(node)?;
    }

    let plic = fdt.begin_node(&format!("plic@{:x}", layout::PLIC_BASE))?;
    fdt.property_phandle(PHANDLE_PLIC)?;
    // The number of sources, i.e. the highest source id.
    fdt.property_u32("riscv,ndev", layout::PLIC_SOURCES - 1)?;
    reg(&mut fdt, layout::PLIC_BASE, layout::PLIC_SIZE)?;
    // Context 0 = M-mode external interrupt, context 1 = S-mode.
    fdt.property_array_u32(
        "interrupts-extended",
        &[PHANDLE_CPU0_INTC, IRQ_M_EXT, PHANDLE_CPU0_INTC, IRQ_S_EXT],
    )?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_string_list("compatible", strings(&["sifive,plic-1.0.0", "riscv,plic0"]))?;
    fdt.property_u32("#address-cells", 0)?;
    fdt.property_u32("#interrupt-cells", 1)?;
    fdt.end_node(plic)?;

    let clint = fdt.begin_node(&format!("clint@{:x}", layout::CLINT_BASE))?;
    fdt.property_array_u32(
        "interrupts-extended",
        &[
            PHANDLE_CPU0_INTC,
            IRQ_M_SOFT,
            PHANDLE_CPU0_INTC,
            IRQ_M_TIMER,
        ],
    )?;
    reg(&mut fdt, layout::CLINT_BASE, layout::CLINT_SIZE)?;
    fdt.property_string_list("compatible", strings(&["sifive,clint0", "riscv,clint0"]))?;
    fdt.end_node(clint)?;

    fdt.end_node(soc)?;
    fdt.end_node(root)?;
    Ok(fdt.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Node path -> (property name -> value), decoded from a DTB by a
    /// minimal reader of the structure block (enough to check our output).
    type Tree = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

    fn be32(b: &[u8], off: usize) -> u32 {
        u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn parse(dtb: &[u8]) -> Tree {
        assert!(dtb.len() >= 40);
        assert_eq!(be32(dtb, 0), 0xd00d_feed, "magic");
        assert_eq!(be32(dtb, 4) as usize, dtb.len(), "totalsize");
        let off_struct = be32(dtb, 8) as usize;
        let off_strings = be32(dtb, 12) as usize;
        let off_rsvmap = be32(dtb, 16) as usize;
        assert_eq!(be32(dtb, 20), 17, "version");
        assert!(be32(dtb, 24) <= 16, "last_comp_version");
        assert_eq!(be32(dtb, 28), 0, "boot_cpuid_phys");
        let size_strings = be32(dtb, 32) as usize;
        let size_struct = be32(dtb, 36) as usize;
        assert!(off_struct + size_struct <= dtb.len());
        assert!(off_strings + size_strings <= dtb.len());
        // Empty memory reservation map: a single terminating entry.
        assert_eq!(&dtb[off_rsvmap..off_rsvmap + 16], &[0u8; 16]);

        let cstr = |off: usize| -> String {
            let end = dtb[off..].iter().position(|&c| c == 0).unwrap();
            String::from_utf8(dtb[off..off + end].to_vec()).unwrap()
        };
        let mut tree = Tree::new();
        let mut path: Vec<String> = Vec::new();
        let mut p = off_struct;
        let full = |path: &[String]| -> String {
            if path.len() <= 1 {
                "/".to_string()
            } else {
                path[1..].iter().map(|s| format!("/{s}")).collect()
            }
        };
        loop {
            let token = be32(dtb, p);
            p += 4;
            match token {
                1 => {
                    let name = cstr(p);
                    p = (p + name.len() + 1 + 3) & !3;
                    path.push(name);
                    let prev = tree.insert(full(&path), BTreeMap::new());
                    assert!(prev.is_none(), "duplicate node {}", full(&path));
                }
                2 => {
                    path.pop().expect("unbalanced END_NODE");
                }
                3 => {
                    let len = be32(dtb, p) as usize;
                    let nameoff = be32(dtb, p + 4) as usize;
                    p += 8;
                    let val = dtb[p..p + len].to_vec();
                    p = (p + len + 3) & !3;
                    let name = cstr(off_strings + nameoff);
                    tree.get_mut(&full(&path)).unwrap().insert(name, val);
                }
                4 => {}
                9 => break,
                t => panic!("bad token {t}"),
            }
        }
        assert!(path.is_empty());
        assert_eq!(p, off_struct + size_struct);
        tree
    }

    fn cells(v: &[u8]) -> Vec<u32> {
        v.chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn s(v: &[u8]) -> Vec<&str> {
        let v = v.strip_suffix(&[0]).expect("NUL-terminated");
        v.split(|&c| c == 0)
            .map(|x| std::str::from_utf8(x).unwrap())
            .collect()
    }

    fn config() -> FdtConfig {
        FdtConfig {
            ram_base: layout::RAM_BASE,
            ram_size: 256 << 20,
            bootargs: "console=ttyS0 earlycon".into(),
            initrd: Some((0x8800_0000, 0x8812_3456)),
            rng_seed: [7; 32],
            virtio_slots: vec![3, 0],
            mmu_type: MmuType::Sv39,
        }
    }

    #[test]
    fn structure_matches_virt() {
        let dtb = build(&config()).unwrap();
        let t = parse(&dtb);
        let prop = |node: &str, name: &str| -> &Vec<u8> {
            t.get(node)
                .unwrap_or_else(|| panic!("no node {node}"))
                .get(name)
                .unwrap_or_else(|| panic!("no {node}:{name}"))
        };
        assert_eq!(s(prop("/", "compatible")), ["riscv-virtio"]);
        assert_eq!(cells(prop("/", "#address-cells")), [2]);

        assert_eq!(s(prop("/chosen", "bootargs")), ["console=ttyS0 earlycon"]);
        assert_eq!(s(prop("/chosen", "stdout-path")), ["/soc/serial@10000000"]);
        assert_eq!(prop("/chosen", "rng-seed"), &vec![7u8; 32]);
        assert_eq!(
            cells(prop("/chosen", "linux,initrd-start")),
            [0, 0x8800_0000]
        );
        assert_eq!(cells(prop("/chosen", "linux,initrd-end")), [0, 0x8812_3456]);
        assert_eq!(s(prop("/aliases", "serial0")), ["/soc/serial@10000000"]);

        assert_eq!(s(prop("/memory@80000000", "device_type")), ["memory"]);
        assert_eq!(
            cells(prop("/memory@80000000", "reg")),
            [0, 0x8000_0000, 0, 0x1000_0000]
        );

        assert_eq!(cells(prop("/cpus", "timebase-frequency")), [10_000_000]);
        assert_eq!(s(prop("/cpus/cpu@0", "riscv,isa")), [RISCV_ISA]);
        assert_eq!(s(prop("/cpus/cpu@0", "mmu-type")), ["riscv,sv39"]);
        assert_eq!(cells(prop("/cpus/cpu@0", "phandle")), [PHANDLE_CPU0]);
        let intc = "/cpus/cpu@0/interrupt-controller";
        assert_eq!(cells(prop(intc, "phandle")), [PHANDLE_CPU0_INTC]);
        assert_eq!(s(prop(intc, "compatible")), ["riscv,cpu-intc"]);
        assert!(prop(intc, "interrupt-controller").is_empty());
        assert_eq!(
            cells(prop("/cpus/cpu-map/cluster0/core0", "cpu")),
            [PHANDLE_CPU0]
        );

        assert!(prop("/soc", "ranges").is_empty());
        assert_eq!(
            cells(prop("/soc/clint@2000000", "interrupts-extended")),
            [2, 3, 2, 7]
        );
        assert_eq!(
            cells(prop("/soc/clint@2000000", "reg")),
            [0, 0x200_0000, 0, 0x1_0000]
        );
        let plic = "/soc/plic@c000000";
        assert_eq!(cells(prop(plic, "interrupts-extended")), [2, 11, 2, 9]);
        assert_eq!(cells(prop(plic, "riscv,ndev")), [95]);
        assert_eq!(cells(prop(plic, "phandle")), [PHANDLE_PLIC]);
        assert_eq!(
            s(prop(plic, "compatible")),
            ["sifive,plic-1.0.0", "riscv,plic0"]
        );
        let uart = "/soc/serial@10000000";
        assert_eq!(cells(prop(uart, "interrupts")), [10]);
        assert_eq!(cells(prop(uart, "interrupt-parent")), [PHANDLE_PLIC]);
        assert_eq!(cells(prop(uart, "clock-frequency")), [0x38_4000]);
        assert_eq!(s(prop(uart, "compatible")), ["ns16550a"]);
        let rtc = "/soc/rtc@101000";
        assert_eq!(cells(prop(rtc, "interrupts")), [11]);
        assert_eq!(s(prop(rtc, "compatible")), ["google,goldfish-rtc"]);
        let test = "/soc/test@100000";
        assert_eq!(cells(prop(test, "phandle")), [PHANDLE_TEST]);
        assert_eq!(
            s(prop(test, "compatible")),
            ["sifive,test1", "sifive,test0", "syscon"]
        );
        assert_eq!(cells(prop("/poweroff", "regmap")), [PHANDLE_TEST]);
        assert_eq!(cells(prop("/poweroff", "value")), [0x5555]);
        assert_eq!(s(prop("/poweroff", "compatible")), ["syscon-poweroff"]);
        assert_eq!(cells(prop("/reboot", "value")), [0x7777]);
        assert_eq!(s(prop("/reboot", "compatible")), ["syscon-reboot"]);

        // Only the populated virtio slots, in slot order.
        let virtio: Vec<&String> = t.keys().filter(|k| k.contains("virtio_mmio")).collect();
        assert_eq!(
            virtio,
            ["/soc/virtio_mmio@10001000", "/soc/virtio_mmio@10004000"]
        );
        let v3 = "/soc/virtio_mmio@10004000";
        assert_eq!(cells(prop(v3, "interrupts")), [4]);
        assert_eq!(cells(prop(v3, "reg")), [0, 0x1000_4000, 0, 0x1000]);
        assert_eq!(s(prop(v3, "compatible")), ["virtio,mmio"]);
        let pos_v0 = t.keys().position(|k| k == "/soc/virtio_mmio@10001000");
        assert!(pos_v0.is_some());
    }

    #[test]
    fn optional_parts_and_determinism() {
        let mut cfg = config();
        cfg.initrd = None;
        cfg.bootargs.clear();
        cfg.virtio_slots.clear();
        cfg.mmu_type = MmuType::Sv48;
        let dtb = build(&cfg).unwrap();
        assert_eq!(dtb, build(&cfg).unwrap(), "pure function of the config");
        let t = parse(&dtb);
        let chosen = &t["/chosen"];
        assert!(!chosen.contains_key("bootargs"));
        assert!(!chosen.contains_key("linux,initrd-start"));
        assert!(!chosen.contains_key("linux,initrd-end"));
        assert!(!t.keys().any(|k| k.contains("virtio")));
        assert_eq!(s(&t["/cpus/cpu@0"]["mmu-type"]), ["riscv,sv48"]);
    }

    #[test]
    fn bad_configs_are_errors() {
        let mut cfg = config();
        cfg.virtio_slots = vec![layout::VIRTIO_SLOTS];
        assert!(matches!(
            build(&cfg),
            Err(FdtError::VirtioSlotOutOfRange(_))
        ));
        cfg.virtio_slots = vec![1, 2, 1];
        assert!(matches!(build(&cfg), Err(FdtError::DuplicateVirtioSlot(1))));
        cfg.virtio_slots = vec![];
        cfg.initrd = Some((0x9000_0000, 0x9000_0000));
        assert!(matches!(build(&cfg), Err(FdtError::InvalidInitrd { .. })));
        cfg.initrd = None;
        cfg.bootargs = "a\0b".into();
        assert!(matches!(build(&cfg), Err(FdtError::Writer(_))));
    }

    /// Decompiles the DTB with `dtc` when it is installed.
    #[test]
    fn dtc_decompiles() {
        let mut cfg = config();
        cfg.virtio_slots = (0..layout::VIRTIO_SLOTS).collect();
        let dtb = build(&cfg).unwrap();
        let path = std::env::temp_dir().join(format!("ftvm-fdt-test-{}.dtb", std::process::id()));
        std::fs::write(&path, &dtb).unwrap();
        let out = std::process::Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts"])
            .arg(&path)
            .output();
        let _ = std::fs::remove_file(&path);
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                eprintln!("note: dtc not available ({e}); skipping the decompile check");
                return;
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "dtc failed: {stderr}");
        assert!(!stderr.contains("ERROR"), "dtc: {stderr}");
        let dts = String::from_utf8(out.stdout).unwrap();
        for needle in [
            "serial@10000000 {",
            "plic@c000000 {",
            "clint@2000000 {",
            "rtc@101000 {",
            "test@100000 {",
            "virtio_mmio@10008000 {",
            "interrupts-extended = <0x02 0x0b 0x02 0x09>;",
            "riscv,isa = \"rv64imafdc_zicntr_zicsr_zifencei\";",
            "stdout-path = \"/soc/serial@10000000\";",
            "regmap = <0x04>;",
        ] {
            assert!(dts.contains(needle), "missing {needle:?} in:\n{dts}");
        }
    }
}
