/*
 * bad_queue: a hostile virtio-blk driver. Run with a disk in slot 0 whose
 * first sector starts with "FTVM". It misprograms the device three ways and
 * checks that the device reports each (the host must not crash):
 *   1. rings outside RAM            -> DEVICE_NEEDS_RESET (status bit 0x40)
 *   2. a descriptor chain that loops -> DEVICE_NEEDS_RESET
 *   3. a data buffer outside RAM     -> the request completes with IOERR
 * then performs one valid read of sector 0 and checks the data.
 */
#define TEST_NAME "bad_queue"
#include "test.h"

#define VIO        0x10001000
#define R_MAGIC    0x000
#define R_VERSION  0x004
#define R_DEVID    0x008
#define R_DRVFEAT  0x020
#define R_DRVSEL   0x024
#define R_QSEL     0x030
#define R_QNUM     0x038
#define R_QREADY   0x044
#define R_NOTIFY   0x050
#define R_ISR      0x060
#define R_ISRACK   0x064
#define R_STATUS   0x070
#define R_DESC     0x080
#define R_DRIVER   0x090
#define R_DEVICE   0x0a0

#define DESC   (RAM_BASE + 0x100000)
#define AVAIL  (RAM_BASE + 0x101000)
#define USED   (RAM_BASE + 0x102000)
#define HDR    (RAM_BASE + 0x103000)
#define DATA   (RAM_BASE + 0x104000)
#define STAT   (RAM_BASE + 0x105000)

/* Write 32-bit value v to register r of the device (uses t0, t1). */
.macro VW r, v
        li      t0, VIO + \r
        li      t1, \v
        sw      t1, 0(t0)
.endm
.macro VR rd, r
        li      t0, VIO + \r
        lw      \rd, 0(t0)
.endm

/* Reset, negotiate VERSION_1 only, set up queue 0 (size 4) at desc/driver/device. */
.macro SETUP desc, drv, dev
        VW      R_STATUS, 0
        VW      R_STATUS, 3                 /* ACKNOWLEDGE | DRIVER */
        VW      R_DRVSEL, 1
        VW      R_DRVFEAT, 1                /* VIRTIO_F_VERSION_1 (bit 32) */
        VW      R_DRVSEL, 0
        VW      R_DRVFEAT, 0
        VW      R_STATUS, 11                /* | FEATURES_OK */
        VW      R_QSEL, 0
        VW      R_QNUM, 4
        VW      R_DESC, \desc
        VW      R_DESC + 4, 0
        VW      R_DRIVER, \drv
        VW      R_DRIVER + 4, 0
        VW      R_DEVICE, \dev
        VW      R_DEVICE + 4, 0
        VW      R_QREADY, 1
        VW      R_STATUS, 15                /* | DRIVER_OK */
.endm

/* Descriptor i: addr, len, flags, next (uses t0, t1). */
.macro DESCR i, addr, len, flags, next
        li      t0, DESC + 16 * \i
        li      t1, \addr
        sd      t1, 0(t0)
        li      t1, \len
        sw      t1, 8(t0)
        li      t1, \flags
        sh      t1, 12(t0)
        li      t1, \next
        sh      t1, 14(t0)
.endm

/* Make head 0 available as the n-th request (avail idx = n). */
.macro OFFER n
        li      t0, AVAIL
        sh      zero, 0(t0)                 /* flags */
        sh      zero, 4(t0)                 /* ring[0] = head 0 */
        li      t1, \n
        sh      t1, 2(t0)                   /* idx */
        fence   w, w
        VW      R_NOTIFY, 0
.endm

/* Zero a page at addr (uses t0, t1). */
.macro ZERO addr
        li      t0, \addr
        li      t1, 4096
1:      sd      zero, 0(t0)
        addi    t0, t0, 8
        addi    t1, t1, -8
        bnez    t1, 1b
.endm

test_main:
        VR      a1, R_MAGIC
        CHECK_EQ a1, 0x74726976, 1
        VR      a1, R_DEVID
        CHECK_EQ a1, 2, 2

        /* 1. Rings outside RAM. */
        SETUP   0x1000, 0x2000, 0x3000
        VW      R_NOTIFY, 0
        VR      a1, R_STATUS
        andi    a1, a1, 0x40
        CHECK_EQ a1, 0x40, 3
        VR      a1, R_ISR
        andi    a1, a1, 2                   /* configuration change interrupt */
        CHECK_EQ a1, 2, 4

        /* 2. A descriptor chain that loops onto itself. */
        ZERO    DESC
        ZERO    AVAIL
        ZERO    USED
        SETUP   DESC, AVAIL, USED
        DESCR   0, HDR, 16, 1, 0            /* NEXT -> itself */
        OFFER   1
        VR      a1, R_STATUS
        andi    a1, a1, 0x40
        CHECK_EQ a1, 0x40, 5

        /* 3. A read whose data buffer lies outside RAM: IOERR, device still fine. */
        ZERO    DESC
        ZERO    AVAIL
        ZERO    USED
        ZERO    HDR
        li      t0, STAT
        li      t1, 0xff
        sb      t1, 0(t0)
        SETUP   DESC, AVAIL, USED
        DESCR   0, HDR, 16, 1, 1            /* header, NEXT */
        DESCR   1, 0x1000, 512, 3, 2        /* data: WRITE | NEXT, outside RAM */
        DESCR   2, STAT, 1, 2, 0            /* status: WRITE */
        OFFER   1
        li      t0, USED
        lhu     a1, 2(t0)
        CHECK_EQ a1, 1, 6                   /* completed at once */
        li      t0, STAT
        lbu     a1, 0(t0)
        CHECK_EQ a1, 1, 7                   /* VIRTIO_BLK_S_IOERR */
        VR      a1, R_STATUS
        andi    a1, a1, 0x40
        CHECK_EQ a1, 0, 8                   /* not a queue corruption */

        /* 4. A valid read of sector 0, served by the host disk. */
        li      t0, STAT
        li      t1, 0xff
        sb      t1, 0(t0)
        DESCR   1, DATA, 512, 3, 2
        li      t0, AVAIL
        sh      zero, 6(t0)                 /* ring[1] = head 0 */
        li      t1, 2
        sh      t1, 2(t0)                   /* idx = 2 */
        fence   w, w
        VW      R_NOTIFY, 0
        li      t2, 50000000                /* bounded wait for the completion */
        li      t3, USED
2:      lhu     a1, 2(t3)
        li      t1, 2
        beq     a1, t1, 3f
        addi    t2, t2, -1
        bnez    t2, 2b
        FAIL(9)                             /* never completed */
3:      li      t0, STAT
        lbu     a1, 0(t0)
        CHECK_EQ a1, 0, 10                  /* VIRTIO_BLK_S_OK */
        li      t0, DATA
        lw      a1, 0(t0)
        CHECK_EQ a1, 0x4d565446, 11         /* "FTVM" */
        PASS
