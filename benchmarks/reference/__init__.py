"""Build the Go reference driver (kubernetes-csi/csi-driver-host-path) outside the repository."""
