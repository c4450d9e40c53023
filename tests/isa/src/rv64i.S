/*
 * rv64i: base integer ISA.
 * ALU register/immediate ops incl. W forms and sign extension, shifts by
 * 0/31/32/63 (and shift-amount masking), LUI/AUIPC, all six branches taken
 * and not taken, JAL/JALR (link value, JALR clears bit 0), loads/stores of
 * every width with sign/zero extension, x0 hardwired to zero.
 */
#include "test.h"

/* rd = op(a, b) for register-register ops */
.macro TEST_RR op, a, b, expected, n
        li      a0, \a
        li      a1, \b
        \op     a2, a0, a1
        CHECK_EQ a2, \expected, \n
.endm

/* rd = op(a, imm) */
.macro TEST_RI op, a, imm, expected, n
        li      a0, \a
        \op     a2, a0, \imm
        CHECK_EQ a2, \expected, \n
.endm

/* branch taken check: op a, b must jump */
.macro TEST_BR_TAKEN op, a, b, n
        li      a0, \a
        li      a1, \b
        \op     a0, a1, .Ltaken\@
        FAIL(\n)
.Ltaken\@:
.endm

/* branch not taken check */
.macro TEST_BR_NOT op, a, b, n
        li      a0, \a
        li      a1, \b
        \op     a0, a1, .Lbad\@
        j       .Lok\@
.Lbad\@:
        FAIL(\n)
.Lok\@:
.endm

test_main:
        /* ---- add/sub and W forms ---- */
        TEST_RR add,  0x7fffffffffffffff, 1, 0x8000000000000000, 1
        TEST_RR add,  -1, -1, -2, 2
        TEST_RR sub,  0, 1, -1, 3
        TEST_RR sub,  0x8000000000000000, 1, 0x7fffffffffffffff, 4
        TEST_RR addw, 0x7fffffff, 1, 0xffffffff80000000, 5
        TEST_RR addw, 0x123456780000000f, 0x7654321000000001, 0x10, 6
        TEST_RR addw, 0xffffffff, 0, -1, 7
        TEST_RR subw, 0, 1, -1, 8
        TEST_RR subw, 0x80000000, 1, 0x7fffffff, 9
        TEST_RR subw, 0x7fffffff, -1, 0xffffffff80000000, 10

        /* ---- logic ---- */
        TEST_RR and,  0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0, 0x0f000f000f000f00, 11
        TEST_RR or,   0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0, 0xfff0fff0fff0fff0, 12
        TEST_RR xor,  0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0, 0xf0f0f0f0f0f0f0f0, 13
        TEST_RI andi, 0xff00ff00ff00ff00, -16, 0xff00ff00ff00ff00, 14
        TEST_RI andi, 0x123456789abcdef0, 0x7ff, 0x6f0, 15
        TEST_RI ori,  0x0000000000000000, -2048, 0xfffffffffffff800, 16
        TEST_RI xori, 0x00ff00ff00ff00ff, -1, 0xff00ff00ff00ff00, 17

        /* ---- compare ---- */
        TEST_RR slt,  -1, 1, 1, 18
        TEST_RR sltu, -1, 1, 0, 19
        TEST_RR slt,  1, -1, 0, 20
        TEST_RR sltu, 1, -1, 1, 21
        TEST_RR slt,  5, 5, 0, 22
        TEST_RI slti, -2048, -2047, 1, 23
        TEST_RI slti, 0, -1, 0, 24
        TEST_RI sltiu, 0, 1, 1, 25          /* seqz */
        TEST_RI sltiu, 5, 1, 0, 26
        TEST_RI sltiu, 5, -1, 1, 27         /* imm sign-extended then unsigned */
        TEST_RI addi, 0, -1, -1, 28
        TEST_RI addi, 0x7fffffffffffffff, 1, 0x8000000000000000, 29
        TEST_RI addiw, 0x7fffffff, 1, 0xffffffff80000000, 30
        TEST_RI addiw, 0xffffffff00000005, 0, 5, 31   /* sext.w */
        TEST_RI addiw, 0x80000000, 0, 0xffffffff80000000, 32

        /* ---- 64-bit shifts ---- */
        TEST_RR sll, 0x8000000000000001, 0, 0x8000000000000001, 33
        TEST_RR sll, 1, 31, 0x80000000, 34
        TEST_RR sll, 1, 32, 0x100000000, 35
        TEST_RR sll, 1, 63, 0x8000000000000000, 36
        TEST_RR sll, 1, 65, 2, 37                     /* only low 6 bits used */
        TEST_RR srl, 0x8000000000000000, 0, 0x8000000000000000, 38
        TEST_RR srl, 0x8000000000000000, 31, 0x100000000, 39
        TEST_RR srl, 0x8000000000000000, 32, 0x80000000, 40
        TEST_RR srl, 0x8000000000000000, 63, 1, 41
        TEST_RR sra, 0x8000000000000000, 0, 0x8000000000000000, 42
        TEST_RR sra, 0x8000000000000000, 31, 0xffffffff00000000, 43
        TEST_RR sra, 0x8000000000000000, 32, 0xffffffff80000000, 44
        TEST_RR sra, 0x8000000000000000, 63, -1, 45
        TEST_RR sra, 0x4000000000000000, 62, 1, 46
        TEST_RR sra, 0x8000000000000000, -1, -1, 47   /* shamt = 63 */
        TEST_RI slli, 0x8000000000000001, 0, 0x8000000000000001, 48
        TEST_RI slli, 1, 31, 0x80000000, 49
        TEST_RI slli, 1, 32, 0x100000000, 50
        TEST_RI slli, 3, 63, 0x8000000000000000, 51
        TEST_RI srli, 0x8000000000000000, 0, 0x8000000000000000, 52
        TEST_RI srli, 0x8000000000000000, 31, 0x100000000, 53
        TEST_RI srli, 0x8000000000000000, 32, 0x80000000, 54
        TEST_RI srli, 0xffffffffffffffff, 63, 1, 55
        TEST_RI srai, 0x8000000000000000, 0, 0x8000000000000000, 56
        TEST_RI srai, 0x8000000000000000, 31, 0xffffffff00000000, 57
        TEST_RI srai, 0x8000000000000000, 32, 0xffffffff80000000, 58
        TEST_RI srai, 0x8000000000000000, 63, -1, 59
        TEST_RI srai, 0x7fffffffffffffff, 63, 0, 60

        /* ---- 32-bit shifts (results sign-extended, 5-bit shamt) ---- */
        TEST_RR sllw, 0xffffffff00000001, 0, 1, 61
        TEST_RR sllw, 1, 31, 0xffffffff80000000, 62
        TEST_RR sllw, 1, 32, 1, 63                    /* shamt masked to 0 */
        TEST_RR sllw, 3, 63, 0xffffffff80000000, 64   /* shamt 31 */
        TEST_RR srlw, 0xffffffff80000000, 0, 0xffffffff80000000, 65
        TEST_RR srlw, 0xffffffff80000000, 31, 1, 66
        TEST_RR srlw, 0xffffffff80000000, 1, 0x40000000, 67
        TEST_RR srlw, 0x0000000180000000, 32, 0xffffffff80000000, 68
        TEST_RR sraw, 0x80000000, 0, 0xffffffff80000000, 69
        TEST_RR sraw, 0x80000000, 31, -1, 70
        TEST_RR sraw, 0x80000000, 4, 0xfffffffff8000000, 71
        TEST_RR sraw, 0x7fffffff, 31, 0, 72
        TEST_RI slliw, 0xffffffff00000001, 0, 1, 73
        TEST_RI slliw, 1, 31, 0xffffffff80000000, 74
        TEST_RI slliw, 0x00000000ffffffff, 4, 0xfffffffffffffff0, 75
        TEST_RI srliw, 0xffffffff80000000, 0, 0xffffffff80000000, 76
        TEST_RI srliw, 0xffffffff80000000, 31, 1, 77
        TEST_RI srliw, 0x12345678ffffffff, 4, 0x0fffffff, 78
        TEST_RI sraiw, 0x80000000, 0, 0xffffffff80000000, 79
        TEST_RI sraiw, 0x80000000, 31, -1, 80
        TEST_RI sraiw, 0x0000000170000000, 28, 7, 81

        /* ---- LUI / AUIPC ---- */
        lui     a0, 0x12345
        CHECK_EQ a0, 0x12345000, 82
        lui     a0, 0x80000
        CHECK_EQ a0, 0xffffffff80000000, 83
        lui     a0, 0xfffff
        CHECK_EQ a0, 0xfffffffffffff000, 84
.Lauipc0:
        auipc   a0, 0
        CHECK_ADDR a0, .Lauipc0, 85
.Lauipc1:
        auipc   a0, 1
        la      a1, .Lauipc1
        sub     a0, a0, a1
        CHECK_EQ a0, 0x1000, 86
.Lauipc2:
        auipc   a0, 0xfffff                 /* -4096 */
        la      a1, .Lauipc2
        sub     a0, a0, a1
        CHECK_EQ a0, -4096, 87

        /* ---- branches ---- */
        TEST_BR_TAKEN beq, 5, 5, 88
        TEST_BR_NOT   beq, 5, 6, 89
        TEST_BR_TAKEN bne, 5, 6, 90
        TEST_BR_NOT   bne, -1, -1, 91
        TEST_BR_TAKEN blt, -1, 0, 92
        TEST_BR_NOT   blt, 0, -1, 93
        TEST_BR_NOT   blt, 3, 3, 94
        TEST_BR_TAKEN bge, 0, -1, 95
        TEST_BR_TAKEN bge, 3, 3, 96
        TEST_BR_NOT   bge, -1, 0, 97
        TEST_BR_TAKEN bltu, 0, -1, 98
        TEST_BR_NOT   bltu, -1, 0, 99
        TEST_BR_NOT   bltu, 7, 7, 100
        TEST_BR_TAKEN bgeu, -1, 0, 101
        TEST_BR_TAKEN bgeu, 7, 7, 102
        TEST_BR_NOT   bgeu, 0, -1, 103
        /* backward branch */
        li      a0, 3
        li      a1, 0
1:      addi    a1, a1, 1
        addi    a0, a0, -1
        bnez    a0, 1b
        CHECK_EQ a1, 3, 104

        /* ---- JAL / JALR ---- */
        jal     ra, .Ljal_target
.Ljal_ret:
        FAIL(105)
.Ljal_target:
        CHECK_ADDR ra, .Ljal_ret, 106
        jal     zero, 1f                    /* j: must not write x0 */
        FAIL(107)
1:      la      a0, .Ljalr_target
        addi    a0, a0, 1                   /* odd target: bit 0 is cleared */
        jalr    a1, 0(a0)
.Ljalr_ret:
        FAIL(108)
.Ljalr_target:
        CHECK_ADDR a1, .Ljalr_ret, 109
        la      a0, .Ljalr_target2 - 16
        jalr    a0, 16(a0)                  /* rd == rs1: target uses old rs1 */
.Ljalr_ret2:
        FAIL(110)
.Ljalr_target2:
        CHECK_ADDR a0, .Ljalr_ret2, 111
        la      a0, .Ljalr_target3 + 8
        jalr    a1, -7(a0)                  /* offset makes target+1, cleared */
        FAIL(112)
.Ljalr_target3:

        /* ---- loads: sign / zero extension ---- */
        la      s0, ldata
        lb      a0, 0(s0)
        CHECK_EQ a0, 0xffffffffffffff81, 113
        lbu     a0, 0(s0)
        CHECK_EQ a0, 0x81, 114
        lb      a0, 1(s0)
        CHECK_EQ a0, 0x72, 115
        lh      a0, 0(s0)
        CHECK_EQ a0, 0x7281, 116
        lh      a0, 2(s0)
        CHECK_EQ a0, 0xffffffffffffd463, 117
        lhu     a0, 2(s0)
        CHECK_EQ a0, 0xd463, 118
        lh      a0, 6(s0)
        CHECK_EQ a0, 0xffffffffffff9827, 119
        lw      a0, 0(s0)
        CHECK_EQ a0, 0xffffffffd4637281, 120
        lwu     a0, 0(s0)
        CHECK_EQ a0, 0xd4637281, 121
        lw      a0, 4(s0)
        CHECK_EQ a0, 0xffffffff98273645, 122
        lwu     a0, 4(s0)
        CHECK_EQ a0, 0x98273645, 123
        ld      a0, 0(s0)
        CHECK_EQ a0, 0x98273645d4637281, 124
        ld      a0, 8(s0)
        CHECK_EQ a0, 0x0123456789abcdef, 125
        addi    s1, s0, 16
        lb      a0, -9(s1)                  /* negative offset: byte 7 */
        CHECK_EQ a0, 0xffffffffffffff98, 126
        lhu     a0, -16(s1)
        CHECK_EQ a0, 0x7281, 127
        lw      a0, -4(s1)
        CHECK_EQ a0, 0x01234567, 128
        lbu     a0, 2047(s0)                /* max positive offset */
        CHECK_EQ a0, 0x5a, 129

        /* ---- stores: only the addressed bytes change ---- */
        la      s0, sdata
        li      a0, 0x0123456789abcdef
        sd      a0, 0(s0)
        li      a0, 0x1111111111111111
        sd      a0, 8(s0)
        li      a1, 0x77777777777777ff
        sb      a1, 1(s0)
        ld      a0, 0(s0)
        CHECK_EQ a0, 0x0123456789abffef, 130
        li      a1, 0xffffffffaaaa5555
        sh      a1, 2(s0)
        ld      a0, 0(s0)
        CHECK_EQ a0, 0x012345675555ffef, 131
        li      a1, 0xdeadbeefcafebabe
        sw      a1, 4(s0)
        ld      a0, 0(s0)
        CHECK_EQ a0, 0xcafebabe5555ffef, 132
        ld      a0, 8(s0)                   /* neighbour untouched */
        CHECK_EQ a0, 0x1111111111111111, 133
        addi    s1, s0, 16
        li      a1, 0x42
        sb      a1, -1(s1)                  /* byte 15 */
        ld      a0, 8(s0)
        CHECK_EQ a0, 0x4211111111111111, 134
        li      a1, 0x1234
        sh      a1, -8(s1)
        ld      a0, 8(s0)
        CHECK_EQ a0, 0x4211111111111234, 135
        li      a1, 0xfedcba9876543210
        sd      a1, -16(s1)
        ld      a0, 0(s0)
        CHECK_EQ a0, 0xfedcba9876543210, 136
        lb      a0, 7(s0)
        CHECK_EQ a0, 0xfffffffffffffffe, 137

        /* ---- x0 is hardwired to zero ---- */
        addi    x0, x0, 5
        CHECK_EQ x0, 0, 138
        lui     x0, 0x12345
        CHECK_EQ zero, 0, 139
        la      s0, ldata
        ld      x0, 0(s0)
        add     a0, x0, x0
        CHECK_EQ a0, 0, 140
        li      a1, 7
        add     x0, a1, a1
        mv      a0, zero
        CHECK_EQ a0, 0, 141
        la      s0, sdata
        sd      x0, 0(s0)                   /* storing x0 stores zero */
        ld      a0, 0(s0)
        CHECK_EQ a0, 0, 142
        PASS

        .data
        .balign 8
ldata:
        .byte   0x81, 0x72, 0x63, 0xd4, 0x45, 0x36, 0x27, 0x98
        .dword  0x0123456789abcdef
        .fill   2047 - 16, 1, 0
        .byte   0x5a
        .balign 8
sdata:
        .dword  0, 0
