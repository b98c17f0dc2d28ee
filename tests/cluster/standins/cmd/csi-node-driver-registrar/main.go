// Command csi-node-driver-registrar is a TEST STAND-IN for the kubernetes-csi node-driver-registrar
// sidecar (registry.k8s.io/sig-storage/csi-node-driver-registrar), used only by this project's test
// cluster because the Go module proxy does not serve the upstream module. It speaks the same
// protocol to kubelet: kubelet's plugin-registration gRPC API (k8s.io/kubelet
// pkg/apis/pluginregistration/v1) served on <plugin-registration-path>/<driver>-reg.sock, which
// kubelet's plugin watcher finds, calls GetInfo on (type CSIPlugin, the driver's name from the
// driver's GetPluginInfo, the driver socket's path on the host, supported versions), and then
// reports the outcome with NotifyRegistrationStatus. As upstream, a failed registration makes the
// container exit so that it is restarted. The shipped manifests keep the upstream image.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"csi-hostpath-selinux/tests/cluster/standins/internal/csiclient"
)

// supportedVersions are the CSI versions announced to kubelet, as upstream announces them.
var supportedVersions = []string{"1.0.0"}

type registrationServer struct {
	registerapi.UnimplementedRegistrationServer
	driverName string
	endpoint   string
	// status: 0 = kubelet has not answered yet, 1 = registered, 2 = registration failed.
	status atomic.Int32
	failed chan string
}

func (s *registrationServer) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	log.Printf("kubelet asked for the plugin info: %s at %s", s.driverName, s.endpoint)
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.driverName,
		Endpoint:          s.endpoint,
		SupportedVersions: supportedVersions,
	}, nil
}

func (s *registrationServer) NotifyRegistrationStatus(_ context.Context, status *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if status.GetPluginRegistered() {
		s.status.Store(1)
		log.Printf("kubelet registered driver %s", s.driverName)
	} else {
		s.status.Store(2)
		log.Printf("kubelet failed to register driver %s: %s", s.driverName, status.GetError())
		select {
		case s.failed <- status.GetError():
		default:
		}
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

func main() {
	csiAddress := flag.String("csi-address", "/run/csi/socket", "Address of the CSI driver socket inside this container.")
	kubeletPath := flag.String("kubelet-registration-path", "", "Path of the CSI driver socket on the host, as kubelet will open it.")
	registrationDir := flag.String("plugin-registration-path", "/registration", "kubelet's plugin registration directory inside this container.")
	healthPort := flag.Int("health-port", 0, "TCP port for /healthz (0.0.0.0), 0 for none, unless --http-endpoint is set.")
	httpEndpoint := flag.String("http-endpoint", "", "host:port for /healthz; overrides --health-port.")
	timeout := flag.Duration("timeout", time.Second, "Timeout of each call to the CSI driver.")
	flag.Int("v", 0, "Log level (accepted for compatibility; this stand-in always logs the registration steps).")
	flag.Parse()
	log.SetPrefix("csi-node-driver-registrar (test stand-in): ")
	if *kubeletPath == "" {
		log.Fatal("--kubelet-registration-path is required")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	conn, err := csiclient.Dial(*csiAddress)
	if err != nil {
		log.Fatalf("cannot connect to %s: %v", *csiAddress, err)
	}
	name, err := csiclient.DriverName(ctx, conn, *timeout)
	_ = conn.Close()
	if err != nil {
		log.Fatalf("cannot get the CSI driver's name: %v", err)
	}
	log.Printf("CSI driver name: %s", name)

	socketPath := filepath.Join(*registrationDir, name+"-reg.sock")
	if err := os.Remove(socketPath); err != nil && !os.IsNotExist(err) {
		log.Fatalf("cannot remove the stale socket %s: %v", socketPath, err)
	}
	listener, err := net.Listen("unix", socketPath)
	if err != nil {
		log.Fatalf("cannot listen on %s: %v", socketPath, err)
	}
	server := &registrationServer{driverName: name, endpoint: *kubeletPath, failed: make(chan string, 1)}
	grpcServer := grpc.NewServer()
	registerapi.RegisterRegistrationServer(grpcServer, server)
	go func() {
		if err := grpcServer.Serve(listener); err != nil {
			log.Printf("registration server stopped: %v", err)
		}
	}()
	log.Printf("registration socket %s is serving", socketPath)

	addr := *httpEndpoint
	if addr == "" && *healthPort > 0 {
		addr = fmt.Sprintf(":%d", *healthPort)
	}
	if addr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if _, err := os.Stat(socketPath); err != nil {
				http.Error(w, fmt.Sprintf("registration socket %s: %v", socketPath, err), http.StatusInternalServerError)
				return
			}
			if server.status.Load() == 2 {
				http.Error(w, "kubelet failed to register the driver", http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusOK)
			fmt.Fprintln(w, "ok")
		})
		httpServer := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := httpServer.ListenAndServe(); err != nil && err != http.ErrServerClosed {
				log.Fatalf("http server: %v", err)
			}
		}()
		log.Printf("serving /healthz on %s", addr)
	}

	code := 0
	select {
	case <-ctx.Done():
		log.Printf("stopping")
	case reason := <-server.failed:
		log.Printf("registration failed (%s): exiting so that the container restarts", reason)
		code = 1
	}
	grpcServer.Stop()
	_ = os.Remove(socketPath)
	os.Exit(code)
}
