/*
 * rv64a: atomics.
 * LR/SC (.W/.D): LR then SC to the same address succeeds (rd = 0, memory
 * written); SC with no reservation fails (rd != 0, memory unchanged); a
 * second SC after a successful one fails (an SC always invalidates the
 * reservation); LR.W sign-extends. All AMOs in .W and .D forms incl.
 * signed/unsigned min/max, sign extension of .W results, upper bits of rs2
 * ignored by .W, neighbouring word untouched, rd = x0. Misaligned AMO/LR/SC
 * trap: store/AMO address misaligned (6) or access fault (7) for AMO/SC,
 * load misaligned (4) or load access fault (5) for LR, with mtval = address
 * and memory unchanged.
 */
#include "test.h"

/*
 * QEMU 7.2 reports a misaligned AMO (not SC) as a *load* address misaligned (4)
 * instead of store/AMO address misaligned (6). The spec build rejects that;
 * the QEMU_QUIRKS build (used by run-qemu.sh) tolerates it.
 */
#ifdef QEMU_QUIRKS
#define AMO_QUIRK_CAUSE CAUSE_MISALIGNED_LOAD
#else
#define AMO_QUIRK_CAUSE 0
#endif

/* 64-bit AMO: mem = init; rd = op(mem, operand); check rd and memory */
.macro TEST_AMO_D op, init, operand, exp_rd, exp_mem, n
        la      s0, amo_data
        li      a0, \init
        sd      a0, 0(s0)
        li      a1, \operand
        \op     a2, a1, (s0)
        CHECK_EQ a2, \exp_rd, \n
        ld      a3, 0(s0)
        CHECK_EQ a3, \exp_mem, (\n + 1)
.endm

/* 32-bit AMO on the low word of a dword whose high word is a sentinel */
.macro TEST_AMO_W op, init, operand, exp_rd, exp_mem, n
        la      s0, amo_data
        li      a0, (0x5a5a5a5a00000000 | \init)
        sd      a0, 0(s0)
        li      a1, \operand
        \op     a2, a1, (s0)
        CHECK_EQ a2, \exp_rd, \n
        ld      a3, 0(s0)
        CHECK_EQ a3, (0x5a5a5a5a00000000 | \exp_mem), (\n + 1)
.endm

/* recorded mcause must be c1 or c2 (or c3 if given and nonzero) */
.macro CHECK_CAUSE2 c1, c2, n, c3=0
        la      t5, trap_cause
        ld      t5, 0(t5)
        li      t6, \c1
        beq     t5, t6, .Lok\@
        li      t6, \c2
        beq     t5, t6, .Lok\@
        .if \c3
        li      t6, \c3
        beq     t5, t6, .Lok\@
        .endif
        mv      a1, t5
        li      a2, \c1
        li      a0, \n
        j       fail_data
.Lok\@:
.endm

test_main:
        /* ---- LR/SC ---- */
        la      s0, amo_data
        li      a0, 0x1111111111111111
        sd      a0, 0(s0)
        /* SC with no reservation (none taken since reset) fails */
        li      a1, 0x2222
        sc.d    a2, a1, (s0)
        beqz    a2, .Lsc_fail1
        ld      a3, 0(s0)
        CHECK_EQ a3, 0x1111111111111111, 2
        j       1f
.Lsc_fail1:
        FAIL(1)
1:
        /* LR then SC to the same address succeeds */
        lr.d    a0, (s0)
        CHECK_EQ a0, 0x1111111111111111, 3
        li      a1, 0x3333333333333333
        sc.d    a2, a1, (s0)
        CHECK_EQ a2, 0, 4
        ld      a3, 0(s0)
        CHECK_EQ a3, 0x3333333333333333, 5
        /* an SC invalidates the reservation: a second SC must fail */
        li      a1, 0x4444
        sc.d    a2, a1, (s0)
        beqz    a2, .Lsc_fail6
        ld      a3, 0(s0)
        CHECK_EQ a3, 0x3333333333333333, 7
        j       1f
.Lsc_fail6:
        FAIL(6)
1:
        /* LR.W sign-extends; SC.W writes only 32 bits */
        li      a0, 0x5a5a5a5a87654321
        sd      a0, 0(s0)
        lr.w    a0, (s0)
        CHECK_EQ a0, 0xffffffff87654321, 8
        li      a1, 0xffffffff00000042
        sc.w    a2, a1, (s0)
        CHECK_EQ a2, 0, 9
        ld      a3, 0(s0)
        CHECK_EQ a3, 0x5a5a5a5a00000042, 10
        li      a1, 0x99
        sc.w    a2, a1, (s0)
        beqz    a2, .Lsc_fail11
        lw      a3, 0(s0)
        CHECK_EQ a3, 0x42, 12
        j       1f
.Lsc_fail11:
        FAIL(11)
1:
        /* aq/rl variants */
        lr.d.aq a0, (s0)
        li      a1, 77
        sc.d.rl a2, a1, (s0)
        CHECK_EQ a2, 0, 13
        ld      a3, 0(s0)
        CHECK_EQ a3, 77, 14
        lr.w.aqrl a0, (s0)
        CHECK_EQ a0, 77, 15
        li      a1, 78
        sc.w.aqrl a2, a1, (s0)
        CHECK_EQ a2, 0, 16
        lw      a3, 0(s0)
        CHECK_EQ a3, 78, 17

        /* ---- AMO .D ---- */
        TEST_AMO_D amoswap.d, 0x8000000000000001, 0x7ffffffffffffff0, 0x8000000000000001, 0x7ffffffffffffff0, 20
        TEST_AMO_D amoadd.d,  0xffffffffffffffff, 1, 0xffffffffffffffff, 0, 22
        TEST_AMO_D amoadd.d,  5, -3, 5, 2, 24
        TEST_AMO_D amoxor.d,  0x8000000000000001, 0x7ffffffffffffff0, 0x8000000000000001, 0xfffffffffffffff1, 26
        TEST_AMO_D amoand.d,  0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0, 0xff00ff00ff00ff00, 0x0f000f000f000f00, 28
        TEST_AMO_D amoor.d,   0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0, 0xff00ff00ff00ff00, 0xfff0fff0fff0fff0, 30
        TEST_AMO_D amomin.d,  0x8000000000000001, 0x7ffffffffffffff0, 0x8000000000000001, 0x8000000000000001, 32
        TEST_AMO_D amomin.d,  7, -7, 7, -7, 34
        TEST_AMO_D amomax.d,  0x8000000000000001, 0x7ffffffffffffff0, 0x8000000000000001, 0x7ffffffffffffff0, 36
        TEST_AMO_D amomax.d,  7, -7, 7, 7, 38
        TEST_AMO_D amominu.d, 0x8000000000000001, 0x7ffffffffffffff0, 0x8000000000000001, 0x7ffffffffffffff0, 40
        TEST_AMO_D amominu.d, 7, -7, 7, 7, 42
        TEST_AMO_D amomaxu.d, 0x8000000000000001, 0x7ffffffffffffff0, 0x8000000000000001, 0x8000000000000001, 44
        TEST_AMO_D amomaxu.d, 7, -7, 7, -7, 46
        TEST_AMO_D amoadd.d.aqrl, 100, 23, 100, 123, 48
        TEST_AMO_D amoswap.d.aq, 1, 2, 1, 2, 50

        /* ---- AMO .W (rs2 upper bits are garbage and must be ignored) ---- */
        TEST_AMO_W amoswap.w, 0x80000001, 0xdeadbeef7ffffff0, 0xffffffff80000001, 0x7ffffff0, 60
        TEST_AMO_W amoadd.w,  0x80000001, 0xdeadbeef7ffffff0, 0xffffffff80000001, 0xfffffff1, 62
        TEST_AMO_W amoadd.w,  0xffffffff, 0xdeadbeef00000001, 0xffffffffffffffff, 0, 64
        TEST_AMO_W amoxor.w,  0x80000001, 0xdeadbeef7ffffff0, 0xffffffff80000001, 0xfffffff1, 66
        TEST_AMO_W amoand.w,  0x80000001, 0xdeadbeef7ffffff0, 0xffffffff80000001, 0, 68
        TEST_AMO_W amoor.w,   0x80000001, 0xdeadbeef7ffffff0, 0xffffffff80000001, 0xfffffff1, 70
        TEST_AMO_W amomin.w,  0x80000001, 0xdeadbeef7ffffff0, 0xffffffff80000001, 0x80000001, 72
        TEST_AMO_W amomin.w,  0x00000007, 0x00000000fffffff9, 7, 0xfffffff9, 74
        TEST_AMO_W amomax.w,  0x80000001, 0xdeadbeef7ffffff0, 0xffffffff80000001, 0x7ffffff0, 76
        TEST_AMO_W amomax.w,  0x00000007, 0x00000000fffffff9, 7, 7, 78
        TEST_AMO_W amominu.w, 0x80000001, 0xdeadbeef7ffffff0, 0xffffffff80000001, 0x7ffffff0, 80
        TEST_AMO_W amominu.w, 0x00000007, 0x00000000fffffff9, 7, 7, 82
        TEST_AMO_W amomaxu.w, 0x80000001, 0xdeadbeef7ffffff0, 0xffffffff80000001, 0x80000001, 84
        TEST_AMO_W amomaxu.w, 0x00000007, 0x00000000fffffff9, 7, 0xfffffff9, 86
        TEST_AMO_W amomaxu.w, 0x00000007, 0x0000000100000003, 7, 7, 88  /* 64-bit compare would pick rs2 */
        TEST_AMO_W amoor.w.rl, 0x00000001, 0x0000000000000002, 1, 3, 90
        TEST_AMO_W amoswap.w.aqrl, 0x7fffffff, 0x0000000000000000, 0x7fffffff, 0, 92

        /* AMO with rd = x0 still updates memory */
        la      s0, amo_data
        li      a0, 40
        sd      a0, 0(s0)
        li      a1, 2
        amoadd.d zero, a1, (s0)
        ld      a3, 0(s0)
        CHECK_EQ a3, 42, 94
        /* rd == rs2 */
        li      a1, 8
        amoadd.d a1, a1, (s0)
        CHECK_EQ a1, 42, 95
        ld      a3, 0(s0)
        CHECK_EQ a3, 50, 96

        /* ---- misaligned AMO / LR / SC trap with mtval = address ---- */
        la      s0, amo_data
        li      a0, 0x0123456789abcdef
        sd      a0, 0(s0)
        sd      a0, 8(s0)
        addi    s1, s0, 2
        EXPECT_TRAP 1f
        li      a1, 1
        amoadd.w a2, a1, (s1)
        FAIL(100)
1:      CHECK_CAUSE2 CAUSE_MISALIGNED_STORE, CAUSE_STORE_ACCESS, 101, AMO_QUIRK_CAUSE
        CHECK_MEM_REG trap_tval, s1, 102
        ld      a3, 0(s0)
        CHECK_EQ a3, 0x0123456789abcdef, 103

        addi    s1, s0, 4
        EXPECT_TRAP 1f
        li      a1, 1
        amoswap.d a2, a1, (s1)
        FAIL(104)
1:      CHECK_CAUSE2 CAUSE_MISALIGNED_STORE, CAUSE_STORE_ACCESS, 105, AMO_QUIRK_CAUSE
        CHECK_MEM_REG trap_tval, s1, 106
        ld      a3, 0(s0)
        CHECK_EQ a3, 0x0123456789abcdef, 107
        ld      a3, 8(s0)
        CHECK_EQ a3, 0x0123456789abcdef, 108

        addi    s1, s0, 1
        EXPECT_TRAP 1f
        li      a1, 1
        amomaxu.w a2, a1, (s1)
        FAIL(109)
1:      CHECK_CAUSE2 CAUSE_MISALIGNED_STORE, CAUSE_STORE_ACCESS, 110, AMO_QUIRK_CAUSE
        CHECK_MEM_REG trap_tval, s1, 111

        addi    s1, s0, 4
        EXPECT_TRAP 1f
        lr.d    a2, (s1)
        FAIL(112)
1:      CHECK_CAUSE2 CAUSE_MISALIGNED_LOAD, CAUSE_LOAD_ACCESS, 113
        CHECK_MEM_REG trap_tval, s1, 114

        addi    s1, s0, 2
        EXPECT_TRAP 1f
        lr.w    a2, (s1)
        FAIL(115)
1:      CHECK_CAUSE2 CAUSE_MISALIGNED_LOAD, CAUSE_LOAD_ACCESS, 116
        CHECK_MEM_REG trap_tval, s1, 117

        /* misaligned SC: must not succeed; either it traps (6/7) ... */
        addi    s1, s0, 4
        EXPECT_TRAP 1f
        li      a1, 5
        li      a2, 0
        sc.d    a2, a1, (s1)
        /* ... or (no reservation) it may be reported as a plain failure */
        CLEAR_TRAP
        beqz    a2, .Lsc_mis_bad
        j       2f
1:      CHECK_CAUSE2 CAUSE_MISALIGNED_STORE, CAUSE_STORE_ACCESS, 118
        CHECK_MEM_REG trap_tval, s1, 119
2:      ld      a3, 0(s0)
        CHECK_EQ a3, 0x0123456789abcdef, 120
        ld      a3, 8(s0)
        CHECK_EQ a3, 0x0123456789abcdef, 121
        PASS
.Lsc_mis_bad:
        FAIL(122)

        .data
        .balign 64
amo_data:
        .dword  0, 0, 0, 0
