#!/usr/bin/env bash
# The cluster tests on a real 3-server JetStream cluster.
#
#   tests/test_cluster.sh STATECACHE TEST_CLUSTER
#
# Starts three nats-server processes with JetStream and clustering on
# 127.0.0.1 (ports TEST_CLUSTER --free-ports picks, data in a temporary
# folder), waits until the cluster takes a 3-replica stream, runs
# TEST_CLUSTER against it, and stops every server by PID at the end (also
# on failure or interruption). TEST_CLUSTER kills and restarts a server
# through the scripts written here: $SC_CLUSTER_DIR/start-N.sh starts
# server N (again) and writes its PID to $SC_CLUSTER_DIR/nN.pid.
set -u
sc=$(realpath "${1:?usage: test_cluster.sh STATECACHE TEST_CLUSTER}")
tb=$(realpath "${2:?usage: test_cluster.sh STATECACHE TEST_CLUSTER}")
command -v nats-server >/dev/null || {
	echo "test_cluster: nats-server is not installed (make deps)" >&2
	exit 1
}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sc_cluster.XXXXXX")
[ -n "${SC_CLUSTER_KEEP:-}" ] && echo "test_cluster: $tmp" >&2
stop_servers() {
	for f in "$tmp"/n*.pid; do
		[ -f "$f" ] || continue
		kill -9 "$(cat "$f")" 2>/dev/null
	done
}
cleanup() {
	stop_servers
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r -a ports <<<"$("$tb" --free-ports 6)" || exit 1
[ "${#ports[@]}" = 6 ] || {
	echo "test_cluster: no free ports" >&2
	exit 1
}
urls=""
for i in 1 2 3; do
	client=${ports[$((i - 1))]}
	routes=""
	for j in 1 2 3; do
		[ "$j" = "$i" ] && continue
		routes="$routes${routes:+, }nats-route://127.0.0.1:${ports[$((j + 2))]}"
	done
	cat >"$tmp/n$i.conf" <<EOF
server_name: n$i
host: 127.0.0.1
port: $client
jetstream { store_dir: "$tmp/data$i" }
cluster {
  name: sctest
  host: 127.0.0.1
  port: ${ports[$((i + 2))]}
  routes: [ $routes ]
}
EOF
	# Waits for a killed predecessor to be gone (its ports free) first.
	cat >"$tmp/start-$i.sh" <<EOF
#!/bin/sh
if [ -f "$tmp/n$i.pid" ]; then
	old=\$(cat "$tmp/n$i.pid")
	n=0
	while kill -0 "\$old" 2>/dev/null && [ \$n -lt 100 ]; do
		sleep 0.05; n=\$((n + 1))
	done
fi
nats-server -c "$tmp/n$i.conf" >>"$tmp/n$i.log" 2>&1 </dev/null &
echo \$! >"$tmp/n$i.pid"
EOF
	sh "$tmp/start-$i.sh"
	urls="$urls${urls:+,}nats://127.0.0.1:$client"
done

# Start-up: the cluster is ready when it creates a 3-replica stream.
ready=0
for _ in $(seq 150); do
	if "$sc" stream-create --nats "$urls" --stream ready --replicas 3 \
		2>"$tmp/ready.err"; then
		ready=1
		break
	fi
	sleep 0.2
done
if [ $ready = 0 ]; then
	echo "test_cluster: the cluster did not start:" >&2
	cat "$tmp/ready.err" "$tmp"/n*.log >&2
	exit 1
fi

SC_NATS_URL=$urls SC_CLUSTER_DIR=$tmp STATECACHE=$sc "$tb"
rc=$?
if [ $rc != 0 ]; then
	echo "test_cluster: failed; the servers' logs end with:" >&2
	tail -n 20 "$tmp"/n*.log >&2
fi
exit $rc
