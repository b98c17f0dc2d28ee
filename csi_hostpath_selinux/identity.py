"""The CSI Identity service."""

from __future__ import annotations

import os
import sqlite3

import grpc

from . import __version__
from ._proto import csi_pb2 as pb
from ._proto import csi_pb2_grpc as rpc
from .config import DriverConfig
from .errors import FailedPrecondition
from .state import Catalog

_Cap = pb.PluginCapability


class IdentityService(rpc.IdentityServicer):
    def __init__(self, config: DriverConfig, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog

    def GetPluginInfo(
        self, request: pb.GetPluginInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetPluginInfoResponse:
        return pb.GetPluginInfoResponse(name=self.config.driver_name, vendor_version=__version__)

    def GetPluginCapabilities(
        self, request: pb.GetPluginCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.GetPluginCapabilitiesResponse:
        services = [
            _Cap.Service.CONTROLLER_SERVICE,
            _Cap.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS,
            _Cap.Service.GROUP_CONTROLLER_SERVICE,
            _Cap.Service.SNAPSHOT_METADATA_SERVICE,
        ]
        return pb.GetPluginCapabilitiesResponse(
            capabilities=[_Cap(service=_Cap.Service(type=t)) for t in services]
            + [_Cap(volume_expansion=_Cap.VolumeExpansion(type=_Cap.VolumeExpansion.ONLINE))]
        )

    def Probe(self, request: pb.ProbeRequest, context: grpc.ServicerContext) -> pb.ProbeResponse:
        """Ready only when the catalog answers and the state directory is writable."""
        try:
            self.catalog.check()
        except sqlite3.Error as exc:
            raise FailedPrecondition(f"the volume catalog cannot be read: {exc}") from exc
        if not os.access(self.config.state_dir, os.W_OK | os.X_OK):
            raise FailedPrecondition(f"the state directory {self.config.state_dir} is not writable")
        response = pb.ProbeResponse()
        response.ready.value = True
        return response
