package store

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv("IMAGEFS_TEST_LOG") == "" {
		slog.SetDefault(slog.New(slog.DiscardHandler)) // what Options.Logger nil means
	}
	os.Exit(m.Run())
}
