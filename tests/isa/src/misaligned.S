/*
 * misaligned: misaligned loads and stores of 2, 4 and 8 bytes (integer and
 * FP), within a dword, across a dword and across a 4 KiB page boundary.
 * Either the access is performed (value / memory checked exactly, incl.
 * sign/zero extension and untouched neighbours) or it traps with cause 4
 * (load) / 6 (store) and mtval = the misaligned address. Both are accepted.
 */
#include "test.h"

/* a0 = insn(mbuf + off); trap or exact value */
.macro MIS_LOAD insn, off, expected, n
        call    init_mbuf
        la      s1, mbuf + \off
        EXPECT_TRAP .Lt\@
        \insn   a0, 0(s1)
        CLEAR_TRAP
        CHECK_EQ a0, \expected, \n
        j       .Ld\@
.Lt\@:  CHECK_CAUSE CAUSE_MISALIGNED_LOAD, (\n + 1)
        CHECK_MEM_REG trap_tval, s1, (\n + 2)
.Ld\@:
.endm

/* insn value -> mbuf + off; then dword at mbuf + dw must equal expected */
.macro MIS_STORE insn, off, value, dw, expected, n, dw2=-1, expected2=0
        call    init_mbuf
        la      s1, mbuf + \off
        li      a0, \value
        EXPECT_TRAP .Lt\@
        \insn   a0, 0(s1)
        CLEAR_TRAP
        la      t0, mbuf + \dw
        ld      t1, 0(t0)
        CHECK_EQ t1, \expected, \n
        .if \dw2 >= 0
        la      t0, mbuf + \dw2
        ld      t1, 0(t0)
        CHECK_EQ t1, \expected2, (\n + 3)
        .endif
        j       .Ld\@
.Lt\@:  CHECK_CAUSE CAUSE_MISALIGNED_STORE, (\n + 1)
        CHECK_MEM_REG trap_tval, s1, (\n + 2)
.Ld\@:
.endm

test_main:
        /* mbuf[i] = 0x80 + (i & 0x7f) for the first 32 bytes */
        MIS_LOAD lh, 1, 0xffffffffffff8281, 1
        MIS_LOAD lhu, 1, 0x8281, 4
        MIS_LOAD lh, 7, 0xffffffffffff8887, 7          /* crosses a dword */
        MIS_LOAD lw, 1, 0xffffffff84838281, 10
        MIS_LOAD lw, 2, 0xffffffff85848382, 13
        MIS_LOAD lw, 3, 0xffffffff86858483, 16
        MIS_LOAD lwu, 3, 0x86858483, 19
        MIS_LOAD lw, 6, 0xffffffff89888786, 22         /* crosses a dword */
        MIS_LOAD ld, 1, 0x8887868584838281, 25
        MIS_LOAD ld, 4, 0x8b8a898887868584, 28
        MIS_LOAD ld, 7, 0x8e8d8c8b8a898887, 31
        /* across a 4 KiB page: mbuf + 4096 - 3 .. */
        MIS_LOAD ld, 4093, 0x0403020100fffefd, 34
        MIS_LOAD lw, 4094, 0x0100fffe, 37
        MIS_LOAD lhu, 4095, 0x00ff, 40

        MIS_STORE sh, 1, 0xabcd, 0, 0x8786858483abcd80, 43
        MIS_STORE sw, 3, 0x11223344, 0, 0x8711223344828180, 47
        MIS_STORE sw, 6, 0xaabbccdd, 0, 0xccdd858483828180, 51, 8, 0x8f8e8d8c8b8aaabb
        MIS_STORE sd, 5, 0x0102030405060708, 0, 0x0607088483828180, 55, 8, 0x8f8e8d0102030405
        MIS_STORE sd, 4092, 0x1122334455667788, 4088, 0x55667788fbfaf9f8, 59, 4096, 0x0706050411223344
        MIS_STORE sh, 4095, 0x5aa5, 4088, 0xa5fefdfcfbfaf9f8, 63, 4096, 0x070605040302015a

        /* floating point */
        call    init_mbuf
        la      s1, mbuf + 2
        EXPECT_TRAP 1f
        fld     fa0, 0(s1)
        CLEAR_TRAP
        fmv.x.d a0, fa0
        CHECK_EQ a0, 0x8988878685848382, 67
        j       2f
1:      CHECK_CAUSE CAUSE_MISALIGNED_LOAD, 68
        CHECK_MEM_REG trap_tval, s1, 69
2:      la      s1, mbuf + 5
        EXPECT_TRAP 1f
        flw     fa1, 0(s1)
        CLEAR_TRAP
        fmv.x.d a0, fa1
        CHECK_EQ a0, 0xffffffff88878685, 70            /* NaN-boxed */
        j       2f
1:      CHECK_CAUSE CAUSE_MISALIGNED_LOAD, 71
        CHECK_MEM_REG trap_tval, s1, 72
2:      call    init_mbuf
        li      t0, 0x0102030405060708
        fmv.d.x fa2, t0
        la      s1, mbuf + 3
        EXPECT_TRAP 1f
        fsd     fa2, 0(s1)
        CLEAR_TRAP
        la      t0, mbuf
        ld      t1, 0(t0)
        CHECK_EQ t1, 0x0405060708828180, 73
        ld      t1, 8(t0)
        CHECK_EQ t1, 0x8f8e8d8c8b010203, 74
        j       2f
1:      CHECK_CAUSE CAUSE_MISALIGNED_STORE, 75
        CHECK_MEM_REG trap_tval, s1, 76
2:      call    init_mbuf
        li      t0, 0xffffffffcafef00d
        fmv.d.x fa3, t0
        la      s1, mbuf + 1
        EXPECT_TRAP 1f
        fsw     fa3, 0(s1)
        CLEAR_TRAP
        la      t0, mbuf
        ld      t1, 0(t0)
        CHECK_EQ t1, 0x878685cafef00d80, 77
        j       2f
1:      CHECK_CAUSE CAUSE_MISALIGNED_STORE, 78
        CHECK_MEM_REG trap_tval, s1, 79
2:
        /* aligned accesses are unaffected */
        call    init_mbuf
        la      s1, mbuf
        ld      a0, 8(s1)
        CHECK_EQ a0, 0x8f8e8d8c8b8a8988, 80
        PASS

/*
 * init_mbuf: mbuf[0..31] = 0x80 + i; mbuf[4088..4095] = 0xf8..0xff;
 * mbuf[4096..4103] = 0x00..0x07. Clobbers t0-t2.
 */
init_mbuf:
        la      t0, mbuf
        li      t1, 0x8786858483828180
        sd      t1, 0(t0)
        li      t1, 0x8f8e8d8c8b8a8988
        sd      t1, 8(t0)
        li      t1, 0x9796959493929190
        sd      t1, 16(t0)
        li      t1, 0x9f9e9d9c9b9a9998
        sd      t1, 24(t0)
        li      t2, 4088
        add     t0, t0, t2
        li      t1, 0xfffefdfcfbfaf9f8
        sd      t1, 0(t0)
        li      t1, 0x0706050403020100
        sd      t1, 8(t0)
        ret

        .bss
        .balign 4096
mbuf:   .space  8192
