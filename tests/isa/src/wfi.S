/*
 * wfi: wait-for-interrupt.
 * With mstatus.MIE=0 but mie.MTIE=1 and the timer due soon, WFI returns
 * once the timer is pending (WFI may also return early, so it is retried
 * in a bounded loop) and no trap is taken; mip.MTIP reads 1; setting MIE
 * then takes the interrupt. With MIE=1, WFI wakes into the handler and
 * execution continues after the WFI. WFI in S-mode with TW=0 is legal and
 * wakes on an M-level interrupt (taken in M). All waits are bounded by
 * mtime (about a second).
 */
#include "test.h"

test_main:
        SET_MEM irq_allowed, 1
        li      t0, -1
        SET_MTIMECMP t0
        li      t0, MIP_MTIP
        csrw    mie, t0
        csrci   mstatus, MSTATUS_MIE

        /* ---- MIE=0: WFI returns when MTIP becomes pending, no trap ---- */
        READ_MTIME s1
        li      t0, 10000000                /* give up after ~1 s of mtime */
        add     s2, s1, t0
        li      t1, 20000                   /* due in 2 ms */
        add     t0, s1, t1
        SET_MTIMECMP t0
        li      s3, 0                       /* number of WFIs executed */
1:      wfi
        addi    s3, s3, 1
        csrr    t0, mip
        andi    t0, t0, MIP_MTIP
        bnez    t0, 2f
        READ_MTIME t1
        bltu    t1, s2, 1b
        FAIL(1)                             /* timer never became pending */
2:      CHECK_MEM irq_count, 0, 2           /* nothing taken with MIE=0 */
        READ_MTIME t1
        sub     t1, t1, s1
        li      t2, 20000
        bgeu    t1, t2, 3f                  /* mtime really reached mtimecmp */
        mv      a1, t1
        mv      a2, t2
        li      a0, 3
        j       fail_data
3:      csrsi   mstatus, MSTATUS_MIE        /* now it is taken */
        li      t1, 1000000
4:      la      t0, irq_count
        ld      t0, 0(t0)
        bnez    t0, 5f
        addi    t1, t1, -1
        bnez    t1, 4b
5:      csrci   mstatus, MSTATUS_MIE
        CHECK_MEM irq_count, 1, 4
        CHECK_MEM irq_cause, (CAUSE_INTR | IRQ_MTI), 5

        /* ---- MIE=1: WFI wakes into the handler, then continues ---- */
        READ_MTIME s1
        li      t0, 10000000
        add     s2, s1, t0
        li      t1, 20000
        add     t0, s1, t1
        SET_MTIMECMP t0
        csrsi   mstatus, MSTATUS_MIE
.Lloop2:
        wfi
.Lafter2:
        la      t0, irq_count
        ld      t0, 0(t0)
        li      t1, 2
        beq     t0, t1, 6f
        READ_MTIME t1
        bltu    t1, s2, .Lloop2
.Lloop2_end:
        csrci   mstatus, MSTATUS_MIE
        FAIL(6)
6:      csrci   mstatus, MSTATUS_MIE
        /* interrupted pc lies within the wait loop (normally .Lafter2) */
        la      t0, irq_epc
        ld      t0, 0(t0)
        la      t1, .Lloop2
        la      t2, .Lloop2_end
        bltu    t0, t1, 7f
        bgeu    t0, t2, 7f
        j       8f
7:      FAIL(7)
8:
        /* ---- WFI in S-mode (TW=0) wakes on an M-level interrupt ---- */
        READ_MTIME t0
        li      t1, 20000
        add     t0, t0, t1
        SET_MTIMECMP t0
        la      t0, .Ls_back
        la      t1, irq_resume
        sd      t0, 0(t1)
        EXPECT_TRAP .Ls_back
        li      t0, MSTATUS_TW
        csrc    mstatus, t0
        RUN_IN_MODE PRV_S, .Ls_wfi, .Ls_back
.Ls_wfi:
        li      s4, 0
1:      wfi                                 /* interrupt preempts S, resumes in M */
        addi    s4, s4, 1
        li      t0, 1000000
        bltu    s4, t0, 1b
        ecall
.Ls_back:
        CLEAR_TRAP
        SET_MEM irq_resume, 0
        CHECK_MEM irq_count, 3, 8
        CHECK_MEM irq_cause, (CAUSE_INTR | IRQ_MTI), 9
        csrw    mie, zero
        PASS
