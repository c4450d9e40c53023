/*
 * sigdfl PROGRAM [ARG...]: reset SIGINT and SIGQUIT to their default action, then execve
 * PROGRAM (an absolute path; no PATH search) with the given arguments and the same environment.
 *
 * Why: /init (busybox ash, PID 1) starts the console shell as an asynchronous command, so that
 * it can still run its poweroff/reboot traps while it waits. POSIX shells make asynchronous
 * commands ignore SIGINT and SIGQUIT when job control is off, an ignored signal stays ignored
 * across exec, and so Ctrl-C would do nothing to the programs run from that shell. This puts
 * the default back before the shell starts.
 *
 * Freestanding RISC-V Linux code (no libc) so that it adds well under a kilobyte to the
 * initramfs. Build: riscv64-linux-gnu-gcc -Os -static -nostdlib -ffreestanding -mno-relax ...
 */

#define NR_write 64
#define NR_exit 93
#define NR_rt_sigaction 134
#define NR_execve 221

#define SIGINT 2
#define SIGQUIT 3

/* The kernel's struct sigaction on RISC-V (no sa_restorer); a zero handler is SIG_DFL. */
struct kernel_sigaction {
    void *handler;
    unsigned long flags;
    unsigned long mask;
};

static long sys4(long nr, long a, long b, long c, long d)
{
    register long a0 __asm__("a0") = a;
    register long a1 __asm__("a1") = b;
    register long a2 __asm__("a2") = c;
    register long a3 __asm__("a3") = d;
    register long a7 __asm__("a7") = nr;
    __asm__ volatile("ecall" : "+r"(a0) : "r"(a1), "r"(a2), "r"(a3), "r"(a7) : "memory");
    return a0;
}

/* sp points at argc, then argv[0..argc-1], NULL, then the environment, NULL. */
__attribute__((noreturn, used)) void sigdfl_main(long *sp)
{
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    static const struct kernel_sigaction dfl = {0, 0, 0};
    static const char usage[] = "usage: sigdfl /path/to/program [args...]\n";
    static const char failed[] = "sigdfl: execve failed\n";

    if (argc < 2) {
        sys4(NR_write, 2, (long)usage, sizeof usage - 1, 0);
        for (;;)
            sys4(NR_exit, 2, 0, 0, 0);
    }
    sys4(NR_rt_sigaction, SIGINT, (long)&dfl, 0, sizeof dfl.mask);
    sys4(NR_rt_sigaction, SIGQUIT, (long)&dfl, 0, sizeof dfl.mask);
    sys4(NR_execve, (long)argv[1], (long)(argv + 1), (long)envp, 0);
    sys4(NR_write, 2, (long)failed, sizeof failed - 1, 0);
    for (;;)
        sys4(NR_exit, 127, 0, 0, 0);
}

/* Entry point: hand the initial stack pointer to sigdfl_main. */
__asm__(".text\n"
        ".globl _start\n"
        "_start:\n"
        "    mv a0, sp\n"
        "    call sigdfl_main\n");
