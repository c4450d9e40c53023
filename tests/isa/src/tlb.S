/*
 * tlb: translation cache maintenance.
 * After a PTE is changed (by M-mode, or by S-mode itself through the
 * identity map) and SFENCE.VMA is executed (global, by address, by address
 * and ASID), the new translation must be used: remapped to another page,
 * made invalid (page fault), made valid again, permissions reduced (store
 * fault). Writing satp with a different root (and a different ASID, or
 * followed by SFENCE.VMA when ASIDs are not implemented) switches
 * translations immediately; switching back restores the old view.
 * (Whether a stale translation is used *without* SFENCE is unspecified
 * and not tested.)
 */
#include "test.h"

#define VA_X        0x40000000
#define PTE_LEAF_RW  (PTE_V | PTE_R | PTE_W | PTE_A | PTE_D)
#define PTE_LEAF_RWX (PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D)

.macro PTE_SYM table, index, pa_sym, flags
        la      a0, \table
        li      a1, \index
        la      a2, \pa_sym
        li      a3, \flags
        call    set_pte
.endm
.macro PTE_ABS table, index, pa, flags
        la      a0, \table
        li      a1, \index
        li      a2, \pa
        li      a3, \flags
        call    set_pte
.endm

/* S-mode: s1 = *(VA_X + 8), via ecall back to M at `back` */
.macro LOAD_X_IN_S back
        RUN_IN_MODE PRV_S, .Lld\@, \back
.Lld\@:
        li      s0, VA_X
        ld      s1, 8(s0)
        ecall
.endm

/* satp = Sv39 | asid << 44 | root >> 12 */
.macro SATP root, asid
        la      t0, \root
        srli    t0, t0, 12
        li      t1, SATP_MODE_SV39 | (\asid << 44)
        or      t0, t0, t1
        csrw    satp, t0
.endm

test_main:
        /* root A: identity gigapage + VA_X -> pageA; root B: VA_X -> pageB */
        PTE_ABS rootA, 2, RAM_BASE, PTE_LEAF_RWX
        PTE_SYM rootA, 1, l1A, PTE_V
        PTE_SYM l1A, 0, l0A, PTE_V
        PTE_SYM l0A, 0, pageA, PTE_LEAF_RW
        PTE_ABS rootB, 2, RAM_BASE, PTE_LEAF_RWX
        PTE_SYM rootB, 1, l1B, PTE_V
        PTE_SYM l1B, 0, l0B, PTE_V
        PTE_SYM l0B, 0, pageB, PTE_LEAF_RW
        la      t0, pageA
        li      t1, 0xaaaa
        sd      t1, 8(t0)
        la      t0, pageB
        li      t1, 0xbbbb
        sd      t1, 8(t0)
        la      t0, pageC
        li      t1, 0xcccc
        sd      t1, 8(t0)

        SATP    rootA, 1
        sfence.vma
        LOAD_X_IN_S 1f
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 1
        CHECK_EQ s1, 0xaaaa, 2

        /* M-mode remaps VA_X to pageC, global sfence */
        PTE_SYM l0A, 0, pageC, PTE_LEAF_RW
        sfence.vma
        LOAD_X_IN_S 1f
1:      CHECK_EQ s1, 0xcccc, 3

        /* remap back to pageA, sfence by address */
        PTE_SYM l0A, 0, pageA, PTE_LEAF_RW
        li      t0, VA_X
        sfence.vma t0, zero
        LOAD_X_IN_S 1f
1:      CHECK_EQ s1, 0xaaaa, 4

        /* invalidate: now it faults */
        PTE_SYM l0A, 0, pageA, PTE_LEAF_RW & ~PTE_V
        li      t0, VA_X
        li      t1, 1
        sfence.vma t0, t1                   /* by address and ASID 1 */
        LOAD_X_IN_S 1f
1:      CHECK_CAUSE CAUSE_LOAD_PAGE_FAULT, 5
        CHECK_TVAL VA_X + 8, 6

        /* valid again */
        PTE_SYM l0A, 0, pageC, PTE_LEAF_RW
        sfence.vma
        LOAD_X_IN_S 1f
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 7
        CHECK_EQ s1, 0xcccc, 8

        /* write permission removed: store faults */
        RUN_IN_MODE PRV_S, .Lst1, 1f
.Lst1:
        li      s0, VA_X
        sd      zero, 16(s0)                /* fills the TLB with a writable entry */
        ecall
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 9
        PTE_SYM l0A, 0, pageC, PTE_V | PTE_R | PTE_A | PTE_D
        sfence.vma
        RUN_IN_MODE PRV_S, .Lst2, 1f
.Lst2:
        li      s0, VA_X
        sd      zero, 16(s0)
        FAIL(10)
1:      CHECK_CAUSE CAUSE_STORE_PAGE_FAULT, 11

        /* S-mode edits its own page table (via the identity map) + sfence */
        PTE_SYM l0A, 0, pageA, PTE_LEAF_RW
        sfence.vma
        la      s2, l0A                     /* PA == VA in the identity map */
        la      s3, pageB
        srli    s3, s3, 12
        slli    s3, s3, PTE_PPN_SHIFT
        ori     s3, s3, PTE_LEAF_RW
        RUN_IN_MODE PRV_S, .Lself, 1f
.Lself:
        li      s0, VA_X
        ld      s4, 8(s0)                   /* pageA (cached now) */
        sd      s3, 0(s2)                   /* PTE -> pageB */
        sfence.vma zero, zero
        ld      s1, 8(s0)
        ecall
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 12
        CHECK_EQ s4, 0xaaaa, 13
        CHECK_EQ s1, 0xbbbb, 14

        /* ---- switching satp ---- */
        PTE_SYM l0A, 0, pageA, PTE_LEAF_RW
        sfence.vma
        LOAD_X_IN_S 1f
1:      CHECK_EQ s1, 0xaaaa, 15             /* root A, ASID 1, cached */
        /* are ASIDs implemented? (satp.ASID is WARL) */
        SATP    rootB, 2
        csrr    t0, satp
        srli    t0, t0, 44
        li      t1, 0xffff
        and     t0, t0, t1
        bnez    t0, 2f
        sfence.vma                          /* no ASIDs: must flush */
2:      LOAD_X_IN_S 1f
1:      CHECK_EQ s1, 0xbbbb, 16             /* root B */
        SATP    rootA, 1
        csrr    t0, satp
        srli    t0, t0, 44
        bnez    t0, 2f
        sfence.vma
2:      LOAD_X_IN_S 1f
1:      CHECK_EQ s1, 0xaaaa, 17             /* back to root A */
        /* satp switch made from S-mode itself */
        la      s5, rootB
        srli    s5, s5, 12
        li      t0, SATP_MODE_SV39 | (2 << 44)
        or      s5, s5, t0
        la      s6, rootA
        srli    s6, s6, 12
        li      t0, SATP_MODE_SV39 | (1 << 44)
        or      s6, s6, t0
        RUN_IN_MODE PRV_S, .Lsw, 1f
.Lsw:
        li      s0, VA_X
        ld      s1, 8(s0)
        csrw    satp, s5
        sfence.vma
        ld      s2, 8(s0)
        csrw    satp, s6
        sfence.vma
        ld      s3, 8(s0)
        ecall
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 18
        CHECK_EQ s1, 0xaaaa, 19
        CHECK_EQ s2, 0xbbbb, 20
        CHECK_EQ s3, 0xaaaa, 21
        /* back to bare: VA_X is now just an unmapped physical address */
        csrw    satp, zero
        sfence.vma
        PASS

set_pte:
        srli    a2, a2, 12
        slli    a2, a2, PTE_PPN_SHIFT
        or      a2, a2, a3
        slli    a1, a1, 3
        add     a0, a0, a1
        sd      a2, 0(a0)
        ret

        .bss
        .balign 4096
rootA:  .space 4096
l1A:    .space 4096
l0A:    .space 4096
rootB:  .space 4096
l1B:    .space 4096
l0B:    .space 4096
pageA:  .space 4096
pageB:  .space 4096
pageC:  .space 4096
