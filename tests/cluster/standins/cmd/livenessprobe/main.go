// Command livenessprobe is a TEST STAND-IN for the kubernetes-csi livenessprobe sidecar
// (registry.k8s.io/sig-storage/livenessprobe), used only by this project's test cluster because
// the Go module proxy does not serve the upstream module. It speaks the same protocol: an HTTP
// endpoint whose /healthz calls the CSI driver's Identity Probe and answers 200 when the driver is
// ready, 500 with the reason otherwise. The shipped manifests keep the upstream image.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"csi-hostpath-selinux/tests/cluster/standins/internal/csiclient"
)

func main() {
	csiAddress := flag.String("csi-address", "/run/csi/socket", "Address of the CSI driver socket.")
	probeTimeout := flag.Duration("probe-timeout", time.Second, "Timeout of each Probe call.")
	healthPort := flag.String("health-port", "9808", "TCP port for /healthz (0.0.0.0), unless --http-endpoint is set.")
	httpEndpoint := flag.String("http-endpoint", "", "host:port for /healthz; overrides --health-port.")
	flag.Int("v", 0, "Log level (accepted for compatibility; this stand-in logs errors only).")
	flag.Parse()
	log.SetPrefix("livenessprobe (test stand-in): ")

	conn, err := csiclient.Dial(*csiAddress)
	if err != nil {
		log.Fatalf("cannot connect to %s: %v", *csiAddress, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	name, err := csiclient.DriverName(ctx, conn, *probeTimeout)
	if err != nil {
		log.Fatalf("cannot get the CSI driver's name: %v", err)
	}
	log.Printf("probing CSI driver %s at %s", name, *csiAddress)

	addr := *httpEndpoint
	if addr == "" {
		addr = ":" + *healthPort
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := csiclient.Probe(r.Context(), conn, *probeTimeout); err != nil {
			log.Printf("health check failed: %v", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, "ok")
	})
	server := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = server.Close()
	}()
	log.Printf("serving /healthz on %s", addr)
	if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatalf("http server: %v", err)
	}
}
