/*
 * selftest_fail: deliberately fails with code 7, so a harness can check
 * that failures propagate to the exit status (negative test).
 */
#include "test.h"

test_main:
        li      t0, 1
        CHECK_EQ t0, 1, 1
        li      t0, 41
        CHECK_EQ t0, 42, 7          /* fails: exit status 7 */
        PASS
