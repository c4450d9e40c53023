//! Bare-metal ISA conformance programs (tests/isa) run under `ftvm`.
//!
//! `tests/isa/build.sh` assembles every `tests/isa/src/*.S` into an ELF (once
//! per test process); each program is then booted on both CPU engines with
//! `ftvm run --cpu jit|interp --bios none --kernel X.elf --memory 64M`, exactly like
//! `qemu-system-riscv64 -M virt -bios none -m 64M -kernel X.elf`. A program
//! reports through the SiFive test device: exit status 0 = pass, otherwise the
//! number of the first failing check (250 = unexpected exception,
//! 251 = unexpected interrupt). `selftest_fail` must exit with status 7.
//!
//! The programs were validated against QEMU with `tests/isa/run-qemu.sh`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Wall-clock limit for one program (they finish in well under a second on QEMU).
const TIMEOUT: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// Builds all programs once per test process; returns the output directory.
fn elf_dir() -> &'static Path {
    static BUILD: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILD.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("isa");
        let script = repo_root().join("tests").join("isa").join("build.sh");
        // The default (spec) build: no QEMU quirk allowances for ftvm.
        let result = Command::new("bash")
            .arg(&script)
            .arg(&out)
            .env_remove("ISA_QUIRKS")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !result.status.success() {
            return Err(format!(
                "{} {} failed ({}):\n{}{}",
                script.display(),
                out.display(),
                result.status,
                String::from_utf8_lossy(&result.stdout),
                String::from_utf8_lossy(&result.stderr)
            ));
        }
        Ok(out)
    });
    match built {
        Ok(dir) => dir,
        Err(msg) => panic!("building the ISA test programs failed:\n{msg}"),
    }
}

struct Outcome {
    status: Option<ExitStatus>,
    timed_out: bool,
    console: String,
}

fn describe(status: &Option<ExitStatus>) -> String {
    match status {
        None => "no exit status".to_string(),
        Some(s) => match s.code() {
            Some(code) => format!("exit status {code}"),
            None => {
                #[cfg(unix)]
                {
                    use std::os::unix::process::ExitStatusExt;
                    if let Some(sig) = s.signal() {
                        return format!("killed by signal {sig}");
                    }
                }
                format!("{s}")
            }
        },
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

fn run_program(elf: &Path, engine: &str) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ftvm"))
        .args(["run", "--cpu", engine, "--bios", "none", "--kernel"])
        .arg(elf)
        .args(["--memory", "64M"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_ftvm")));
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());

    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() >= TIMEOUT => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for ftvm failed: {e}"),
        }
    };
    let mut console = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = err.join().unwrap_or_default();
    if !stderr.is_empty() {
        console.push_str("\n--- stderr ---\n");
        console.push_str(&String::from_utf8_lossy(&stderr));
    }
    Outcome {
        status,
        timed_out,
        console,
    }
}

/// The CPU engines every program must pass on: the translator (the
/// default) and the interpreter (the reference).
const ENGINES: [&str; 2] = ["jit", "interp"];

/// Runs `name` under ftvm with each engine and asserts that it exits with `expected`.
fn expect_exit(name: &str, expected: i32) {
    for engine in ENGINES {
        expect_exit_on(name, expected, engine);
    }
}

fn expect_exit_on(name: &str, expected: i32, engine: &str) {
    let elf = elf_dir().join(format!("{name}.elf"));
    assert!(elf.exists(), "{} was not built", elf.display());
    let outcome = run_program(&elf, engine);
    let code = outcome.status.as_ref().and_then(|s| s.code());
    if outcome.timed_out || code != Some(expected) {
        panic!(
            "ISA program `{name}` failed with --cpu {engine}: {}{}, expected exit status {expected}\n\
             (fail codes: N = first failing check in tests/isa/src/{name}.S, \
             250 = unexpected exception, 251 = unexpected interrupt)\n\
             reproduce: {} run --cpu {engine} --bios none --kernel {} --memory 64M\n\
             reference: tests/isa/run-qemu.sh /tmp/isa-qemu {name}\n\
             --- console ---\n{}",
            if outcome.timed_out {
                format!("timed out after {}s; ", TIMEOUT.as_secs())
            } else {
                String::new()
            },
            describe(&outcome.status),
            env!("CARGO_BIN_EXE_ftvm"),
            elf.display(),
            outcome.console
        );
    }
}

/// One `#[test]` per program (named after it, expecting exit status 0), plus
/// `PROGRAMS`, the list of their names.
macro_rules! isa_tests {
    ($($name:ident),* $(,)?) => {
        /// Every program in tests/isa/src, except `selftest_fail` (the negative test).
        const PROGRAMS: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                expect_exit(stringify!($name), 0);
            }
        )*
    };
}

isa_tests!(
    rv64i, rv64m, rv64a, rvc, fp_arith, fp_cvt, fp_fs, csr, counters, traps, paging, tlb,
    interrupts, wfi, misaligned,
);

/// Negative test: a deliberately failing program must propagate its code.
#[test]
fn selftest_fail_exits_with_code_7() {
    expect_exit("selftest_fail", 7);
}

/// Every source in tests/isa/src must be listed above (so it gets a named test).
#[test]
fn all_programs_are_listed() {
    let src = repo_root().join("tests").join("isa").join("src");
    let mut found: Vec<String> = std::fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".S").map(str::to_string)
        })
        .filter(|n| n != "selftest_fail")
        .collect();
    found.sort();
    let mut listed: Vec<String> = PROGRAMS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        found, listed,
        "tests/isa/src and the isa_tests! list in crates/cli/tests/isa.rs differ"
    );
}
