/*
 * ftvm bare-metal ISA conformance tests: shared runtime and macros.
 *
 * Every program in tests/isa/src/ includes this file exactly once, at the
 * top, and then defines `test_main` (entered in M-mode, sp set up, traps
 * routed to the common handler below).
 *
 * Conventions
 *   - t5 and t6 are scratch registers for the macros below: test code must
 *     not keep live values in them across a macro.
 *   - Fail codes 1..249 are per-check codes chosen by each program (the
 *     exit status is the number of the first failing check).
 *     250 = unexpected exception, 251 = unexpected interrupt,
 *     252 = runtime error (e.g. the machine did not stop on the test device).
 *   - Pass: write 0x5555 to the SiFive test device (exit status 0).
 *     Fail: write (code << 16) | 0x3333 (exit status = code).
 *
 * The whole runtime is assembled with .option norvc so that only the rvc
 * program (which re-enables C explicitly) contains compressed instructions.
 */
#ifndef FTVM_ISA_TEST_H
#define FTVM_ISA_TEST_H

#ifndef TEST_NAME
#define TEST_NAME "unnamed"
#endif

/* ---- board ---- */
#define UART_BASE       0x10000000
#define TESTDEV_BASE    0x100000
#define CLINT_BASE      0x2000000
#define CLINT_MSIP      0x2000000
#define CLINT_MTIMECMP  0x2004000
#define CLINT_MTIME     0x200bff8
#define RAM_BASE        0x80000000

/* ---- privilege levels ---- */
#define PRV_U 0
#define PRV_S 1
#define PRV_M 3

/* ---- mstatus ---- */
#define MSTATUS_SIE   0x2
#define MSTATUS_MIE   0x8
#define MSTATUS_SPIE  0x20
#define MSTATUS_MPIE  0x80
#define MSTATUS_SPP   0x100
#define MSTATUS_MPP   0x1800
#define MSTATUS_FS    0x6000
#define MSTATUS_FS_INITIAL 0x2000
#define MSTATUS_FS_CLEAN   0x4000
#define MSTATUS_FS_DIRTY   0x6000
#define MSTATUS_MPRV  0x20000
#define MSTATUS_SUM   0x40000
#define MSTATUS_MXR   0x80000
#define MSTATUS_TVM   0x100000
#define MSTATUS_TW    0x200000
#define MSTATUS_TSR   0x400000
#define MSTATUS_SD    0x8000000000000000

/* ---- interrupts (bit numbers) ---- */
#define IRQ_SSI 1
#define IRQ_MSI 3
#define IRQ_STI 5
#define IRQ_MTI 7
#define IRQ_SEI 9
#define IRQ_MEI 11
#define MIP_SSIP (1 << IRQ_SSI)
#define MIP_MSIP (1 << IRQ_MSI)
#define MIP_STIP (1 << IRQ_STI)
#define MIP_MTIP (1 << IRQ_MTI)
#define MIP_SEIP (1 << IRQ_SEI)
#define MIP_MEIP (1 << IRQ_MEI)
#define CAUSE_INTR 0x8000000000000000

/* ---- exception causes ---- */
#define CAUSE_MISALIGNED_FETCH 0
#define CAUSE_FETCH_ACCESS     1
#define CAUSE_ILLEGAL_INSN     2
#define CAUSE_BREAKPOINT       3
#define CAUSE_MISALIGNED_LOAD  4
#define CAUSE_LOAD_ACCESS      5
#define CAUSE_MISALIGNED_STORE 6
#define CAUSE_STORE_ACCESS     7
#define CAUSE_USER_ECALL       8
#define CAUSE_SUPERVISOR_ECALL 9
#define CAUSE_MACHINE_ECALL    11
#define CAUSE_FETCH_PAGE_FAULT 12
#define CAUSE_LOAD_PAGE_FAULT  13
#define CAUSE_STORE_PAGE_FAULT 15

/* ---- fflags ---- */
#define FFLAG_NX 0x01
#define FFLAG_UF 0x02
#define FFLAG_OF 0x04
#define FFLAG_DZ 0x08
#define FFLAG_NV 0x10

/* ---- Sv39/Sv48 PTE bits ---- */
#define PTE_V 0x001
#define PTE_R 0x002
#define PTE_W 0x004
#define PTE_X 0x008
#define PTE_U 0x010
#define PTE_G 0x020
#define PTE_A 0x040
#define PTE_D 0x080
#define SATP_MODE_SV39 0x8000000000000000
#define SATP_MODE_SV48 0x9000000000000000

/* PTE for physical address pa (must be a compile-time or register value) */
#define PTE_PPN_SHIFT 10

#define FAIL_UNEXPECTED_EXC 250
#define FAIL_UNEXPECTED_IRQ 251
#define FAIL_RUNTIME        252

        .option norvc
        .option norelax
        .option nopic

/* ====================================================================== */
/* Macros                                                                 */
/* ====================================================================== */

/* Report success. */
#define PASS j pass

/* Report failure of check n (no value information). */
#define FAIL(n) li a0, n; j fail_nodata

/* reg must equal the 64-bit constant val, else fail with code n. */
.macro CHECK_EQ reg, val, n
        li      t6, \val
        beq     \reg, t6, .Lcheck_ok\@
        mv      a1, \reg
        mv      a2, t6
        li      a0, \n
        j       fail_data
.Lcheck_ok\@:
.endm

/* Two registers must be equal. */
.macro CHECK_REG reg1, reg2, n
        beq     \reg1, \reg2, .Lcheck_ok\@
        mv      a1, \reg1
        mv      a2, \reg2
        li      a0, \n
        j       fail_data
.Lcheck_ok\@:
.endm

/* reg must equal the address of label. */
.macro CHECK_ADDR reg, label, n
        la      t6, \label
        beq     \reg, t6, .Lcheck_ok\@
        mv      a1, \reg
        mv      a2, t6
        li      a0, \n
        j       fail_data
.Lcheck_ok\@:
.endm

/* 64-bit word at symbol sym must equal val. */
.macro CHECK_MEM sym, val, n
        la      t5, \sym
        ld      t5, 0(t5)
        CHECK_EQ t5, \val, \n
.endm

/* 64-bit word at symbol sym must equal the address of label. */
.macro CHECK_MEM_ADDR sym, label, n
        la      t5, \sym
        ld      t5, 0(t5)
        CHECK_ADDR t5, \label, \n
.endm

/* 64-bit word at symbol sym must equal register reg. */
.macro CHECK_MEM_REG sym, reg, n
        la      t5, \sym
        ld      t5, 0(t5)
        CHECK_REG t5, \reg, \n
.endm

/* Store register/constant into a 64-bit global. */
.macro SET_MEM sym, val
        la      t5, \sym
        li      t6, \val
        sd      t6, 0(t5)
.endm

/*
 * Arm the common trap handler: the next exception is recorded in
 * trap_cause/trap_epc/trap_tval (and trap_status = mstatus at entry), and
 * execution resumes at `label` in M-mode (MPP is forced to M).
 * If no trap happens, execution simply continues after the trapping
 * instruction, so follow it by a FAIL().
 */
.macro EXPECT_TRAP label
        la      t6, \label
        la      t5, trap_resume
        sd      t6, 0(t5)
.endm

/* Disarm (e.g. when the expected trap did not occur). */
.macro CLEAR_TRAP
        la      t5, trap_resume
        sd      zero, 0(t5)
.endm

/* Check the recorded trap's mcause / mepc / mtval. */
.macro CHECK_CAUSE val, n
        CHECK_MEM trap_cause, \val, \n
.endm
.macro CHECK_EPC label, n
        CHECK_MEM_ADDR trap_epc, \label, \n
.endm
.macro CHECK_TVAL val, n
        CHECK_MEM trap_tval, \val, \n
.endm

/*
 * The recorded mtval must be 0 or the bits of the trapping instruction
 * (read from memory at the recorded mepc; 16 bits for a compressed one).
 * Clobbers a0-a2, t0-t3, ra.
 */
.macro CHECK_TVAL_INSN n
        li      a0, \n
        call    check_tval_insn
.endm

/* From M-mode, mret to `label` in privilege `mode` (PRV_U/PRV_S/PRV_M). */
.macro ENTER_MODE mode, label
        li      t6, MSTATUS_MPP
        csrc    mstatus, t6
        li      t6, (\mode << 11)
        csrs    mstatus, t6
        la      t6, \label
        csrw    mepc, t6
        mret
.endm

/*
 * Run code in a lower mode and come back: arms EXPECT_TRAP(back) and mrets
 * into `label`; the lower-mode code ends with `ecall`, which resumes at
 * `back` in M-mode.
 */
.macro RUN_IN_MODE mode, label, back
        EXPECT_TRAP \back
        ENTER_MODE \mode, \label
.endm

/* Point stvec at the common S-mode handler. */
.macro USE_STRAP
        la      t6, strap_entry
        csrw    stvec, t6
.endm

/* Write a 64-bit value to CLINT mtimecmp. */
.macro SET_MTIMECMP reg
        li      t6, CLINT_MTIMECMP
        sd      \reg, 0(t6)
.endm

/* reg = mtime (memory-mapped) */
.macro READ_MTIME reg
        li      t6, CLINT_MTIME
        ld      \reg, 0(t6)
.endm

/* ====================================================================== */
/* Startup                                                                */
/* ====================================================================== */

        .section .text.init, "ax", @progbits
        .globl  _start
_start:
        /* Save boot registers before touching anything. */
        mv      s0, a0
        mv      s1, a1
        csrr    t0, mhartid
        bnez    t0, park

        la      sp, stack_top
        la      t0, trap_stack_top
        csrw    mscratch, t0

        /* Zero .bss (page tables and bookkeeping live there). */
        la      t0, __bss_start
        la      t1, __bss_end
1:      bgeu    t0, t1, 2f
        sd      zero, 0(t0)
        addi    t0, t0, 8
        j       1b
2:
        la      t0, boot_a0
        sd      s0, 0(t0)
        la      t0, boot_a1
        sd      s1, 0(t0)

        /*
         * Open PMP entry 0 over the whole address space so S/U-mode can
         * access memory (QEMU enforces PMP: with no entry matching, S/U
         * accesses fault). If PMP CSRs are not implemented, the trap lands
         * on the next label and we carry on.
         */
        la      t0, .Lafter_pmp
        csrw    mtvec, t0
        li      t0, -1
        csrw    pmpaddr0, t0
        li      t0, 0x1f            /* NAPOT | X | W | R */
        csrw    pmpcfg0, t0
        .balign 4
.Lafter_pmp:
        la      t0, trap_entry
        csrw    mtvec, t0

        csrw    mie, zero
        csrw    medeleg, zero
        csrw    mideleg, zero
        csrw    satp, zero
        /* mstatus: everything off except FS=Initial. */
        li      t0, MSTATUS_MIE | MSTATUS_SIE | MSTATUS_MPRV | MSTATUS_SUM | MSTATUS_MXR | MSTATUS_TVM | MSTATUS_TW | MSTATUS_TSR
        csrc    mstatus, t0
        li      t0, MSTATUS_FS
        csrc    mstatus, t0
        li      t0, MSTATUS_FS_INITIAL
        csrs    mstatus, t0
        csrw    fcsr, zero

        li      s0, 0
        li      s1, 0
        li      a0, 0
        li      a1, 0
        j       test_main

park:
        wfi
        j       park

/* ====================================================================== */
/* Runtime: pass/fail, console, trap handlers                             */
/* ====================================================================== */

        .text
        .globl  pass
pass:
        la      a0, msg_pass
        call    puts
        la      a0, msg_name
        call    puts
        li      a0, '\n'
        call    putc
        li      t0, TESTDEV_BASE
        li      t1, 0x5555
        sw      t1, 0(t0)
        j       stuck

        /* a0 = code, a1 = got, a2 = expected */
        .globl  fail_data
fail_data:
        mv      s2, a0
        mv      s3, a1
        mv      s4, a2
        call    fail_header
fail_data_rest:
        la      a0, msg_got
        call    puts
        mv      a0, s3
        call    puthex
        la      a0, msg_expected
        call    puts
        mv      a0, s4
        call    puthex
        li      a0, ')'
        call    putc
        j       fail_exit

        /* a0 = code, a1 = got, a2 = expected, a3 = description string,
         * a4 = 0: value mismatch, 1: fflags mismatch */
        .globl  fail_data_desc
fail_data_desc:
        mv      s2, a0
        mv      s3, a1
        mv      s4, a2
        mv      s7, a3
        mv      s8, a4
        call    fail_header
        li      a0, ' '
        call    putc
        li      a0, '['
        call    putc
        mv      a0, s7
        call    puts
        li      a0, ']'
        call    putc
        beqz    s8, 1f
        la      a0, msg_fflags
        call    puts
1:      j       fail_data_rest

        /* a0 = code */
        .globl  fail_nodata
fail_nodata:
        mv      s2, a0
        call    fail_header
fail_exit:
        li      a0, '\n'
        call    putc
        mv      a0, s2
        /* fall through */
        /* a0 = code: exit with that status */
        .globl  exit_code
exit_code:
        li      t0, TESTDEV_BASE
        slli    t1, a0, 16
        li      t2, 0x3333
        or      t1, t1, t2
        sw      t1, 0(t0)
stuck:
        /* The machine should have stopped. Bounded spin, then complain. */
        li      t0, 10000000
1:      addi    t0, t0, -1
        bnez    t0, 1b
        la      a0, msg_stuck
        call    puts
2:      j       2b

/* prints "FAIL <name>: check <s2>" */
fail_header:
        mv      s5, ra
        la      a0, msg_fail
        call    puts
        la      a0, msg_name
        call    puts
        la      a0, msg_check
        call    puts
        mv      a0, s2
        call    putdec
        mv      ra, s5
        ret

/* check_tval_insn(a0 = fail code): see CHECK_TVAL_INSN */
        .globl  check_tval_insn
check_tval_insn:
        la      t0, trap_tval
        ld      t1, 0(t0)
        beqz    t1, 2f
        la      t0, trap_epc
        ld      t0, 0(t0)
        lhu     t2, 0(t0)
        andi    t3, t2, 3
        addi    t3, t3, -3
        bnez    t3, 1f              /* compressed: 16 bits */
        lhu     t3, 2(t0)
        slli    t3, t3, 16
        or      t2, t2, t3
1:      beq     t1, t2, 2f
        mv      a1, t1
        mv      a2, t2
        j       fail_data
2:      ret

/* putc(a0): clobbers t0, t1 */
        .globl  putc
putc:
        li      t0, UART_BASE
        li      t1, 100000
1:      lbu     t2, 5(t0)           /* LSR */
        andi    t2, t2, 0x20        /* THRE */
        bnez    t2, 2f
        addi    t1, t1, -1
        bnez    t1, 1b
2:      sb      a0, 0(t0)
        ret

/* puts(a0 = NUL-terminated string): clobbers t0-t3, a0 */
        .globl  puts
puts:
        mv      t3, a0
        mv      a7, ra
1:      lbu     a0, 0(t3)
        beqz    a0, 2f
        call    putc
        addi    t3, t3, 1
        j       1b
2:      mv      ra, a7
        ret

/* puthex(a0): prints 0x + 16 hex digits. clobbers t0-t4, a0, a6, a7 */
        .globl  puthex
puthex:
        mv      a6, ra
        mv      t4, a0
        li      a0, '0'
        call    putc
        li      a0, 'x'
        call    putc
        li      t3, 60
1:      srl     a0, t4, t3
        andi    a0, a0, 0xf
        li      t0, 10
        blt     a0, t0, 2f
        addi    a0, a0, 'a' - 10 - '0'
2:      addi    a0, a0, '0'
        call    putc
        addi    t3, t3, -4
        bgez    t3, 1b
        mv      ra, a6
        ret

/* putdec(a0 < 1000) */
        .globl  putdec
putdec:
        mv      a6, ra
        mv      t4, a0
        li      t3, 100
        li      a5, 0           /* printed a digit yet */
1:      divu    a0, t4, t3
        remu    t4, t4, t3
        bnez    a0, 2f
        bnez    a5, 2f
        li      t0, 1
        bne     t3, t0, 3f      /* skip leading zeros except last digit */
2:      li      a5, 1
        addi    a0, a0, '0'
        call    putc
3:      li      t0, 10
        divu    t3, t3, t0
        bnez    t3, 1b
        mv      ra, a6
        ret

/*
 * Machine-mode trap handler.
 *  - exceptions: if trap_resume != 0, record cause/epc/tval/mstatus,
 *    clear trap_resume, set mepc = resume address and (unless
 *    trap_keep_mode != 0) MPP = M; then mret. Otherwise fail with 250.
 *  - interrupts: if irq_allowed != 0, record irq_cause/irq_epc, bump
 *    irq_count, silence the source (mtimecmp = -1 for MTI, msip = 0 for
 *    MSI, clear mip bit for SSI/STI/SEI) and return to mepc (or to
 *    irq_resume if set, in M-mode). Otherwise fail with 251.
 * All registers are preserved.
 */
        .balign 64
        .globl  trap_entry
trap_entry:
        csrrw   sp, mscratch, sp
        addi    sp, sp, -64
        sd      t0, 0(sp)
        sd      t1, 8(sp)
        sd      t2, 16(sp)
        sd      t3, 24(sp)
        sd      a0, 32(sp)
        sd      ra, 40(sp)

        la      t1, trap_count
        ld      t2, 0(t1)
        addi    t2, t2, 1
        sd      t2, 0(t1)

        csrr    t0, mcause
        bltz    t0, .Lirq

        la      t1, trap_cause
        sd      t0, 0(t1)
        csrr    t2, mepc
        la      t1, trap_epc
        sd      t2, 0(t1)
        csrr    t2, mtval
        la      t1, trap_tval
        sd      t2, 0(t1)
        csrr    t2, mstatus
        la      t1, trap_status
        sd      t2, 0(t1)

        la      t1, trap_resume
        ld      t2, 0(t1)
        beqz    t2, .Lunexpected_exc
        sd      zero, 0(t1)
        csrw    mepc, t2
.Lresume_m:
        la      t1, trap_keep_mode
        ld      t1, 0(t1)
        bnez    t1, .Lret
        li      t1, MSTATUS_MPP
        csrs    mstatus, t1
.Lret:
        ld      t0, 0(sp)
        ld      t1, 8(sp)
        ld      t2, 16(sp)
        ld      t3, 24(sp)
        ld      a0, 32(sp)
        ld      ra, 40(sp)
        addi    sp, sp, 64
        csrrw   sp, mscratch, sp
        mret

.Lirq:
        la      t1, irq_allowed
        ld      t1, 0(t1)
        beqz    t1, .Lunexpected_irq
        la      t1, irq_cause
        sd      t0, 0(t1)
        csrr    t2, mepc
        la      t1, irq_epc
        sd      t2, 0(t1)
        csrr    t2, mstatus
        la      t1, irq_status
        sd      t2, 0(t1)
        la      t1, irq_count
        ld      t2, 0(t1)
        addi    t2, t2, 1
        sd      t2, 0(t1)
        /* silence the source */
        slli    t0, t0, 1
        srli    t0, t0, 1
        li      t1, IRQ_MTI
        bne     t0, t1, 1f
        li      t1, CLINT_MTIMECMP
        li      t2, -1
        sd      t2, 0(t1)
        j       3f
1:      li      t1, IRQ_MSI
        bne     t0, t1, 2f
        li      t1, CLINT_MSIP
        sw      zero, 0(t1)
        j       3f
2:      li      t1, 1
        sll     t1, t1, t0
        csrc    mip, t1
        csrc    mie, t1         /* cannot clear MEIP etc: mask it instead */
3:      la      t1, irq_resume
        ld      t2, 0(t1)
        beqz    t2, .Lret
        sd      zero, 0(t1)
        csrw    mepc, t2
        j       .Lresume_m

.Lunexpected_exc:
        la      a0, msg_unexp_exc
        call    puts
        call    dump_trap
        li      a0, FAIL_UNEXPECTED_EXC
        j       exit_code
.Lunexpected_irq:
        la      a0, msg_unexp_irq
        call    puts
        call    dump_trap
        li      a0, FAIL_UNEXPECTED_IRQ
        j       exit_code

dump_trap:
        mv      s6, ra
        la      a0, msg_name
        call    puts
        la      a0, msg_mcause
        call    puts
        csrr    a0, mcause
        call    puthex
        la      a0, msg_mepc
        call    puts
        csrr    a0, mepc
        call    puthex
        la      a0, msg_mtval
        call    puts
        csrr    a0, mtval
        call    puthex
        li      a0, '\n'
        call    putc
        mv      ra, s6
        ret

/*
 * Supervisor-mode trap handler (install with USE_STRAP): records
 * scause/sepc/stval/sstatus into strap_*, bumps strap_count and then
 * `ecall`s to M-mode, which resumes at the armed EXPECT_TRAP label.
 * Clobbers t5, t6.
 */
        .balign 64
        .globl  strap_entry
strap_entry:
        csrr    t6, scause
        la      t5, strap_cause
        sd      t6, 0(t5)
        csrr    t6, sepc
        la      t5, strap_epc
        sd      t6, 0(t5)
        csrr    t6, stval
        la      t5, strap_tval
        sd      t6, 0(t5)
        csrr    t6, sstatus
        la      t5, strap_status
        sd      t6, 0(t5)
        la      t5, strap_count
        ld      t6, 0(t5)
        addi    t6, t6, 1
        sd      t6, 0(t5)
        ecall
1:      j       1b

        .section .rodata
msg_name:       .asciz TEST_NAME
msg_pass:       .asciz "PASS "
msg_fail:       .asciz "FAIL "
msg_check:      .asciz ": check "
msg_got:        .asciz " (got "
msg_fflags:     .asciz " fflags"
msg_expected:   .asciz ", expected "
msg_stuck:      .asciz "\nerror: test device write did not stop the machine\n"
msg_unexp_exc:  .asciz "FAIL unexpected exception in "
msg_unexp_irq:  .asciz "FAIL unexpected interrupt in "
msg_mcause:     .asciz ": mcause="
msg_mepc:       .asciz " mepc="
msg_mtval:      .asciz " mtval="

        .bss
        .balign 8
        .globl trap_resume, trap_keep_mode, trap_cause, trap_epc, trap_tval
        .globl trap_status, trap_count
        .globl irq_allowed, irq_cause, irq_epc, irq_status, irq_count, irq_resume
        .globl strap_cause, strap_epc, strap_tval, strap_status, strap_count
        .globl boot_a0, boot_a1
trap_resume:    .dword 0
trap_keep_mode: .dword 0
trap_cause:     .dword 0
trap_epc:       .dword 0
trap_tval:      .dword 0
trap_status:    .dword 0
trap_count:     .dword 0
irq_allowed:    .dword 0
irq_cause:      .dword 0
irq_epc:        .dword 0
irq_status:     .dword 0
irq_count:      .dword 0
irq_resume:     .dword 0
strap_cause:    .dword 0
strap_epc:      .dword 0
strap_tval:     .dword 0
strap_status:   .dword 0
strap_count:    .dword 0
boot_a0:        .dword 0
boot_a1:        .dword 0

        .balign 16
        .space  4096
trap_stack_top:
        .space  8192
stack_top:

/* back to code for the including program */
        .text
#endif
