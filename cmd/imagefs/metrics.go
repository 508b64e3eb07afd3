package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/imagefs/imagefs/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsServer serves the Prometheus text format at /metrics.
type metricsServer struct {
	ln  net.Listener
	srv *http.Server
}

// listenMetrics listens on addr, which must be a loopback address: the
// endpoint has no authentication.
func listenMetrics(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics address %q: %w (want HOST:PORT, e.g. 127.0.0.1:9477)", addr, err)
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("metrics address %q: not a loopback address; the endpoint has no authentication, so it listens on 127.0.0.1, ::1 or localhost only", addr)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return ln, nil
}

// startMetrics serves m and more (and the Go runtime's and process's metrics) on
// ln in the background.
func startMetrics(ln net.Listener, m *metrics.Metrics, more ...prometheus.Collector) *metricsServer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(more...)
	reg.MustRegister(m,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector())
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "imagefs: metrics at /metrics")
	})
	s := &metricsServer{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("metrics endpoint stopped", "err", err)
		}
	}()
	slog.Info("metrics endpoint listening", "addr", ln.Addr().String(), "url", "http://"+ln.Addr().String()+"/metrics")
	return s
}

func (s *metricsServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}
