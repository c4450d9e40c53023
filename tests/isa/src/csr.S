/*
 * csr: machine/supervisor CSR basics.
 * Boot state (a0 = hartid 0, a1 = DTB address with FDT magic), mhartid = 0,
 * misa = RV64 with I M A F D C S U, mvendorid/marchid/mimpid readable,
 * unknown CSR numbers -> illegal instruction (mtval = insn bits or 0),
 * writes to read-only CSRs trap (mhartid, cycle, time, mvendorid, incl.
 * CSRRS/CSRRC with non-zero rs1 and CSRRW with rs1 = x0), CSRRS/CSRRC/
 * CSRRSI/CSRRCI with x0/zero do not write (no trap on read-only CSRs),
 * CSRRW/CSRRS/CSRRC and immediate forms on mscratch (old value returned),
 * cycle/instret/time advance, time agrees with the CLINT mtime, mcycle/
 * minstret writable, medeleg[11] read-only 0, satp write with an
 * unsupported mode is ignored, sstatus is a view of mstatus,
 * privilege checks (M CSR from S, S CSR from U), and mcounteren/scounteren
 * gating of cycle/time/instret from S and U mode.
 */
#include "test.h"

/* `insn` must trap illegal in M-mode: codes n (no trap), n+1 (cause), n+2 (mtval) */
.macro ILLEGAL n, insn:vararg
        EXPECT_TRAP .Lill\@
        \insn
        FAIL(\n)
.Lill\@:
        CHECK_CAUSE CAUSE_ILLEGAL_INSN, (\n + 1)
        CHECK_TVAL_INSN (\n + 2)
.endm

/*
 * Execute `insn` in privilege `mode`; if expect_ok it must not trap (the
 * following ecall returns to M), otherwise it must trap illegal.
 */
.macro IN_MODE mode, expect_ok, n, insn:vararg
        RUN_IN_MODE \mode, .Lim\@, .Limback\@
.Lim\@:
        \insn
        ecall
.Limback\@:
        .if \expect_ok
        CHECK_CAUSE (8 + \mode), \n
        .else
        CHECK_CAUSE CAUSE_ILLEGAL_INSN, \n
        CHECK_EPC .Lim\@, (\n + 1)
        .endif
.endm

test_main:
        /* ---- boot state ---- */
        CHECK_MEM boot_a0, 0, 1
        la      t0, boot_a1
        ld      s0, 0(t0)
        beqz    s0, .Lno_dtb
        lwu     t1, 0(s0)
        CHECK_EQ t1, 0xedfe0dd0, 3          /* 0xd00dfeed big-endian */
        j       1f
.Lno_dtb:
        FAIL(2)
1:
        csrr    t1, mhartid
        CHECK_EQ t1, 0, 4

        /* ---- misa ---- */
        csrr    s0, misa
        srli    t1, s0, 62
        CHECK_EQ t1, 2, 5                   /* MXL = 64 */
        li      t2, (1 << 8) | (1 << 12) | (1 << 0) | (1 << 5) | (1 << 3) | (1 << 2) | (1 << 18) | (1 << 20)
        and     t1, s0, t2
        CHECK_REG t1, t2, 6                 /* I M A F D C S U */
        csrr    t1, mvendorid
        csrr    t1, marchid
        csrr    t1, mimpid

        /* ---- unknown CSRs ---- */
        ILLEGAL 7, csrr a0, 0x0ff
        ILLEGAL 10, csrw 0x3ff, zero
        ILLEGAL 13, csrrs a0, 0x5ff, zero

        /* ---- writes to read-only CSRs trap ---- */
        ILLEGAL 16, csrw mhartid, zero
        ILLEGAL 19, csrw cycle, zero        /* CSRRW writes even with rs1 = x0 */
        li      a1, 1
        ILLEGAL 22, csrs instret, a1
        ILLEGAL 25, csrc time, a1
        ILLEGAL 28, csrrwi a0, mvendorid, 0
        ILLEGAL 31, csrrsi a0, mimpid, 1

        /* ---- read-only CSRs with x0 / zero immediate: no write, no trap ---- */
        csrrs   a0, mhartid, zero
        csrrc   a0, mhartid, zero
        csrrsi  a0, cycle, 0
        csrrci  a0, time, 0
        csrrs   a0, instret, x0
        CHECK_MEM trap_count, 9, 34         /* exactly the 9 traps above */

        /* ---- mscratch ---- */
        csrr    s1, mscratch                /* used by the trap handler */
        li      a0, 0x0123456789abcdef
        csrw    mscratch, a0
        csrr    a1, mscratch
        CHECK_EQ a1, 0x0123456789abcdef, 35
        li      a0, 0xff00
        csrrs   a1, mscratch, a0
        CHECK_EQ a1, 0x0123456789abcdef, 36
        csrr    a1, mscratch
        CHECK_EQ a1, 0x0123456789abffef, 37
        li      a0, 0x0123000000000000
        csrrc   a1, mscratch, a0
        csrr    a1, mscratch
        CHECK_EQ a1, 0x0000456789abffef, 38
        csrrwi  a1, mscratch, 0x15
        CHECK_EQ a1, 0x0000456789abffef, 39
        csrrsi  a1, mscratch, 0x0a
        csrrci  a2, mscratch, 0x01
        CHECK_EQ a1, 0x15, 40
        csrr    a1, mscratch
        CHECK_EQ a1, 0x1e, 41
        li      a0, -1
        csrrw   a1, mscratch, a0            /* rd != x0 reads the old value */
        CHECK_EQ a1, 0x1e, 42
        csrrw   zero, mscratch, zero
        csrr    a1, mscratch
        CHECK_EQ a1, 0, 43
        csrw    mscratch, s1

        /* ---- counters ---- */
        rdcycle s2
        rdinstret s3
        li      t0, 1000
1:      addi    t0, t0, -1
        bnez    t0, 1b
        rdcycle s4
        rdinstret s5
        sub     t1, s5, s3
        li      t2, 2000                    /* the loop retires 2000 insns */
        bgeu    t1, t2, 1f
        mv      a1, t1
        mv      a2, t2
        li      a0, 44
        j       fail_data
1:      bltu    s2, s4, 1f
        FAIL(45)
1:      csrr    t1, mcycle
        csrr    t2, minstret
        bgeu    t1, s4, 1f
        FAIL(46)
1:      bgeu    t2, s5, 1f
        FAIL(47)
1:
        /* time advances and agrees with the CLINT's mtime */
        rdtime  s2
        li      t0, 200000
1:      rdtime  s3
        bne     s3, s2, 2f
        addi    t0, t0, -1
        bnez    t0, 1b
        FAIL(48)                            /* time never advanced */
2:      READ_MTIME s4
        rdtime  s5
        READ_MTIME s6
        bleu    s4, s5, 1f
        FAIL(49)
1:      bleu    s5, s6, 1f
        FAIL(50)
1:
        /* minstret / mcycle are writable */
        li      t1, 0x100000000
        csrw    minstret, t1
        csrr    t2, minstret
        sub     t2, t2, t1
        li      t3, 0x100000000
        bltu    t2, t3, 1f                  /* read back >= written, and close */
        FAIL(51)
1:      csrw    mcycle, t1
        csrr    t2, mcycle
        sub     t2, t2, t1
        bltu    t2, t3, 1f
        FAIL(52)
1:
        /* ---- WARL fields ---- */
        li      t0, -1
        csrw    medeleg, t0
        csrr    t1, medeleg
        csrw    medeleg, zero
        srli    t1, t1, 11
        andi    t1, t1, 1
#ifndef QEMU_QUIRKS
        /* "medeleg[11] is read-only zero"; QEMU 7.2 lets it be set (quirk) */
        CHECK_EQ t1, 0, 53
#endif
        li      t0, 0x8000000000012345      /* Sv39 */
        li      t1, 0xf000000000000000      /* reserved mode: write ignored */
        csrw    satp, t0
        csrw    satp, t1
        csrr    t2, satp
        csrw    satp, zero
        CHECK_REG t2, t0, 54

        /* sstatus is a restricted view of mstatus */
        li      t0, MSTATUS_SUM
        csrs    sstatus, t0
        csrr    t1, mstatus
        and     t1, t1, t0
        CHECK_REG t1, t0, 55
        csrc    mstatus, t0
        csrr    t1, sstatus
        and     t1, t1, t0
        CHECK_EQ t1, 0, 56
        li      t0, MSTATUS_MPP | MSTATUS_MIE | MSTATUS_TVM
        csrs    sstatus, t0                 /* M-only fields invisible/unwritable */
        csrr    t1, sstatus
        and     t1, t1, t0
        CHECK_EQ t1, 0, 57

        /* ---- privilege checks ---- */
        IN_MODE PRV_S, 0, 58, csrr a0, mstatus
        IN_MODE PRV_S, 0, 60, csrw mscratch, zero
        IN_MODE PRV_U, 0, 62, csrr a0, sstatus
        IN_MODE PRV_U, 0, 64, csrw sscratch, zero
        IN_MODE PRV_S, 1, 66, csrw sscratch, zero
        IN_MODE PRV_S, 0, 67, csrr a0, mhartid

        /* ---- counter enables ---- */
        csrw    mcounteren, zero
        csrw    scounteren, zero
        IN_MODE PRV_S, 0, 70, rdcycle a0
        IN_MODE PRV_S, 0, 72, rdtime a0
        IN_MODE PRV_S, 0, 74, rdinstret a0
        IN_MODE PRV_U, 0, 76, rdcycle a0
        li      t0, 7
        csrw    mcounteren, t0
        IN_MODE PRV_S, 1, 78, rdcycle a0
        IN_MODE PRV_S, 1, 79, rdtime a0
        IN_MODE PRV_S, 1, 80, rdinstret a0
        /* U-mode also needs scounteren */
        IN_MODE PRV_U, 0, 81, rdcycle a0
        IN_MODE PRV_U, 0, 83, rdtime a0
        IN_MODE PRV_U, 0, 85, rdinstret a0
        li      t0, 7
        csrw    scounteren, t0
        IN_MODE PRV_U, 1, 87, rdcycle a0
        IN_MODE PRV_U, 1, 88, rdtime a0
        IN_MODE PRV_U, 1, 89, rdinstret a0
        /* individual bits: only TM set in mcounteren */
        li      t0, 2
        csrw    mcounteren, t0
        IN_MODE PRV_S, 1, 90, rdtime a0
        IN_MODE PRV_S, 0, 91, rdcycle a0
        IN_MODE PRV_U, 0, 93, rdinstret a0
        /* only in scounteren: still blocked by mcounteren */
        csrw    mcounteren, zero
        IN_MODE PRV_U, 0, 95, rdtime a0
        PASS
