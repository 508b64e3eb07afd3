#!/usr/bin/env bash
# keystone.sh: a throwaway OpenStack Keystone (identity v3) on 127.0.0.1 for
# the Images API's Keystone mode (tests, Tempest conformance, a new user's
# first try), from Debian's python3-keystone (Keystone 22), sqlite, fernet
# tokens.
#
#   scripts/keystone.sh start          set up the state directory when new
#                                      (db_sync, fernet and credential keys,
#                                      bootstrap), start the server unless it
#                                      runs, wait until it issues a token
#                                      (60 s at most), create what is missing
#                                      of the accounts below, print the auth URL
#   scripts/keystone.sh status         the server's pid; exit 1 unless it runs
#                                      and answers GET /v3 (within 5 s)
#   scripts/keystone.sh stop [--wipe]  stop it (SIGTERM, SIGKILL after 5 s);
#                                      --wipe also removes the state directory
#
# Server: Keystone's public WSGI application in a small threaded wsgiref
# server (STATE/serve.py) on 127.0.0.1:PORT (IMAGEFS_KEYSTONE_PORT, default
# 25000). State, config, log (log/keystone.log, log/serve.log) and pid in
# ${IMAGEFS_KEYSTONE_DIR:-/tmp/imagefs-keystone}. sqlite allows one writer:
# run Tempest with one worker.
#
# Accounts (domain Default; fixed throwaway passwords, for this test
# Keystone only; they are in STATE/credentials, mode 0600, never in a
# process's argv or a log):
#   admin / admin-imagefs-test     project admin, role admin (bootstrap)
#   tu1..tu4 / pw1..pw4            projects tp1..tp4, role member (Tempest)
#   tuadm / pwadm                  project tpadm, role admin (Tempest)
#   imagefs / imagefs-service-test project service, role service:
#                                  the Images API's service user, which
#                                  validates the callers' tokens
# Catalog: service "glance" of type image, public, internal and admin
# endpoints http://127.0.0.1:${IMAGEFS_API_PORT:-29292} in RegionOne, and
# identity at the auth URL. STATE/projects lists "NAME ID" of each project
# (the ids are Keystone's, random: imagefs's [api] project lines need them).
#
# A missing python3-keystone is installed with apt-get (root), as
# scripts/deps.sh does.
set -euo pipefail

DIR=${IMAGEFS_KEYSTONE_DIR:-/tmp/imagefs-keystone}
PORT=${IMAGEFS_KEYSTONE_PORT:-25000}
API_PORT=${IMAGEFS_API_PORT:-29292}
WAIT=${IMAGEFS_KEYSTONE_WAIT:-60}
PY=/usr/bin/python3
CONF=$DIR/keystone.conf
LOG=$DIR/log
PIDF=$DIR/keystone.pid
URL=http://127.0.0.1:$PORT/v3
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

die() { echo "keystone.sh: $*" >&2; exit 1; }

install() {
	dpkg-query -W -f='${Status}' python3-keystone 2>/dev/null | grep -q "ok installed" && return 0
	[ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 ||
		die "python3-keystone is missing; install it first: sudo apt-get install -y python3-keystone"
	echo "keystone.sh: installing python3-keystone" >&2
	local own=0 rc=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		own=1
	fi
	mkdir -p "$DIR"
	{ export DEBIAN_FRONTEND=noninteractive; apt-get update -qq &&
		apt-get install -y -qq --no-install-recommends python3-keystone curl >"$DIR/apt.log" 2>&1; } || rc=$?
	[ $own = 1 ] && rm -f /usr/sbin/policy-rc.d
	[ $rc = 0 ] || { tail -n 20 "$DIR/apt.log" >&2; die "apt-get install python3-keystone failed (log: $DIR/apt.log)"; }
}

# The fixed throwaway passwords, in a file only the owner reads; the
# provisioning reads them from there.
write_credentials() {
	[ -f "$DIR/credentials" ] && return 0
	(
		umask 077
		cat >"$DIR/credentials" <<'EOF'
admin admin admin admin-imagefs-test
tu1 tp1 member pw1
tu2 tp2 member pw2
tu3 tp3 member pw3
tu4 tp4 member pw4
tuadm tpadm admin pwadm
imagefs service service imagefs-service-test
EOF
	)
}

write_conf() {
	mkdir -p "$DIR/keys" "$LOG"
	chmod 700 "$DIR/keys"
	cat >"$CONF" <<EOF
# written by imagefs scripts/keystone.sh
[DEFAULT]
log_file = $LOG/keystone.log
use_stderr = false
[database]
connection = sqlite:///$DIR/keystone.sqlite
[token]
provider = fernet
expiration = 3600
[fernet_tokens]
key_repository = $DIR/keys/fernet-tokens
[fernet_receipts]
key_repository = $DIR/keys/fernet-receipts
[credential]
key_repository = $DIR/keys/credential
[cache]
enabled = false
[identity]
# bcrypt's fewest rounds: every password authentication (each Tempest
# test's) costs milliseconds, not a third of a second of CPU
password_hash_rounds = 4
EOF
	cat >"$DIR/serve.py" <<'EOF'
# Keystone's public WSGI application on 127.0.0.1:PORT, one thread per
# connection (wsgiref; a throwaway test server). argv: CONFIG PORT
# (Keystone parses sys.argv as its own options: they are taken out).
import os, socketserver, sys
import wsgiref.simple_server as ws

conf, port = sys.argv[1], int(sys.argv[2])
del sys.argv[1:]
os.environ["OS_KEYSTONE_CONFIG_FILES"] = conf
from keystone.server.wsgi import initialize_public_application


class Server(socketserver.ThreadingMixIn, ws.WSGIServer):
    daemon_threads = True
    request_queue_size = 64


class Handler(ws.WSGIRequestHandler):
    timeout = 60  # a silent client holds a thread this long at most

    def log_message(self, fmt, *args):  # no access log (tokens are headers)
        pass


app = initialize_public_application()
srv = ws.make_server("127.0.0.1", port, app, server_class=Server, handler_class=Handler)
print("keystone listening on 127.0.0.1:%d" % port, flush=True)
srv.serve_forever()
EOF
}

manage() { "$PY" -W ignore /usr/bin/keystone-manage --config-file "$CONF" "$@" >>"$LOG/manage.log" 2>&1 ||
	{ tail -n 20 "$LOG/manage.log" >&2; die "keystone-manage $1 failed (log: $LOG/manage.log)"; }; }

setup() {
	[ -f "$DIR/.bootstrapped" ] && return 0
	local u g
	u=$(id -un) g=$(id -gn)
	manage db_sync
	# WAL: a reader does not block a writer (Keystone's sqlite sessions
	# keep read transactions open: in the default rollback journal a
	# write then waits for them and fails, "database is locked").
	"$PY" -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute("PRAGMA journal_mode=WAL")' "$DIR/keystone.sqlite"
	manage fernet_setup --keystone-user "$u" --keystone-group "$g"
	manage credential_setup --keystone-user "$u" --keystone-group "$g"
	# The password from the environment (keystone-manage reads
	# OS_BOOTSTRAP_PASSWORD), not the command line.
	OS_BOOTSTRAP_PASSWORD=$(awk '$1=="admin"{print $4}' "$DIR/credentials") \
		manage bootstrap --bootstrap-username admin --bootstrap-project-name admin \
		--bootstrap-role-name admin --bootstrap-region-id RegionOne \
		--bootstrap-admin-url "$URL" --bootstrap-internal-url "$URL" --bootstrap-public-url "$URL"
	touch "$DIR/.bootstrapped"
}

pid_running() { # our server's pid, if it runs
	local pid
	[ -f "$PIDF" ] || return 0
	pid=$(cat "$PIDF")
	# The command line read whole first: "tr | grep -q" under pipefail
	# fails when grep exits before tr has written (SIGPIPE), and a running
	# server would then look stopped.
	cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
	case "$cmdline" in *"$DIR/serve.py"*) echo "$pid" ;; esac
	return 0
}

alive() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_server() {
	local pid i
	pid=$(pid_running)
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		for i in $(seq 100); do
			alive "$pid" || break
			[ "$i" = 100 ] && kill -9 "$pid" 2>/dev/null
			sleep 0.05
		done
		while alive "$pid"; do sleep 0.05; done
	fi
	rm -f "$PIDF"
}

launch() {
	[ -n "$(pid_running)" ] && return 0
	port_free "$PORT" || die "127.0.0.1:$PORT is in use by a process that is not our Keystone (IMAGEFS_KEYSTONE_PORT picks another port)"
	# stdio away from the caller (a test reading this script's output to
	# EOF must not wait for the server), and not the lock (fd 9).
	"$PY" -W ignore "$DIR/serve.py" "$CONF" "$PORT" </dev/null >>"$LOG/serve.log" 2>&1 9>&- &
	echo $! >"$PIDF"
}

wait_ready() {
	local deadline=$((SECONDS + WAIT)) pid
	pid=$(cat "$PIDF")
	while :; do
		alive "$pid" || { echo "keystone.sh: the server exited; tail of $LOG/serve.log:" >&2; tail -n 20 "$LOG/serve.log" >&2; return 1; }
		curl -fsS -m 2 -o /dev/null "$URL" 2>/dev/null && return 0
		if [ $SECONDS -ge $deadline ]; then
			echo "keystone.sh: not answering after ${WAIT}s; tail of $LOG/serve.log and keystone.log:" >&2
			tail -n 10 "$LOG/serve.log" "$LOG/keystone.log" >&2 || true
			return 1
		fi
		sleep 0.2
	done
}

# provision: the projects, users, roles, service and endpoints above that
# are missing, through the REST API as admin (one Python process; the
# passwords come from STATE/credentials). Writes STATE/projects.
provision() {
	"$PY" - "$URL" "$DIR/credentials" "http://127.0.0.1:$API_PORT" "$DIR/projects" <<'EOF' >>"$LOG/provision.log" 2>&1 ||
import json, sys, urllib.request, urllib.error

url, credfile, image_url, projects_out = sys.argv[1:5]
accounts = [line.split() for line in open(credfile) if line.strip()]
admin_pw = next(a[3] for a in accounts if a[0] == "admin")


def call(method, path, body=None, token=None, want=(200, 201, 204)):
    req = urllib.request.Request(url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            data = r.read()
            return r.status, r.headers, json.loads(data) if data else None
    except urllib.error.HTTPError as e:
        if e.code in want:
            return e.code, e.headers, None
        raise SystemExit("%s %s: %d %s" % (method, path, e.code, e.read()[:300]))


_, h, _ = call("POST", "/auth/tokens", {"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": admin_pw}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
tok = h["X-Subject-Token"]


def find(kind, name, extra=""):
    _, _, b = call("GET", "/%s?name=%s%s" % (kind, name, extra), token=tok)
    items = b[kind]
    return items[0]["id"] if items else None


def ensure(kind, name, body):
    i = find(kind, name)
    if i:
        return i
    key = kind[:-1]
    _, _, b = call("POST", "/" + kind, {key: dict(body, name=name)}, token=tok)
    print("created %s %s" % (key, name))
    return b[key]["id"]


roles = {}
for r in ("admin", "member", "reader", "service"):
    roles[r] = ensure("roles", r, {})
projects = {}
for user, project, role_list, pw in accounts:
    pid = ensure("projects", project, {"domain_id": "default", "description": "imagefs test"})
    projects[project] = pid
    uid = ensure("users", user, {"domain_id": "default", "password": pw, "default_project_id": pid})
    for r in role_list.split(","):
        call("PUT", "/projects/%s/users/%s/roles/%s" % (pid, uid, roles[r]), token=tok)

# The image service and its endpoints.
_, _, b = call("GET", "/services?type=image", token=tok)
if b["services"]:
    sid = b["services"][0]["id"]
else:
    _, _, s = call("POST", "/services", {"service": {"name": "glance", "type": "image",
                                                       "description": "imagefs Images API"}}, token=tok)
    sid = s["service"]["id"]
_, _, b = call("GET", "/endpoints?service_id=" + sid, token=tok)
have = {e["interface"]: e for e in b["endpoints"]}
for iface in ("public", "internal", "admin"):
    e = have.get(iface)
    if e is None:
        call("POST", "/endpoints", {"endpoint": {"service_id": sid, "interface": iface, "url": image_url,
                                                 "region_id": "RegionOne"}}, token=tok)
    elif e["url"] != image_url:
        call("PATCH", "/endpoints/" + e["id"], {"endpoint": {"url": image_url}}, token=tok)
with open(projects_out + ".tmp", "w") as f:
    for name, pid in sorted(projects.items()):
        f.write("%s %s\n" % (name, pid))
import os
os.replace(projects_out + ".tmp", projects_out)
EOF
	{ tail -n 20 "$LOG/provision.log" >&2; return 1; }
}

case "${1:-}" in
start | stop)
	mkdir -p "$DIR"
	chmod 700 "$DIR"
	exec 9>"$DIR/.keystone.sh.lock"
	flock 9
	;;
esac

case "${1:-}" in
start)
	install
	write_credentials
	write_conf
	setup
	running=$(pid_running)
	launch
	if ! wait_ready || ! provision; then
		# A server this start did not launch is left running.
		[ -n "$running" ] || stop_server
		die "Keystone did not start or could not be provisioned (logs in $LOG)"
	fi
	echo "$URL"
	;;
status)
	pid=$(pid_running)
	if [ -z "$pid" ]; then
		echo "keystone 127.0.0.1:$PORT stopped"
		exit 1
	fi
	echo "keystone 127.0.0.1:$PORT pid $pid"
	curl -fsS -m 5 -o /dev/null "$URL" 2>/dev/null || { echo "keystone does not answer GET /v3"; exit 1; }
	;;
stop)
	stop_server
	if [ "${2:-}" = --wipe ]; then rm -rf "$DIR"; fi
	;;
*)
	echo "usage: $0 start | status | stop [--wipe]" >&2
	exit 2
	;;
esac
