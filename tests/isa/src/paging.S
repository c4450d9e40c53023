/*
 * paging: Sv39 and Sv48 address translation.
 * Page tables are built in M-mode; tests run in S-mode (and U-mode) with
 * satp set. Translated loads/stores through 4 KiB pages, a 2 MiB megapage
 * and 1 GiB gigapages. Page faults (12 fetch, 13 load, 15 store) with
 * mtval = faulting VA (and mepc = VA for fetch) for: invalid PTE, missing R
 * (X-only page) on load, missing W on store, missing X on fetch, reserved
 * W-without-R encoding, non-leaf PTE at level 0, misaligned megapage and
 * gigapage, non-canonical Sv39 address; U page from S without SUM (fault)
 * and with SUM (ok), fetch from a U page in S (always faults), S page from
 * U (fault); MXR makes X-only pages readable. Hardware A/D update (load sets
 * A, store sets A and D; checked in the PTE from M-mode) -- a page fault is
 * also accepted (software-managed A/D). MPRV with MPP=S makes M-mode loads
 * and stores translate, MPP=U applies U permissions. Sv48 (satp mode 9)
 * 4-level walk, including a VA only reachable through the top level.
 */
#include "test.h"

#define VA_BASE     0x40000000              /* pt_l0[i] maps VA_BASE + i*4K */
#define VA_PAGE(i)  (VA_BASE + (i) * 0x1000)
#define VA_MEGA     0x40200000              /* pt_l1[1]: 2 MiB -> PA_MEGA */
#define VA_MEGA_BAD 0x40400000              /* pt_l1[2]: misaligned megapage */
#define VA_NONLEAF  0x40600000              /* pt_l1[3] -> table with pointer at level 0 */
#define PA_MEGA     0x80200000
#define VA_GIGA     0xc0000000              /* root[3]: 1 GiB -> RAM_BASE */
#define VA_UALIAS   0x100000000             /* root[4]: 1 GiB U alias of RAM */
#define UALIAS_OFF  (VA_UALIAS - RAM_BASE)
#define VA_GIGA_BAD 0x140000000             /* root[5]: misaligned gigapage */
#define VA_SV48     0x8000000000            /* Sv48 only: root48[1] -> l2b[0] */

#define PTE_LEAF_RW  (PTE_V | PTE_R | PTE_W | PTE_A | PTE_D)
#define PTE_LEAF_RWX (PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D)

/* table[index] = PTE(pa, flags); pa is a symbol or constant */
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

/* satp = mode | root >> 12; flush */
.macro SET_SATP mode, root
        la      t0, \root
        srli    t0, t0, 12
        li      t1, \mode
        or      t0, t0, t1
        csrw    satp, t0
        sfence.vma
.endm

/* recorded trap: cause c, mtval tv */
.macro CHECK_PF c, tv, n
        CHECK_CAUSE \c, \n
        CHECK_TVAL \tv, (\n + 1)
.endm

/* Run the S-mode snippet at label (ends with ecall) */
.macro IN_S label, back
        RUN_IN_MODE PRV_S, \label, \back
.endm

/* Enter U-mode at the U alias (VA = PA + UALIAS_OFF) of label */
.macro IN_U label, back
        EXPECT_TRAP \back
        li      t6, MSTATUS_MPP
        csrc    mstatus, t6
        la      t6, \label
        li      t5, UALIAS_OFF
        add     t6, t6, t5
        csrw    mepc, t6
        mret
.endm

test_main:
        /* ---- build the tables ---- */
        PTE_SYM pt_root, 1, pt_l1, PTE_V
        PTE_ABS pt_root, 2, RAM_BASE, PTE_LEAF_RWX            /* identity, S */
        PTE_ABS pt_root, 3, RAM_BASE, PTE_LEAF_RW             /* VA_GIGA */
        PTE_ABS pt_root, 4, RAM_BASE, PTE_LEAF_RWX | PTE_U    /* VA_UALIAS */
        PTE_ABS pt_root, 5, PA_MEGA, PTE_LEAF_RW              /* misaligned */
        PTE_SYM pt_l1, 0, pt_l0, PTE_V
        PTE_ABS pt_l1, 1, PA_MEGA, PTE_LEAF_RW
        PTE_ABS pt_l1, 2, PA_MEGA + 0x1000, PTE_LEAF_RW       /* misaligned */
        PTE_SYM pt_l1, 3, pt_l0b, PTE_V
        PTE_SYM pt_l0b, 0, pt_l0, PTE_V                       /* pointer at level 0 */
        PTE_SYM pt_l0, 0, page0, PTE_LEAF_RW
        PTE_SYM pt_l0, 1, page1, PTE_LEAF_RW & ~PTE_V         /* invalid */
        PTE_SYM pt_l0, 2, page1, PTE_V | PTE_X | PTE_A | PTE_D        /* X only */
        PTE_SYM pt_l0, 3, page1, PTE_V | PTE_R | PTE_A | PTE_D        /* R only */
        PTE_SYM pt_l0, 4, page1, PTE_LEAF_RW                          /* no X */
        PTE_SYM pt_l0, 5, page2, PTE_LEAF_RW | PTE_U
        PTE_SYM pt_l0, 6, page2, PTE_LEAF_RWX | PTE_U
        PTE_SYM pt_l0, 7, page3, PTE_V | PTE_R | PTE_W                /* A=D=0 */
        PTE_SYM pt_l0, 8, page3, PTE_V | PTE_W | PTE_A | PTE_D        /* reserved */
        PTE_SYM pt_l0, 9, page3, PTE_V | PTE_R | PTE_W | PTE_X | PTE_A /* D=0 */

        /* page contents (physical) */
        la      t0, page0
        li      t1, 0x1111222233334444
        sd      t1, 0(t0)
        la      t0, page1
        li      t1, 0x5555666677778888
        sd      t1, 8(t0)
        la      t0, page2
        li      t1, 0x0123456789abcdef
        sd      t1, 16(t0)
        li      t0, PA_MEGA + 0x100000
        li      t1, 0x4d454741              /* "MEGA" */
        sd      t1, 0x238(t0)
        la      t0, gdata
        li      t1, 0x6769676170616765      /* "gigapage" */
        sd      t1, 0(t0)

        SET_SATP SATP_MODE_SV39, pt_root
        csrr    t0, satp
        srli    t0, t0, 60
        CHECK_EQ t0, 8, 1

        /* ---- translated accesses in S-mode ---- */
        IN_S    .Ls_basic, 1f
.Ls_basic:
        li      s0, VA_PAGE(0)
        ld      s1, 0(s0)                   /* 4 KiB page */
        li      t0, 0xaaaabbbbccccdddd
        sd      t0, 24(s0)
        li      s0, VA_MEGA + 0x100000
        ld      s2, 0x238(s0)               /* megapage */
        li      s0, VA_MEGA + 0x1ff800
        li      t0, 0x1234
        sw      t0, 0x7fc(s0)               /* last word of the megapage */
        la      t0, gdata
        li      t1, RAM_BASE
        sub     t0, t0, t1
        li      t1, VA_GIGA
        add     s0, t0, t1
        ld      s3, 0(s0)                   /* gigapage alias of gdata */
        li      t0, 77
        sd      t0, 8(s0)
        li      s0, VA_PAGE(3)
        ld      s4, 8(s0)                   /* R-only page read is fine */
        ecall
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 3
        CHECK_EQ s1, 0x1111222233334444, 4
        CHECK_EQ s2, 0x4d454741, 5
        CHECK_EQ s3, 0x6769676170616765, 6
        CHECK_EQ s4, 0x5555666677778888, 7
        la      t0, page0
        ld      t1, 24(t0)
        CHECK_EQ t1, 0xaaaabbbbccccdddd, 8
        li      t0, PA_MEGA + 0x1ff800
        lw      t1, 0x7fc(t0)
        CHECK_EQ t1, 0x1234, 9
        la      t0, gdata
        ld      t1, 8(t0)
        CHECK_EQ t1, 77, 10

        /* ---- page faults ---- */
        IN_S    .Lpf_inv_ld, 1f
.Lpf_inv_ld:
        li      s0, VA_PAGE(1) + 8
.Lpf_inv_ld_insn:
        ld      a0, 0(s0)
        FAIL(11)
1:      CHECK_PF CAUSE_LOAD_PAGE_FAULT, VA_PAGE(1) + 8, 12
        CHECK_EPC .Lpf_inv_ld_insn, 14

        IN_S    .Lpf_inv_st, 1f
.Lpf_inv_st:
        li      s0, VA_PAGE(1) + 0x10
        sd      zero, 0(s0)
        FAIL(15)
1:      CHECK_PF CAUSE_STORE_PAGE_FAULT, VA_PAGE(1) + 0x10, 16

        IN_S    .Lpf_inv_x, 1f
.Lpf_inv_x:
        li      s0, VA_PAGE(1) + 0x20
        jalr    s0
        FAIL(18)
1:      CHECK_PF CAUSE_FETCH_PAGE_FAULT, VA_PAGE(1) + 0x20, 19
        CHECK_MEM trap_epc, VA_PAGE(1) + 0x20, 21

        IN_S    .Lpf_noR, 1f                /* X-only page: load faults */
.Lpf_noR:
        li      s0, VA_PAGE(2)
        ld      a0, 8(s0)
        FAIL(22)
1:      CHECK_PF CAUSE_LOAD_PAGE_FAULT, VA_PAGE(2) + 8, 23

        li      t0, MSTATUS_MXR             /* MXR: X-only becomes readable */
        csrs    mstatus, t0
        IN_S    .Lmxr, 1f
.Lmxr:
        li      s0, VA_PAGE(2)
        ld      s1, 8(s0)
        ecall
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 25
        CHECK_EQ s1, 0x5555666677778888, 26
        IN_S    .Lmxr_st, 1f                /* ... but not writable */
.Lmxr_st:
        li      s0, VA_PAGE(2)
        sd      zero, 0(s0)
        FAIL(27)
1:      CHECK_PF CAUSE_STORE_PAGE_FAULT, VA_PAGE(2), 28
        li      t0, MSTATUS_MXR
        csrc    mstatus, t0

        IN_S    .Lpf_noW, 1f                /* R-only page: store faults */
.Lpf_noW:
        li      s0, VA_PAGE(3)
        sw      zero, 4(s0)
        FAIL(30)
1:      CHECK_PF CAUSE_STORE_PAGE_FAULT, VA_PAGE(3) + 4, 31
        la      t0, page1
        ld      t1, 0(t0)
        CHECK_EQ t1, 0, 33                  /* nothing written */

        IN_S    .Lpf_noX, 1f                /* RW page: fetch faults */
.Lpf_noX:
        li      s0, VA_PAGE(4) + 0x40
        jalr    s0
        FAIL(34)
1:      CHECK_PF CAUSE_FETCH_PAGE_FAULT, VA_PAGE(4) + 0x40, 35
        CHECK_MEM trap_epc, VA_PAGE(4) + 0x40, 37

        IN_S    .Lpf_wnr, 1f                /* W without R is reserved */
.Lpf_wnr:
        li      s0, VA_PAGE(8)
        ld      a0, 0(s0)
        FAIL(38)
1:      CHECK_PF CAUSE_LOAD_PAGE_FAULT, VA_PAGE(8), 39
        IN_S    .Lpf_wnr2, 1f
.Lpf_wnr2:
        li      s0, VA_PAGE(8)
        sd      a0, 0(s0)
        FAIL(41)
1:      CHECK_PF CAUSE_STORE_PAGE_FAULT, VA_PAGE(8), 42

        IN_S    .Lpf_nonleaf, 1f            /* pointer PTE at level 0 */
.Lpf_nonleaf:
        li      s0, VA_NONLEAF + 0x18
        ld      a0, 0(s0)
        FAIL(44)
1:      CHECK_PF CAUSE_LOAD_PAGE_FAULT, VA_NONLEAF + 0x18, 45

        IN_S    .Lpf_mega, 1f               /* misaligned megapage */
.Lpf_mega:
        li      s0, VA_MEGA_BAD + 0x28
        ld      a0, 0(s0)
        FAIL(47)
1:      CHECK_PF CAUSE_LOAD_PAGE_FAULT, VA_MEGA_BAD + 0x28, 48

        IN_S    .Lpf_giga, 1f               /* misaligned gigapage */
.Lpf_giga:
        li      s0, VA_GIGA_BAD + 0x30
        sd      a0, 0(s0)
        FAIL(50)
1:      CHECK_PF CAUSE_STORE_PAGE_FAULT, VA_GIGA_BAD + 0x30, 51

        IN_S    .Lpf_noncanon, 1f           /* bits 63:39 != bit 38 */
.Lpf_noncanon:
        li      s0, VA_SV48
        ld      a0, 0(s0)
        FAIL(53)
1:      CHECK_PF CAUSE_LOAD_PAGE_FAULT, VA_SV48, 54

        /* ---- U pages from S: SUM ---- */
        IN_S    .Lsum0, 1f
.Lsum0:
        li      s0, VA_PAGE(5)
        ld      a0, 16(s0)
        FAIL(56)
1:      CHECK_PF CAUSE_LOAD_PAGE_FAULT, VA_PAGE(5) + 16, 57
        li      t0, MSTATUS_SUM
        csrs    mstatus, t0
        IN_S    .Lsum1, 1f
.Lsum1:
        li      s0, VA_PAGE(5)
        ld      s1, 16(s0)
        sd      s1, 24(s0)
        ecall
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 59
        CHECK_EQ s1, 0x0123456789abcdef, 60
        IN_S    .Lsum_x, 1f                 /* S never executes U pages */
.Lsum_x:
        li      s0, VA_PAGE(6)
        jalr    s0
        FAIL(61)
1:      CHECK_PF CAUSE_FETCH_PAGE_FAULT, VA_PAGE(6), 62
        li      t0, MSTATUS_SUM
        csrc    mstatus, t0

        /* ---- U-mode: runs from the U alias; S pages are off limits ---- */
        IN_U    .Lu_ok, 1f
.Lu_ok:
        li      s0, VA_PAGE(5)
        ld      s1, 16(s0)                  /* U page: fine */
        ecall
1:      CHECK_CAUSE CAUSE_USER_ECALL, 64
        CHECK_EQ s1, 0x0123456789abcdef, 65
        IN_U    .Lu_spage, 1f
.Lu_spage:
        li      s0, VA_PAGE(0)
        ld      a0, 0(s0)
        FAIL(66)
1:      CHECK_PF CAUSE_LOAD_PAGE_FAULT, VA_PAGE(0), 67
        li      t0, MSTATUS_SUM             /* SUM does not matter for U */
        csrs    mstatus, t0
        IN_U    .Lu_spage_st, 1f
.Lu_spage_st:
        li      s0, VA_PAGE(0)
        sd      a0, 8(s0)
        FAIL(69)
1:      CHECK_PF CAUSE_STORE_PAGE_FAULT, VA_PAGE(0) + 8, 70
        li      t0, MSTATUS_SUM
        csrc    mstatus, t0
        IN_U    .Lu_sfetch, 1f              /* jump into the S-only identity map */
.Lu_sfetch:
        la      s0, .Lu_target              /* pc-relative: U alias */
        li      t0, UALIAS_OFF
        sub     s0, s0, t0                  /* identity (S-only) address */
        jalr    s0
.Lu_target:
        FAIL(72)
1:      CHECK_CAUSE CAUSE_FETCH_PAGE_FAULT, 73
        la      t0, .Lu_target
        CHECK_MEM_REG trap_tval, t0, 74

        /* ---- hardware A/D update (or page fault) ---- */
        IN_S    .Lad_ld, 1f
.Lad_ld:
        li      s0, VA_PAGE(7)
        ld      a0, 0(s0)
        ecall
1:      la      t0, trap_cause
        ld      t0, 0(t0)
        li      t1, CAUSE_LOAD_PAGE_FAULT
        beq     t0, t1, .Lad_soft_ld
        CHECK_EQ t0, CAUSE_SUPERVISOR_ECALL, 75
        la      t0, pt_l0
        ld      t1, 7*8(t0)
        andi    t2, t1, PTE_A
        CHECK_EQ t2, PTE_A, 76              /* load set A */
        andi    t2, t1, PTE_D
        CHECK_EQ t2, 0, 77                  /* but not D */
        j       2f
.Lad_soft_ld:
        CHECK_TVAL VA_PAGE(7), 78
2:
        sfence.vma
        IN_S    .Lad_st, 1f
.Lad_st:
        li      s0, VA_PAGE(7)
        sd      s0, 0(s0)
        ecall
1:      la      t0, trap_cause
        ld      t0, 0(t0)
        li      t1, CAUSE_STORE_PAGE_FAULT
        beq     t0, t1, .Lad_soft_st
        CHECK_EQ t0, CAUSE_SUPERVISOR_ECALL, 79
        la      t0, pt_l0
        ld      t1, 7*8(t0)
        andi    t2, t1, PTE_A | PTE_D
        CHECK_EQ t2, PTE_A | PTE_D, 80      /* store set A and D */
        la      t0, page3
        ld      t1, 0(t0)
        CHECK_EQ t1, VA_PAGE(7), 81
        j       2f
.Lad_soft_st:
        CHECK_TVAL VA_PAGE(7), 82
2:
        sfence.vma
        IN_S    .Lad_st2, 1f                /* A=1, D=0: store sets D */
.Lad_st2:
        li      s0, VA_PAGE(9)
        sw      zero, 8(s0)
        ecall
1:      la      t0, trap_cause
        ld      t0, 0(t0)
        li      t1, CAUSE_STORE_PAGE_FAULT
        beq     t0, t1, .Lad_soft_st2
        CHECK_EQ t0, CAUSE_SUPERVISOR_ECALL, 83
        la      t0, pt_l0
        ld      t1, 9*8(t0)
        andi    t2, t1, PTE_D
        CHECK_EQ t2, PTE_D, 84
        j       2f
.Lad_soft_st2:
        CHECK_TVAL VA_PAGE(9) + 8, 85
2:
        sfence.vma

        /* ---- MPRV: M-mode loads/stores translated with MPP's privilege ---- */
        li      t0, MSTATUS_MPP
        csrc    mstatus, t0
        li      t0, (PRV_S << 11)
        csrs    mstatus, t0
        li      s0, VA_PAGE(0)
        li      t0, MSTATUS_MPRV
        csrs    mstatus, t0
        ld      s1, 0(s0)                   /* translated: page0 */
        li      t1, 0x5a5a
        sd      t1, 32(s0)
        csrc    mstatus, t0
        CHECK_EQ s1, 0x1111222233334444, 86
        la      t0, page0
        ld      t1, 32(t0)
        CHECK_EQ t1, 0x5a5a, 87
        /* MPRV + MPP=U: S page faults (arm the trap before enabling MPRV) */
        EXPECT_TRAP 1f
        li      t0, MSTATUS_MPP
        csrc    mstatus, t0                 /* MPP = U */
        li      t0, MSTATUS_MPRV
        csrs    mstatus, t0
        ld      a0, 0(s0)
        li      t0, MSTATUS_MPRV
        csrc    mstatus, t0
        FAIL(88)
1:      li      t0, MSTATUS_MPRV
        csrc    mstatus, t0
        CHECK_PF CAUSE_LOAD_PAGE_FAULT, VA_PAGE(0), 89
        /* instruction fetch is not affected by MPRV (M code is not mapped
         * at its PA for U, yet M keeps running) */
        li      t0, MSTATUS_MPP
        csrc    mstatus, t0
        li      t0, MSTATUS_MPRV
        csrs    mstatus, t0
        nop
        csrc    mstatus, t0

        /* ---- Sv48 ---- */
        PTE_SYM pt_root48, 0, pt_root, PTE_V        /* VPN3=0: the Sv39 tree */
        PTE_SYM pt_root48, 1, pt_l2b, PTE_V
        PTE_ABS pt_l2b, 0, RAM_BASE, PTE_LEAF_RW    /* VA_SV48 -> RAM_BASE */
        SET_SATP SATP_MODE_SV48, pt_root48
        csrr    t0, satp
        srli    t0, t0, 60
        CHECK_EQ t0, 9, 91                  /* Sv48 must be supported */
        IN_S    .Lsv48, 1f
.Lsv48:
        li      s0, VA_PAGE(0)
        ld      s1, 0(s0)                   /* 4-level walk, 4 KiB leaf */
        la      t0, gdata
        li      t1, RAM_BASE
        sub     t0, t0, t1
        li      t1, VA_SV48
        add     s0, t0, t1
        ld      s2, 0(s0)                   /* only reachable in Sv48 */
        li      s0, VA_MEGA + 0x100000
        ld      s3, 0x238(s0)
        ecall
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 92
        CHECK_EQ s1, 0x1111222233334444, 93
        CHECK_EQ s2, 0x6769676170616765, 94
        CHECK_EQ s3, 0x4d454741, 95
        IN_S    .Lsv48_pf, 1f
.Lsv48_pf:
        li      s0, VA_PAGE(1) + 0x48
        ld      a0, 0(s0)
        FAIL(96)
1:      CHECK_PF CAUSE_LOAD_PAGE_FAULT, VA_PAGE(1) + 0x48, 97
        IN_S    .Lsv48_noncanon, 1f         /* bits 63:48 must equal bit 47 */
.Lsv48_noncanon:
        li      s0, 0x0001000000000000
        ld      a0, 0(s0)
        FAIL(99)
1:      CHECK_PF CAUSE_LOAD_PAGE_FAULT, 0x0001000000000000, 100

        csrw    satp, zero
        sfence.vma
        PASS

/* set_pte(a0 = table, a1 = index, a2 = pa, a3 = flags) */
set_pte:
        srli    a2, a2, 12
        slli    a2, a2, PTE_PPN_SHIFT
        or      a2, a2, a3
        slli    a1, a1, 3
        add     a0, a0, a1
        sd      a2, 0(a0)
        ret

        .data
        .balign 8
gdata:  .dword 0, 0

        .bss
        .balign 4096
pt_root:   .space 4096
pt_l1:     .space 4096
pt_l0:     .space 4096
pt_l0b:    .space 4096
pt_root48: .space 4096
pt_l2b:    .space 4096
page0:     .space 4096
page1:     .space 4096
page2:     .space 4096
page3:     .space 4096
