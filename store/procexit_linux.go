package store

import (
	"encoding/binary"
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel's process events connector (linux/cn_proc.h): with
// CAP_NET_ADMIN a netlink socket hears every process's exit and its
// status, which a non-parent cannot otherwise learn.
const (
	cnIdxProc         = 1
	cnValProc         = 1
	procCnMcastListen = 1
	procEventExit     = 0x80000000
	nlmsgHdrLen       = 16
	cnMsgLen          = 20
)

// listenProcExits opens a process events listener; recv returns the exits
// it hears, as (thread group id, wait status) pairs of group leaders.
func listenProcExits() (recv func() ([][2]uint32, error), closeFn func(), err error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (func() ([][2]uint32, error), func(), error) {
		unix.Close(fd)
		return nil, nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		return fail(err)
	}
	tv := unix.NsecToTimeval(int64(time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail(err)
	}
	msg := make([]byte, nlmsgHdrLen+cnMsgLen+4)
	le := binary.LittleEndian
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint16(msg[4:], unix.NLMSG_DONE)
	le.PutUint32(msg[nlmsgHdrLen:], cnIdxProc)
	le.PutUint32(msg[nlmsgHdrLen+4:], cnValProc)
	le.PutUint16(msg[nlmsgHdrLen+16:], 4)
	le.PutUint32(msg[nlmsgHdrLen+cnMsgLen:], procCnMcastListen)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(err)
	}
	buf := make([]byte, 64<<10)
	recv = func() ([][2]uint32, error) {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOBUFS) {
			return nil, nil // timeout, or events lost under load
		}
		if err != nil {
			return nil, err
		}
		var out [][2]uint32
		for b := buf[:n]; len(b) >= nlmsgHdrLen; {
			l := int(le.Uint32(b))
			if l < nlmsgHdrLen || l > len(b) {
				break
			}
			// proc_event: what, cpu, timestamp_ns, then exit_proc_event:
			// process_pid, process_tgid, exit_code.
			if ev := b[nlmsgHdrLen+cnMsgLen : l]; len(ev) >= 28 && le.Uint32(ev) == procEventExit {
				pid, tgid, code := le.Uint32(ev[16:]), le.Uint32(ev[20:]), le.Uint32(ev[24:])
				if pid == tgid {
					out = append(out, [2]uint32{tgid, code})
				}
			}
			b = b[(l+3)&^3:]
		}
		return out, nil
	}
	return recv, func() { unix.Close(fd) }, nil
}
