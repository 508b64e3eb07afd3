package main

import (
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// newLogger returns the one logger of a mount: the store's events,
// go-fuse's messages (and with debug its request trace) and imagefs's own
// lines, as text (logfmt) or JSON, one line per event.
func newLogger(w io.Writer, format string, debug bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if debug {
		opts.Level = slog.LevelDebug
	}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h)
}

// installLogger makes l slog's default (and so the log package's); the
// store gets it in store.Options.Logger (mount), or as slog's default
// (store.Check).
func installLogger(l *slog.Logger) {
	slog.SetDefault(l)
}

// logOutput opens where a mount's logs go: --log-file if given, else
// stderr in the foreground. A daemon (the mount helper's background
// child) logs to stderr only when stderr is the systemd journal, else to
// syslog, else nowhere. The returned closer closes what was opened.
func logOutput(c *mountConfig) (io.Writer, func(), error) {
	if c.logFile != "" {
		f, err := os.OpenFile(c.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("log file: %w", err)
		}
		return f, func() { f.Close() }, nil
	}
	if c.readyFD == 0 || stderrIsJournal() {
		return os.Stderr, func() {}, nil
	}
	if w, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "imagefs"); err == nil {
		return w, func() { w.Close() }, nil
	}
	return io.Discard, func() {}, nil
}

// stderrIsJournal reports whether stderr is the stream systemd connected
// to the journal ($JOURNAL_STREAM is its device:inode).
func stderrIsJournal() bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		return false
	}
	return uint64(st.Dev) == d && st.Ino == i
}
