#!/usr/bin/env bash
# Runs a command as "root" of a user namespace of its own, for a user who is
# not root: `unshare --user --map-root-user --net --mount` gives the command
# a private network stack and mount table that the user owns, in which it
# may create network namespaces (`ip netns` keeps them under a private
# tmpfs on /run), bridges, veth pairs and TAP devices — everything
# `ftvm demo` builds — without touching the machine's own network or
# needing sudo. Run by root, it just runs the command.
#
#   scripts/rootless.sh CMD [ARGS...]
#
# Needs unprivileged user namespaces (on by default in Debian 12) and a
# /dev/net/tun that the user may open (Debian's udev makes it 0666).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
if [ "$(id -u)" -eq 0 ]; then
    exec "$@"
fi
if ! [ -r /dev/net/tun ] || ! [ -w /dev/net/tun ]; then
    echo "rootless.sh: error: /dev/net/tun is not readable and writable by $(id -un) (mode $(stat -c %a /dev/net/tun 2>/dev/null || echo missing)); Debian's default is 0666 — or run with sudo" >&2
    exit 1
fi
if ! unshare --user --map-root-user true 2>/dev/null; then
    echo "rootless.sh: error: this kernel does not let $(id -un) create a user namespace (user.max_user_namespaces=$(sysctl -n user.max_user_namespaces 2>/dev/null || echo '?')); run with sudo instead" >&2
    exit 1
fi
# Inside: a private /run for `ip netns` (the real one belongs to root).
# FTVM_ROOTLESS tells `ftvm demo` to say how to enter from elsewhere.
export FTVM_ROOTLESS=1
exec unshare --user --map-root-user --net --mount --fork -- \
    bash -c 'mount -t tmpfs -o mode=0755 ftvm-run /run && exec "$@"' rootless.sh "$@"
