#!/usr/bin/env bash
# Build the ftvm guest: Linux kernel Image, busybox + redis initramfs and OpenSBI firmware, all
# from Debian packages, cached by a hash of the recipe files in this directory.
#
#   GUEST=$(guest/build.sh)      # builds if needed; the last stdout line is the output dir
#                                # (and <cache>/guest/latest points at it)
#   guest/build.sh --print-dir   # where the cache for this recipe lives, and whether it is built
#   guest/build.sh --force       # rebuild even if a complete build is cached
#
# Progress goes to stderr; compiler output goes to a log file (printed on failure).
set -euo pipefail

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${FTVM_CACHE_DIR:-${HOME:?HOME is unset; set FTVM_CACHE_DIR}/.cache/ftvm}/guest

# Expected md5 of rootfs/etc/ftvm-test.txt (tests check it inside the guest; see README.md).
TEST_FILE_MD5=16862b87c1194be21d64304eff562743

CROSS=riscv64-linux-gnu-
KERNEL_TARBALL=/usr/src/linux-source-6.1.tar.xz
OPENSBI_DIR=/usr/lib/riscv64-linux-gnu/opensbi/generic
# Fixed timestamps keep kernel and initramfs reproducible.
SOURCE_DATE_EPOCH=0
export SOURCE_DATE_EPOCH

APT_PACKAGES=(
    make gcc libc6-dev flex bison bc cpio gzip xz-utils bzip2 libelf-dev dpkg-dev
    gcc-riscv64-linux-gnu libc6-dev-riscv64-cross binutils-riscv64-linux-gnu
    linux-source-6.1 opensbi
)

# Build stages, in order. Each name maps to a function stage_<name>. Stages that add programs to
# the guest install them under "$ROOTFS" and must come before "initramfs", which packs it.
STAGES=(kernel busybox redis initramfs firmware)

# The redis programs installed into the guest's /usr/bin.
REDIS_PROGRAMS=(redis-server redis-cli redis-benchmark)
# Static cross build with libc malloc (see README.md): without the uname_* overrides redis's
# Makefile picks the host's settings (and jemalloc). Command-line variables reach the
# dependencies' makes too (hiredis, lua, linenoise, hdr_histogram).
REDIS_MAKE_VARS=(
    MALLOC=libc USE_SYSTEMD=no BUILD_TLS=no "CC=${CROSS}gcc" "AR=${CROSS}ar"
    "RANLIB=${CROSS}ranlib" uname_S=Linux uname_M=riscv64 LDFLAGS=-static OPTIMIZATION=-O2
)

usage() {
    cat <<EOF
Usage: guest/build.sh [--force] [--print-dir] [--help]

Builds the ftvm guest (kernel Image, initrd.cpio.gz, OpenSBI fw_jump.bin/fw_dynamic.bin) into
  \${FTVM_CACHE_DIR:-\$HOME/.cache/ftvm}/guest/<recipe hash>/
and prints that directory as the last line of stdout. A cached complete build returns at once.
Either way, the link guest/latest next to it is pointed at that directory.

  --force       rebuild even if the cache already holds a complete build
  --print-dir   print the cache directory for this recipe and whether it is built; build nothing
  -h, --help    this text
EOF
}

say() { printf '%s\n' "$*" >&2; }
die() { say "guest/build.sh: error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Cache key: sha256 over the names and contents of the recipe files (everything under guest/
# except documentation), in a fixed order.
recipe_files() {
    (cd "$GUEST_DIR" && find . -type f ! -name '*.md' ! -name '*~' ! -name '.*.swp' -print |
        LC_ALL=C sort)
}

cache_key() {
    local f
    (
        cd "$GUEST_DIR"
        recipe_files | while IFS= read -r f; do
            printf '%s\0' "$f"
            if [[ -x $f ]]; then printf 'x\0'; else printf -- '-\0'; fi
            sha256sum <"$f" | cut -d' ' -f1
        done
    ) | sha256sum | cut -c1-16
}

# ---------------------------------------------------------------------------------------------
# Logging of noisy commands.
LOG=
CURRENT_STAGE=
stage_no=0

fail() {
    say ""
    say "guest/build.sh: FAILED in stage '${CURRENT_STAGE:-setup}': $*"
    if [[ -n $LOG && -f $LOG ]]; then
        say "---- last 40 lines of $LOG ----"
        tail -n 40 "$LOG" >&2 || true
        say "---- full log: $LOG ----"
    fi
    exit 1
}

# run CMD...: run a command with its output appended to the log; fail with the log tail.
run() {
    printf '+ %s\n' "$*" >>"$LOG"
    "$@" >>"$LOG" 2>&1 || fail "command failed (exit $?): $*"
}

progress() { say "[guest ${stage_no}/${#STAGES[@]}] ${CURRENT_STAGE}: $*"; }

# ---------------------------------------------------------------------------------------------
# Host prerequisites.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root to run: $*"
    fi
}

# Waits up to 10 min for another apt/dpkg to finish instead of failing on the lock.
apt_get() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}

install_packages() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    say "[guest] installing host packages: ${missing[*]}"
    run apt_get update -qq
    run apt_get install -y -qq --no-install-recommends "${missing[@]}"
}

# `apt-get source` needs a deb-src entry for the release's main component. Add one (mirroring
# the URI of the existing binary entry) only if there is none.
# shellcheck disable=SC2016  # $(...) in the --format strings are apt's placeholders
ensure_deb_src() {
    local codename site
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || die "cannot tell the Debian release from /etc/os-release"
    if apt-get indextargets --format '$(RELEASE) $(COMPONENT)' 'Identifier: Sources' 2>/dev/null |
        grep -qx "$codename main"; then
        return 0
    fi
    site=$(apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT)' \
        'Identifier: Packages' | awk -v r="$codename" '$2 == r && $3 == "main" { print $1; exit }')
    [[ -n $site ]] || die "no apt source for '$codename main' found to mirror as deb-src"
    say "[guest] adding deb-src for $site $codename main (/etc/apt/sources.list.d/ftvm-deb-src.sources)"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg signed=
    [[ -f $keyring ]] && signed="Signed-By: $keyring"
    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\n%s\n' \
        "$site" "$codename" "$signed" |
        as_root tee /etc/apt/sources.list.d/ftvm-deb-src.sources >/dev/null
    run apt_get update -qq
}

# ---------------------------------------------------------------------------------------------
# Stage: kernel
stage_kernel() {
    local src=$SCRATCH/linux kmake stamp
    stamp=$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH")
    kmake=(make -C "$src" ARCH=riscv "CROSS_COMPILE=$CROSS" -j"$(nproc)"
        "KBUILD_BUILD_TIMESTAMP=$stamp" KBUILD_BUILD_USER=ftvm KBUILD_BUILD_HOST=ftvm)

    progress "unpacking $(basename "$KERNEL_TARBALL")"
    mkdir -p "$src"
    run tar -xJf "$KERNEL_TARBALL" -C "$src" --strip-components=1

    progress "configuring (tinyconfig + guest/kernel.config)"
    run "${kmake[@]}" tinyconfig
    run env ARCH=riscv CROSS_COMPILE="$CROSS" \
        "$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$GUEST_DIR/kernel.config"
    run "${kmake[@]}" olddefconfig
    check_config "$GUEST_DIR/kernel.config" "$src/.config" "kernel"

    progress "compiling Image (make -j$(nproc); 2-3 min on an idle 2-core machine)"
    run "${kmake[@]}" Image
    # A RISC-V Image carries the magic "RSC\x05" at offset 0x38.
    [[ $(od -An -tx1 -j56 -N4 "$src/arch/riscv/boot/Image" | tr -d ' ') == 52534305 ]] ||
        fail "arch/riscv/boot/Image lacks the RISC-V Image magic"
    cp "$src/arch/riscv/boot/Image" "$OUT/Image"
    cp "$src/.config" "$OUT/kernel.config"
    KERNEL_RELEASE=$("${kmake[@]}" -s --no-print-directory kernelrelease 2>>"$LOG")
}

# check_config FRAGMENT CONFIG WHAT: every `CONFIG_X=v` line of FRAGMENT must appear verbatim in
# CONFIG, and every `# CONFIG_X is not set` must not be enabled there.
check_config() {
    local frag=$1 config=$2 what=$3 line sym bad=()
    while IFS= read -r line; do
        if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)= ]]; then
            grep -qxF -- "$line" "$config" || bad+=("$line (got: $(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$config" || echo 'absent'))")
        elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set ]]; then
            sym=${BASH_REMATCH[1]}
            if grep -qE "^${sym}=[ym]" "$config"; then bad+=("# $sym is not set (got: enabled)"); fi
        fi
    done <"$frag"
    if ((${#bad[@]})); then
        say "$what config: these settings from $(basename "$frag") did not survive (missing dependencies?):"
        printf '    %s\n' "${bad[@]}" >&2
        fail "$what configuration incomplete"
    fi
}

# ---------------------------------------------------------------------------------------------
# Stage: busybox
stage_busybox() {
    local srcroot=$SCRATCH/busybox-src bb
    progress "fetching source (apt-get source busybox)"
    mkdir -p "$srcroot"
    run env -C "$srcroot" apt-get source -qq busybox
    bb=$(find "$srcroot" -mindepth 1 -maxdepth 1 -type d -name 'busybox-*' | head -n1)
    [[ -n $bb && -f $bb/debian/config/pkg/static ]] || fail "busybox source tree not found"
    BUSYBOX_VERSION=$(cd "$bb" && dpkg-parsechangelog -SVersion)

    progress "configuring (Debian's static config + guest/busybox.config)"
    apply_fragment "$bb/debian/config/pkg/static" "$GUEST_DIR/busybox.config" "$bb/.config"
    # Any symbol neither file mentions takes its default.
    run bash -c "yes '' | make -C '$bb' oldconfig"
    check_config "$GUEST_DIR/busybox.config" "$bb/.config" "busybox"

    progress "compiling (static, make -j$(nproc))"
    run make -C "$bb" -j"$(nproc)" "CROSS_COMPILE=$CROSS" busybox
    is_riscv64_elf "$bb/busybox" || fail "busybox was not built as a RISC-V 64-bit ELF (cross prefix ignored?)"
    progress "installing with applet symlinks"
    run make -C "$bb" "CROSS_COMPILE=$CROSS" CONFIG_PREFIX="$ROOTFS" install
    rm -f "$ROOTFS/linuxrc"
    local applet
    for applet in sh ash cttyhack awk md5sum sha256sum uname poweroff reboot mount umount ip \
        ifconfig dd od mke2fs sync kill grep tail setsid hostname id date sleep cat ls; do
        [[ -L $ROOTFS/bin/$applet || -L $ROOTFS/sbin/$applet || -L $ROOTFS/usr/bin/$applet ||
            -L $ROOTFS/usr/sbin/$applet ]] || fail "busybox applet '$applet' was not installed"
    done
}

# is_riscv64_elf FILE: ELF class 64 (byte 4 = 2) and e_machine EM_RISCV (243).
is_riscv64_elf() {
    [[ $(od -An -tx1 -N4 "$1" | tr -d ' ') == 7f454c46 &&
        $(od -An -tu1 -j4 -N1 "$1" | tr -d ' ') == 2 &&
        $(od -An -tu2 -j18 -N2 "$1" | tr -d ' ') == 243 ]]
}

# is_static_exec FILE: e_type ET_EXEC (2) and no program interpreter or dynamic section.
is_static_exec() {
    local headers
    [[ $(od -An -tu2 -j16 -N2 "$1" | tr -d ' ') == 2 ]] || return 1
    headers=$("${CROSS}readelf" -lW "$1") || return 1
    ! grep -qE '^[[:space:]]*(INTERP|DYNAMIC)[[:space:]]' <<<"$headers"
}

# all_riscv64_objects FILE: FILE (an object or an archive of objects) holds at least one ELF
# object, and every one of them is for RISC-V.
all_riscv64_objects() {
    local machines
    machines=$("${CROSS}readelf" -hW "$1" 2>/dev/null | sed -nE 's/^[[:space:]]*Machine:[[:space:]]*//p')
    [[ -n $machines ]] && ! grep -qvx 'RISC-V' <<<"$machines"
}

# apply_fragment BASE FRAGMENT OUT: BASE with every symbol FRAGMENT mentions replaced by its
# setting from FRAGMENT.
apply_fragment() {
    local base=$1 frag=$2 out=$3 syms
    syms=$(sed -nE 's/^(# )?(CONFIG_[A-Za-z0-9_]+)( is not set|=).*/\2/p' "$frag" | sort -u)
    {
        grep -vE "^(# )?($(paste -sd'|' <<<"$syms"))( is not set|=)" "$base" || true
        grep -E '^(# )?CONFIG_' "$frag"
    } >"$out"
}

# ---------------------------------------------------------------------------------------------
# Stage: redis
stage_redis() {
    local srcroot=$SCRATCH/redis-src rs f prog
    progress "fetching source (apt-get source redis)"
    mkdir -p "$srcroot"
    run env -C "$srcroot" apt-get source -qq redis
    rs=$(find "$srcroot" -mindepth 1 -maxdepth 1 -type d -name 'redis-*' | head -n1)
    [[ -n $rs && -f $rs/src/server.c && -f $rs/deps/Makefile ]] || fail "redis source tree not found"
    REDIS_VERSION=$(cd "$rs" && dpkg-parsechangelog -SVersion)

    progress "compiling ${REDIS_PROGRAMS[*]} $REDIS_VERSION (static, libc malloc, make -j$(nproc); under a minute)"
    run make -C "$rs/src" -j"$(nproc)" "${REDIS_MAKE_VARS[@]}" "${REDIS_PROGRAMS[@]}"
    # The bundled dependencies must have been cross-compiled too (a host object would already have
    # failed to link, but say which one if the Makefiles ever stop passing CC/AR down).
    for f in deps/hiredis/libhiredis.a deps/lua/src/liblua.a deps/hdr_histogram/libhdrhistogram.a \
        deps/linenoise/linenoise.o; do
        [[ -f $rs/$f ]] || fail "redis dependency $f was not built"
        all_riscv64_objects "$rs/$f" || fail "redis dependency $f is not (only) RISC-V code"
    done

    progress "stripping and installing into /usr/bin"
    mkdir -p "$ROOTFS/usr/bin"
    for prog in "${REDIS_PROGRAMS[@]}"; do
        f=$rs/src/$prog
        is_riscv64_elf "$f" || fail "$prog was not built as a RISC-V 64-bit ELF (cross compiler ignored?)"
        is_static_exec "$f" || fail "$prog is not a static executable (LDFLAGS=-static ignored?)"
        run "${CROSS}strip" -o "$ROOTFS/usr/bin/$prog" "$f"
        chmod 0755 "$ROOTFS/usr/bin/$prog"
    done
    REDIS_SERVER_BYTES=$(stat -c %s "$ROOTFS/usr/bin/redis-server")
}

# ---------------------------------------------------------------------------------------------
# Stage: initramfs
stage_initramfs() {
    progress "assembling root filesystem"
    local d
    for d in dev proc sys tmp run root etc mnt data var usr/bin usr/sbin; do mkdir -p "$ROOTFS/$d"; done
    ln -sfn /run "$ROOTFS/var/run"
    ln -sfn /tmp "$ROOTFS/var/tmp"
    cp -R "$GUEST_DIR/rootfs/." "$ROOTFS/"
    install -m 0755 "$GUEST_DIR/init" "$ROOTFS/init"
    progress "compiling sigdfl (see guest/sigdfl.c)"
    run "${CROSS}gcc" -Os -Wall -Wextra -Werror -static -nostdlib -ffreestanding \
        -fno-stack-protector -fno-pie -no-pie -mno-relax -Wl,--no-relax -Wl,--build-id=none -s \
        -o "$ROOTFS/sbin/sigdfl" "$GUEST_DIR/sigdfl.c"
    is_riscv64_elf "$ROOTFS/sbin/sigdfl" || fail "sigdfl is not a RISC-V 64-bit ELF"
    # Modes independent of the checkout's umask; then the special ones.
    chmod -R u+rwX,go+rX,go-w "$ROOTFS"
    chmod 1777 "$ROOTFS/tmp"
    chmod 0700 "$ROOTFS/root"
    # The kernel opens /dev/console for /init before /init can mount devtmpfs.
    rm -f "$ROOTFS/dev/console"
    mknod -m 600 "$ROOTFS/dev/console" c 5 1

    local md5
    md5=$(md5sum <"$ROOTFS/etc/ftvm-test.txt" | cut -d' ' -f1)
    [[ $md5 == "$TEST_FILE_MD5" ]] ||
        fail "rootfs/etc/ftvm-test.txt has md5 $md5, expected $TEST_FILE_MD5 (update both README.md and TEST_FILE_MD5)"

    progress "packing initrd.cpio.gz (newc, gzip)"
    # Fixed owner and mtimes and a sorted file list make the archive reproducible.
    find "$ROOTFS" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    (
        cd "$ROOTFS"
        find . -mindepth 1 -print0 | LC_ALL=C sort -z |
            cpio --null --create --format=newc --owner=0:0 --reproducible --quiet
    ) | gzip -9 -n >"$OUT/initrd.cpio.gz" || fail "packing the initramfs failed"
    ROOTFS_BYTES=$(du -sb --apparent-size "$ROOTFS" | cut -f1)
}

# ---------------------------------------------------------------------------------------------
# Stage: firmware
stage_firmware() {
    progress "copying OpenSBI fw_jump.bin, fw_dynamic.bin"
    cp "$OPENSBI_DIR/fw_jump.bin" "$OPENSBI_DIR/fw_dynamic.bin" "$OUT/"
}

# ---------------------------------------------------------------------------------------------
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown; }

write_manifest() {
    local f
    {
        echo "# ftvm guest build manifest"
        echo "recipe_key: $KEY"
        echo "built_at: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "build_seconds: $((SECONDS - BUILD_START))"
        echo "kernel_release: ${KERNEL_RELEASE:-unknown}"
        echo "linux-source-6.1: $(pkg_version linux-source-6.1)"
        echo "busybox (source): ${BUSYBOX_VERSION:-unknown}"
        echo "redis (source): ${REDIS_VERSION:-unknown}"
        echo "redis-server_stripped_bytes: ${REDIS_SERVER_BYTES:-unknown}"
        echo "opensbi: $(pkg_version opensbi)"
        echo "gcc-riscv64-linux-gnu: $(pkg_version gcc-riscv64-linux-gnu)"
        echo "libc6-dev-riscv64-cross: $(pkg_version libc6-dev-riscv64-cross)"
        echo "rootfs_unpacked_bytes: ${ROOTFS_BYTES:-unknown}"
        echo "test_file: /etc/ftvm-test.txt md5 $TEST_FILE_MD5"
        echo "ready_marker: ftvm-guest: ready"
        echo "redis_ready_marker: ftvm-guest: redis ready"
        echo
        echo "# file  bytes  sha256"
        for f in Image initrd.cpio.gz fw_jump.bin fw_dynamic.bin kernel.config; do
            printf '%s  %s  %s\n' "$f" "$(stat -c %s "$OUT/$f")" "$(sha256sum <"$OUT/$f" | cut -d' ' -f1)"
        done
    } >"$OUT/manifest.txt"
}

build() {
    BUILD_START=$SECONDS
    mkdir -p "$CACHE_ROOT"
    SCRATCH=$(mktemp -d "$CACHE_ROOT/.build-$KEY.XXXXXX")
    LOG=$SCRATCH/build.log
    OUT=$SCRATCH/out
    ROOTFS=$SCRATCH/rootfs
    mkdir -p "$OUT" "$ROOTFS"
    : >"$LOG"
    say "[guest] building into $SCRATCH (log: $LOG)"
    # Anything failing outside `run` still names the stage and shows the log.
    set -E
    trap 'fail "unexpected error at build.sh line $LINENO"' ERR

    install_packages
    ensure_deb_src

    local name t0
    for name in "${STAGES[@]}"; do
        stage_no=$((stage_no + 1))
        CURRENT_STAGE=$name
        t0=$SECONDS
        "stage_$name"
        progress "done ($((SECONDS - t0)) s)"
    done
    CURRENT_STAGE=finish

    write_manifest
    # Publish: the .complete marker is written last, then the whole directory is renamed into
    # place, so a reader never sees a half-built output directory.
    printf '%s\n' "$KEY" >"$OUT/.complete.tmp"
    mv "$OUT/.complete.tmp" "$OUT/.complete"
    if [[ -e $DEST ]]; then
        mv "$DEST" "$SCRATCH/old"
    fi
    mv "$OUT" "$DEST"
    rm -rf "$SCRATCH"
    say "[guest] built in $((SECONDS - BUILD_START)) s: $DEST"
}

# link_latest: point <cache>/guest/latest at $DEST (a relative link, replaced atomically by a
# rename, so a reader sees either the old or the new target, never no link).
# The temporary name is per process, so that concurrent callers never rename each other's link.
link_latest() {
    local tmp=$CACHE_ROOT/latest.tmp.$$
    if ! { ln -sfn "$KEY" "$tmp" && mv -T "$tmp" "$CACHE_ROOT/latest"; }; then
        rm -f "$tmp"
        die "cannot point $CACHE_ROOT/latest at $KEY"
    fi
}

# finish_with_dest: $DEST is complete: link it as latest, print it (the last stdout line), exit.
finish_with_dest() {
    link_latest
    printf '%s\n' "$DEST"
    exit 0
}

main() {
    local force=0 print_dir=0 arg
    for arg in "$@"; do
        case $arg in
        --force) force=1 ;;
        --print-dir) print_dir=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
        esac
    done

    KEY=$(cache_key)
    DEST=$CACHE_ROOT/$KEY

    if ((print_dir)); then
        if [[ -f $DEST/.complete ]]; then say "built"; else say "not built"; fi
        printf '%s\n' "$DEST"
        exit 0
    fi

    if ((!force)) && [[ -f $DEST/.complete ]]; then
        finish_with_dest
    fi

    # One build at a time per cache; whoever waited re-checks the cache first.
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/.lock"
    if ! flock -n 9; then
        say "[guest] another build holds $CACHE_ROOT/.lock; waiting"
        flock 9
    fi
    if ((!force)) && [[ -f $DEST/.complete ]]; then
        finish_with_dest
    fi
    # Leftovers of interrupted builds of this recipe.
    rm -rf "$CACHE_ROOT/.build-$KEY".*

    build
    finish_with_dest
}

# Sourcing this file (e.g. to test one stage) defines the functions without running anything.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
