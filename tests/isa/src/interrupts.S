/*
 * interrupts: CLINT timer and software interrupts, priorities, delegation.
 * Machine timer (mtimecmp = mtime + delta, MTIE + MIE): taken within a
 * bounded wait with mcause = 0x8000000000000007; mip.MTIP reads 1 while
 * mtime >= mtimecmp and clears when mtimecmp is moved forward; nothing is
 * taken while mstatus.MIE=0 (or mie.MTIE=0) even when pending, and it is
 * taken as soon as MIE is set. Machine software interrupt via CLINT msip
 * (cause 3, mip.MSIP follows msip). Priority: MSI before MTI when both are
 * pending. M-level interrupts are taken in S/U mode regardless of
 * mstatus.MIE (MPP records the interrupted mode). Vectored mtvec sends
 * interrupt cause 7 to base + 28. Supervisor timer and external interrupt
 * bits set by M-mode in mip (STIP, SEIP), delegated via mideleg, are taken
 * in S-mode with scause 0x8000000000000005 / ...09 (no Sstc is used).
 */
#include "test.h"

/* wait until irq_count >= target (reg), at most ~1 s of mtime; a0 = 1 if reached */
.macro WAIT_IRQ target
        mv      a0, \target
        call    wait_irq
.endm

test_main:
        SET_MEM irq_allowed, 1
        csrw    mie, zero
        li      t0, -1
        SET_MTIMECMP t0

        /* ---- machine timer ---- */
        csrr    t0, mip
        andi    t0, t0, MIP_MTIP
        CHECK_EQ t0, 0, 1                   /* mtimecmp = max: not pending */
        READ_MTIME t0
        addi    t0, t0, 1000                /* 100 us */
        SET_MTIMECMP t0
        li      t0, MIP_MTIP
        csrs    mie, t0
        csrsi   mstatus, MSTATUS_MIE
        li      s0, 1
        WAIT_IRQ s0
        csrci   mstatus, MSTATUS_MIE
        CHECK_EQ a0, 1, 2                   /* interrupt arrived */
        CHECK_MEM irq_cause, (CAUSE_INTR | IRQ_MTI), 3
        CHECK_MEM irq_count, 1, 4
        csrr    t0, mip
        andi    t0, t0, MIP_MTIP
        CHECK_EQ t0, 0, 5                   /* handler moved mtimecmp: cleared */
        /* the interrupted pc is inside wait_irq; MPIE recorded MIE=1 */
        la      t0, irq_status
        ld      t0, 0(t0)
        andi    t0, t0, MSTATUS_MPIE
        CHECK_EQ t0, MSTATUS_MPIE, 6

        /* ---- pending but disabled: not taken ---- */
        READ_MTIME t0
        SET_MTIMECMP t0                     /* due now */
        li      t1, 10000000
1:      csrr    t0, mip
        andi    t0, t0, MIP_MTIP
        bnez    t0, 2f
        addi    t1, t1, -1
        bnez    t1, 1b
        FAIL(7)                             /* MTIP never became pending */
2:      li      t1, 1000
3:      addi    t1, t1, -1                  /* MIE=0: nothing happens */
        bnez    t1, 3b
        CHECK_MEM irq_count, 1, 8
        /* MIE=1 but MTIE=0: still nothing */
        li      t0, MIP_MTIP
        csrc    mie, t0
        csrsi   mstatus, MSTATUS_MIE
        nop
        nop
        csrci   mstatus, MSTATUS_MIE
        CHECK_MEM irq_count, 1, 9
        /* enable: taken immediately */
        li      t0, MIP_MTIP
        csrs    mie, t0
        csrsi   mstatus, MSTATUS_MIE
        li      s0, 2
        WAIT_IRQ s0
        csrci   mstatus, MSTATUS_MIE
        CHECK_EQ a0, 1, 10
        CHECK_MEM irq_cause, (CAUSE_INTR | IRQ_MTI), 11

        /* ---- machine software interrupt ---- */
        li      t0, CLINT_MSIP
        li      t1, 1
        sw      t1, 0(t0)
        csrr    t0, mip
        andi    t0, t0, MIP_MSIP
        CHECK_EQ t0, MIP_MSIP, 12
        li      t0, MIP_MSIP
        csrs    mie, t0
        csrsi   mstatus, MSTATUS_MIE
        li      s0, 3
        WAIT_IRQ s0
        csrci   mstatus, MSTATUS_MIE
        CHECK_EQ a0, 1, 13
        CHECK_MEM irq_cause, (CAUSE_INTR | IRQ_MSI), 14
        csrr    t0, mip
        andi    t0, t0, MIP_MSIP
        CHECK_EQ t0, 0, 15                  /* msip cleared by the handler */
        li      t0, CLINT_MSIP
        lw      t1, 0(t0)
        CHECK_EQ t1, 0, 16

        /* ---- priority: MSI before MTI ---- */
        li      t0, CLINT_MSIP
        li      t1, 1
        sw      t1, 0(t0)
        READ_MTIME t0
        SET_MTIMECMP t0
        li      t1, 10000000
1:      csrr    t0, mip
        andi    t0, t0, MIP_MTIP
        bnez    t0, 2f
        addi    t1, t1, -1
        bnez    t1, 1b
        FAIL(17)
2:      csrsi   mstatus, MSTATUS_MIE
        li      s0, 5
        WAIT_IRQ s0
        csrci   mstatus, MSTATUS_MIE
        CHECK_EQ a0, 1, 18
        CHECK_MEM irq_cause, (CAUSE_INTR | IRQ_MTI), 19    /* MTI came last */

        /* ---- M interrupts preempt U/S regardless of mstatus.MIE ---- */
        READ_MTIME t0
        SET_MTIMECMP t0
        SET_MEM irq_count, 0
        la      t0, .Lu_back
        la      t1, irq_resume
        sd      t0, 0(t1)
        EXPECT_TRAP .Lu_back                /* fallback: the U-mode ecall */
        li      t0, MSTATUS_MPIE
        csrc    mstatus, t0                 /* MIE will be 0 in U */
        ENTER_MODE PRV_U, .Lu_spin
.Lu_spin:
        li      t0, 10000000
1:      addi    t0, t0, -1
        bnez    t0, 1b
        ecall
.Lu_back:
        CLEAR_TRAP
        SET_MEM irq_resume, 0
        CHECK_MEM irq_count, 1, 20
        CHECK_MEM irq_cause, (CAUSE_INTR | IRQ_MTI), 21
        la      t0, irq_status
        ld      t0, 0(t0)
        li      t1, MSTATUS_MPP
        and     t0, t0, t1
        CHECK_EQ t0, 0, 22                  /* interrupted mode: U */

        /* ---- vectored mtvec ---- */
        la      t0, vec_table
        ori     t0, t0, 1
        csrw    mtvec, t0
        csrr    t1, mtvec
        andi    t1, t1, 3
        beqz    t1, .Lno_vectored           /* vectored mode not supported: skip */
        READ_MTIME t0
        SET_MTIMECMP t0
        csrsi   mstatus, MSTATUS_MIE
        li      s0, 2
        WAIT_IRQ s0
        csrci   mstatus, MSTATUS_MIE
        CHECK_EQ a0, 1, 23
        CHECK_MEM vec7_hits, 1, 24
.Lno_vectored:
        la      t0, trap_entry
        csrw    mtvec, t0

        /* ---- S-mode: STIP / SEIP set by M, delegated ---- */
        csrw    mie, zero
        USE_STRAP
        li      t0, MIP_STIP | MIP_SEIP
        csrw    mideleg, t0
        csrs    mie, t0
        SET_MEM strap_count, 0
        li      t0, MIP_STIP
        csrs    mip, t0
        csrr    t1, mip
        and     t1, t1, t0
        CHECK_EQ t1, MIP_STIP, 25           /* M can set STIP */
        li      t0, MSTATUS_SIE
        csrs    mstatus, t0
        RUN_IN_MODE PRV_S, .Ls_sti, 1f
.Ls_sti:
        nop
        nop
        ecall
1:      CHECK_MEM strap_count, 1, 26
        CHECK_MEM strap_cause, (CAUSE_INTR | IRQ_STI), 27
        CHECK_MEM_ADDR strap_epc, .Ls_sti, 28   /* taken before the first insn */
        li      t0, MIP_STIP
        csrc    mip, t0
        /* SEIP */
        li      t0, MIP_SEIP
        csrs    mip, t0
        li      t0, MSTATUS_SIE
        csrs    mstatus, t0
        RUN_IN_MODE PRV_S, .Ls_sei, 1f
.Ls_sei:
        nop
        ecall
1:      CHECK_MEM strap_count, 2, 29
        CHECK_MEM strap_cause, (CAUSE_INTR | IRQ_SEI), 30
        li      t0, MIP_SEIP
        csrc    mip, t0
        /* cleared: S runs without interruption */
        li      t0, MSTATUS_SIE
        csrs    mstatus, t0
        RUN_IN_MODE PRV_S, .Ls_quiet, 1f
.Ls_quiet:
        nop
        ecall
1:      CHECK_MEM strap_count, 2, 31
        CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 32
        csrw    mie, zero
        csrw    mideleg, zero
        PASS

/* a0 = target irq_count; returns a0 = 1 when reached, 0 after ~1 s of mtime */
wait_irq:
        li      t2, CLINT_MTIME
        ld      t3, 0(t2)
        li      t4, 10000000
        add     t3, t3, t4
        la      t1, irq_count
1:      ld      t0, 0(t1)
        bge     t0, a0, 2f
        ld      t4, 0(t2)
        bltu    t4, t3, 1b
        li      a0, 0
        ret
2:      li      a0, 1
        ret

/* vectored trap table: cause 7 counts in vec7_hits, everything -> trap_entry */
        .balign 256
vec_table:
        .rept   7
        j       trap_entry
        .endr
        j       vec7
        .rept   8
        j       trap_entry
        .endr
vec7:
        csrrw   sp, mscratch, sp
        sd      t0, -8(sp)
        sd      t1, -16(sp)
        la      t0, vec7_hits
        ld      t1, 0(t0)
        addi    t1, t1, 1
        sd      t1, 0(t0)
        ld      t1, -16(sp)
        ld      t0, -8(sp)
        csrrw   sp, mscratch, sp
        j       trap_entry

        .data
        .balign 8
vec7_hits: .dword 0
