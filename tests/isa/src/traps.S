/*
 * traps: exceptions, trap return and delegation.
 * ECALL from M/S/U (causes 11/9/8, mepc = ecall), EBREAK (3, mepc), illegal
 * instructions (2, mtval = insn bits or 0) incl. MRET from S, SRET from U,
 * M CSR from U; MRET restores MIE from MPIE, sets MPIE=1 and MPP=U, clears
 * MPRV when leaving M; SRET returns to SPP with SIE=SPIE, SPIE=1, SPP=U;
 * medeleg delegation (U ecall and U illegal insn go to S via stvec with
 * scause/sepc/stval/SPP/SPIE; M-mode traps are never delegated); mideleg
 * delegation of the supervisor software interrupt (taken in S when SIE=1,
 * not taken in S when SIE=0, always taken from U); TSR (SRET in S traps),
 * TW (WFI in S and U traps), TVM (sfence.vma and satp access in S trap);
 * JALR clears bit 0; load/store/fetch access faults (5/7/1) on unmapped
 * physical addresses with mtval = address; mtvec vectored mode for
 * exceptions uses the base address.
 */
#include "test.h"

.macro CHECK_STATUS_BIT sym, mask, want, n
        la      t5, \sym
        ld      t5, 0(t5)
        li      t6, \mask
        and     t5, t5, t6
        .if \want
        CHECK_EQ t5, \mask, \n
        .else
        CHECK_EQ t5, 0, \n
        .endif
.endm

test_main:
        USE_STRAP
        /* ---- ECALL from M ---- */
        EXPECT_TRAP 1f
.Lecall_m:
        ecall
        FAIL(1)
1:      CHECK_CAUSE CAUSE_MACHINE_ECALL, 2
        CHECK_EPC .Lecall_m, 3
        CHECK_TVAL 0, 4

        /* ---- ECALL from S / U ---- */
        RUN_IN_MODE PRV_S, .Lecall_s, 1f
.Lecall_s:
        ecall
        FAIL(5)
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 6
        CHECK_EPC .Lecall_s, 7
        RUN_IN_MODE PRV_U, .Lecall_u, 1f
.Lecall_u:
        ecall
        FAIL(8)
1:      CHECK_CAUSE CAUSE_USER_ECALL, 9
        CHECK_EPC .Lecall_u, 10
        /* the trap came from S: MPP recorded S (checked via trap_status) */
        RUN_IN_MODE PRV_S, .Lmpp_s, 1f
.Lmpp_s:
        ecall
1:      la      t0, trap_status
        ld      t0, 0(t0)
        srli    t0, t0, 11
        andi    t0, t0, 3
        CHECK_EQ t0, PRV_S, 11

        /* ---- EBREAK ---- */
        EXPECT_TRAP 1f
.Lebreak:
        ebreak
        FAIL(12)
1:      CHECK_CAUSE CAUSE_BREAKPOINT, 13
        CHECK_EPC .Lebreak, 14
        RUN_IN_MODE PRV_U, .Lebreak_u, 1f
.Lebreak_u:
        ebreak
        FAIL(15)
1:      CHECK_CAUSE CAUSE_BREAKPOINT, 16
        CHECK_EPC .Lebreak_u, 17

        /* ---- illegal instructions ---- */
        EXPECT_TRAP 1f
.Lill0:
        .word   0x00000000                  /* all-zero is defined illegal */
        FAIL(18)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 19
        CHECK_EPC .Lill0, 20
        CHECK_TVAL 0, 21
        EXPECT_TRAP 1f
.Lill1:
        .word   0x0000007b                  /* custom-3 opcode */
        FAIL(22)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 23
        CHECK_EPC .Lill1, 24
        CHECK_TVAL_INSN 25
        RUN_IN_MODE PRV_S, .Lmret_s, 1f
.Lmret_s:
        mret                                /* MRET below M */
        FAIL(26)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 27
        CHECK_EPC .Lmret_s, 28
        CHECK_TVAL_INSN 29
        RUN_IN_MODE PRV_U, .Lsret_u, 1f
.Lsret_u:
        sret                                /* SRET in U */
        FAIL(30)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 31
        CHECK_TVAL_INSN 32
        RUN_IN_MODE PRV_U, .Lcsr_u, 1f
.Lcsr_u:
        csrr    a0, mstatus
        FAIL(33)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 34
        CHECK_EPC .Lcsr_u, 35
        CHECK_TVAL_INSN 36

        /* ---- MRET semantics ---- */
        /* MPP=M, MPIE=1, MIE=0: after mret MIE=1, MPIE=1, MPP=U (least) */
        li      t0, MSTATUS_MPP
        csrs    mstatus, t0
        li      t0, MSTATUS_MPIE
        csrs    mstatus, t0
        li      t0, MSTATUS_MIE
        csrc    mstatus, t0
        la      t0, 1f
        csrw    mepc, t0
        mret
        FAIL(37)
1:      csrr    s0, mstatus
        li      t0, MSTATUS_MIE
        csrc    mstatus, t0
        andi    t1, s0, MSTATUS_MIE
        CHECK_EQ t1, MSTATUS_MIE, 38
        andi    t1, s0, MSTATUS_MPIE
        CHECK_EQ t1, MSTATUS_MPIE, 39
        li      t0, MSTATUS_MPP
        and     t1, s0, t0
        CHECK_EQ t1, 0, 40
        /* MPIE=0: after mret MIE=0 and MPIE=1 */
        li      t0, MSTATUS_MPP
        csrs    mstatus, t0
        li      t0, MSTATUS_MPIE | MSTATUS_MIE
        csrc    mstatus, t0
        la      t0, 1f
        csrw    mepc, t0
        mret
1:      csrr    s0, mstatus
        andi    t1, s0, MSTATUS_MIE | MSTATUS_MPIE
        CHECK_EQ t1, MSTATUS_MPIE, 41
        /* MRET to S: MPRV is cleared; MIE in S restored from MPIE */
        li      t0, MSTATUS_MPRV | MSTATUS_MPIE
        csrs    mstatus, t0
        RUN_IN_MODE PRV_S, .Lmprv_s, 1f
.Lmprv_s:
        ecall
1:
#ifndef QEMU_QUIRKS
        /* priv 1.12: MRET to a mode below M clears MPRV; QEMU 7.2 keeps it */
        CHECK_STATUS_BIT trap_status, MSTATUS_MPRV, 0, 42
#endif
        li      t0, MSTATUS_MPRV
        csrc    mstatus, t0
        CHECK_STATUS_BIT trap_status, MSTATUS_MPIE, 1, 43   /* MIE was 1 in S */
        li      t0, MSTATUS_MPIE
        csrc    mstatus, t0

        /* ---- SRET semantics ---- */
        /* in S: SPP=U, SPIE=1, SIE=0 -> sret to U: SIE=1, SPIE=1, SPP=U */
        RUN_IN_MODE PRV_S, .Lsret_s, 1f
.Lsret_s:
        li      t0, MSTATUS_SPP | MSTATUS_SIE
        csrc    sstatus, t0
        li      t0, MSTATUS_SPIE
        csrs    sstatus, t0
        la      t0, .Lsret_to_u
        csrw    sepc, t0
        sret
        FAIL(44)
.Lsret_to_u:
        ecall                               /* from U: cause 8 */
1:      CHECK_CAUSE CAUSE_USER_ECALL, 45
        CHECK_EPC .Lsret_to_u, 46
        CHECK_STATUS_BIT trap_status, MSTATUS_SIE, 1, 47
        CHECK_STATUS_BIT trap_status, MSTATUS_SPIE, 1, 48
        CHECK_STATUS_BIT trap_status, MSTATUS_SPP, 0, 49
        li      t0, MSTATUS_SIE
        csrc    mstatus, t0
        /* SPP=S, SPIE=0: sret stays in S with SIE=0, SPIE=1, SPP=U */
        RUN_IN_MODE PRV_S, .Lsret_s2, 1f
.Lsret_s2:
        li      t0, MSTATUS_SPP
        csrs    sstatus, t0
        li      t0, MSTATUS_SPIE | MSTATUS_SIE
        csrc    sstatus, t0
        la      t0, .Lsret_to_s
        csrw    sepc, t0
        sret
        FAIL(50)
.Lsret_to_s:
        csrr    s1, sstatus
        ecall                               /* from S: cause 9 */
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 51
        andi    t1, s1, MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP
        CHECK_EQ t1, MSTATUS_SPIE, 52

        /* ---- medeleg: U ecall and U illegal insn handled in S ---- */
        li      t0, (1 << CAUSE_USER_ECALL) | (1 << CAUSE_ILLEGAL_INSN) | (1 << CAUSE_BREAKPOINT)
        csrw    medeleg, t0
        SET_MEM strap_count, 0
        li      t0, MSTATUS_SIE
        csrs    mstatus, t0                 /* SIE=1 while in U: becomes SPIE */
        RUN_IN_MODE PRV_U, .Ldeleg_u, 1f
.Ldeleg_u:
        ecall
        FAIL(53)
1:      CHECK_MEM strap_count, 1, 54
        CHECK_MEM strap_cause, CAUSE_USER_ECALL, 55
        CHECK_MEM_ADDR strap_epc, .Ldeleg_u, 56
        CHECK_STATUS_BIT strap_status, MSTATUS_SPP, 0, 57
        CHECK_STATUS_BIT strap_status, MSTATUS_SPIE, 1, 58
        CHECK_STATUS_BIT strap_status, MSTATUS_SIE, 0, 59
        CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 60   /* S handler's ecall went to M */
        li      t0, MSTATUS_SIE
        csrc    mstatus, t0
        RUN_IN_MODE PRV_U, .Ldeleg_ill, 1f
.Ldeleg_ill:
        .word   0x0000007b
        FAIL(61)
1:      CHECK_MEM strap_count, 2, 62
        CHECK_MEM strap_cause, CAUSE_ILLEGAL_INSN, 63
        CHECK_MEM_ADDR strap_epc, .Ldeleg_ill, 64
        la      t0, strap_tval
        ld      t0, 0(t0)
        beqz    t0, 2f
        CHECK_EQ t0, 0x0000007b, 65
2:
        /* delegated exceptions raised in M-mode still go to M */
        EXPECT_TRAP 1f
.Lebreak_m2:
        ebreak
        FAIL(66)
1:      CHECK_CAUSE CAUSE_BREAKPOINT, 67
        CHECK_MEM strap_count, 2, 68
        /* ... and ecall from S (not delegated) goes to M */
        RUN_IN_MODE PRV_S, .Lecall_s2, 1f
.Lecall_s2:
        ecall
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 69
        CHECK_MEM strap_count, 2, 70
        csrw    medeleg, zero

        /* ---- mideleg: supervisor software interrupt ---- */
        li      t0, MIP_SSIP
        csrw    mideleg, t0
        csrs    mie, t0
        SET_MEM strap_count, 0
        /* S-mode with SIE=1 sets its own SSIP: taken in S */
        RUN_IN_MODE PRV_S, .Lssi_s, 1f
.Lssi_s:
        li      t0, MSTATUS_SIE
        csrs    sstatus, t0
        li      t0, MIP_SSIP
        csrs    sip, t0
        nop
        nop
        nop
        nop
        ecall                               /* only if the interrupt was not taken */
1:      CHECK_MEM strap_count, 1, 71
        CHECK_MEM strap_cause, (CAUSE_INTR | IRQ_SSI), 72
        CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 73
        csrr    t0, mip
        andi    t0, t0, MIP_SSIP
        CHECK_EQ t0, MIP_SSIP, 74           /* still pending: handler didn't clear it */
        /* S-mode with SIE=0: pending but not taken */
        RUN_IN_MODE PRV_S, .Lssi_s_off, 1f
.Lssi_s_off:
        li      t0, MSTATUS_SIE
        csrc    sstatus, t0
        nop
        nop
        ecall
1:      CHECK_MEM strap_count, 1, 75
        CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 76
        /* U-mode: taken even though SIE=0 */
        li      t0, MSTATUS_SIE
        csrc    mstatus, t0
        RUN_IN_MODE PRV_U, .Lssi_u, 1f
.Lssi_u:
        nop
        nop
        ecall
1:      CHECK_MEM strap_count, 2, 77
        CHECK_MEM strap_cause, (CAUSE_INTR | IRQ_SSI), 78
        CHECK_STATUS_BIT strap_status, MSTATUS_SPP, 0, 79
        /* M-mode never takes a delegated S interrupt */
        li      t0, MSTATUS_MIE
        csrs    mstatus, t0
        nop
        nop
        csrc    mstatus, t0
        li      t0, MIP_SSIP
        csrc    mip, t0
        csrc    mie, t0
        csrw    mideleg, zero

        /* ---- TSR / TW / TVM ---- */
        li      t0, MSTATUS_TSR
        csrs    mstatus, t0
        RUN_IN_MODE PRV_S, .Ltsr, 1f
.Ltsr:
        sret
        FAIL(80)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 81
        CHECK_EPC .Ltsr, 82
        CHECK_TVAL_INSN 83
        li      t0, MSTATUS_TSR
        csrc    mstatus, t0

        li      t0, MSTATUS_TW
        csrs    mstatus, t0
        RUN_IN_MODE PRV_S, .Ltw_s, 1f
.Ltw_s:
        wfi
        FAIL(84)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 85
        CHECK_EPC .Ltw_s, 86
        RUN_IN_MODE PRV_U, .Ltw_u, 1f
.Ltw_u:
        wfi
        FAIL(87)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 88
        CHECK_EPC .Ltw_u, 89
        li      t0, MSTATUS_TW
        csrc    mstatus, t0

        li      t0, MSTATUS_TVM
        csrs    mstatus, t0
        RUN_IN_MODE PRV_S, .Ltvm1, 1f
.Ltvm1:
        sfence.vma
        FAIL(90)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 91
        CHECK_EPC .Ltvm1, 92
        RUN_IN_MODE PRV_S, .Ltvm2, 1f
.Ltvm2:
        csrr    a0, satp
        FAIL(93)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 94
        CHECK_EPC .Ltvm2, 95
        RUN_IN_MODE PRV_S, .Ltvm3, 1f
.Ltvm3:
        csrw    satp, zero
        FAIL(96)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 97
        CHECK_TVAL_INSN 98
        li      t0, MSTATUS_TVM
        csrc    mstatus, t0
        /* TVM=0: the same instructions are fine in S */
        RUN_IN_MODE PRV_S, .Ltvm_ok, 1f
.Ltvm_ok:
        sfence.vma
        csrr    a0, satp
        csrw    satp, zero
        ecall
1:      CHECK_CAUSE CAUSE_SUPERVISOR_ECALL, 99
        /* sfence.vma from U is always illegal */
        RUN_IN_MODE PRV_U, .Lsfence_u, 1f
.Lsfence_u:
        sfence.vma
        FAIL(100)
1:      CHECK_CAUSE CAUSE_ILLEGAL_INSN, 101

        /* ---- JALR clears bit 0 (no misaligned-fetch trap) ---- */
        la      t0, .Ljalr_tgt
        addi    t0, t0, 1
        jalr    ra, 0(t0)
        FAIL(102)
.Ljalr_tgt:

        /* ---- access faults on unmapped physical addresses ---- */
        li      s0, 0
        EXPECT_TRAP 1f
.Lld0:
        ld      a0, 0(s0)
        FAIL(103)
1:      CHECK_CAUSE CAUSE_LOAD_ACCESS, 104
        CHECK_EPC .Lld0, 105
        CHECK_TVAL 0, 106
        li      s0, 8
        EXPECT_TRAP 1f
        sw      zero, 0(s0)
        FAIL(107)
1:      CHECK_CAUSE CAUSE_STORE_ACCESS, 108
        CHECK_TVAL 8, 109
        /* just past the end of 64 MiB of RAM */
        li      s0, RAM_BASE + 0x4000000
        EXPECT_TRAP 1f
        lbu     a0, 0(s0)
        FAIL(110)
1:      CHECK_CAUSE CAUSE_LOAD_ACCESS, 111
        CHECK_TVAL (RAM_BASE + 0x4000000), 112
        EXPECT_TRAP 1f
        sd      zero, 16(s0)
        FAIL(113)
1:      CHECK_CAUSE CAUSE_STORE_ACCESS, 114
        CHECK_TVAL (RAM_BASE + 0x4000010), 115
        /* instruction fetch from an unmapped address */
        EXPECT_TRAP 1f
        li      t0, 0
        jalr    ra, 0(t0)
        FAIL(116)
1:      CHECK_CAUSE CAUSE_FETCH_ACCESS, 117
        CHECK_MEM trap_epc, 0, 118
        CHECK_TVAL 0, 119
        /* access faults from U-mode too */
        RUN_IN_MODE PRV_U, .Lld_u, 1f
.Lld_u:
        li      s0, RAM_BASE + 0x4000000
        ld      a0, 8(s0)
        FAIL(120)
1:      CHECK_CAUSE CAUSE_LOAD_ACCESS, 121
        CHECK_TVAL (RAM_BASE + 0x4000008), 122

        /* ---- vectored mtvec: exceptions still go to the base ---- */
        la      t0, trap_entry
        ori     t0, t0, 1
        csrw    mtvec, t0
        EXPECT_TRAP 1f
.Lvec_ecall:
        ecall
        FAIL(123)
1:      CHECK_CAUSE CAUSE_MACHINE_ECALL, 124
        CHECK_EPC .Lvec_ecall, 125
        la      t0, trap_entry
        csrw    mtvec, t0
        PASS
