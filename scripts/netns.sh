#!/usr/bin/env bash
# The ftvm test network: a few network namespaces wired like a small lab,
# so that VM hosts, a client and the storage server can talk over real
# links that a test can cut, without touching the machine's own network.
# Everything is created inside namespaces named PREFIX-*, so parallel tests
# with different prefixes never collide, and the root namespace is never
# changed. See docs/network.md for the picture.
#
#   netns.sh up PREFIX [NHOSTS]   build it (NHOSTS VM hosts, default 1)
#   netns.sh down PREFIX [--kill] remove everything named PREFIX-* (idempotent;
#                                 --kill also SIGKILLs processes still inside)
#   netns.sh cut-log PREFIX [I J] take the logging link(s) down (default: all)
#   netns.sh heal-log PREFIX [I J] bring them back up
#   netns.sh cut PREFIX LINK      take one link down; LINK is log, log:I-J,
#   netns.sh heal PREFIX LINK       uplink:I (host I's guest network) or
#                                   storage:I (host I's storage link)
#   netns.sh exec PREFIX NODE CMD...  run CMD in PREFIX-NODE (sw, c, st, hI)
#   netns.sh status PREFIX        list the namespaces and their addresses
#
# Addresses (the same for every prefix: each prefix has its own stacks):
#   guest network 10.77.0.0/24: client 10.77.0.1, the VM guest 10.77.0.2
#   logging links: host I is 10.78.0.I on each of its point-to-point links
#   storage network 10.79.0.0/24: storage 10.79.0.1, host I 10.79.0.(10+I)
set -Eeuo pipefail

MAX_HOSTS=16
CLIENT_ADDR=10.77.0.1/24
GUEST_ADDR=10.77.0.2/24
STORAGE_ADDR=10.79.0.1/24

die() {
    echo "netns.sh: error: $*" >&2
    exit 1
}

usage() {
    sed -n '/^#   netns.sh up/,/^#$/s/^# \{0,3\}//p' "$0" >&2
    exit 2
}

need_root_and_ip() {
    [ "$(id -u)" -eq 0 ] ||
        die "must run as root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN): try sudo $0 $*"
    if ! command -v ip >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1; then
            echo "netns.sh: 'ip' is missing; installing iproute2" >&2
            if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; }; then
                die "could not install iproute2; install it by hand (apt-get install iproute2)"
            fi
        else
            die "'ip' (iproute2) is missing; install the iproute2 package"
        fi
    fi
    ip netns list >/dev/null 2>&1 ||
        die "'ip netns' does not work here (no network namespace support?)"
}

check_prefix() {
    [[ $1 =~ ^[A-Za-z0-9_]{1,32}$ ]] ||
        die "bad PREFIX '$1': use 1 to 32 letters, digits or '_' (e.g. ftvmt1)"
}

# The namespaces that exist for PREFIX, one per line.
namespaces_of() {
    ip netns list 2>/dev/null | awk '{print $1}' |
        grep -E "^$1-(sw|c|st|h[0-9]+)\$" || true
}

# The VM host numbers that exist for PREFIX, ascending.
hosts_of() {
    namespaces_of "$1" | sed -n "s/^$1-h\([0-9][0-9]*\)\$/\1/p" | sort -n
}

# Runs a command inside namespace $1.
in_ns() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

new_ns() {
    local ns=$1
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # No IPv6 chatter (router solicitations, MLD, DAD) on the test links:
    # every frame that reaches a guest is a logged input.
    in_ns "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1 >/dev/null
}

new_bridge() {
    ip -n "$1" link add "$2" type bridge forward_delay 0 stp_state 0
    ip -n "$1" link set "$2" up
}

cmd_up() {
    local p=$1 n=${2:-1}
    if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt "$MAX_HOSTS" ]; then
        die "NHOSTS must be 1..$MAX_HOSTS, not '$n'"
    fi
    if [ -n "$(namespaces_of "$p")" ]; then
        die "namespaces for prefix '$p' already exist: run '$0 down $p' first"
    fi
    # On any failure, take down whatever was built.
    trap 'echo "netns.sh: up failed; cleaning up" >&2; cmd_down "$p" >/dev/null 2>&1 || true' ERR

    local sw="$p-sw" c="$p-c" st="$p-st" i j h

    # The switch: one bridge joining the client and every host's uplink.
    new_ns "$sw"
    new_bridge "$sw" br0

    # The client: a veth to the switch.
    new_ns "$c"
    ip -n "$sw" link add c type veth peer name eth0 netns "$c"
    ip -n "$sw" link set c master br0 up
    ip -n "$c" addr add "$CLIENT_ADDR" dev eth0
    ip -n "$c" link set eth0 up

    # The storage server's network (shared disk images / arbiter service).
    new_ns "$st"
    new_bridge "$st" br0
    ip -n "$st" addr add "$STORAGE_ADDR" dev br0

    for ((i = 1; i <= n; i++)); do
        h="$p-h$i"
        new_ns "$h"
        # The guest's network: tap0 and the uplink on the host's bridge.
        ip -n "$h" tuntap add dev tap0 mode tap
        new_bridge "$h" br0
        ip -n "$h" link set tap0 master br0 up
        ip -n "$sw" link add "h$i" type veth peer name uplink netns "$h"
        ip -n "$sw" link set "h$i" master br0 up
        ip -n "$h" link set uplink master br0 up
        # The host's own link to storage.
        ip -n "$st" link add "h$i" type veth peer name st0 netns "$h"
        ip -n "$st" link set "h$i" master br0 up
        ip -n "$h" addr add "10.79.0.$((10 + i))/24" dev st0
        ip -n "$h" link set st0 up
    done

    # Logging links: a dedicated veth pair between every two hosts. Host I
    # has address 10.78.0.I on each of its links and reaches host J over
    # the link named logJ.
    for ((i = 1; i <= n; i++)); do
        for ((j = i + 1; j <= n; j++)); do
            ip -n "$p-h$i" link add "log$j" type veth peer name "log$i" netns "$p-h$j"
            ip -n "$p-h$i" addr add "10.78.0.$i/32" dev "log$j"
            ip -n "$p-h$j" addr add "10.78.0.$j/32" dev "log$i"
            ip -n "$p-h$i" link set "log$j" up
            ip -n "$p-h$j" link set "log$i" up
            ip -n "$p-h$i" route add "10.78.0.$j/32" dev "log$j" src "10.78.0.$i"
            ip -n "$p-h$j" route add "10.78.0.$i/32" dev "log$i" src "10.78.0.$j"
        done
    done
    trap - ERR
    summary "$p"
}

summary() {
    local p=$1 i
    local -a hs
    mapfile -t hs < <(hosts_of "$p")
    cat <<EOF
ftvm test network '$p' is up with ${#hs[@]} VM host(s):
  $p-c    client     eth0 ${CLIENT_ADDR}  (on the switch)
  $p-sw   switch     bridge br0: c, $(printf 'h%s ' "${hs[@]}")
  $p-st   storage    br0 ${STORAGE_ADDR}
EOF
    for i in "${hs[@]}"; do
        echo "  $p-h$i   VM host $i  tap0 (guest NIC; guest uses ${GUEST_ADDR}) + uplink on br0;" \
            "st0 10.79.0.$((10 + i))/24; logging address 10.78.0.$i"
    done
    cat <<EOF
Run a command in a namespace:  ip netns exec $p-h1 CMD   (or: $0 exec $p h1 CMD)
  e.g. ip netns exec $p-h1 ftvm ... (attach the guest NIC to TAP tap0)
       ip netns exec $p-c ping 10.77.0.2
Cut / heal the logging link:   $0 cut-log $p   /   $0 heal-log $p
Tear down:                     $0 down $p
EOF
}

cmd_down() {
    local p=$1 kill=${2:-} ns pids left=0
    [ -z "$kill" ] || [ "$kill" = --kill ] || usage
    for ns in $(namespaces_of "$p"); do
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ' || true)
        if [ -n "${pids// /}" ]; then
            if [ "$kill" = --kill ]; then
                # shellcheck disable=SC2086 # a list of pids
                kill -KILL $pids 2>/dev/null || true
            else
                echo "netns.sh: warning: processes still in $ns ($pids) keep its" \
                    "devices alive until they exit (use 'down $p --kill')" >&2
            fi
        fi
        # Deleting a namespace destroys the bridges, TAPs and veths in it
        # (and the far ends of its veths).
        ip netns del "$ns" 2>/dev/null || true
    done
    for ns in $(namespaces_of "$p"); do
        echo "netns.sh: could not delete namespace $ns" >&2
        left=1
    done
    [ "$left" -eq 0 ] || exit 1
    echo "ftvm test network '$p' is down"
}

# Prints "I J" pairs of the logging links of PREFIX, one per line, or only
# the given pair.
log_pairs() {
    local p=$1 a=${2:-} b=${3:-} i j
    local -a hs
    if [ -n "$a" ]; then
        [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ && $a -ne $b ]] || die "bad host pair '$a' '$b'"
        if [ "$a" -gt "$b" ]; then
            i=$a a=$b b=$i
        fi
        ip -n "$p-h$a" link show "log$b" >/dev/null 2>&1 ||
            die "no logging link between hosts $a and $b under prefix '$p'"
        echo "$a $b"
        return
    fi
    mapfile -t hs < <(hosts_of "$p")
    [ "${#hs[@]}" -ge 2 ] || die "prefix '$p' has fewer than two hosts: no logging link"
    for i in "${hs[@]}"; do
        for j in "${hs[@]}"; do
            if [ "$i" -lt "$j" ]; then
                echo "$i $j"
            fi
        done
    done
}

set_log() {
    local p=$1 state=$2 a=${3:-} b=${4:-} i j pairs
    pairs=$(log_pairs "$p" "$a" "$b")
    while read -r i j; do
        ip -n "$p-h$i" link set "log$j" "$state"
        ip -n "$p-h$j" link set "log$i" "$state"
        if [ "$state" = up ]; then
            # Bringing a link down drops its routes; put them back.
            ip -n "$p-h$i" route replace "10.78.0.$j/32" dev "log$j" src "10.78.0.$i"
            ip -n "$p-h$j" route replace "10.78.0.$i/32" dev "log$i" src "10.78.0.$j"
        fi
        echo "logging link h$i <-> h$j: $state"
    done <<<"$pairs"
}

set_link() {
    local p=$1 state=$2 link=$3 i
    case $link in
        log) set_log "$p" "$state" ;;
        log:*-*)
            i=${link#log:}
            set_log "$p" "$state" "${i%-*}" "${i#*-}"
            ;;
        uplink:*)
            i=${link#uplink:}
            ip -n "$p-h$i" link set uplink "$state" || die "no host $i under prefix '$p'"
            echo "guest-network uplink of h$i: $state"
            ;;
        storage:*)
            i=${link#storage:}
            ip -n "$p-h$i" link set st0 "$state" || die "no host $i under prefix '$p'"
            echo "storage link of h$i: $state"
            ;;
        *) die "unknown link '$link': use log, log:I-J, uplink:I or storage:I" ;;
    esac
}

cmd_status() {
    local p=$1 ns
    for ns in $(namespaces_of "$p"); do
        echo "== $ns"
        ip -n "$ns" -br addr show | grep -v '^lo ' || true
    done
}

main() {
    [ $# -ge 2 ] || usage
    local cmd=$1 p=$2
    shift 2
    check_prefix "$p"
    need_root_and_ip "$cmd" "$p"
    case $cmd in
        up) [ $# -le 1 ] || usage; cmd_up "$p" "$@" ;;
        down) [ $# -le 1 ] || usage; cmd_down "$p" "$@" ;;
        cut-log) set_log "$p" down "$@" ;;
        heal-log) set_log "$p" up "$@" ;;
        cut) [ $# -eq 1 ] || usage; set_link "$p" down "$1" ;;
        heal) [ $# -eq 1 ] || usage; set_link "$p" up "$1" ;;
        exec)
            [ $# -ge 2 ] || usage
            local node=$1
            shift
            [[ $node =~ ^(sw|c|st|h[0-9]+)$ ]] || die "unknown node '$node': use sw, c, st or hI"
            exec ip netns exec "$p-$node" "$@"
            ;;
        status) cmd_status "$p" ;;
        *) usage ;;
    esac
}

main "$@"
