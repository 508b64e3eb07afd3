#!/usr/bin/env bash
# conformance.sh: OpenStack's own conformance suite for the Images API,
# Tempest's tempest.api.image.v2, against an imagefs mount's API (make
# conformance; .ci/run runs it).
#
# It installs Tempest (Debian's tempest) when missing, builds imagefs,
# starts the throwaway Keystone of scripts/keystone.sh (unless it runs),
# mounts a new single-host store with the Images API on
# 127.0.0.1:$IMAGEFS_API_PORT (default 29292) in keystone mode, the
# Tempest projects tp1..tp4 mapped to uids 1001..1004 (tpadm's user has
# the admin role: root), writes a Tempest workspace (tempest.conf and
# pre-built accounts.yaml: Tempest authenticates through Keystone only),
# runs `tempest run --concurrency 1 --regex '^tempest\.api\.image\.v2'`,
# and prints the counts and each test that failed.
#
# The target is integration/conformance/expected-failures.txt: the tests
# that do not pass yet, one a line with its reason. It exits 1 when a test
# not in that list fails (and says which listed ones pass now), 0
# otherwise. Everything it started (the mount, Keystone) is stopped when
# it ends, failed or not.
#
# Environment: IMAGEFS_API_PORT (29292), IMAGEFS_KEYSTONE_PORT (25000),
# IMAGEFS_KEYSTONE_DIR (/tmp/imagefs-keystone), IMAGEFS_CONFORMANCE_DIR
# (/tmp/imagefs-conformance: the store, the mount, the workspace, the
# logs; wiped at each start), TEMPEST_REGEX, TEMPEST_TIMEOUT (seconds,
# 3600), GO.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export IMAGEFS_API_PORT=${IMAGEFS_API_PORT:-29292}
export IMAGEFS_KEYSTONE_PORT=${IMAGEFS_KEYSTONE_PORT:-25000}
export IMAGEFS_KEYSTONE_DIR=${IMAGEFS_KEYSTONE_DIR:-/tmp/imagefs-keystone}
W=${IMAGEFS_CONFORMANCE_DIR:-/tmp/imagefs-conformance}
REGEX=${TEMPEST_REGEX:-'^tempest\.api\.image\.v2'}
TIMEOUT=${TEMPEST_TIMEOUT:-3600}
EXPECTED=$ROOT/integration/conformance/expected-failures.txt
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
BIN=$W/imagefs
MNT=$W/mnt
KS=$ROOT/scripts/keystone.sh
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

say() { echo "conformance: $*" >&2; }
die() { say "$*"; exit 1; }

started_keystone=0
mounted=0
cleanup() {
	local rc=$?
	if [ $mounted = 1 ]; then
		"$BIN" umount "$MNT" >/dev/null 2>&1 || fusermount3 -u "$MNT" 2>/dev/null || true
	fi
	if [ $started_keystone = 1 ]; then
		bash "$KS" stop >/dev/null 2>&1 || true
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Tempest, when missing (as scripts/deps.sh installs the test packages).
if ! command -v tempest >/dev/null 2>&1; then
	[ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 ||
		die "tempest is missing; install it first: sudo apt-get install -y tempest"
	say "installing tempest"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tempest >/dev/null
fi

# A mount left by a run that was killed.
if grep -qs " $MNT fuse" /proc/self/mounts; then
	fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
fi
rm -rf "$W"
mkdir -p "$W/store" "$MNT" "$W/tempest/etc" "$W/tempest/logs"
chmod 700 "$W"

start=$SECONDS
say "building imagefs"
"$GO" build -o "$BIN" ./cmd/imagefs

if ! bash "$KS" status >/dev/null 2>&1; then
	say "starting Keystone on 127.0.0.1:$IMAGEFS_KEYSTONE_PORT (scripts/keystone.sh; minutes on a new state directory)"
	started_keystone=1
fi
AUTH_URL=$(bash "$KS" start)
CRED=$IMAGEFS_KEYSTONE_DIR/credentials
pw() { awk -v u="$1" '$1==u{print $4}' "$CRED"; }
proj() { awk -v p="$1" '$1==p{print $2}' "$IMAGEFS_KEYSTONE_DIR/projects"; }

# The mount's config file: the service user and the project lines (the
# project ids are Keystone's, new with each state directory).
(
	umask 077
	{
		echo "[keystone]"
		echo "auth_url = $AUTH_URL"
		echo "username = imagefs"
		echo "password = $(pw imagefs)"
		echo "project_name = service"
		echo "timeout = 30s"
		echo "[api]"
		for i in 1 2 3 4; do echo "project = $(proj tp$i)=100$i"; done
	} >"$W/imagefs.conf"
)
say "mounting $W/store on $MNT with the Images API on 127.0.0.1:$IMAGEFS_API_PORT (keystone)"
"$BIN" "$W/store" "$MNT" -o "api_listen=127.0.0.1:$IMAGEFS_API_PORT,api_auth=keystone,config=$W/imagefs.conf,log_file=$W/imagefs.log"
mounted=1

# The Tempest workspace: pre-built accounts (the users of scripts/keystone.sh).
(
	umask 077
	for a in tu1:tp1:member tu2:tp2:member tu3:tp3:member tu4:tp4:member tuadm:tpadm:admin; do
		IFS=: read -r u p r <<<"$a"
		printf -- "- username: '%s'\n  project_name: '%s'\n  password: '%s'\n  domain_name: 'Default'\n  roles: ['%s']\n" \
			"$u" "$p" "$(pw "$u")" "$r"
	done >"$W/tempest/etc/accounts.yaml"
	cat >"$W/tempest/etc/tempest.conf" <<EOF
[DEFAULT]
log_dir = $W/tempest/logs
log_file = tempest.log

[auth]
use_dynamic_credentials = false
test_accounts_file = $W/tempest/etc/accounts.yaml
create_isolated_networks = false
admin_username = admin
admin_password = $(pw admin)
admin_project_name = admin
admin_domain_name = Default
default_credentials_domain_name = Default

[identity]
uri_v3 = $AUTH_URL
auth_version = v3
region = RegionOne

[identity-feature-enabled]
api_v2 = false

[service_available]
glance = true
nova = false
neutron = false
cinder = false
swift = false
horizon = false

[image]
region = RegionOne
endpoint_type = publicURL
container_formats = bare
disk_formats = raw

[image-feature-enabled]
api_v2 = true
api_v1 = false
import_image = true
os_glance_reserved = true

[validation]
run_validation = false
EOF
)
say "running tempest (one worker; $REGEX)"
t0=$SECONDS
rc=0
(cd "$W/tempest" && timeout "$TIMEOUT" tempest run --config-file "$W/tempest/etc/tempest.conf" \
	--concurrency 1 --regex "$REGEX") >"$W/tempest-run.log" 2>&1 || rc=$?
say "tempest ran in $((SECONDS - t0)) s (exit $rc; output in $W/tempest-run.log)"
[ $rc = 124 ] && say "tempest did not finish in ${TIMEOUT}s"

# The results: each test's line "{0} ID[attrs] ... ok|FAILED|SKIPPED: why".
/usr/bin/python3 - "$W/tempest-run.log" "$EXPECTED" <<'EOF'
import re, sys
log, expected_file = sys.argv[1:3]
res = {}
line_re = re.compile(r"^\{\d+\} (\S+?)(?:\[[^\]]*\])? .*?\.\.\. (ok|FAILED|SKIPPED)")
setup_re = re.compile(r"^\{\d+\} (setUpClass|tearDownClass) \((\S+)\) .*?\.\.\. (ok|FAILED|SKIPPED)")
for line in open(log, errors="replace"):
    m = setup_re.match(line)
    if m:
        res["%s (%s)" % (m.group(1), m.group(2))] = m.group(3)
        continue
    m = line_re.match(line)
    if m:
        res[m.group(1)] = m.group(2)
expected = {}
for line in open(expected_file):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    name, _, why = line.partition(" # ")
    expected[name.strip()] = why.strip()
ran = len(res)
passed = sorted(k for k, v in res.items() if v == "ok")
skipped = sorted(k for k, v in res.items() if v == "SKIPPED")
failed = sorted(k for k, v in res.items() if v == "FAILED")
print("conformance: tempest.api.image.v2: %d ran, %d passed, %d skipped, %d failed" % (ran, len(passed), len(skipped), len(failed)))
if ran == 0:
    print("conformance: no test ran; the tail of the output:")
    print("".join(open(log, errors="replace").readlines()[-30:]))
    sys.exit(1)
new = [t for t in failed if t not in expected]
for t in failed:
    print("  FAILED %s%s" % (t, "  (expected: %s)" % expected[t] if t in expected else "  (NOT in expected-failures.txt)"))
now_pass = [t for t in passed if t in expected]
for t in now_pass:
    print("  passes now, remove it from expected-failures.txt: %s" % t)
if new:
    print("conformance: %d failure(s) not in %s" % (len(new), expected_file))
    sys.exit(1)
print("conformance: every failure is listed in %s" % expected_file)
EOF
say "total time $((SECONDS - start)) s"
