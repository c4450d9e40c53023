//! Address translation: the Sv39/Sv48 page-table walker (with hardware
//! update of the A and D bits) and the software TLB in front of it.
//!
//! The TLB maps a virtual page straight to a host pointer into guest RAM, so
//! that a hit costs one compare and one add. It holds separate tables for
//! fetches, loads and stores, each for the three translation contexts in use
//! (U, S, and M without translation), so that traps and returns between
//! privilege levels do not flush it. Only pages backed by RAM are cached;
//! device pages always take the slow path. A store entry is only created once
//! the walk has set the PTE's D bit, so later stores need no walk, and never
//! survives for a RAM page holding decoded instructions (see `hart.rs`).

use crate::bus::Ram;
use crate::csr::{SATP_MODE_SV39, SATP_MODE_SV48};
use crate::trap::{Access, Trap};

pub(crate) const TLB_ENTRIES: usize = 256;
/// Context index used when the hart must not use the TLB (M-mode with MPRV).
pub(crate) const CTX_UNCACHED: usize = 3;
const EMPTY: u64 = u64::MAX;

/// `repr(C)`: translated code reads `vpn` at offset 0 and `addend` at 8.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct TlbEntry {
    /// Virtual page number, or EMPTY.
    pub vpn: u64,
    /// Host address of the page minus its virtual address.
    pub addend: usize,
}

/// Per access kind, per context (U=0, S=1, M=2, uncached=3), a direct-mapped table.
pub(crate) struct Tlb {
    pub fetch: Box<[[TlbEntry; TLB_ENTRIES]; 4]>,
    pub load: Box<[[TlbEntry; TLB_ENTRIES]; 4]>,
    pub store: Box<[[TlbEntry; TLB_ENTRIES]; 4]>,
}

impl Clone for Tlb {
    fn clone(&self) -> Self {
        Tlb::new() // a TLB is a cache: a copy starts cold
    }
}

impl Tlb {
    pub fn new() -> Self {
        let empty = [[TlbEntry {
            vpn: EMPTY,
            addend: 0,
        }; TLB_ENTRIES]; 4];
        Tlb {
            fetch: Box::new(empty),
            load: Box::new(empty),
            store: Box::new(empty),
        }
    }

    /// Forgets every translation made through page tables (contexts U and S).
    pub fn flush_translated(&mut self) {
        for t in [&mut self.fetch, &mut self.load, &mut self.store] {
            for ctx in 0..2 {
                for e in t[ctx].iter_mut() {
                    e.vpn = EMPTY;
                }
            }
        }
    }

    /// Forgets every store translation (used to restart dirty-page tracking).
    #[allow(dead_code)]
    pub fn flush_stores(&mut self) {
        for ctx in 0..4 {
            for e in self.store[ctx].iter_mut() {
                e.vpn = EMPTY;
            }
        }
    }

    /// Forgets every store translation to the RAM page at host address
    /// `host_page`.
    pub fn drop_stores_to(&mut self, host_page: usize) {
        for ctx in 0..4 {
            for e in self.store[ctx].iter_mut() {
                if e.vpn != EMPTY && ((e.vpn << 12) as usize).wrapping_add(e.addend) == host_page {
                    e.vpn = EMPTY;
                }
            }
        }
    }

    #[inline(always)]
    pub fn insert(&mut self, access: Access, ctx: usize, vaddr: u64, host_page: *mut u8) {
        if ctx == CTX_UNCACHED {
            return;
        }
        let vpn = vaddr >> 12;
        let entry = TlbEntry {
            vpn,
            addend: (host_page as usize).wrapping_sub((vpn << 12) as usize),
        };
        let t = match access {
            Access::Fetch => &mut self.fetch,
            Access::Load => &mut self.load,
            Access::Store => &mut self.store,
        };
        t[ctx][(vpn as usize) % TLB_ENTRIES] = entry;
    }
}

/// The translation regime for one access.
pub(crate) struct Regime {
    pub satp: u64,
    /// Effective privilege is U (else S; M never walks).
    pub user: bool,
    pub sum: bool,
    pub mxr: bool,
}

const PTE_V: u64 = 1 << 0;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PTE_U: u64 = 1 << 4;
const PTE_A: u64 = 1 << 6;
const PTE_D: u64 = 1 << 7;
const PTE_RESERVED: u64 = 0xffc0_0000_0000_0000; // N, PBMT and reserved bits: unsupported

/// Walks the page tables for `vaddr`. Returns the physical address, updating
/// the A and D bits of the leaf PTE in memory as the access requires.
pub(crate) fn walk(ram: &mut Ram, r: &Regime, vaddr: u64, access: Access) -> Result<u64, Trap> {
    let page_fault = Trap::new(access.page_fault(), vaddr);
    let levels: u32 = match r.satp >> 60 {
        SATP_MODE_SV39 => 3,
        SATP_MODE_SV48 => 4,
        _ => return Ok(vaddr),
    };
    let va_bits = 12 + 9 * levels;
    // The address must be sign-extended from bit va_bits-1.
    let high = (vaddr as i64) >> (va_bits - 1);
    if high != 0 && high != -1 {
        return Err(page_fault);
    }
    let mut table = (r.satp & ((1 << 44) - 1)) << 12;
    let mut level = levels;
    loop {
        level -= 1;
        let vpn_i = (vaddr >> (12 + 9 * level)) & 0x1ff;
        let pte_addr = table + vpn_i * 8;
        let mut pte_bytes = [0u8; 8];
        if !ram.read_bytes(pte_addr, &mut pte_bytes) {
            return Err(Trap::new(access.access_fault(), vaddr));
        }
        let pte = u64::from_le_bytes(pte_bytes);
        if pte & PTE_V == 0 || (pte & PTE_R == 0 && pte & PTE_W != 0) || pte & PTE_RESERVED != 0 {
            return Err(page_fault);
        }
        let ppn = (pte >> 10) & ((1 << 44) - 1);
        if pte & (PTE_R | PTE_X) == 0 {
            // Pointer to the next level.
            if level == 0 || pte & (PTE_A | PTE_D | PTE_U) != 0 {
                return Err(page_fault);
            }
            table = ppn << 12;
            continue;
        }
        // Leaf: check permissions.
        let allowed = match access {
            Access::Fetch => pte & PTE_X != 0,
            Access::Load => pte & PTE_R != 0 || (r.mxr && pte & PTE_X != 0),
            Access::Store => pte & PTE_W != 0,
        };
        if !allowed {
            return Err(page_fault);
        }
        if r.user {
            if pte & PTE_U == 0 {
                return Err(page_fault);
            }
        } else if pte & PTE_U != 0 && (access == Access::Fetch || !r.sum) {
            return Err(page_fault);
        }
        // A superpage must be aligned.
        let low_mask = (1u64 << (9 * level)) - 1;
        if ppn & low_mask != 0 {
            return Err(page_fault);
        }
        let mut new = pte | PTE_A;
        if access == Access::Store {
            new |= PTE_D;
        }
        if new != pte && !ram.write_bytes(pte_addr, &new.to_le_bytes()) {
            return Err(Trap::new(access.access_fault(), vaddr));
        }
        let page_off_mask = (1u64 << (12 + 9 * level)) - 1;
        return Ok(((ppn << 12) & !page_off_mask) | (vaddr & page_off_mask));
    }
}
