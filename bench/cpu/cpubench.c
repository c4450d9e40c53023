/*
 * A CPU-bound guest program for measuring emulator speed (MIPS): a mix of
 * integer arithmetic, branches, loads and stores, multiplication and
 * division, in the proportions of ordinary compiled code. It checks its own
 * result so that a miscomputing emulator cannot look fast. Bare metal, no
 * libc: built with -ffreestanding and run with --bios none.
 */
#include <stdint.h>
#ifdef HOST
#include <stdio.h>
#endif

#ifndef ROUNDS
#define ROUNDS 60
#endif
#define SIEVE 65536
#define MAT 24

static uint8_t composite[SIEVE];
static uint32_t a[MAT][MAT], b[MAT][MAT], c[MAT][MAT];
static uint32_t crc_table[256];

static uint32_t sieve(void) {
    for (int i = 0; i < SIEVE; i++) composite[i] = 0;
    uint32_t count = 0;
    for (uint32_t i = 2; i < SIEVE; i++) {
        if (composite[i]) continue;
        count++;
        for (uint32_t j = i * 2; j < SIEVE; j += i) composite[j] = 1;
    }
    return count;
}

static uint32_t crc32(const uint8_t *p, uint32_t n) {
    uint32_t crc = 0xffffffffu;
    while (n--) crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static uint32_t matmul(uint32_t seed) {
    for (int i = 0; i < MAT; i++)
        for (int j = 0; j < MAT; j++) {
            seed = seed * 1664525u + 1013904223u;
            a[i][j] = seed >> 16;
            b[i][j] = (seed >> 8) & 0xff;
        }
    for (int i = 0; i < MAT; i++)
        for (int j = 0; j < MAT; j++) {
            uint32_t s = 0;
            for (int k = 0; k < MAT; k++) s += a[i][k] * b[k][j];
            c[i][j] = s;
        }
    uint32_t h = 0;
    for (int i = 0; i < MAT; i++)
        for (int j = 0; j < MAT; j++) h = h * 31 + c[i][j] / (uint32_t)(j + 1);
    return h;
}

int main(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
    uint32_t acc = 0;
    for (int r = 0; r < ROUNDS; r++) {
        uint32_t primes = sieve();
        if (primes != 6542) return 1;
        acc ^= crc32(composite, SIEVE);
        acc += matmul((uint32_t)r);
    }
    /* Self-check: the value computed by the same C code compiled for the host
     * (all arithmetic is on uint32_t, so it is the same on any machine). */
#ifdef HOST
    /* bench/cpu/build.sh: the expected value for a ROUNDS of its choice. */
    printf("0x%08xu\n", acc);
    return 0;
#else
    volatile uint32_t expect = EXPECTED;
    return acc == expect ? 0 : 2;
#endif
}
