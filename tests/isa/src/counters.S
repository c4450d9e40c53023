/*
 * counters: writes to mcycle/minstret, mcountinhibit, and the debug trigger
 * CSRs of a hart with no triggers.
 *
 * A write to minstret (mcycle) takes effect instead of the writing
 * instruction's own increment (privileged spec 3.3.1), so `csrw minstret, v`
 * followed at once by `csrr minstret` reads v; each later instruction adds
 * one. mcountinhibit.IR/CY stop the counters and clearing them resumes from
 * the frozen value. tselect/tdata1..3/tinfo exist: probing them never traps,
 * tselect reads 0, tdata1 reads type 0 (no trigger) and tinfo reads 1 (the
 * value for a trigger that does not exist). QEMU 7.2 implements triggers and
 * neither honours counter writes nor mcountinhibit, so under ISA_QUIRKS=qemu
 * only the trap-free trigger probe runs.
 */
#include "test.h"

test_main:
#ifndef QEMU_QUIRKS
        /* ---- the write replaces the writer's increment ---- */
        csrwi   minstret, 0
        csrr    a1, minstret
        CHECK_EQ a1, 0, 1
        csrwi   mcycle, 0
        csrr    a1, mcycle
        CHECK_EQ a1, 0, 2
        li      t0, 1000
        csrw    minstret, t0
        csrr    a1, minstret
        CHECK_EQ a1, 1000, 3
        /* each later instruction adds one; a read counts the steps
           before it, not itself */
        csrwi   minstret, 5
        nop
        nop
        csrr    a1, minstret
        CHECK_EQ a1, 7, 4
        /* csrrw returns the old value and writes in the same instruction */
        csrwi   minstret, 9
        csrrwi  s2, minstret, 20
        csrr    s3, minstret
        CHECK_EQ s2, 9, 5
        CHECK_EQ s3, 20, 6

        /* ---- mcountinhibit stops and resumes ---- */
        csrw    mcountinhibit, zero
        csrr    a1, mcountinhibit
        CHECK_EQ a1, 0, 10
        li      t0, 5                   /* IR and CY */
        csrw    mcountinhibit, t0
        csrr    a1, mcountinhibit
        CHECK_EQ a1, 5, 11
        csrr    s2, minstret
        csrr    s3, mcycle
        nop
        nop
        nop
        csrr    s4, minstret
        csrr    s5, mcycle
        CHECK_REG s2, s4, 12            /* minstret did not move */
        CHECK_REG s3, s5, 13            /* mcycle did not move */
        /* a write while stopped holds */
        csrwi   minstret, 3
        nop
        csrr    a1, minstret
        CHECK_EQ a1, 3, 14
        /* resume: counting starts again from the frozen value */
        csrw    mcountinhibit, zero
        csrr    s2, minstret
        nop
        csrr    s3, minstret
        CHECK_EQ s2, 3, 15
        CHECK_EQ s3, 5, 16
        /* only IR: mcycle keeps counting */
        li      t0, 4
        csrw    mcountinhibit, t0
        csrr    s2, mcycle
        csrr    s3, minstret
        nop
        csrr    s4, mcycle
        csrr    s5, minstret
        CHECK_REG s3, s5, 17
        bltu    s2, s4, 1f
        FAIL(18)
1:      csrw    mcountinhibit, zero
#endif

        /* ---- debug triggers: probing them never traps ---- */
        csrr    a1, tselect
        csrr    a1, tdata1
        csrr    a1, tinfo
        csrw    tselect, zero

#ifndef QEMU_QUIRKS
        /* ---- none implemented ---- */
        li      t0, 1
        csrw    tselect, t0
        csrr    a1, tselect
        CHECK_EQ a1, 0, 30              /* WARL: no trigger 1 */
        csrw    tselect, zero
        csrr    a1, tselect
        CHECK_EQ a1, 0, 31
        csrr    a1, tdata1
        srli    a1, a1, 60
        CHECK_EQ a1, 0, 32              /* type 0: no trigger here */
        li      t0, -1
        csrw    tdata1, t0              /* ignored, no trap */
        csrw    tdata2, t0
        csrw    tdata3, t0
        csrr    a1, tdata1
        CHECK_EQ a1, 0, 33
        csrr    a1, tdata2
        CHECK_EQ a1, 0, 34
        csrr    a1, tdata3
        CHECK_EQ a1, 0, 35
        csrr    a1, tinfo
        CHECK_EQ a1, 1, 36
#endif
        PASS
