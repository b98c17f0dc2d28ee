// Package csiclient is the CSI side shared by the project's TEST STAND-INS for the
// kubernetes-csi node-driver-registrar and livenessprobe sidecars (see ../../README.md): a gRPC
// connection to the driver's Unix socket and the two Identity calls the sidecars make.
package csiclient

import (
	"context"
	"fmt"
	"log"
	"net"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Dial returns a client connection to the CSI driver listening on the Unix socket at address
// ("/csi/csi.sock" or "unix:///csi/csi.sock"). Like the upstream sidecars, the connection is lazy:
// calls wait for the socket to appear.
func Dial(address string) (*grpc.ClientConn, error) {
	path := strings.TrimPrefix(address, "unix://")
	return grpc.NewClient("passthrough:///"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}),
	)
}

// DriverName asks the driver for its name (GetPluginInfo), retrying every second until it answers
// or ctx ends: the driver container may start after the sidecar.
func DriverName(ctx context.Context, conn *grpc.ClientConn, timeout time.Duration) (string, error) {
	client := csi.NewIdentityClient(conn)
	for {
		callCtx, cancel := context.WithTimeout(ctx, timeout)
		info, err := client.GetPluginInfo(callCtx, &csi.GetPluginInfoRequest{}, grpc.WaitForReady(true))
		cancel()
		if err == nil {
			if info.GetName() == "" {
				return "", fmt.Errorf("the CSI driver returned an empty name from GetPluginInfo")
			}
			return info.GetName(), nil
		}
		log.Printf("waiting for the CSI driver: GetPluginInfo: %v", err)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// Probe calls the driver's Probe; a driver that answers ready=false is reported as an error.
// An absent ready field means ready, as the CSI spec says.
func Probe(ctx context.Context, conn *grpc.ClientConn, timeout time.Duration) error {
	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := csi.NewIdentityClient(conn).Probe(callCtx, &csi.ProbeRequest{})
	if err != nil {
		return fmt.Errorf("probe of the CSI driver failed: %w", err)
	}
	if ready := resp.GetReady(); ready != nil && !ready.GetValue() {
		return fmt.Errorf("the CSI driver reports it is not ready")
	}
	return nil
}
