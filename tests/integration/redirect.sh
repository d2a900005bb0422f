#!/bin/sh
# Sidecar-style outbound interception, as Istio's istio-iptables does for a pod:
# every TCP connection the namespace opens is REDIRECTed (nat OUTPUT) to Envoy's outbound
# listener, except connections made by Envoy itself (its uid) and to excluded ports (admin).
#
#   usage: sh redirect.sh PROXY_PORT [PROXY_UID] [EXCLUDED_PORTS]
#     PROXY_PORT      Envoy's outbound listener port (e.g. 15001)
#     PROXY_UID       uid Envoy runs as; its connections are not intercepted (default 1337)
#     EXCLUDED_PORTS  comma-separated destination ports left alone (e.g. 15000 for admin)
#
# Run it inside the namespace (`ip netns exec NS sh redirect.sh ...`) or in a container with
# NET_ADMIN. Rules go into a chain of their own so they can be listed and flushed as one.
# IPv6 gets the same rules through ip6tables when the kernel offers an IPv6 nat table.
#
# Loopback destinations (127.0.0.x, ::1) need nothing more: REDIRECT in nat OUTPUT rewrites
# the destination to 127.0.0.1 / ::1, which never leaves `lo`, so net.ipv4.conf.*.route_localnet
# is not involved. Envoy's original_dst listener filter reads the pre-NAT destination with
# getsockopt(SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST), which needs no privilege.
set -eu

PROXY_PORT=${1:?usage: redirect.sh PROXY_PORT [PROXY_UID] [EXCLUDED_PORTS]}
PROXY_UID=${2:-1337}
EXCLUDED_PORTS=${3:-}
CHAIN=EGRESS_GUARD_OUTPUT

install() { # $1 = iptables or ip6tables
    "$1" -w -t nat -N "$CHAIN"
    "$1" -w -t nat -A OUTPUT -p tcp -j "$CHAIN"
    "$1" -w -t nat -A "$CHAIN" -m owner --uid-owner "$PROXY_UID" -j RETURN
    for port in $(echo "$EXCLUDED_PORTS" | tr ',' ' '); do
        "$1" -w -t nat -A "$CHAIN" -p tcp --dport "$port" -j RETURN
    done
    "$1" -w -t nat -A "$CHAIN" -p tcp -j REDIRECT --to-ports "$PROXY_PORT"
}

install iptables
if command -v ip6tables >/dev/null 2>&1 && ip6tables -w -t nat -S OUTPUT >/dev/null 2>&1; then
    install ip6tables
else
    echo "redirect.sh: no IPv6 nat table; IPv6 is not intercepted" >&2
fi
