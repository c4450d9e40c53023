/*
 * rv64m: multiply/divide.
 * MUL/MULH/MULHSU/MULHU/MULW, DIV/DIVU/REM/REMU and their W forms,
 * including division by zero and signed overflow (most negative / -1),
 * whose results are fully defined by the spec (no traps).
 */
#include "test.h"

.macro TEST_RR op, a, b, expected, n
        li      a0, \a
        li      a1, \b
        \op     a2, a0, a1
        CHECK_EQ a2, \expected, \n
.endm

#define MIN64 0x8000000000000000
#define MAX64 0x7fffffffffffffff

test_main:
        /* ---- multiply ---- */
        TEST_RR mul, 3, 7, 21, 1
        TEST_RR mul, -3, 7, -21, 2
        TEST_RR mul, MAX64, 2, 0xfffffffffffffffe, 3
        TEST_RR mul, -1, -1, 1, 4
        TEST_RR mul, 0x0000000100000001, 0x0000000100000001, 0x0000000200000001, 5
        TEST_RR mulh, -1, -1, 0, 6
        TEST_RR mulh, MIN64, MIN64, 0x4000000000000000, 7
        TEST_RR mulh, -2, 3, -1, 8
        TEST_RR mulh, MAX64, MAX64, 0x3fffffffffffffff, 9
        TEST_RR mulh, MIN64, 1, -1, 10
        TEST_RR mulhu, -1, -1, 0xfffffffffffffffe, 11
        TEST_RR mulhu, MIN64, 2, 1, 12
        TEST_RR mulhu, -2, 3, 2, 13
        TEST_RR mulhsu, -1, -1, -1, 14
        TEST_RR mulhsu, MIN64, -1, MIN64, 15
        TEST_RR mulhsu, 2, MIN64, 1, 16
        TEST_RR mulhsu, -2, 3, -1, 17
        TEST_RR mulhsu, MAX64, -1, 0x7ffffffffffffffe, 18
        TEST_RR mulw, 0x7fffffff, 2, 0xfffffffffffffffe, 19
        TEST_RR mulw, 0xffffffff00000003, 0x0000000500000002, 6, 20
        TEST_RR mulw, 0x10000, 0x10000, 0, 21
        TEST_RR mulw, -3, 7, -21, 22
        TEST_RR mulw, 0x40000000, 2, 0xffffffff80000000, 23

        /* ---- 64-bit divide ---- */
        TEST_RR div, 7, 2, 3, 24
        TEST_RR div, -7, 2, -3, 25             /* truncates toward zero */
        TEST_RR div, 7, -2, -3, 26
        TEST_RR div, -7, -2, 3, 27
        TEST_RR rem, 7, 2, 1, 28
        TEST_RR rem, -7, 2, -1, 29             /* sign of dividend */
        TEST_RR rem, 7, -2, 1, 30
        TEST_RR rem, -7, -2, -1, 31
        TEST_RR divu, -1, 2, MAX64, 32
        TEST_RR divu, MIN64, 3, 0x2aaaaaaaaaaaaaaa, 33
        TEST_RR remu, MIN64, 3, 2, 34
        TEST_RR remu, -1, 10, 5, 35            /* 18446744073709551615 % 10 */
        /* divide by zero */
        TEST_RR div, 1234, 0, -1, 36
        TEST_RR div, -1234, 0, -1, 37
        TEST_RR divu, 1234, 0, -1, 38
        TEST_RR rem, -1234, 0, -1234, 39
        TEST_RR remu, 1234, 0, 1234, 40
        TEST_RR rem, MIN64, 0, MIN64, 41
        /* overflow */
        TEST_RR div, MIN64, -1, MIN64, 42
        TEST_RR rem, MIN64, -1, 0, 43
        TEST_RR divu, MIN64, -1, 0, 44
        TEST_RR remu, MIN64, -1, MIN64, 45

        /* ---- 32-bit divide (operands are the low 32 bits, results sext) ---- */
        TEST_RR divw, 0x12345678fffffff9, 2, -3, 46
        TEST_RR divw, 7, 0xabcdef00fffffffe, -3, 47
        TEST_RR remw, 0x12345678fffffff9, 2, -1, 48
        TEST_RR remw, 7, -2, 1, 49
        TEST_RR divuw, 0xffffffff, 2, 0x7fffffff, 50
        TEST_RR divuw, 0xfffffffe, 1, 0xfffffffffffffffe, 51
        TEST_RR divuw, 0x1fffffff9, 0x100000002, 0x7ffffffc, 52
        TEST_RR remuw, 0xfffffff9, 10, 9, 53
        TEST_RR remuw, 0x80000001, 0x80000002, 0xffffffff80000001, 54
        /* divide by zero */
        TEST_RR divw, 5, 0x100000000, -1, 55   /* low word of divisor is 0 */
        TEST_RR divuw, 5, 0, -1, 56
        TEST_RR remw, 0x1234567880000005, 0, 0xffffffff80000005, 57
        TEST_RR remuw, 0x1234567880000005, 0, 0xffffffff80000005, 58
        TEST_RR remw, 0xffffffff00000005, 0xffffffff00000000, 5, 59
        /* overflow */
        TEST_RR divw, 0x80000000, -1, 0xffffffff80000000, 60
        TEST_RR divw, 0x1234567880000000, 0xffffffff, 0xffffffff80000000, 61
        TEST_RR remw, 0x80000000, -1, 0, 62
        TEST_RR divuw, 0x80000000, 0xffffffff, 0, 63
        TEST_RR remuw, 0x80000000, 0xffffffff, 0xffffffff80000000, 64

        /* rd == rs1 == rs2 */
        li      a0, 9
        mul     a0, a0, a0
        CHECK_EQ a0, 81, 65
        div     a0, a0, a0
        CHECK_EQ a0, 1, 66
        PASS
