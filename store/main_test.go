package store

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv("IMAGEFS_TEST_LOG") == "" {
		SetLogger(slog.New(slog.DiscardHandler))
	}
	os.Exit(m.Run())
}
