package main

import (
	"net"
	"os"
)

// sdNotify sends state (READY=1, STOPPING=1) to systemd when imagefs runs
// as a Type=notify service ($NOTIFY_SOCKET); otherwise it does nothing.
func sdNotify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	conn.Write([]byte(state))
}
