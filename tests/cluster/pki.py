"""Certificates and kubeconfigs of the one-node cluster, made with the openssl command line.

One CA signs everything; keys are P-256 (fast to make). Identities follow what Kubernetes
expects: the kubelet is `system:node:<node>` in group `system:nodes`, which is what lets the
Node authorizer and the NodeRestriction admission plugin recognise it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = {sans}
"""

EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class Pki:
    def __init__(self, directory: Path, sans: list[str]) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "openssl.cnf"
        self.config.write_text(OPENSSL_CONFIG.format(sans=",".join(sans)))
        self.ca = Pair(directory / "ca.crt", directory / "ca.key")
        _run(
            "req",
            "-x509",
            "-new",
            *EC,
            "-keyout",
            str(self.ca.key),
            "-out",
            str(self.ca.cert),
            "-subj",
            "/CN=csi-hostpath-selinux-test-ca",
            "-days",
            "7",
            "-config",
            str(self.config),
            "-extensions",
            "ca",
        )
        self._serial = 1

    def issue(self, name: str, subject: str, kind: str) -> Pair:
        pair = Pair(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        csr = self.dir / f"{name}.csr"
        _run(
            "req",
            "-new",
            *EC,
            "-keyout",
            str(pair.key),
            "-out",
            str(csr),
            "-subj",
            subject,
            "-config",
            str(self.config),
        )
        self._serial += 1
        _run(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(self.ca.cert),
            "-CAkey",
            str(self.ca.key),
            "-set_serial",
            str(self._serial),
            "-days",
            "7",
            "-out",
            str(pair.cert),
            "-extfile",
            str(self.config),
            "-extensions",
            kind,
        )
        csr.unlink()
        return pair

    def service_account_keys(self) -> Pair:
        pair = Pair(self.dir / "sa.pub", self.dir / "sa.key")
        _run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pair.key))
        _run("ec", "-in", str(pair.key), "-pubout", "-out", str(pair.cert))
        return pair

    def kubeconfig(self, name: str, server: str, client: Pair) -> Path:
        path = self.dir / f"{name}.kubeconfig"
        path.write_text(
            f"""apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
    certificate-authority: {self.ca.cert}
users:
- name: {name}
  user:
    client-certificate: {client.cert}
    client-key: {client.key}
contexts:
- name: local
  context: {{cluster: local, user: {name}}}
current-context: local
"""
        )
        return path
