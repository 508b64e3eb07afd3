package main

import (
	"context"
	"log/slog"

	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/etcdkv"
)

// etcdConfig maps sc onto etcdkv.Config.
func (sc *sharedConfig) etcdConfig(lg *slog.Logger) etcdkv.Config {
	return etcdkv.Config{
		Endpoints:      sc.Endpoints,
		Namespace:      sc.Namespace,
		Username:       sc.Username,
		Password:       sc.Password,
		CertFile:       sc.CertFile,
		KeyFile:        sc.KeyFile,
		CAFile:         sc.CAFile,
		DialTimeout:    sc.DialTimeout,
		RequestTimeout: sc.RequestTimeout,
		LeaseTTL:       sc.LeaseTTL,
		Logger:         lg,
	}
}

// openCatalog opens the shared catalog sc names. etcdkv's errors name no
// credential (kv's contract).
func openCatalog(ctx context.Context, sc *sharedConfig, lg *slog.Logger) (kv.Backend, error) {
	return etcdkv.Open(ctx, sc.etcdConfig(lg))
}
