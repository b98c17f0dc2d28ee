# csi-hostpath-selinux node plugin image.
#
#   docker build -t csi-hostpath-selinux:0.1.0 .
#   buildah build -t csi-hostpath-selinux:0.1.0 .      (or podman build)
#
# Builders: Docker with BuildKit (the default since Docker 23), buildah and podman. The runtime stage
# uses `RUN --mount=type=bind,from=build`, which Docker's legacy builder and kaniko cannot do. There
# is no `# syntax=` directive: the built-in Dockerfile frontend has everything used here, and the
# directive would make BuildKit fetch a frontend image from a registry on every build. Base images
# are written fully qualified (docker.io/library/...) because buildah and podman do not resolve short
# names without a registries.conf that lists docker.io.
#
# Stage 1 (build) turns the source tree into wheels: building the package runs csi-spec/generate.py,
# which fetches the pinned CSI spec module with `go mod download` and generates the gRPC stubs with
# grpcio-tools. Stage 2 (runtime) installs those wheels into a slim Python image with exactly the
# tools the driver runs. Neither Go nor the build tools reach the runtime image.
#
# Base images are pinned by tag and by the digest of their multi-architecture index. The digests
# were taken from public Dockerfiles that pin the same tags, not read from the registry here (this
# project's machines reach no image registry): check them with
# `docker buildx imagetools inspect <image>:<tag>` when you bump a tag.

# Go toolchain, only to let the build fetch the CSI spec module.
FROM docker.io/library/golang:1.25.4-bookworm@sha256:e17419604b6d1f9bc245694425f0ec9b1b53685c80850900a376fb10cb0f70cb AS go

FROM docker.io/library/python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build
COPY --from=go /usr/local/go /usr/local/go
ENV PATH=/usr/local/go/bin:$PATH \
    GOPATH=/tmp/gopath \
    GOFLAGS=-modcacherw \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package build reads; see .dockerignore.
COPY pyproject.toml setup.py README.md ./
COPY csi-spec/ csi-spec/
COPY csi_hostpath_selinux/ csi_hostpath_selinux/
# The project's wheel (stubs generated inside it) plus the wheels of its runtime dependencies, so the
# runtime stage installs offline from /wheels. The empty _proto directory lets setuptools' metadata
# step see the package that build_py then generates (the stubs are never in the context).
RUN mkdir -p csi_hostpath_selinux/_proto \
    && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM docker.io/library/python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="csi-hostpath-selinux" \
      org.opencontainers.image.description="Node-local Kubernetes CSI driver that labels volumes at mount time (seLinuxMount: true)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d"
# The tools the driver runs, and nothing else:
#   mount, util-linux   mount/umount (libmount, which keeps context= only while libselinux reports
#                       SELinux enabled), losetup, blkid, findmnt, blockdev
#   e2fsprogs, xfsprogs mkfs.ext4/mkfs.xfs for image volumes, resize and fsck
#   nfs-common          mount.nfs/mount.nfs4 for kind=nfs
#   cifs-utils          mount.cifs for kind=cifs
#   attr                getfattr, to read a volume's security.selinux label back when debugging
# Package versions are not pinned: Debian stable replaces them on every point release, and the
# pinned base digest already fixes the release the build starts from.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        util-linux \
        mount \
        e2fsprogs \
        xfsprogs \
        nfs-common \
        cifs-utils \
        attr \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Smoke test: importing the server loads grpc, protobuf and the generated CSI stubs, which --help
# alone does not touch; an image without them fails here instead of at its first start.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "csi-hostpath-selinux==${VERSION}" \
    && python -c "import csi_hostpath_selinux.server" \
    && csi-hostpath-selinux --help > /dev/null
# The driver stays root: mount(2), loop devices and mknod need CAP_SYS_ADMIN and host device
# access, and the DaemonSet runs it privileged (Bidirectional mount propagation requires that).
# A non-root user would only fail at the first mount.
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["csi-hostpath-selinux"]
