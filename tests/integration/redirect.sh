#!/bin/sh
# Sidecar-style outbound interception, after Istio's istio-iptables: every TCP connection the
# namespace opens is REDIRECTed (nat OUTPUT) to Envoy's outbound listener, except
#   - connections made by Envoy itself (its uid), which go where they were meant to go;
#   - connections to the proxy's own address on an excluded port (its admin, say): 127.0.0.1
#     and ::1 on EXCLUDED_PORTS. A connection to any other host on such a port is intercepted;
#   - connections that stay inside the namespace (out through `lo`: loopback addresses and the
#     namespace's own addresses), as istio-iptables leaves them alone: they are not egress.
#     With --intercept-loopback they are intercepted too (all but the two cases above), for
#     set-ups whose stand-in "external" servers live on 127.0.0.x, ::1 or another address of
#     the namespace itself -- the integration tests and `make demo`.
#
#   usage: sh redirect.sh [--intercept-loopback] PROXY_PORT [PROXY_UID] [EXCLUDED_PORTS]
#     PROXY_PORT      Envoy's outbound listener port (e.g. 15001)
#     PROXY_UID       uid Envoy runs as; its connections are not intercepted (default 1337)
#     EXCLUDED_PORTS  comma-separated ports of the proxy's own address left alone (e.g. 15000)
#
# Run it inside the namespace (`ip netns exec NS sh redirect.sh ...`) or in a container with
# NET_ADMIN. The rules live in a chain of their own, EGRESS_GUARD_OUTPUT, reached from nat OUTPUT
# by one jump rule. Running the script again replaces the chain's rules in one step
# (iptables-restore --noflush: no moment without interception) and keeps the one jump rule, so
# a second run, or a run with other arguments, leaves exactly one set of rules.
# IPv6 gets the same rules through ip6tables when the kernel offers an IPv6 nat table.
#
# Loopback destinations, when intercepted, need nothing more: REDIRECT in nat OUTPUT rewrites
# the destination to 127.0.0.1 / ::1, which never leaves `lo`, so net.ipv4.conf.*.route_localnet
# is not involved. Envoy's original_dst listener filter reads the pre-NAT destination with
# getsockopt(SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST), which needs no privilege.
set -eu

usage() {
    echo "usage: redirect.sh [--intercept-loopback] PROXY_PORT [PROXY_UID] [EXCLUDED_PORTS]" >&2
    exit 2
}

INTERCEPT_LOOPBACK=
while [ $# -gt 0 ]; do
    case $1 in
        --intercept-loopback) INTERCEPT_LOOPBACK=1; shift ;;
        --) shift; break ;;
        -*) echo "redirect.sh: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] && [ $# -le 3 ] || usage
PROXY_PORT=$1
PROXY_UID=${2:-1337}
EXCLUDED_PORTS=${3:-}
CHAIN=EGRESS_GUARD_OUTPUT

number() { # $1 = what, $2 = value: a decimal number or exit
    case $2 in
        '' | *[!0-9]*) echo "redirect.sh: $1 must be a number, not '$2'" >&2; exit 2 ;;
    esac
}
number PROXY_PORT "$PROXY_PORT"
number PROXY_UID "$PROXY_UID"
PORTS=$(echo "$EXCLUDED_PORTS" | tr ',' ' ')
for port in $PORTS; do number "an excluded port" "$port"; done

rules() { # $1 = the proxy's own loopback address (127.0.0.1/32 or ::1/128)
    echo "*nat"
    echo ":$CHAIN - [0:0]"  # created, or emptied if it exists (with --noflush: only this chain)
    echo "-A $CHAIN -m owner --uid-owner $PROXY_UID -j RETURN"
    for port in $PORTS; do
        echo "-A $CHAIN -d $1 -p tcp -m tcp --dport $port -j RETURN"
    done
    if [ -z "$INTERCEPT_LOOPBACK" ]; then
        echo "-A $CHAIN -o lo -j RETURN"
    fi
    echo "-A $CHAIN -p tcp -j REDIRECT --to-ports $PROXY_PORT"
    echo "COMMIT"
}

install() { # $1 = iptables or ip6tables, $2 = the proxy's own loopback address
    rules "$2" | "$1-restore" -w --noflush
    "$1" -w -t nat -C OUTPUT -p tcp -j "$CHAIN" 2>/dev/null \
        || "$1" -w -t nat -A OUTPUT -p tcp -j "$CHAIN"
}

install iptables 127.0.0.1/32
if command -v ip6tables >/dev/null 2>&1 && ip6tables -w -t nat -S OUTPUT >/dev/null 2>&1; then
    install ip6tables ::1/128
else
    echo "redirect.sh: no IPv6 nat table; IPv6 is not intercepted" >&2
fi
