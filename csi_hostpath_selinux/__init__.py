"""csi-hostpath-selinux: a CSI driver for node-local volumes with SELinux mount support."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("csi-hostpath-selinux")
except PackageNotFoundError:  # running from a source checkout that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
