package store

import (
	"log/slog"
	"os"
	"testing"

	"github.com/imagefs/imagefs/internal/testutil"
)

func TestMain(m *testing.M) {
	if os.Getenv("IMAGEFS_TEST_LOG") == "" {
		slog.SetDefault(slog.New(slog.DiscardHandler)) // what Options.Logger nil means
	}
	code := m.Run()
	testutil.StopServices() // the etcd test cluster, if a test started it
	os.Exit(code)
}
