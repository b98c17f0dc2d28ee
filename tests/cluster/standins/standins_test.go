// Tests of the test stand-ins through their real interfaces: each command is built and run as a
// process against a CSI Identity server on a Unix socket; the registrar is then driven as kubelet's
// plugin watcher drives it (GetInfo, NotifyRegistrationStatus), the livenessprobe over HTTP.
package standins_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const driverName = "hostpath-selinux.csi.k8s.io"

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "standins-bin-")
	if err != nil {
		panic(err)
	}
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/...")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		panic(fmt.Sprintf("go build: %v", err))
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// identity is a CSI Identity server whose readiness the test switches.
type identity struct {
	csi.UnimplementedIdentityServer
	ready atomic.Bool
}

func (i *identity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: driverName, VendorVersion: "test"}, nil
}

func (i *identity) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(i.ready.Load())}, nil
}

func serveCSI(t *testing.T, dir string) (*identity, string) {
	t.Helper()
	sock := filepath.Join(dir, "csi.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	id := &identity{}
	id.ready.Store(true)
	s := grpc.NewServer()
	csi.RegisterIdentityServer(s, id)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return id, sock
}

func start(t *testing.T, name string, args ...string) (*exec.Cmd, chan error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return cmd, done
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func healthz(addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestRegistrarRegistersWithKubelet(t *testing.T) {
	dir := t.TempDir()
	_, csiSock := serveCSI(t, dir)
	regDir := filepath.Join(dir, "registration")
	if err := os.Mkdir(regDir, 0o755); err != nil {
		t.Fatal(err)
	}
	hostPath := "/var/lib/kubelet/plugins/" + driverName + "/csi.sock"
	addr := freePort(t)
	_, done := start(t, "csi-node-driver-registrar", "--v=2", "--csi-address="+csiSock,
		"--kubelet-registration-path="+hostPath, "--plugin-registration-path="+regDir,
		"--http-endpoint="+addr)

	// What kubelet's plugin watcher does: find <driver>-reg.sock and call GetInfo on it.
	regSock := filepath.Join(regDir, driverName+"-reg.sock")
	waitFor(t, "the registration socket", func() bool { _, err := os.Stat(regSock); return err == nil })
	conn, err := grpc.NewClient("unix://"+regSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := registerapi.NewRegistrationClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := client.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatalf("GetInfo: %v", err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != driverName || info.Endpoint != hostPath ||
		strings.Join(info.SupportedVersions, ",") != "1.0.0" {
		t.Fatalf("GetInfo returned %+v", info)
	}
	waitFor(t, "/healthz", func() bool { code, _ := healthz(addr); return code == http.StatusOK })
	if _, err := client.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatalf("NotifyRegistrationStatus: %v", err)
	}
	if code, body := healthz(addr); code != http.StatusOK {
		t.Fatalf("healthz after registration: %d %s", code, body)
	}

	// A refused registration makes the registrar exit non-zero (its container restarts) and
	// remove its socket, as upstream does.
	_, _ = client.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: false, Error: "refused by test"})
	select {
	case err := <-done:
		if exitErr, ok := err.(*exec.ExitError); !ok || exitErr.ExitCode() != 1 {
			t.Fatalf("registrar exited with %v, want exit status 1", err)
		}
		done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("registrar did not exit after a failed registration")
	}
	if _, err := os.Stat(regSock); !os.IsNotExist(err) {
		t.Fatalf("registration socket left behind: %v", err)
	}
}

func TestLivenessprobeReflectsProbe(t *testing.T) {
	dir := t.TempDir()
	id, csiSock := serveCSI(t, dir)
	addr := freePort(t)
	start(t, "livenessprobe", "--csi-address="+csiSock, "--http-endpoint="+addr)

	waitFor(t, "/healthz", func() bool { code, _ := healthz(addr); return code == http.StatusOK })
	id.ready.Store(false)
	code, body := healthz(addr)
	if code != http.StatusInternalServerError || !strings.Contains(body, "not ready") {
		t.Fatalf("healthz of a driver that is not ready: %d %q", code, body)
	}
	id.ready.Store(true)
	if code, body := healthz(addr); code != http.StatusOK {
		t.Fatalf("healthz of a ready driver: %d %q", code, body)
	}
}
