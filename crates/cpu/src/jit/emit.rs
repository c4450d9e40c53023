//! x86-64 code for translated blocks and the shared stubs, assembled with
//! `dynasmrt` into byte vectors for a known address in the arena.
//!
//! Register convention inside translated code (all callee-saved, set up by
//! the entry stub): `rbp` the [`Ctx`], `rbx` the guest register file `x`,
//! `r12`/`r13` the load/store TLB tables of the current data context, `r14`
//! the virtual address of the page the running block belongs to, `r15` the
//! remaining step budget (`limit - icount`). Guest registers live in memory
//! (`[rbx + 8 * n]`); within a block up to five of them are cached in
//! `r8`-`r11` and `rdi` (loaded on first use, written back when evicted and
//! wherever the block is left, including its slow exits, which store the
//! registers dirty at that point). Everything else is scratch.
//!
//! A block of `n` translated instructions first checks `r15 >= n` (else it
//! leaves with [`EXIT_BUDGET`] before doing anything) and subtracts `n`. An
//! instruction that cannot complete inline (a TLB miss, a page-crossing
//! access) gives back the budget of itself and the instructions after it and
//! leaves with [`EXIT_STEP`] and its own `pc`, so the interpreter executes it
//! with the exact step count. The end of a block jumps to the next block:
//! within the page through the page's entry table, elsewhere through an
//! inline lookup (fetch TLB, then the target page's entry table); a miss
//! leaves with [`EXIT_PC`].

// `Rq(n)` in `dynasm!` expands to `n.into()`, already a `u8` here.
#![allow(clippy::useless_conversion)]

use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};

use super::{Ctx, EXIT_BUDGET, EXIT_PC, EXIT_STEP};
use crate::decode::{Kind, Op};

type Asm = VecAssembler<X64Relocation>;

macro_rules! ctx_off {
    ($f:ident) => {
        std::mem::offset_of!(Ctx, $f) as i32
    };
}

/// Addresses of the shared stubs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stubs {
    /// `extern "sysv64" fn(*mut Ctx, block) -> u32`.
    pub entry: usize,
    /// Saves `r15` and returns `eax`.
    pub epilogue: usize,
    /// Leaves with `EXIT_PC`, `pc` in `rax`.
    pub exit_pc: usize,
}

/// Assembles the shared stubs for address `base`. Returns the code and the
/// stubs' addresses.
pub(crate) fn stubs(base: usize) -> Result<(Vec<u8>, Stubs), dynasmrt::DynasmError> {
    let mut a = Asm::new(base);
    let entry = base + a.offset().0;
    dynasm!(a
        ; .arch x64
        ; push rbx
        ; push rbp
        ; push r12
        ; push r13
        ; push r14
        ; push r15
        ; sub rsp, 8
        ; mov rbp, rdi
        ; mov rbx, [rbp + ctx_off!(x)]
        ; mov r12, [rbp + ctx_off!(load_tlb)]
        ; mov r13, [rbp + ctx_off!(store_tlb)]
        ; mov r14, [rbp + ctx_off!(vbase)]
        ; mov r15, [rbp + ctx_off!(budget)]
        ; jmp rsi
    );
    let epilogue = base + a.offset().0;
    dynasm!(a
        ; .arch x64
        ; mov [rbp + ctx_off!(budget)], r15
        ; add rsp, 8
        ; pop r15
        ; pop r14
        ; pop r13
        ; pop r12
        ; pop rbp
        ; pop rbx
        ; ret
    );
    let exit_pc = base + a.offset().0;
    dynasm!(a
        ; .arch x64
        ; mov [rbp + ctx_off!(pc)], rax
        ; mov eax, EXIT_PC as i32
        ; jmp extern epilogue
    );
    let code = a.finalize()?;
    Ok((
        code,
        Stubs {
            entry,
            epilogue,
            exit_pc,
        },
    ))
}

/// Jumps to the block for the virtual `pc` in `rax`, or leaves with
/// `EXIT_PC`. Emitted at every indirect or cross-page exit (each with its own
/// indirect jump, which the host predicts per site). The fetch must hit the
/// TLB within the page at an offset up to 0xffc, as the interpreter's
/// decoded-page loop requires.
fn lookup(a: &mut Asm, exit_pc: usize) {
    dynasm!(a
        ; .arch x64
        ; mov rcx, rax
        ; shr rcx, 12
        ; mov edx, ecx
        ; and edx, 0xff
        ; shl edx, 4
        ; mov rdi, [rbp + ctx_off!(fetch_tlb)]
        ; cmp rcx, [rdi + rdx]
        ; jne extern exit_pc
        ; mov esi, eax
        ; and esi, 0xfff
        ; cmp esi, 0xffc
        ; ja extern exit_pc
        ; shl rcx, 12
        ; add rcx, [rdi + rdx + 8]
        ; sub rcx, [rbp + ctx_off!(ram_host)]
        ; shr rcx, 12
        ; cmp rcx, [rbp + ctx_off!(ntables)]
        ; jae extern exit_pc
        ; mov rdi, [rbp + ctx_off!(tables)]
        ; mov rdi, [rdi + rcx * 8]
        ; test rdi, rdi
        ; jz extern exit_pc
        ; mov rdi, [rdi + rsi * 4]
        ; test rdi, rdi
        ; jz extern exit_pc
        ; mov r14, rax
        ; and r14, -4096
        ; jmp rdi
    );
}

/// One instruction of a block: its page offset and decoding.
#[derive(Clone, Copy)]
pub(crate) struct Insn {
    pub off: u32,
    pub len: u32,
    pub op: Op,
}

/// How a block ends after its last translated instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum End {
    /// The last instruction transfers control itself.
    Control,
    /// Continue at this offset of the page with a block there.
    Chain(u32),
    /// The instruction at this offset must run in the interpreter.
    Step(u32),
}

/// Whether `kind` is translated.
pub(crate) fn translatable(kind: Kind) -> bool {
    use Kind::*;
    !matches!(kind, Undecoded | Exit | Illegal | Slow)
}

/// Whether `kind` ends a block (it transfers control).
pub(crate) fn is_control(kind: Kind) -> bool {
    use Kind::*;
    matches!(
        kind,
        Jal | Jalr | J | Jr | Beq | Bne | Blt | Bge | Bltu | Bgeu
    )
}

/// Assembles the block `insns` (non-empty, all translatable, only the last
/// may be a control transfer) for address `base`. `table` is the address of
/// the page's entry table.
pub(crate) fn block(
    base: usize,
    stubs: &Stubs,
    table: usize,
    insns: &[Insn],
    end: End,
) -> Result<Vec<u8>, dynasmrt::DynasmError> {
    let mut e = Emitter {
        a: Asm::new(base),
        stubs: *stubs,
        table,
        slow: Vec::new(),
        cache: [Slot::default(); POOL.len()],
        tick: 0,
    };
    let n = insns.len() as i32;
    let start = insns[0].off;
    let short = e.a.new_dynamic_label();
    dynasm!(e.a
        ; .arch x64
        ; cmp r15, n
        ; jb =>short
        ; sub r15, n
    );
    for (k, insn) in insns.iter().enumerate() {
        e.insn(insn, n - k as i32);
    }
    match end {
        End::Control => {}
        End::Chain(off) => {
            e.flush();
            e.chain(off as i64)
        }
        End::Step(off) => {
            e.flush();
            e.leave(off, EXIT_STEP)
        }
    }
    // Out of line: the budget exit, then each slow access.
    dynasm!(e.a ; .arch x64 ; =>short);
    e.leave(start, EXIT_BUDGET);
    for (label, off, give_back, dirty) in std::mem::take(&mut e.slow) {
        dynasm!(e.a
            ; .arch x64
            ; =>label
            ; add r15, give_back
        );
        for (g, h) in dirty {
            dynasm!(e.a ; .arch x64 ; mov [rbx + xoff(g as usize)], Rq(h));
        }
        e.leave(off, EXIT_STEP);
    }
    e.a.finalize()
}

/// A slow exit still to emit: label, instruction offset, steps to give
/// back, (guest, host) registers dirty there.
type SlowExit = (DynamicLabel, u32, i32, Vec<(u8, u8)>);

/// Host registers caching guest registers.
const POOL: [u8; 5] = [8, 9, 10, 11, 7];

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Guest register cached (0: none).
    guest: u8,
    dirty: bool,
    last_use: u32,
}

struct Emitter {
    a: Asm,
    stubs: Stubs,
    table: usize,
    /// Slow-path exits still to emit: label, instruction offset, steps to
    /// give back, (guest, host) registers dirty there.
    slow: Vec<SlowExit>,
    cache: [Slot; POOL.len()],
    tick: u32,
}

fn xoff(r: usize) -> i32 {
    8 * r as i32
}

impl Emitter {
    /// Leaves with `reason` and `pc` = page base + `off`.
    fn leave(&mut self, off: u32, reason: u32) {
        let epilogue = self.stubs.epilogue;
        dynasm!(self.a
            ; .arch x64
            ; lea rax, [r14 + off as i32]
            ; mov [rbp + ctx_off!(pc)], rax
            ; mov eax, reason as i32
            ; jmp extern epilogue
        );
    }

    /// Goes on at page offset `target` (any value: it may lie outside the page).
    fn chain(&mut self, target: i64) {
        if (0..=0xffc).contains(&target) {
            let slot = self.table + (target as usize / 2) * 8;
            let exit_pc = self.stubs.exit_pc;
            dynasm!(self.a
                ; .arch x64
                ; lea rax, [r14 + target as i32]
                ; mov rcx, QWORD slot as i64
                ; mov rcx, [rcx]
                ; test rcx, rcx
                ; jz extern exit_pc
                ; jmp rcx
            );
        } else {
            dynasm!(self.a
                ; .arch x64
                ; mov rax, QWORD target
                ; add rax, r14
            );
            lookup(&mut self.a, self.stubs.exit_pc);
        }
    }

    /// The cache slot holding guest register `g`, if any.
    fn find(&mut self, g: usize) -> Option<usize> {
        let i = self.cache.iter().position(|s| s.guest as usize == g)?;
        self.tick += 1;
        self.cache[i].last_use = self.tick;
        Some(i)
    }

    /// A slot for guest register `g` (not cached yet): a free one, or the
    /// least recently used, written back first if dirty.
    fn alloc(&mut self, g: usize) -> usize {
        let i = match self.cache.iter().position(|s| s.guest == 0) {
            Some(i) => i,
            None => {
                let (i, _) = self
                    .cache
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.last_use)
                    .unwrap_or((0, &self.cache[0]));
                let old = self.cache[i];
                if old.dirty {
                    dynasm!(self.a ; .arch x64 ; mov [rbx + xoff(old.guest as usize)], Rq(POOL[i]));
                }
                i
            }
        };
        self.tick += 1;
        self.cache[i] = Slot {
            guest: g as u8,
            dirty: false,
            last_use: self.tick,
        };
        i
    }

    /// The (guest, host) registers cached and not yet written back.
    fn dirty(&self) -> Vec<(u8, u8)> {
        (0..POOL.len())
            .filter(|&i| self.cache[i].dirty)
            .map(|i| (self.cache[i].guest, POOL[i]))
            .collect()
    }

    /// Writes back every dirty cached register (moves only: flags survive).
    fn flush(&mut self) {
        for (g, h) in self.dirty() {
            dynasm!(self.a ; .arch x64 ; mov [rbx + xoff(g as usize)], Rq(h));
        }
        for s in self.cache.iter_mut() {
            s.dirty = false;
        }
    }

    /// rax = x[r].
    fn get_a(&mut self, r: usize) {
        if r == 0 {
            dynasm!(self.a ; .arch x64 ; xor eax, eax);
        } else if let Some(i) = self.find(r) {
            dynasm!(self.a ; .arch x64 ; mov rax, Rq(POOL[i]));
        } else {
            dynasm!(self.a ; .arch x64 ; mov rax, [rbx + xoff(r)]);
            let i = self.alloc(r);
            dynasm!(self.a ; .arch x64 ; mov Rq(POOL[i]), rax);
        }
    }

    /// rcx = x[r].
    fn get_c(&mut self, r: usize) {
        if r == 0 {
            dynasm!(self.a ; .arch x64 ; xor ecx, ecx);
        } else if let Some(i) = self.find(r) {
            dynasm!(self.a ; .arch x64 ; mov rcx, Rq(POOL[i]));
        } else {
            dynasm!(self.a ; .arch x64 ; mov rcx, [rbx + xoff(r)]);
            let i = self.alloc(r);
            dynasm!(self.a ; .arch x64 ; mov Rq(POOL[i]), rcx);
        }
    }

    /// x[rd] = rax (nothing for x0), in the cache.
    fn put_a(&mut self, rd: usize) {
        if rd != 0 {
            let i = match self.find(rd) {
                Some(i) => i,
                None => self.alloc(rd),
            };
            self.cache[i].dirty = true;
            dynasm!(self.a ; .arch x64 ; mov Rq(POOL[i]), rax);
        }
    }

    /// rax = host address of the access of `size` bytes at x[rs1] + imm
    /// through the TLB table in `tlb` (12: loads, 13: stores); jumps to a
    /// slow exit on a miss or a page-crossing access.
    fn address(&mut self, rs1: usize, imm: i32, size: i32, store: bool, off: u32, give_back: i32) {
        self.get_a(rs1);
        if imm != 0 {
            dynasm!(self.a ; .arch x64 ; add rax, imm);
        }
        let slow = self.a.new_dynamic_label();
        let dirty = self.dirty();
        self.slow.push((slow, off, give_back, dirty));
        dynasm!(self.a
            ; .arch x64
            ; mov rcx, rax
            ; shr rcx, 12
            ; mov edx, ecx
            ; and edx, 0xff
            ; shl edx, 4
        );
        if store {
            dynasm!(self.a ; .arch x64 ; cmp rcx, [r13 + rdx] ; jne =>slow);
        } else {
            dynasm!(self.a ; .arch x64 ; cmp rcx, [r12 + rdx] ; jne =>slow);
        }
        if size > 1 {
            dynasm!(self.a
                ; .arch x64
                ; mov esi, eax
                ; and esi, 0xfff
                ; cmp esi, 0x1000 - size
                ; ja =>slow
            );
        }
        if store {
            dynasm!(self.a ; .arch x64 ; add rax, [r13 + rdx + 8]);
        } else {
            dynasm!(self.a ; .arch x64 ; add rax, [r12 + rdx + 8]);
        }
    }

    /// One instruction; `give_back` is the number of steps from it to the
    /// end of the block (returned to the budget if it leaves before retiring).
    fn insn(&mut self, insn: &Insn, give_back: i32) {
        use Kind::*;
        let op = insn.op;
        let (rd, rs1, rs2) = (op.rd.index(), op.rs1.index(), op.rs2.index());
        let imm = op.imm;
        let off = insn.off;
        let next = off as i64 + insn.len as i64;
        let kind = op.kind();
        match kind {
            Nop => {}
            Lui => {
                if rd != 0 {
                    dynasm!(self.a ; .arch x64 ; mov rax, imm);
                    self.put_a(rd);
                }
            }
            Auipc => {
                dynasm!(self.a
                    ; .arch x64
                    ; mov rax, QWORD off as i64 + imm as i64
                    ; add rax, r14
                );
                self.put_a(rd);
            }
            Jal | J => {
                if kind == Jal {
                    dynasm!(self.a ; .arch x64 ; lea rax, [r14 + next as i32]);
                    self.put_a(rd);
                }
                self.flush();
                self.chain(off as i64 + imm as i64);
            }
            Jalr | Jr => {
                self.get_a(rs1);
                dynasm!(self.a
                    ; .arch x64
                    ; add rax, imm
                    ; and rax, -2
                );
                if kind == Jalr && rd != 0 {
                    dynasm!(self.a
                        ; .arch x64
                        ; mov rsi, rax
                        ; lea rax, [r14 + next as i32]
                    );
                    self.put_a(rd);
                    dynasm!(self.a ; .arch x64 ; mov rax, rsi);
                }
                self.flush();
                lookup(&mut self.a, self.stubs.exit_pc);
            }
            Beq | Bne | Blt | Bge | Bltu | Bgeu => {
                self.get_a(rs1);
                self.get_c(rs2);
                dynasm!(self.a ; .arch x64 ; cmp rax, rcx);
                self.flush(); // moves only: the flags stay
                let taken = self.a.new_dynamic_label();
                match kind {
                    Beq => dynasm!(self.a ; .arch x64 ; je =>taken),
                    Bne => dynasm!(self.a ; .arch x64 ; jne =>taken),
                    Blt => dynasm!(self.a ; .arch x64 ; jl =>taken),
                    Bge => dynasm!(self.a ; .arch x64 ; jge =>taken),
                    Bltu => dynasm!(self.a ; .arch x64 ; jb =>taken),
                    _ => dynasm!(self.a ; .arch x64 ; jae =>taken),
                }
                self.chain(next);
                dynasm!(self.a ; .arch x64 ; =>taken);
                self.chain(off as i64 + imm as i64);
            }
            Lb | Lh | Lw | Ld | Lbu | Lhu | Lwu => {
                let size = match kind {
                    Lb | Lbu => 1,
                    Lh | Lhu => 2,
                    Lw | Lwu => 4,
                    _ => 8,
                };
                self.address(rs1, imm, size, false, off, give_back);
                match kind {
                    Lb => dynasm!(self.a ; .arch x64 ; movsx rax, BYTE [rax]),
                    Lbu => dynasm!(self.a ; .arch x64 ; movzx eax, BYTE [rax]),
                    Lh => dynasm!(self.a ; .arch x64 ; movsx rax, WORD [rax]),
                    Lhu => dynasm!(self.a ; .arch x64 ; movzx eax, WORD [rax]),
                    Lw => dynasm!(self.a ; .arch x64 ; movsxd rax, DWORD [rax]),
                    Lwu => dynasm!(self.a ; .arch x64 ; mov eax, DWORD [rax]),
                    _ => dynasm!(self.a ; .arch x64 ; mov rax, QWORD [rax]),
                }
                self.put_a(rd);
            }
            Sb | Sh | Sw | Sd => {
                let size = match kind {
                    Sb => 1,
                    Sh => 2,
                    Sw => 4,
                    _ => 8,
                };
                self.address(rs1, imm, size, true, off, give_back);
                self.get_c(rs2);
                match kind {
                    Sb => dynasm!(self.a ; .arch x64 ; mov BYTE [rax], cl),
                    Sh => dynasm!(self.a ; .arch x64 ; mov WORD [rax], cx),
                    Sw => dynasm!(self.a ; .arch x64 ; mov DWORD [rax], ecx),
                    _ => dynasm!(self.a ; .arch x64 ; mov QWORD [rax], rcx),
                }
            }
            Addi | Slti | Sltiu | Xori | Ori | Andi | Slli | Srli | Srai | Addiw | Slliw
            | Srliw | Sraiw => {
                self.get_a(rs1);
                let sh = imm as i8;
                match kind {
                    Addi => dynasm!(self.a ; .arch x64 ; add rax, imm),
                    Slti => dynasm!(self.a
                        ; .arch x64
                        ; xor ecx, ecx
                        ; cmp rax, imm
                        ; setl cl
                        ; mov rax, rcx
                    ),
                    Sltiu => dynasm!(self.a
                        ; .arch x64
                        ; xor ecx, ecx
                        ; cmp rax, imm
                        ; setb cl
                        ; mov rax, rcx
                    ),
                    Xori => dynasm!(self.a ; .arch x64 ; xor rax, imm),
                    Ori => dynasm!(self.a ; .arch x64 ; or rax, imm),
                    Andi => dynasm!(self.a ; .arch x64 ; and rax, imm),
                    Slli => dynasm!(self.a ; .arch x64 ; shl rax, (sh & 63)),
                    Srli => dynasm!(self.a ; .arch x64 ; shr rax, (sh & 63)),
                    Srai => dynasm!(self.a ; .arch x64 ; sar rax, (sh & 63)),
                    Addiw => dynasm!(self.a ; .arch x64 ; add eax, imm ; movsxd rax, eax),
                    Slliw => dynasm!(self.a ; .arch x64 ; shl eax, (sh & 31) ; movsxd rax, eax),
                    Srliw => dynasm!(self.a ; .arch x64 ; shr eax, (sh & 31) ; movsxd rax, eax),
                    _ => dynasm!(self.a ; .arch x64 ; sar eax, (sh & 31) ; movsxd rax, eax),
                }
                self.put_a(rd);
            }
            _ => {
                // Register-register: rax = x[rs1], rcx = x[rs2].
                self.get_a(rs1);
                self.get_c(rs2);
                self.alu_rr(kind);
                self.put_a(rd);
            }
        }
    }

    /// rax = rax `kind` rcx for the register-register operations.
    fn alu_rr(&mut self, kind: Kind) {
        use Kind::*;
        match kind {
            Add => dynasm!(self.a ; .arch x64 ; add rax, rcx),
            Sub => dynasm!(self.a ; .arch x64 ; sub rax, rcx),
            Sll => dynasm!(self.a ; .arch x64 ; shl rax, cl),
            Srl => dynasm!(self.a ; .arch x64 ; shr rax, cl),
            Sra => dynasm!(self.a ; .arch x64 ; sar rax, cl),
            Slt => dynasm!(self.a
                ; .arch x64
                ; xor edx, edx
                ; cmp rax, rcx
                ; setl dl
                ; mov rax, rdx
            ),
            Sltu => dynasm!(self.a
                ; .arch x64
                ; xor edx, edx
                ; cmp rax, rcx
                ; setb dl
                ; mov rax, rdx
            ),
            Xor => dynasm!(self.a ; .arch x64 ; xor rax, rcx),
            Or => dynasm!(self.a ; .arch x64 ; or rax, rcx),
            And => dynasm!(self.a ; .arch x64 ; and rax, rcx),
            Mul => dynasm!(self.a ; .arch x64 ; imul rax, rcx),
            Mulh => dynasm!(self.a ; .arch x64 ; imul rcx ; mov rax, rdx),
            Mulhu => dynasm!(self.a ; .arch x64 ; mul rcx ; mov rax, rdx),
            Mulhsu => dynasm!(self.a
                ; .arch x64
                // hi(a * b) with a signed = hi_u(a * b) - (a < 0 ? b : 0)
                ; mov rsi, rax
                ; mul rcx
                ; sar rsi, 63
                ; and rsi, rcx
                ; sub rdx, rsi
                ; mov rax, rdx
            ),
            Div => dynasm!(self.a
                ; .arch x64
                ; test rcx, rcx
                ; jz >zero
                ; cmp rcx, -1
                ; jne >ok
                ; mov rdx, QWORD i64::MIN
                ; cmp rax, rdx
                ; je >done // MIN / -1 = MIN
                ; ok:
                ; cqo
                ; idiv rcx
                ; jmp >done
                ; zero:
                ; mov rax, -1
                ; done:
            ),
            Rem => dynasm!(self.a
                ; .arch x64
                ; test rcx, rcx
                ; jz >done // x % 0 = x
                ; cmp rcx, -1
                ; jne >ok
                ; xor eax, eax // x % -1 = 0 (also MIN % -1)
                ; jmp >done
                ; ok:
                ; cqo
                ; idiv rcx
                ; mov rax, rdx
                ; done:
            ),
            Divu => dynasm!(self.a
                ; .arch x64
                ; test rcx, rcx
                ; jz >zero
                ; xor edx, edx
                ; div rcx
                ; jmp >done
                ; zero:
                ; mov rax, -1
                ; done:
            ),
            Remu => dynasm!(self.a
                ; .arch x64
                ; test rcx, rcx
                ; jz >done
                ; xor edx, edx
                ; div rcx
                ; mov rax, rdx
                ; done:
            ),
            Addw => dynasm!(self.a ; .arch x64 ; add eax, ecx ; movsxd rax, eax),
            Subw => dynasm!(self.a ; .arch x64 ; sub eax, ecx ; movsxd rax, eax),
            Sllw => dynasm!(self.a ; .arch x64 ; shl eax, cl ; movsxd rax, eax),
            Srlw => dynasm!(self.a ; .arch x64 ; shr eax, cl ; movsxd rax, eax),
            Sraw => dynasm!(self.a ; .arch x64 ; sar eax, cl ; movsxd rax, eax),
            Mulw => dynasm!(self.a ; .arch x64 ; imul eax, ecx ; movsxd rax, eax),
            Divw => dynasm!(self.a
                ; .arch x64
                ; test ecx, ecx
                ; jz >zero
                ; cmp ecx, -1
                ; jne >ok
                ; cmp eax, i32::MIN
                ; je >sext // MIN / -1 = MIN
                ; ok:
                ; cdq
                ; idiv ecx
                ; sext:
                ; movsxd rax, eax
                ; jmp >done
                ; zero:
                ; mov rax, -1
                ; done:
            ),
            Remw => dynasm!(self.a
                ; .arch x64
                ; test ecx, ecx
                ; jz >sext // x % 0 = x
                ; cmp ecx, -1
                ; jne >ok
                ; xor eax, eax
                ; jmp >sext
                ; ok:
                ; cdq
                ; idiv ecx
                ; mov eax, edx
                ; sext:
                ; movsxd rax, eax
            ),
            Divuw => dynasm!(self.a
                ; .arch x64
                ; test ecx, ecx
                ; jz >zero
                ; xor edx, edx
                ; div ecx
                ; movsxd rax, eax
                ; jmp >done
                ; zero:
                ; mov rax, -1
                ; done:
            ),
            _ => dynasm!(self.a // Remuw
                ; .arch x64
                ; test ecx, ecx
                ; jz >sext
                ; xor edx, edx
                ; div ecx
                ; mov eax, edx
                ; sext:
                ; movsxd rax, eax
            ),
        }
    }
}
