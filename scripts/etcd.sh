#!/usr/bin/env bash
# etcd.sh: a 3-member etcd cluster on loopback for imagefs's shared catalog
# (tests, and a new user's first try), from Debian's etcd-server package.
#
#   scripts/etcd.sh start            start the members that are not running, wait
#                                    until all three are healthy (30 s at most),
#                                    print the client endpoints (one line, commas)
#   scripts/etcd.sh status           each member's pid and health; exit 1 unless
#                                    all three are healthy
#   scripts/etcd.sh stop [--wipe]    stop the members (SIGTERM, then SIGKILL after
#                                    10 s); --wipe also removes the data directory
#   scripts/etcd.sh stop-member N [--kill]
#                                    stop member N (1-3) only (fault tests); a
#                                    leader stopped so hands its leadership over
#                                    first, --kill (SIGKILL) is a crash
#   scripts/etcd.sh start-member N   start member N again and wait for its health
#
# Clients: 127.0.0.1:23790,23791,23792; peers 127.0.0.1:23800-23802 (not 2379,
# which a packaged etcd may hold). Data, logs (mN/etcd.log) and pids (mN/pid)
# in ${IMAGEFS_ETCD_DIR:-/tmp/imagefs-etcd}/m1..m3. A missing etcd is installed
# with apt-get (root) without starting the packaged service; a packaged etcd
# service that systemd runs is stopped.
#
# Each new cluster (a data directory without $DIR/cluster-token) gets a
# random --initial-cluster-token, kept in $DIR/cluster-token for the
# restarts of the same data: the cluster id derives from it and the peer
# URLs, so a cluster started again after "stop --wipe" has another id
# (with a fixed token, every incarnation had the same one).
#
# Server settings imagefs relies on (README, "Shared catalog"):
#   --auto-compaction-mode revision --auto-compaction-retention 10000
#       etcd keeps every revision forever otherwise (about 1.9 KB per edit)
#       until its quota raises NOSPACE; 10000 revisions is enough history for
#       a watcher that reconnects after a short outage.
#   --max-txn-ops 1024
#       etcd 3.4's default is 128 operations per transaction (compares and
#       writes counted separately); one catalog change writes a handful of
#       keys, but a migration or a repair commits many keys in one
#       transaction, and a refused batch is an error, not a split.
#   --quota-backend-bytes 4 GiB (ETCD_QUOTA_BYTES)
#       100,000 images take about 200 MiB; etcd's default is 2 GiB and it
#       warns above 8 GiB.
set -euo pipefail

DIR=${IMAGEFS_ETCD_DIR:-/tmp/imagefs-etcd}
QUOTA=${ETCD_QUOTA_BYTES:-4294967296}
WAIT=30
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# IMAGEFS_ETCD_PORT: the first client port (default 23790); members use
# PORT, PORT+1, PORT+2 for clients and PORT+10.. for peers. A test that stops
# every member runs a private cluster on other ports and in another
# IMAGEFS_ETCD_DIR, so that other test processes keep theirs.
PORT=${IMAGEFS_ETCD_PORT:-23790}
client_port() { echo $((PORT - 1 + $1)); }
peer_port() { echo $((PORT + 9 + $1)); }
endpoints() { echo "127.0.0.1:$(client_port 1),127.0.0.1:$(client_port 2),127.0.0.1:$(client_port 3)"; }
cluster() { echo "m1=http://127.0.0.1:$(peer_port 1),m2=http://127.0.0.1:$(peer_port 2),m3=http://127.0.0.1:$(peer_port 3)"; }

die() { echo "etcd.sh: $*" >&2; exit 1; }

# install: etcd-server and etcd-client when etcd or etcdctl is missing.
install() {
	command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1 && return 0
	[ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 ||
		die "etcd is missing: install it first: sudo apt-get install -y etcd-server etcd-client"
	echo "etcd.sh: installing etcd-server etcd-client" >&2
	# policy-rc.d: the package's postinst must not start its own etcd
	# (invoke-rc.d asks it; 101 = action forbidden).
	own=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		own=1
	fi
	rc=0
	{ export DEBIAN_FRONTEND=noninteractive; apt-get update -qq &&
		apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null; } || rc=$?
	[ $own = 1 ] && rm -f /usr/sbin/policy-rc.d
	[ $rc = 0 ] || die "apt-get install etcd-server etcd-client failed"
}

# stop_packaged: a packaged etcd that systemd runs (it may hold ports or
# confuse a reader of pgrep); ours never use its ports.
stop_packaged() {
	[ -d /run/systemd/system ] || return 0
	if systemctl is-active --quiet etcd 2>/dev/null; then
		echo "etcd.sh: stopping the packaged etcd service" >&2
		systemctl stop etcd || true
	fi
}

pidof_member() { # pid of member $1 if it runs (and is ours), else nothing
	local f=$DIR/m$1/pid pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	# A recorded pid may have been reused: it is ours only if it is an etcd
	# with our data directory.
	if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--data-dir $DIR/m$1/data "; then
		echo "$pid"
	fi
}

cluster_token() { # $DIR/cluster-token, made once per data directory
	local f=$DIR/cluster-token
	[ -s "$f" ] && return 0
	printf 'imagefs-test-%s\n' "$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')" >"$f.tmp"
	mv "$f.tmp" "$f"
}

healthy() { # member $1 answers and the cluster has a leader
	ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$(client_port "$1")" --dial-timeout=1s --command-timeout=2s \
		endpoint health >/dev/null 2>&1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

launch() { # member $1
	local n=$1 d=$DIR/m$1 cp pp
	[ -n "$(pidof_member "$n")" ] && return 0
	cp=$(client_port "$n") pp=$(peer_port "$n")
	port_free "$cp" || die "127.0.0.1:$cp is in use by a process that is not member m$n of $DIR"
	port_free "$pp" || die "127.0.0.1:$pp is in use by a process that is not member m$n of $DIR"
	mkdir -p "$d"
	# stdin/stdout/stderr away from the caller: a test that runs this script
	# reads its output to EOF, which must not wait for etcd; nor does etcd
	# keep the lock (fd 9).
	etcd --name "m$n" --data-dir "$d/data" \
		--listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
		--listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
		--initial-cluster "$(cluster)" --initial-cluster-state new --initial-cluster-token "$(cat "$DIR/cluster-token")" \
		--auto-compaction-mode revision --auto-compaction-retention 10000 \
		--max-txn-ops 1024 --quota-backend-bytes "$QUOTA" \
		--logger zap --log-outputs stderr \
		</dev/null >>"$d/etcd.log" 2>&1 9>&- &
	echo $! >"$d/pid"
}

wait_healthy() { # members $@, $WAIT seconds at most
	local deadline=$((SECONDS + WAIT)) n ok
	while :; do
		ok=1
		for n in "$@"; do
			# (the pid file's pid: just after launch it may not have
			# exec'ed etcd yet, so its command line is not etcd's)
			kill -0 "$(cat "$DIR/m$n/pid" 2>/dev/null || echo x)" 2>/dev/null || {
				echo "etcd.sh: member m$n exited; tail of $DIR/m$n/etcd.log:" >&2
				tail -n 20 "$DIR/m$n/etcd.log" >&2
				return 1
			}
			healthy "$n" || { ok=0; break; }
		done
		[ $ok = 1 ] && return 0
		if [ $SECONDS -ge $deadline ]; then
			echo "etcd.sh: not healthy after ${WAIT}s; tails of the logs:" >&2
			for n in "$@"; do
				echo "--- $DIR/m$n/etcd.log" >&2
				tail -n 10 "$DIR/m$n/etcd.log" >&2
			done
			return 1
		fi
		sleep 0.2
	done
}

stop_member() { # member $1 [signal]: SIGTERM (or $2), SIGKILL after 10 s, wait
	local pid i
	pid=$(pidof_member "$1")
	[ -n "$pid" ] || { rm -f "$DIR/m$1/pid"; return 0; }
	kill "-${2:-TERM}" "$pid" 2>/dev/null || true
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		[ "$i" = 100 ] && kill -9 "$pid" 2>/dev/null || true
		sleep 0.1
	done
	while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	[ "$(cat "$DIR/m$1/pid" 2>/dev/null)" = "$pid" ] && rm -f "$DIR/m$1/pid"
	return 0
}

member_arg() {
	case "${1:-}" in 1 | 2 | 3) ;; *) die "member must be 1, 2 or 3" ;; esac
}

# One invocation at a time changes the cluster (tests of several packages
# start and stop it; a stop still running must not race a start).
case "${1:-}" in
start | stop | stop-member | start-member)
	mkdir -p "$DIR"
	exec 9>"$DIR/.etcd.sh.lock"
	flock 9
	;;
esac

case "${1:-}" in
start)
	install
	stop_packaged
	cluster_token
	for n in 1 2 3; do launch "$n"; done
	wait_healthy 1 2 3 || exit 1
	endpoints
	;;
status)
	rc=0
	for n in 1 2 3; do
		pid=$(pidof_member "$n")
		if [ -z "$pid" ]; then
			echo "m$n 127.0.0.1:$(client_port "$n") stopped"
			rc=1
		elif healthy "$n"; then
			echo "m$n 127.0.0.1:$(client_port "$n") pid $pid healthy"
		else
			echo "m$n 127.0.0.1:$(client_port "$n") pid $pid unhealthy"
			rc=1
		fi
	done
	exit $rc
	;;
stop)
	for n in 1 2 3; do stop_member "$n"; done
	if [ "${2:-}" = --wipe ]; then rm -rf "$DIR"; fi
	;;
stop-member)
	member_arg "${2:-}"
	case "${3:-}" in
	"") stop_member "$2" ;;
	--kill) stop_member "$2" KILL ;;
	*) die "stop-member N [--kill]" ;;
	esac
	;;
start-member)
	member_arg "${2:-}"
	cluster_token
	launch "$2"
	wait_healthy "$2" || exit 1
	;;
*)
	echo "usage: $0 start | status | stop [--wipe] | stop-member N [--kill] | start-member N" >&2
	exit 2
	;;
esac
