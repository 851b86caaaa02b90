#!/usr/bin/env bash
# BuildKit nodes as hosts of their own: network namespaces joined to this machine by veth pairs, each
# running a buildkitd that listens on TCP with mutual TLS, and a TLS registry they reach at this
# machine's address on that network (not 127.0.0.1, which inside a namespace is the namespace itself).
#
#   scripts/buildkit-net.sh up      [--name NAME] [--subnet A.B.C] [--nodes "NODE:PLATFORMS ..."]
#   scripts/buildkit-net.sh down    [--name NAME]
#   scripts/buildkit-net.sh stop    NODE [--name NAME]   # kill one node's buildkitd (a host that died)
#   scripts/buildkit-net.sh start   NODE [--name NAME]   # start it again (NODE `registry`: the registry)
#   scripts/buildkit-net.sh env     [--name NAME]        # KEY=VALUE lines: endpoints, certificates, registry
#   scripts/buildkit-net.sh ok      [--name NAME]        # exit 0 when the registry and every node answer
#
# Defaults: NAME mbnet, subnet 10.213.0 (this machine is .1 on a bridge NAME-br; node i is .(10+i)),
# nodes "amd64: arm:linux/arm64,linux/arm/v7". A node with no platforms reports what its BuildKit finds
# (its own platform first, then the QEMU emulators registered with the kernel); a node with platforms
# offers only those (the stand-in for a native arm host on this x86 machine).
#
# Made under $MULTIBAKE_STATE_DIR/NAME (default /var/lib/multibake/NAME): a CA, a server certificate
# per node (SAN: NODE.NAME.test and its address), one client certificate, each node's buildkitd.toml,
# root and log, and a registry (TLS, same CA) on A.B.C.1:5443 whose CA docker trusts through
# /etc/docker/certs.d/A.B.C.1:5443/ca.crt (removed again by `down`). The namespaces have no route but
# the bridge: nothing in them reaches any other network.
#
# `up` first removes what a killed earlier run of the same NAME left behind. Needs root, iproute2,
# openssl, docker-registry and buildkitd ($MULTIBAKE_BUILDKIT_BIN, default: the binaries
# setup-stack.sh --stack buildkit builds into $MULTIBAKE_CACHE).
set -euo pipefail

NAME=mbnet
SUBNET=10.213.0
NODES="amd64: arm:linux/arm64,linux/arm/v7"
PORT=1234
REGISTRY_PORT=5443
CACHE="${MULTIBAKE_CACHE:-/var/cache/multibake}"
STATE_ROOT="${MULTIBAKE_STATE_DIR:-/var/lib/multibake}"
BUILDKIT_BIN="${MULTIBAKE_BUILDKIT_BIN:-$CACHE/buildkit-${MULTIBAKE_BUILDKIT_VERSION:-v0.34.2}/bin}"
CERTS_D=/etc/docker/certs.d
OWNER_MARK=multibake-buildkit-net.owner # docker reads only *.crt, *.cert and *.key files in certs.d

say() { printf 'buildkit-net: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

[ $# -ge 1 ] || usage 2
CMD="$1"; shift
NODE=""
case "$CMD" in
  stop | start) [ $# -ge 1 ] || usage 2; NODE="$1"; shift ;;
  up | down | env | ok) ;;
  -h | --help) usage 0 ;;
  *) say "unknown command: $CMD"; usage 2 ;;
esac
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --subnet) SUBNET="$2"; shift 2 ;;
    --nodes) NODES="$2"; shift 2 ;;
    -h | --help) usage 0 ;;
    *) say "unknown argument: $1"; usage 2 ;;
  esac
done
# interface names are at most 15 bytes: NAME-br, NAME-h<i>, NAME-n<i>
[[ "$NAME" =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "--name: 1 to 8 lower-case letters and digits, starting with a letter"
[[ "$SUBNET" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--subnet: three octets, as 10.213.0"

DIR="$STATE_ROOT/$NAME"
HOST_IP="$SUBNET.1"
BRIDGE="$NAME-br"
REGISTRY="$HOST_IP:$REGISTRY_PORT"

node_names() { local n; for n in $NODES; do printf '%s\n' "${n%%:*}"; done; }
node_index() { node_names | grep -nxF "$1" | cut -d: -f1 | head -n 1; }
node_platforms() { local n; for n in $NODES; do if [ "${n%%:*}" = "$1" ]; then printf '%s' "${n#*:}"; fi; done; }
node_ip() { local i; i=$(node_index "$1"); [ -n "$i" ] || die "no node '$1' (nodes: $(node_names | tr '\n' ' '))"; echo "$SUBNET.$((9 + i))"; }
netns() { echo "$NAME-$1"; }

# --- certificates ---------------------------------------------------------------------------------

sign() { # name subject-alt-names usage
  local name="$1" san="$2" usage="$3"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$name" \
    -keyout "$DIR/certs/$name.key" -out "$DIR/certs/$name.csr" 2>/dev/null
  openssl x509 -req -in "$DIR/certs/$name.csr" -CA "$DIR/certs/ca.crt" -CAkey "$DIR/certs/ca.key" \
    -CAcreateserial -days 7 -out "$DIR/certs/$name.crt" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$san" "$usage") 2>/dev/null
  chmod 600 "$DIR/certs/$name.key"
  rm -f "$DIR/certs/$name.csr"
}

make_certs() {
  local node
  mkdir -p "$DIR/certs"
  chmod 700 "$DIR/certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj "/CN=multibake buildkit-net CA ($NAME)" -keyout "$DIR/certs/ca.key" -out "$DIR/certs/ca.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  chmod 600 "$DIR/certs/ca.key"
  for node in $(node_names); do
    sign "$node" "DNS:$node.$NAME.test,IP:$(node_ip "$node")" serverAuth
  done
  sign registry "IP:$HOST_IP" serverAuth
  sign client "DNS:client.$NAME.test" clientAuth
  # buildx itself reads the registry when it merges the nodes' images into one index, and trusts only
  # the system's CAs there (a remote builder has no buildkitd.toml for it): SSL_CERT_FILE=bundle.crt
  cat /etc/ssl/certs/ca-certificates.crt "$DIR/certs/ca.crt" > "$DIR/certs/bundle.crt" 2>/dev/null ||
    cp "$DIR/certs/ca.crt" "$DIR/certs/bundle.crt"
}

# --- the network ------------------------------------------------------------------------------------

make_network() {
  local node i
  ip link add "$BRIDGE" type bridge
  ip addr add "$HOST_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  for node in $(node_names); do
    i=$(node_index "$node")
    ip netns add "$(netns "$node")"
    ip link add "$NAME-h$i" type veth peer name "$NAME-n$i"
    ip link set "$NAME-h$i" master "$BRIDGE" up
    ip link set "$NAME-n$i" netns "$(netns "$node")"
    ip -n "$(netns "$node")" link set lo up
    ip -n "$(netns "$node")" addr add "$(node_ip "$node")/24" dev "$NAME-n$i"
    ip -n "$(netns "$node")" link set "$NAME-n$i" up
  done
}

# --- the registry -----------------------------------------------------------------------------------

registry_ok() { curl -fsS -o /dev/null --cacert "$DIR/certs/ca.crt" "https://$REGISTRY/v2/" 2>/dev/null; }

start_registry() {
  mkdir -p "$DIR/registry" "$DIR/log" "$CERTS_D/$REGISTRY"
  cat > "$DIR/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
  tls:
    certificate: $DIR/certs/registry.crt
    key: $DIR/certs/registry.key
YML
  echo "made by scripts/buildkit-net.sh ($NAME); removed by its down" > "$CERTS_D/$REGISTRY/$OWNER_MARK"
  cp "$DIR/certs/ca.crt" "$CERTS_D/$REGISTRY/ca.crt"
  setsid nohup docker-registry serve "$DIR/registry.yml" >"$DIR/log/registry.log" 2>&1 </dev/null &
  echo $! > "$DIR/registry.pid"
  for _ in $(seq 1 60); do registry_ok && return 0; sleep 0.25; done
  tail -n 20 "$DIR/log/registry.log" >&2 || true
  die "the registry did not answer on https://$REGISTRY"
}

# --- the nodes --------------------------------------------------------------------------------------

buildkitd_config() { # node
  local node="$1" platforms
  platforms=$(node_platforms "$node")
  cat <<TOML
root = "$DIR/$node/root"
[grpc]
  address = [ "tcp://$(node_ip "$node"):$PORT" ]
  [grpc.tls]
    cert = "$DIR/certs/$node.crt"
    key = "$DIR/certs/$node.key"
    ca = "$DIR/certs/ca.crt"
[worker.oci]
  enabled = true
TOML
  if [ -n "$platforms" ]; then
    printf '  platforms = [ %s ]\n' "$(printf '"%s",' ${platforms//,/ } | sed 's/,$//')"
  fi
  cat <<TOML
[worker.containerd]
  enabled = false
[registry."$REGISTRY"]
  ca = [ "$DIR/certs/ca.crt" ]
TOML
}

node_up() { # node: answers over TCP with the client certificate
  "$BUILDKIT_BIN/buildctl" --addr "tcp://$(node_ip "$1"):$PORT" --tlscacert "$DIR/certs/ca.crt" \
    --tlscert "$DIR/certs/client.crt" --tlskey "$DIR/certs/client.key" --tlsservername "$1.$NAME.test" \
    debug workers >/dev/null 2>&1
}

start_node() { # node
  local node="$1"
  node_up "$node" && return 0
  mkdir -p "$DIR/$node/root" "$DIR/log"
  buildkitd_config "$node" > "$DIR/$node/buildkitd.toml"
  # runc and buildkitd come from this machine; only the network is the namespace's. Not `ip netns
  # exec`: it mounts a sysfs of its own over /sys, and runc then finds no cgroup mount.
  nsenter --net="/var/run/netns/$(netns "$node")" setsid nohup "$BUILDKIT_BIN/buildkitd" --config "$DIR/$node/buildkitd.toml" \
    >"$DIR/log/$node.log" 2>&1 </dev/null &
  echo $! > "$DIR/$node/pid"
  for _ in $(seq 1 120); do node_up "$node" && return 0; sleep 0.25; done
  tail -n 20 "$DIR/log/$node.log" >&2 || true
  die "buildkitd '$node' did not answer on tcp://$(node_ip "$node"):$PORT"
}

kill_pidfile() { # file: the process this script started, by its id
  local pid
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$1"
}

stop_node() { # node: as a host that dies, with no goodbye: its buildkitd and what it was running
  local pid
  kill_pidfile "$DIR/$1/pid"
  for pid in $(ip netns pids "$(netns "$1")" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
}

unmount_under() { # dir: the overlay mounts a killed buildkitd's containers leave behind
  local m
  for m in $(awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

# --- up, down, env --------------------------------------------------------------------------------------

down() {
  local node ns pid i
  for node in "$DIR"/*/pid; do [ -e "$node" ] && kill_pidfile "$node"; done
  kill_pidfile "$DIR/registry.pid"
  # what is left in our namespaces was started in them by this script (a buildkitd whose pid file is gone)
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NAME-" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for i in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^$NAME-(h[0-9]+|br)$" || true); do
    ip link del "$i" 2>/dev/null || true
  done
  for i in "$CERTS_D"/*/"$OWNER_MARK"; do
    [ -e "$i" ] && grep -q "($NAME)" "$i" && rm -rf "$(dirname "$i")"
  done
  unmount_under "$DIR"
  rm -rf "$DIR"
}

print_env() {
  local node
  echo "REGISTRY=$REGISTRY"
  echo "CA=$DIR/certs/ca.crt"
  echo "CLIENT_CERT=$DIR/certs/client.crt"
  echo "CLIENT_KEY=$DIR/certs/client.key"
  echo "SSL_CERT_FILE=$DIR/certs/bundle.crt"
  for node in $(node_names); do
    echo "NODE_${node}_ENDPOINT=tcp://$(node_ip "$node"):$PORT"
    echo "NODE_${node}_SERVERNAME=$node.$NAME.test"
    echo "NODE_${node}_PLATFORMS=$(node_platforms "$node")"
  done
}

up() {
  local node
  [ "$(id -u)" = 0 ] || die "need root (network namespaces, certs.d)"
  [ -x "$BUILDKIT_BIN/buildkitd" ] || die "no buildkitd in $BUILDKIT_BIN: run scripts/setup-stack.sh --stack buildkit"
  command -v docker-registry >/dev/null || die "docker-registry is missing (apt-get install docker-registry)"
  [ -e "$CERTS_D/$REGISTRY" ] && [ ! -e "$CERTS_D/$REGISTRY/$OWNER_MARK" ] &&
    die "$CERTS_D/$REGISTRY exists and was not made by this script: refusing to replace it"
  down # what a killed run left behind
  mkdir -p "$DIR"
  make_certs
  make_network
  start_registry
  for node in $(node_names); do start_node "$node"; done
  say "up: registry https://$REGISTRY; nodes $(for node in $(node_names); do printf '%s=tcp://%s:%s ' "$node" "$(node_ip "$node")" "$PORT"; done)"
}

case "$CMD" in
  up) up; print_env ;;
  down) down ;;
  stop) if [ "$NODE" = registry ]; then kill_pidfile "$DIR/registry.pid"; else node_ip "$NODE" >/dev/null; stop_node "$NODE"; fi ;;
  start) if [ "$NODE" = registry ]; then registry_ok || start_registry; else node_ip "$NODE" >/dev/null; start_node "$NODE"; fi ;;
  env) print_env ;;
  ok) [ -f "$DIR/certs/ca.crt" ] && registry_ok && for node in $(node_names); do node_up "$node" || exit 1; done ;;
esac
