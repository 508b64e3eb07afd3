//go:build !etcdkv

package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/imagefs/imagefs/store/kv"
)

// openCatalog opens the shared catalog sc names.
//
// MERGE: this stub stands until store/kv/etcdkv is merged; then delete
// this file and drop the build constraint of shared_etcd.go, which holds
// the real openCatalog (etcdkv.Open with sc.etcdConfig()).
func openCatalog(ctx context.Context, sc *sharedConfig, lg *slog.Logger) (kv.Backend, error) {
	return nil, errors.New("shared catalog: not built in yet")
}
