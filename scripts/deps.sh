#!/bin/sh
# deps.sh run|test: install the Debian packages that `make run` (run) or
# `make test` and .ci/run (test) need, if any is missing. Installs with
# apt-get as root; otherwise says what to install and exits 1. Does
# nothing (not even apt-get update) when everything is there.
set -eu

case "${1:-test}" in
run)	pairs="fuse3:fusermount3" ;;
test)	pairs="fuse3:fusermount3 fuse3:mount.fuse3 attr:getfattr attr:setfattr qemu-utils:qemu-img
	       rsync:rsync 7zip:7zz libvhdi-utils:vhdiinfo util-linux:setpriv mount:mount
	       strace:strace vim:vim ed:ed python3:python3 e2fsprogs:chattr
	       etcd-server:etcd etcd-client:etcdctl
	       swift:swift-config swift-proxy:swift-proxy-server swift-account:swift-account-server
	       swift-container:swift-container-server swift-object:swift-object-server
	       python3-swiftclient:swift memcached:memcached curl:curl
	       python3-openstackclient:openstack python3-glanceclient:glance python3-tempest:tempest
	       python3-keystone:keystone-manage" ;;
*)	echo "usage: $0 run|test" >&2; exit 2 ;;
esac

# mount.fuse3 and friends live in /sbin, which a normal user's PATH may lack.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
need=""
for pc in $pairs; do
	pkg=${pc%%:*} cmd=${pc#*:}
	command -v "$cmd" >/dev/null 2>&1 && continue
	case " $need " in *" $pkg "*) ;; *) need="$need $pkg" ;; esac
done
[ -z "$need" ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "deps: installing missing Debian packages:$need" >&2
	export DEBIAN_FRONTEND=noninteractive
	# policy-rc.d: no package starts its service (etcd-server would start
	# an etcd on 2379, memcached one on 11211, swift-* their servers; the
	# tests run their own with scripts/etcd.sh and scripts/swift.sh).
	own=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		own=1
	fi
	rc=0
	apt-get update -qq || rc=$?
	# shellcheck disable=SC2086
	[ $rc = 0 ] && { apt-get install -y -qq --no-install-recommends $need >/dev/null || rc=$?; }
	[ $own = 1 ] && rm -f /usr/sbin/policy-rc.d
	exit $rc
fi
echo "deps: missing Debian packages:$need" >&2
echo "deps: install them first: sudo apt-get install -y$need" >&2
exit 1
