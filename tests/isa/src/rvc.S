/*
 * rvc: every RV64C instruction, written with explicit c.* mnemonics:
 * C.ADDI4SPN C.FLD C.LW C.LD C.FSD C.SW C.SD | C.NOP C.ADDI C.ADDIW C.LI
 * C.ADDI16SP C.LUI C.SRLI C.SRAI C.ANDI C.SUB C.XOR C.OR C.AND C.SUBW C.ADDW
 * C.J C.BEQZ C.BNEZ | C.SLLI C.FLDSP C.LWSP C.LDSP C.JR C.MV C.EBREAK C.JALR
 * C.ADD C.FSDSP C.SWSP C.SDSP. C.JALR links pc+2; C.EBREAK traps with cause
 * 3 and mepc = its address. 32-bit instructions at 2-byte-aligned addresses
 * (straight-line, as branch/jump targets, as JALR targets, and one that
 * straddles a 4 KiB boundary), and a 32-bit EBREAK at a 2-byte-aligned pc.
 * The all-zero halfword (C.UNIMP) is an illegal instruction (mtval 0).
 */
#include "test.h"

        .option rvc

test_main:
        mv      s11, sp                 /* restore at the end */
        la      sp, cbuf + 512          /* scratch area addressed via sp */

        /* ---- C.LI / C.LUI / C.ADDI / C.ADDIW / C.NOP ---- */
        c.li    a0, -32
        CHECK_EQ a0, -32, 1
        c.li    a0, 31
        CHECK_EQ a0, 31, 2
        c.lui   a1, 1
        CHECK_EQ a1, 0x1000, 3
        c.lui   a1, 0xfffe0                 /* nzimm = -32 */
        CHECK_EQ a1, 0xfffffffffffe0000, 4
        c.lui   a1, 31
        CHECK_EQ a1, 0x1f000, 5
        c.addi  a0, -1                      /* 31 - 1 */
        CHECK_EQ a0, 30, 6
        c.addi  a0, 31
        CHECK_EQ a0, 61, 7
        c.addi  a0, -32
        CHECK_EQ a0, 29, 8
        li      a0, 0x7fffffff
        c.addiw a0, 1
        CHECK_EQ a0, 0xffffffff80000000, 9
        li      a0, 0x1234567890000000
        c.addiw a0, 0                       /* sext.w */
        CHECK_EQ a0, 0xffffffff90000000, 10
        li      a0, 5
        c.addiw a0, -6
        CHECK_EQ a0, -1, 11
        c.nop
        CHECK_EQ a0, -1, 12

        /* ---- C.ADDI16SP / C.ADDI4SPN ---- */
        mv      s2, sp
        c.addi16sp sp, -64
        sub     a0, s2, sp
        CHECK_EQ a0, 64, 13
        c.addi16sp sp, 496
        sub     a0, sp, s2
        CHECK_EQ a0, 432, 14
        c.addi16sp sp, -512
        sub     a0, s2, sp
        CHECK_EQ a0, 80, 15
        mv      sp, s2
        c.addi4spn a0, sp, 8
        sub     a0, a0, sp
        CHECK_EQ a0, 8, 16
        c.addi4spn s1, sp, 1020
        sub     a0, s1, sp
        CHECK_EQ a0, 1020, 17
        c.addi4spn a5, sp, 4
        sub     a0, a5, sp
        CHECK_EQ a0, 4, 18

        /* ---- shifts and logic ---- */
        li      a0, 1
        c.slli  a0, 63
        CHECK_EQ a0, 0x8000000000000000, 19
        c.srai  a0, 63
        CHECK_EQ a0, -1, 20
        c.srli  a0, 32
        CHECK_EQ a0, 0xffffffff, 21
        c.slli  a0, 1
        CHECK_EQ a0, 0x1fffffffe, 22
        c.srli  a0, 1
        CHECK_EQ a0, 0xffffffff, 23
        li      a0, 0x8000000000000000
        c.srai  a0, 4
        CHECK_EQ a0, 0xf800000000000000, 24
        li      a0, 0x123456789abcdef0
        c.andi  a0, -32
        CHECK_EQ a0, 0x123456789abcdee0, 25
        c.andi  a0, 31
        CHECK_EQ a0, 0, 26
        li      a2, 0xff00
        li      a3, 0x0ff0
        c.mv    a4, a2
        c.and   a4, a3
        CHECK_EQ a4, 0x0f00, 27
        c.mv    a4, a2
        c.or    a4, a3
        CHECK_EQ a4, 0xfff0, 28
        c.mv    a4, a2
        c.xor   a4, a3
        CHECK_EQ a4, 0xf0f0, 29
        c.mv    a4, a3
        c.sub   a4, a2
        CHECK_EQ a4, 0xffffffffffff10f0, 30
        li      a4, 0x7fffffff
        li      a5, 1
        c.addw  a4, a5
        CHECK_EQ a4, 0xffffffff80000000, 31
        li      a4, 0x100000000
        c.subw  a4, a5
        CHECK_EQ a4, -1, 32
        li      a4, 0x7fffffffffffffff
        c.add   a4, a5
        CHECK_EQ a4, 0x8000000000000000, 33
        c.mv    t0, a4
        CHECK_EQ t0, 0x8000000000000000, 34
        li      t1, 10
        c.add   t0, t1                      /* full register set for C.ADD/C.MV */
        CHECK_EQ t0, 0x800000000000000a, 35

        /* ---- loads / stores (s0..a5 based) ---- */
        la      s0, cdata
        c.lw    a0, 0(s0)
        CHECK_EQ a0, 0xffffffff89abcdef, 36
        c.lw    a0, 4(s0)
        CHECK_EQ a0, 0x01234567, 37
        c.ld    a1, 0(s0)
        CHECK_EQ a1, 0x0123456789abcdef, 38
        c.ld    a1, 8(s0)
        CHECK_EQ a1, 0xfedcba9876543210, 39
        la      s1, cbuf
        li      a2, 0x1122334455667788
        c.sd    a2, 248(s1)                 /* max C.SD offset */
        c.ld    a3, 248(s1)
        CHECK_EQ a3, 0x1122334455667788, 40
        li      a2, 0xdeadbeef
        c.sw    a2, 124(s1)                 /* max C.SW offset */
        c.lw    a3, 124(s1)
        CHECK_EQ a3, 0xffffffffdeadbeef, 41
        lwu     a3, 124(s1)
        CHECK_EQ a3, 0xdeadbeef, 42

        /* ---- sp-relative loads / stores ---- */
        li      a2, 0x0badc0ffee0ddf00
        c.sdsp  a2, 504(sp)                 /* max C.SDSP offset */
        c.ldsp  t2, 504(sp)
        CHECK_EQ t2, 0x0badc0ffee0ddf00, 43
        ld      t2, 504(sp)
        CHECK_EQ t2, 0x0badc0ffee0ddf00, 44
        li      a2, 0x80000001
        c.swsp  a2, 252(sp)                 /* max C.SWSP offset */
        c.lwsp  t3, 252(sp)
        CHECK_EQ t3, 0xffffffff80000001, 45
        c.sdsp  a2, 0(sp)
        c.lwsp  t3, 4(sp)
        CHECK_EQ t3, 0, 46

        /* ---- floating-point loads / stores ---- */
        la      s0, cdata
        c.fld   fa0, 16(s0)
        fmv.x.d a0, fa0
        CHECK_EQ a0, 0x400921fb54442d18, 47     /* pi */
        la      s1, cbuf
        c.fsd   fa0, 40(s1)
        ld      a0, 40(s1)
        CHECK_EQ a0, 0x400921fb54442d18, 48
        c.fsdsp fa0, 496(sp)
        ld      a0, 496(sp)
        CHECK_EQ a0, 0x400921fb54442d18, 49
        li      a0, 0xbff0000000000000      /* -1.0 */
        sd      a0, 24(sp)
        c.fldsp ft3, 24(sp)                 /* any f register for *SP forms */
        fmv.x.d a1, ft3
        CHECK_EQ a1, 0xbff0000000000000, 50
        c.fsdsp ft3, 32(sp)
        ld      a1, 32(sp)
        CHECK_EQ a1, 0xbff0000000000000, 51

        /* ---- C.J / C.BEQZ / C.BNEZ ---- */
        c.j     1f
        FAIL(52)
1:      li      a0, 0
        c.beqz  a0, 1f
        FAIL(53)
1:      li      a0, 1
        c.beqz  a0, 2f
        c.j     1f
2:      FAIL(54)
1:      c.bnez  a0, 1f
        FAIL(55)
1:      li      a0, 0
        c.bnez  a0, 2f
        c.j     1f
2:      FAIL(56)
1:      li      a0, 3                       /* backward C.BNEZ / C.J */
        li      a1, 0
1:      c.addi  a1, 1
        c.addi  a0, -1
        c.bnez  a0, 1b
        CHECK_EQ a1, 3, 57
        li      a0, 0x8000000000000000      /* only 0 counts as zero */
        c.beqz  a0, 2f
        c.j     1f
2:      FAIL(58)
1:

        /* ---- C.JR / C.JALR ---- */
        la      a0, .Ljr_target
        c.jr    a0
        FAIL(59)
.Ljr_target:
        la      t0, .Ljalr_target
        c.jalr  t0                          /* ra = address of next insn (pc + 2) */
.Ljalr_ret:
        c.j     .Ljalr_done
.Ljalr_target:
        CHECK_ADDR ra, .Ljalr_ret, 60
        c.jr    ra
        FAIL(61)
.Ljalr_done:

        /* ---- C.EBREAK ---- */
        EXPECT_TRAP 1f
.Lcebreak:
        c.ebreak
        FAIL(62)
1:      CHECK_CAUSE CAUSE_BREAKPOINT, 63
        CHECK_EPC .Lcebreak, 64

        /* ---- the all-zero halfword (C.UNIMP) is illegal ---- */
        EXPECT_TRAP 1f
.Lcunimp:
        .hword  0x0000
        c.nop
        FAIL(72)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 73
        CHECK_EPC .Lcunimp, 74
        CHECK_TVAL 0, 75

        /* ---- 32-bit instructions at 2-byte-aligned addresses ---- */
        .balign 4
        c.nop
        .option push
        .option norvc
        li      a0, 0
        addi    a0, a0, 5                   /* at pc % 4 == 2 */
        addi    a0, a0, 6
        .option pop
        CHECK_EQ a0, 11, 65
        /* branch and jal to 2-byte-aligned 32-bit targets */
        .balign 4
        .option push
        .option norvc
        beq     zero, zero, .Lodd_target1
        nop
        .option pop
        c.nop
.Lodd_target1:
        .option push
        .option norvc
        jal     ra, .Lodd_target2           /* 32-bit jal at pc % 4 == 2 */
.Lodd_ret2:
        j       .Lodd_done
        .option pop
        c.nop
.Lodd_target2:
        .option push
        .option norvc
        la      t0, .Lodd_ret2
        bne     ra, t0, .Lodd_fail
        la      t0, .Lodd_target3
        jalr    ra, 0(t0)                   /* to a 2-byte-aligned target */
.Lodd_ret3:
        j       .Lodd_done2
        .option pop
        .balign 4
        c.nop
.Lodd_target3:
        .option push
        .option norvc
        la      t0, .Lodd_ret3
        bne     ra, t0, .Lodd_fail
        ret
.Lodd_fail:
        .option pop
        FAIL(66)
.Lodd_done:
        FAIL(67)                            /* j .Lodd_done only after target2 */
.Lodd_done2:

        /* 32-bit EBREAK at a 2-byte-aligned pc */
        .balign 4
        EXPECT_TRAP 1f
        c.nop
.Lebreak32:
        .option push
        .option norvc
        ebreak
        .option pop
        FAIL(68)
1:      CHECK_CAUSE CAUSE_BREAKPOINT, 69
        CHECK_EPC .Lebreak32, 70

        /* 32-bit instruction straddling a 4 KiB boundary */
        li      a0, 0
        j       .Lcross
        .balign 4096
        .skip   4092, 0
.Lcross:
        c.nop
        .option push
        .option norvc
        addi    a0, a0, 7                   /* bytes at 0x...ffe .. 0x...001 */
        .option pop
        c.addi  a0, 1
        CHECK_EQ a0, 8, 71

        mv      sp, s11
        PASS

        .data
        .balign 8
cdata:
        .dword  0x0123456789abcdef
        .dword  0xfedcba9876543210
        .dword  0x400921fb54442d18
        .balign 16
cbuf:
        .space  1024
