// Command refmodel is a stand-in for the Go reference hostpath driver, written for
// benchmarks/run.py when the reference itself cannot be built. It is not the reference driver: it
// repeats the work the reference driver does per RPC, as its source describes it, with grpc-go:
//
//   - one mutex serialises every RPC;
//   - the state is a slice of volumes searched linearly and written whole as JSON (no fsync) to
//     <statedir>/state.json after every change;
//   - CreateVolume: mkdir (mount access) or fork `fallocate`, `losetup -j` and `losetup -f --show`
//     (block access); DeleteVolume: `losetup -j` and `losetup -d` for block, then remove the path;
//   - NodeStage/NodeUnstage: argument checks and the staged path recorded in the state;
//   - NodePublish: mount point check, mkdir (or create a file for block), `losetup -j` for
//     block, fork `mount -o bind`, record; NodeUnpublish: mount point check, fork `umount`,
//     remove the target, record.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type volume struct {
	ID        string
	Name      string
	Size      int64
	Path      string
	Block     bool
	Staged    []string
	Published []string
}

type driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	mu       sync.Mutex
	nodeID   string
	stateDir string
	volumes  []volume
	counter  int
}

func (d *driver) dump() error {
	data, err := json.Marshal(d.volumes)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if err := os.WriteFile(filepath.Join(d.stateDir, "state.json"), data, 0o600); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return nil
}

func (d *driver) find(match func(*volume) bool) int {
	for i := range d.volumes {
		if match(&d.volumes[i]) {
			return i
		}
	}
	return -1
}

func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "", status.Errorf(codes.Internal, "%s %v: %v: %s", name, args, err, out)
	}
	return string(out), nil
}

func loopOf(path string) (string, error) {
	out, err := run("losetup", "-j", path)
	if err != nil || out == "" {
		return "", err
	}
	return strings.SplitN(out, ":", 2)[0], nil
}

// isMountPoint is true when path's device differs from its parent's; otherwise, like
// mount-utils' IsNotMountPoint, it looks for path in /proc/self/mountinfo (bind mounts on the same
// filesystem keep the device).
func isMountPoint(path string) (bool, error) {
	var st, parent syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return false, err
	}
	if err := syscall.Lstat(filepath.Dir(path), &parent); err != nil {
		return false, err
	}
	if st.Dev != parent.Dev || st.Ino == parent.Ino {
		return true, nil
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && strings.ReplaceAll(fields[4], "\\040", " ") == resolved {
			return true, nil
		}
	}
	return false, nil
}

func (d *driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: "refmodel.bench.local", VendorVersion: "0"}, nil
}

func (d *driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	svc := &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{Type: svc}}}, nil
}

func (d *driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

func ctlCap(t csi.ControllerServiceCapability_RPC_Type) *csi.ControllerServiceCapability {
	return &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}}
}

func (d *driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{
		ctlCap(csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME),
		ctlCap(csi.ControllerServiceCapability_RPC_LIST_VOLUMES),
	}}, nil
}

func (d *driver) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" || len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "name and capabilities are required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	block := false
	for _, c := range req.GetVolumeCapabilities() {
		if c.GetBlock() != nil {
			block = true
		}
	}
	size := req.GetCapacityRange().GetRequiredBytes()
	if size == 0 {
		size = 1 << 30
	}
	if i := d.find(func(v *volume) bool { return v.Name == req.GetName() }); i >= 0 {
		v := d.volumes[i]
		return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: v.ID, CapacityBytes: v.Size}}, nil
	}
	d.counter++
	id := fmt.Sprintf("vol-%d-%d", os.Getpid(), d.counter)
	path := filepath.Join(d.stateDir, id)
	if block {
		if _, err := run("fallocate", "-l", strconv.FormatInt(size>>20, 10)+"M", path); err != nil {
			return nil, err
		}
		if dev, err := loopOf(path); err != nil {
			return nil, err
		} else if dev == "" {
			if _, err := run("losetup", "-f", "--show", path); err != nil {
				return nil, err
			}
		}
	} else if err := os.MkdirAll(path, 0o777); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	d.volumes = append(d.volumes, volume{ID: id, Name: req.GetName(), Size: size, Path: path, Block: block})
	if err := d.dump(); err != nil {
		return nil, err
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: id, CapacityBytes: size}}, nil
}

func (d *driver) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := d.find(func(v *volume) bool { return v.ID == req.GetVolumeId() })
	if i < 0 {
		return &csi.DeleteVolumeResponse{}, nil
	}
	v := d.volumes[i]
	if v.Block {
		dev, err := loopOf(v.Path)
		if err != nil {
			return nil, err
		}
		if dev != "" {
			if _, err := run("losetup", "-d", dev); err != nil {
				return nil, err
			}
		}
	}
	if err := os.RemoveAll(v.Path); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	d.volumes = append(d.volumes[:i], d.volumes[i+1:]...)
	return &csi.DeleteVolumeResponse{}, d.dump()
}

func (d *driver) ListVolumes(_ context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	start := 0
	if tok := req.GetStartingToken(); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil || n > len(d.volumes) {
			return nil, status.Error(codes.Aborted, "bad starting token")
		}
		start = n
	}
	end := len(d.volumes)
	if max := int(req.GetMaxEntries()); max > 0 && start+max < end {
		end = start + max
	}
	resp := &csi.ListVolumesResponse{}
	for _, v := range d.volumes[start:end] {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{
			Volume: &csi.Volume{VolumeId: v.ID, CapacityBytes: v.Size},
			Status: &csi.ListVolumesResponse_VolumeStatus{PublishedNodeIds: []string{d.nodeID}},
		})
	}
	if end < len(d.volumes) {
		resp.NextToken = strconv.Itoa(end)
	}
	return resp, nil
}

func (d *driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	c := &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}}}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{c}}, nil
}

func (d *driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.nodeID}, nil
}

func without(list []string, s string) []string {
	out := list[:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

func (d *driver) volume(id string) (*volume, error) {
	i := d.find(func(v *volume) bool { return v.ID == id })
	if i < 0 {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", id)
	}
	return &d.volumes[i], nil
}

func (d *driver) NodeStageVolume(_ context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	if req.GetVolumeId() == "" || req.GetStagingTargetPath() == "" || req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "missing arguments")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.volume(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	v.Staged = append(without(v.Staged, req.GetStagingTargetPath()), req.GetStagingTargetPath())
	return &csi.NodeStageVolumeResponse{}, d.dump()
}

func (d *driver) NodeUnstageVolume(_ context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.volume(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	v.Staged = without(v.Staged, req.GetStagingTargetPath())
	return &csi.NodeUnstageVolumeResponse{}, d.dump()
}

func (d *driver) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if req.GetVolumeId() == "" || target == "" || req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "missing arguments")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.volume(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	source := v.Path
	if v.Block {
		if source, err = loopOf(v.Path); err != nil {
			return nil, err
		}
		if _, err := os.Lstat(target); os.IsNotExist(err) {
			if err := os.WriteFile(target, nil, 0o640); err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
		}
	} else if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if mounted, err := isMountPoint(target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if !mounted {
		if _, err := run("mount", "-o", "bind", source, target); err != nil {
			return nil, err
		}
	}
	v.Published = append(without(v.Published, target), target)
	return &csi.NodePublishVolumeResponse{}, d.dump()
}

func (d *driver) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target := req.GetTargetPath()
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.volume(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if mounted, err := isMountPoint(target); err == nil && mounted {
		if _, err := run("umount", target); err != nil {
			return nil, err
		}
	}
	if err := os.RemoveAll(target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	v.Published = without(v.Published, target)
	return &csi.NodeUnpublishVolumeResponse{}, d.dump()
}

func main() {
	endpoint := flag.String("endpoint", "", "unix:///path/to/socket")
	nodeID := flag.String("nodeid", "node", "node id")
	stateDir := flag.String("statedir", "/tmp/refmodel", "state directory")
	flag.Parse()
	path := strings.TrimPrefix(*endpoint, "unix://")
	if err := os.MkdirAll(*stateDir, 0o750); err != nil {
		log.Fatal(err)
	}
	_ = os.Remove(path)
	listener, err := net.Listen("unix", path)
	if err != nil {
		log.Fatal(err)
	}
	d := &driver{nodeID: *nodeID, stateDir: *stateDir}
	server := grpc.NewServer()
	csi.RegisterIdentityServer(server, d)
	csi.RegisterControllerServer(server, d)
	csi.RegisterNodeServer(server, d)
	log.Fatal(server.Serve(listener))
}
