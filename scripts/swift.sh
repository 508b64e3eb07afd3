#!/usr/bin/env bash
# swift.sh: a throwaway OpenStack Swift "all in one" on 127.0.0.1 for
# imagefs's Swift data store (tests, and a new user's first try), from
# Debian's swift packages.
#
#   scripts/swift.sh start           start the servers that are not running,
#                                    wait until the proxy authenticates (60 s
#                                    at most), print the auth URL
#   scripts/swift.sh status          each server's pid; exit 1 unless all run
#                                    and the proxy answers its healthcheck
#   scripts/swift.sh stop [--wipe]   stop the servers (SIGTERM, SIGKILL after
#                                    5 s) and restore /etc/swift/swift.conf;
#                                    --wipe also removes the data directory
#
# Servers: proxy on 127.0.0.1:PORT (IMAGEFS_SWIFT_PORT, default 28080) with
# tempauth (user test:tester, key testing; account AUTH_test), object,
# container and account servers on PORT+1, PORT+2, PORT+3, memcached on
# PORT+4 (tempauth keeps its tokens there: without it every request is a
# 503). One replica on one device, a plain directory. Data, configs, logs
# (log/*.log) and pids (run/*.pid) in ${IMAGEFS_SWIFT_DIR:-/tmp/imagefs-swift}.
#
# Clients: ST_AUTH=http://127.0.0.1:PORT/auth/v1.0 ST_USER=test:tester ST_KEY=testing
#
# Missing packages are installed with apt-get (root) without starting their
# packaged services (policy-rc.d); packaged swift or memcached units that
# systemd runs are stopped. Swift reads /etc/swift/swift.conf (hash path
# prefix and suffix, storage policies) at that fixed path: start installs
# ours there (keeping the original as swift.conf.imagefs-orig) and stop puts
# the original back (or removes ours).
set -euo pipefail

DIR=${IMAGEFS_SWIFT_DIR:-/tmp/imagefs-swift}
PORT=${IMAGEFS_SWIFT_PORT:-28080}
WAIT=${IMAGEFS_SWIFT_WAIT:-60}
ETC=$DIR/etc
DEVS=$DIR/srv/node
RUN=$DIR/run
LOG=$DIR/log
CONF=/etc/swift/swift.conf
ORIG=/etc/swift/swift.conf.imagefs-orig
SERVERS="object container account proxy"
PKGS="swift swift-proxy swift-account swift-container swift-object python3-swiftclient memcached curl"
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

die() { echo "swift.sh: $*" >&2; exit 1; }

port_of() {
	case $1 in
	proxy) echo "$PORT" ;; object) echo $((PORT + 1)) ;; container) echo $((PORT + 2)) ;;
	account) echo $((PORT + 3)) ;; memcached) echo $((PORT + 4)) ;;
	esac
}

# install: the Debian packages when one is missing (scripts/deps.sh test
# does the same for CI).
install() {
	local missing="" p
	for p in $PKGS; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	[ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 ||
		die "missing packages:$missing; install them first: sudo apt-get install -y$missing"
	echo "swift.sh: installing$missing" >&2
	# policy-rc.d: the maintainer scripts must not start the packaged
	# memcached (on 11211) or swift units (invoke-rc.d asks it; 101 =
	# action forbidden).
	local own=0 rc=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		own=1
	fi
	mkdir -p "$DIR"
	# shellcheck disable=SC2086
	{ export DEBIAN_FRONTEND=noninteractive; apt-get update -qq &&
		apt-get install -y -qq --no-install-recommends $missing >"$DIR/apt.log" 2>&1; } || rc=$?
	[ $own = 1 ] && rm -f /usr/sbin/policy-rc.d
	[ $rc = 0 ] || { tail -n 20 "$DIR/apt.log" >&2; die "apt-get install$missing failed (log: $DIR/apt.log)"; }
}

stop_packaged() {
	[ -d /run/systemd/system ] || return 0
	systemctl stop 'swift-*' memcached 2>/dev/null || true
}

pidof_server() { # pid of server $1 if it runs and is ours, else nothing
	local f=$RUN/$1.pid pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	# A recorded pid may have been reused: ours only if its command line
	# names our config (servers) or our port (memcached).
	# (Read whole first: `tr | grep -q` under pipefail fails when grep's
	# early exit gives tr a SIGPIPE, and a running server looks stopped.)
	local cmdline
	cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
	if [ "$1" = memcached ]; then
		case "$cmdline" in *"-p $(port_of memcached) "*) echo "$pid" ;; esac
	else
		case "$cmdline" in *"$ETC/$1-server.conf"*) echo "$pid" ;; esac
	fi
	return 0
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { # pid $1 runs (a zombie its parent has not reaped yet does not)
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

stop_server() { # $1: SIGTERM, SIGKILL after 5 s, wait
	local pid i
	pid=$(pidof_server "$1")
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		for i in $(seq 100); do
			alive "$pid" || break
			[ "$i" = 100 ] && kill -9 "$pid" 2>/dev/null
			sleep 0.05
		done
		while alive "$pid"; do sleep 0.05; done
	fi
	rm -f "$RUN/$1.pid"
}

# restore_conf: the original /etc/swift/swift.conf back, or ours removed,
# unless another imagefs Swift (another IMAGEFS_SWIFT_DIR) still runs on it.
restore_conf() {
	local others
	others=$(ls /etc/swift/.imagefs-users 2>/dev/null | grep -v "^$(echo "$DIR" | tr / _)\$" || true)
	rm -f "/etc/swift/.imagefs-users/$(echo "$DIR" | tr / _)"
	[ -z "$others" ] || return 0
	rmdir /etc/swift/.imagefs-users 2>/dev/null || true
	if [ -f "$ORIG" ]; then
		mv -f "$ORIG" "$CONF"
	elif [ -f "$CONF" ] && grep -q "imagefs-swift-sh" "$CONF"; then
		rm -f "$CONF"
	fi
}

write_conf() {
	mkdir -p "$ETC" "$DEVS/d1" "$RUN" "$LOG"
	cat >"$ETC/swift.conf" <<EOF
# written by imagefs scripts/swift.sh (imagefs-swift-sh); restored at stop
[swift-hash]
swift_hash_path_prefix = imagefs-ci-prefix
swift_hash_path_suffix = imagefs-ci-suffix

[storage-policy:0]
name = Policy-0
default = yes

[swift-constraints]
EOF
	mkdir -p /etc/swift /etc/swift/.imagefs-users
	touch "/etc/swift/.imagefs-users/$(echo "$DIR" | tr / _)"
	if ! cmp -s "$ETC/swift.conf" "$CONF"; then
		if [ -f "$CONF" ] && [ ! -f "$ORIG" ]; then
			cp -p "$CONF" "$ORIG"
		fi
		cp "$ETC/swift.conf" "$CONF"
	fi

	local s
	for s in object container account; do
		{
			cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $(port_of $s)
# workers = 0: one process, no fork, no privilege drop ("user" unused)
workers = 0
user = $(id -un)
swift_dir = $ETC
devices = $DEVS
mount_check = false
log_level = INFO

[pipeline:main]
pipeline = healthcheck $s-server

[app:$s-server]
use = egg:swift#$s

[filter:healthcheck]
use = egg:swift#healthcheck

[$s-replicator]
[$s-auditor]
EOF
			case $s in
			object) printf '[object-reconstructor]\n[object-updater]\n' ;;
			container) printf '[container-updater]\n[container-sharder]\n' ;;
			account) printf '[account-reaper]\n' ;;
			esac
		} >"$ETC/$s-server.conf"
	done
	cat >"$ETC/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PORT
workers = 0
user = $(id -un)
swift_dir = $ETC
log_level = INFO

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:tempauth]
use = egg:swift#tempauth
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$(port_of memcached)

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:tempurl]
use = egg:swift#tempurl
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
EOF
	# Rings: part power 10, 1 replica, one device d1 each, through the
	# ring builder's library in one python (the CLI takes 9 starts).
	if [ ! -f "$ETC/object.ring.gz" ] || [ "$(cat "$ETC/.ring-port" 2>/dev/null)" != "$PORT" ]; then
		rm -f "$ETC"/*.builder "$ETC"/*.ring.gz
		/usr/bin/python3 - "$ETC" "$(port_of object)" "$(port_of container)" "$(port_of account)" <<'EOF'
import sys
from swift.common.ring import RingBuilder
etc = sys.argv[1]
for name, port in zip(("object", "container", "account"), map(int, sys.argv[2:5])):
    b = RingBuilder(10, 1, 0)
    b.add_dev({"region": 1, "zone": 1, "ip": "127.0.0.1", "port": port,
               "device": "d1", "weight": 1, "meta": ""})
    b.rebalance()
    b.get_ring().save("%s/%s.ring.gz" % (etc, name))
    b.save("%s/%s.builder" % (etc, name))
EOF
		echo "$PORT" >"$ETC/.ring-port"
	fi
}

check_xattrs() { # Swift keeps object metadata in user.* xattrs
	/usr/bin/python3 - "$DEVS/d1" <<'EOF' || die "$DEVS/d1 does not keep user xattrs; set IMAGEFS_SWIFT_DIR to a directory on ext4 or xfs"
import sys, os
p = os.path.join(sys.argv[1], ".xattr-test")
open(p, "w").close()
try:
    os.setxattr(p, "user.swift.test", b"x" * 254)
finally:
    os.unlink(p)
EOF
}

launch() { # server $1, unless it runs
	local s=$1 p
	[ -n "$(pidof_server "$s")" ] && return 0
	p=$(port_of "$s")
	port_free "$p" || die "127.0.0.1:$p is in use by a process that is not our $s (IMAGEFS_SWIFT_PORT picks other ports)"
	# stdin/stdout/stderr away from the caller (a test reading this
	# script's output to EOF must not wait for the servers), and not the
	# lock (fd 9). -v: Swift logs to stderr, else only to syslog.
	if [ "$s" = memcached ]; then
		local u=()
		[ "$(id -u)" = 0 ] && u=(-u root)
		memcached "${u[@]}" -l 127.0.0.1 -p "$p" -U 0 -m 64 </dev/null >>"$LOG/memcached.log" 2>&1 9>&- &
	else
		/usr/bin/python3 -W ignore::DeprecationWarning "/usr/bin/swift-$s-server" "$ETC/$s-server.conf" -v \
			</dev/null >>"$LOG/$s.log" 2>&1 9>&- &
	fi
	echo $! >"$RUN/$s.pid"
}

token() { # a tempauth token, or nothing
	curl -fsS -m 5 -D - -o /dev/null -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' \
		"http://127.0.0.1:$PORT/auth/v1.0" 2>/dev/null | tr -d '\r' |
		awk -F': ' 'tolower($1)=="x-auth-token"{print $2}'
}

wait_ready() {
	local deadline=$((SECONDS + WAIT)) s p tok
	while :; do
		for s in $SERVERS memcached; do
			alive "$(cat "$RUN/$s.pid" 2>/dev/null || echo x)" || {
				echo "swift.sh: $s exited; tail of $LOG/$s.log:" >&2
				tail -n 20 "$LOG/$s.log" >&2
				return 1
			}
		done
		ok=1
		for s in $SERVERS; do
			p=$(port_of "$s")
			curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$p/healthcheck" 2>/dev/null || { ok=0; break; }
		done
		if [ $ok = 1 ]; then
			# tempauth round trip (needs memcached), account created
			tok=$(token || true)
			if [ -n "$tok" ] && curl -fsS -m 5 -o /dev/null -X POST -H "X-Auth-Token: $tok" \
				"http://127.0.0.1:$PORT/v1/AUTH_test" 2>/dev/null; then
				return 0
			fi
		fi
		if [ $SECONDS -ge $deadline ]; then
			echo "swift.sh: not ready after ${WAIT}s; tails of the logs in $LOG:" >&2
			for s in $SERVERS memcached; do
				echo "--- $LOG/$s.log" >&2
				tail -n 10 "$LOG/$s.log" >&2
			done
			return 1
		fi
		sleep 0.2
	done
}

case "${1:-}" in
start | stop)
	mkdir -p "$DIR"
	exec 9>"$DIR/.swift.sh.lock"
	flock 9
	;;
esac

case "${1:-}" in
start)
	install
	stop_packaged
	write_conf
	check_xattrs
	for s in memcached $SERVERS; do launch "$s"; done
	wait_ready || {
		for s in proxy account container object memcached; do stop_server "$s"; done
		restore_conf
		exit 1
	}
	echo "http://127.0.0.1:$PORT/auth/v1.0"
	;;
status)
	rc=0
	for s in $SERVERS memcached; do
		pid=$(pidof_server "$s")
		if [ -n "$pid" ]; then
			echo "$s 127.0.0.1:$(port_of "$s") pid $pid"
		else
			echo "$s 127.0.0.1:$(port_of "$s") stopped"
			rc=1
		fi
	done
	if [ $rc = 0 ] && ! curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$PORT/healthcheck" 2>/dev/null; then
		echo "proxy does not answer its healthcheck"
		rc=1
	fi
	exit $rc
	;;
stop)
	for s in proxy account container object memcached; do stop_server "$s"; done
	[ -d /etc/swift ] && restore_conf
	if [ "${2:-}" = --wipe ]; then rm -rf "$DIR"; fi
	;;
*)
	echo "usage: $0 start | status | stop [--wipe]" >&2
	exit 2
	;;
esac
