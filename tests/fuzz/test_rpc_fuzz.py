"""Property-based fuzzing of every RPC against the real driver on a unix socket.

Properties, checked for every example:
- the driver process survives, and Probe answers afterwards;
- the answer is OK or a defined status code: never UNKNOWN, never DEADLINE_EXCEEDED (a hang),
  and every INTERNAL is a finding (a handled failure should say what the caller did wrong);
- nothing is mounted, created or removed outside the driver's roots (kubelet's directory and the
  state directory): mountinfo and a sentinel tree are compared before and after.

CI runs a fixed budget with a fixed seed (derandomize), then a second, time-bounded budget with a
seed that changes every run (CSI_FUZZ_ROTATING_SEED, else a random one), printed at its start and
named in any failure with the command that reproduces it. `scripts/fuzz --examples N [--seed S]`
runs longer. The fixed budget and seed come from CSI_FUZZ_EXAMPLES and CSI_FUZZ_SEED; the
rotating run's from CSI_FUZZ_ROTATING_EXAMPLES and CSI_FUZZ_ROTATING_SECONDS (0 examples skips it).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from csi_hostpath_selinux._proto import csi_pb2 as pb
from tests.fuzz.strategies import Pools, message, pb_class
from tests.reliability.crash import CHANNEL_OPTIONS
from tests.support.driver import DriverProcess, cleanup_under, clients
from tests.support.outside import outside_mounts, tree
from tests.support.requests import block_cap, create, mount_cap

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("CSI_FUZZ_EXAMPLES", "5000"))
SEED = os.environ.get("CSI_FUZZ_SEED", "")
ROTATING_EXAMPLES = int(os.environ.get("CSI_FUZZ_ROTATING_EXAMPLES", "1500"))
ROTATING_SECONDS = float(os.environ.get("CSI_FUZZ_ROTATING_SECONDS", "120"))
ROTATING_SEED = int(os.environ.get("CSI_FUZZ_ROTATING_SEED") or secrets.randbits(32))
CALL_TIMEOUT = 30.0
#: Check the roots (mountinfo, sentinel tree) and Probe every this many examples, and at the end.
CHECK_EVERY = 50
DEFINED = {c for c in grpc.StatusCode} - {grpc.StatusCode.UNKNOWN}
FINDING_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}

METHODS: list[tuple[str, MethodDescriptor]] = [
    (service.name, method)
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


@dataclass
class Fuzz:
    """The driver under test and what the run found."""

    driver: DriverProcess
    root: Path
    kubelet: Path
    pools: Pools
    channel: grpc.Channel
    sentinel: dict[str, tuple[int, int]]
    mounts: set[str]
    examples: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    findings: dict[str, str] = field(default_factory=dict)
    crashes: int = 0

    def finding(self, key: str, text: str) -> None:
        self.findings.setdefault(key, text)

    def call(self, service: str, method: MethodDescriptor, request: Any) -> grpc.StatusCode:
        path = f"/csi.v1.{service}/{method.name}"
        response_cls = pb_class(method.output_type)
        try:
            if method.server_streaming:
                stream = self.channel.unary_stream(
                    path,
                    request_serializer=type(request).SerializeToString,
                    response_deserializer=response_cls.FromString,
                )
                for _ in stream(request, timeout=CALL_TIMEOUT):
                    pass
            else:
                unary = self.channel.unary_unary(
                    path,
                    request_serializer=type(request).SerializeToString,
                    response_deserializer=response_cls.FromString,
                )
                unary(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            code = exc.code()
            if code not in DEFINED or code in FINDING_CODES:
                details = exc.details() or ""
                key = f"{method.name} {code.name} {normalize(details)}"
                self.finding(
                    key,
                    f"{method.name} -> {code.name}: {details[:300]}\n    request: {short(request)}",
                )
            return code
        return grpc.StatusCode.OK


def normalize(details: str) -> str:
    text = re.sub(r"(vol|snap)-[0-9a-f]{32}", r"\1-*", details)
    text = re.sub(r"/dev/loop\d+|/proc/self/fd/\d+|'[^']*'|\"[^\"]*\"", "*", text)
    return text[:120]


def short(request: Any) -> str:
    text = str(request).replace("\n", " ")
    return text[:400] + ("…" if len(text) > 400 else "")


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    if os.geteuid() != 0:
        pytest.fail("the fuzz test needs root (loop devices and mounts)")
    root = tmp_path_factory.mktemp("fuzz")
    kubelet = root / "kubelet"
    (kubelet / "pods" / "p").mkdir(parents=True)
    (kubelet / "plugins" / "pv").mkdir(parents=True)
    sentinel_dir = root / "sentinel"
    (sentinel_dir / "dir" / "mount").mkdir(parents=True)
    (sentinel_dir / "file").write_text("keep")
    (sentinel_dir / "dir" / "mount" / "file").write_text("keep")
    driver = DriverProcess(
        root / "driver",
        node_id="fuzz-node",
        extra_args=(
            "--kubelet-dir",
            str(kubelet),
            "--max-volume-size",
            "1Gi",
            "--max-volumes-per-node",
            "40",
            "--grace-period",
            "1",
            "-v",
            "2",
        ),
    )
    try:
        driver.start()
        pools = seed_pools(driver, kubelet, root)
        channel = grpc.insecure_channel(f"unix:{driver.socket}", options=CHANNEL_OPTIONS)
        fz = Fuzz(
            driver,
            root,
            kubelet,
            pools,
            channel,
            tree(sentinel_dir),
            outside_mounts(root, [kubelet, driver.state_dir], driver.state_dir),
        )
        yield fz
        channel.close()
    finally:
        driver.stop()
        cleanup_under(root)


def seed_pools(driver: DriverProcess, kubelet: Path, root: Path) -> Pools:
    """Real volumes (one staged and published) and a snapshot, so fuzzed ids sometimes hit."""
    csi = clients(driver.channel())
    pools = Pools()
    vols = [
        csi.controller.CreateVolume(create("seed-ext4", mount_cap("ext4"))).volume,
        csi.controller.CreateVolume(create("seed-block", block_cap())).volume,
        csi.controller.CreateVolume(create("seed-dir", mount_cap(""), kind="directory")).volume,
    ]
    pools.volume_ids = [v.volume_id for v in vols]
    staging = kubelet / "plugins" / "pv" / "seed" / "globalmount"
    staging.parent.mkdir(parents=True)
    target = kubelet / "pods" / "seed-pod" / "mount"
    target.parent.mkdir(parents=True)
    cap = mount_cap("ext4")
    csi.node.NodeStageVolume(
        pb.NodeStageVolumeRequest(
            volume_id=vols[0].volume_id, staging_target_path=str(staging), volume_capability=cap
        )
    )
    csi.node.NodePublishVolume(
        pb.NodePublishVolumeRequest(
            volume_id=vols[0].volume_id,
            staging_target_path=str(staging),
            target_path=str(target),
            volume_capability=cap,
        )
    )
    snap = csi.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(name="seed-snap", source_volume_id=vols[2].volume_id)
    ).snapshot
    pools.snapshot_ids = [snap.snapshot_id]
    pools.paths = [
        str(staging),
        str(target),
        str(kubelet / "pods" / "p"),
        str(kubelet / "plugins" / "pv"),
        str(kubelet),
        str(kubelet / ".." / "sentinel" / "dir"),
        str(root / "sentinel" / "dir" / "mount"),
        str(root / "sentinel" / "file"),
        str(driver.state_dir / "volumes"),
        "/etc",
        "/proc/self/fd/0",
    ]
    return pools


def check_roots(fz: Fuzz, where: str) -> None:
    """The driver is alive and answers Probe, and nothing outside its roots changed."""
    if fz.driver.proc is None or fz.driver.proc.poll() is not None:
        fz.crashes += 1
        fz.finding(f"crash {where}", f"the driver died {where}:\n{fz.driver.log()[-3000:]}")
        fz.driver.proc = None
        fz.driver.start()
    try:
        pb_probe = pb.ProbeRequest()
        clients(fz.channel).identity.Probe(pb_probe, timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        fz.finding(f"probe {where}", f"Probe failed {where}: {exc.code().name}: {exc.details()}")
    now = outside_mounts(fz.root, [fz.kubelet, fz.driver.state_dir], fz.driver.state_dir)
    if now != fz.mounts:
        fz.finding(
            f"mounts {where}", f"mounts outside the roots changed {where}: {now ^ fz.mounts}"
        )
        fz.mounts = now
    sentinel = tree(fz.root / "sentinel")
    if sentinel != fz.sentinel:
        fz.finding(
            f"sentinel {where}",
            f"the sentinel tree outside the roots changed {where}: "
            f"{set(sentinel.items()) ^ set(fz.sentinel.items())}",
        )
        fz.sentinel = sentinel


def rpc_examples(pools: Pools) -> st.SearchStrategy[tuple[str, MethodDescriptor, Any]]:
    return st.sampled_from(METHODS).flatmap(
        lambda sm: message(sm[1].input_type, pools).map(lambda m: (sm[0], sm[1], m))
    )


def fuzz_settings(examples: int, derandomize: bool) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[p for p in Phase if p is not Phase.shrink],
    )


def run_budget(
    fuzz: Fuzz, examples: int, chosen_seed: int | None, seconds: float | None = None
) -> int:
    """Run up to examples examples (hypothesis' derandomized sequence when chosen_seed is None);
    after seconds, the remaining examples send nothing. Returns how many examples ran."""
    started = time.monotonic()
    ran = 0
    codes_before = Counter(fuzz.codes)

    @fuzz_settings(examples, derandomize=chosen_seed is None)
    @given(st.data())
    def one(data: st.DataObject) -> None:
        nonlocal ran
        if seconds is not None and time.monotonic() - started > seconds:
            return
        service, method, request = data.draw(rpc_examples(fuzz.pools))
        ran += 1
        fuzz.examples += 1
        code = fuzz.call(service, method, request)
        fuzz.codes[code.name] += 1
        if fuzz.driver.proc is None or fuzz.driver.proc.poll() is not None:
            check_roots(fuzz, f"after {method.name} {short(request)}")
        elif fuzz.examples % CHECK_EVERY == 0:
            check_roots(fuzz, f"by example {fuzz.examples} (last: {method.name})")

    if chosen_seed is not None:
        one = seed(chosen_seed)(one)
    one()
    check_roots(fuzz, "at the end")
    print(
        f"\nfuzz: {ran} examples in {time.monotonic() - started:.0f}s over "
        f"{len(METHODS)} RPCs; answers {dict((fuzz.codes - codes_before).most_common())}; "
        f"{fuzz.crashes} crash(es); {len(fuzz.findings)} finding(s)"
    )
    for text in fuzz.findings.values():
        print(f"  - {text}")
    return ran


def test_every_rpc_survives_arbitrary_messages(fuzz: Fuzz) -> None:
    ran = run_budget(fuzz, EXAMPLES, int(SEED) if SEED else None)
    assert ran >= EXAMPLES // 2, "hypothesis ran far fewer examples than budgeted"
    assert fuzz.findings == {}, "\n".join(fuzz.findings.values())


@pytest.mark.skipif(ROTATING_EXAMPLES == 0, reason="CSI_FUZZ_ROTATING_EXAMPLES=0")
def test_every_rpc_survives_a_rotating_seed(fuzz: Fuzz) -> None:
    """New examples every run, so CI explores beyond the fixed sequence; bounded in time."""
    reproduce = (
        f"reproduce with: CSI_FUZZ_ROTATING_SEED={ROTATING_SEED} python3 -m pytest "
        f"tests/fuzz -k rotating (or scripts/fuzz --seed {ROTATING_SEED} --examples "
        f"{ROTATING_EXAMPLES})"
    )
    print(f"\nfuzz: rotating seed {ROTATING_SEED}; {reproduce}")
    before = set(fuzz.findings)
    ran = run_budget(fuzz, ROTATING_EXAMPLES, ROTATING_SEED, ROTATING_SECONDS)
    assert ran > 0, f"the rotating fuzz run ran no example (seed {ROTATING_SEED})"
    new = [text for key, text in fuzz.findings.items() if key not in before]
    assert new == [], f"seed {ROTATING_SEED}; {reproduce}\n" + "\n".join(new)


def test_the_driver_still_stops_cleanly_after_fuzzing(fuzz: Fuzz) -> None:
    """After the fuzz run a SIGTERM still stops the driver within its grace period."""
    code = fuzz.driver.stop(signal.SIGTERM, timeout=15)
    assert code == 0, f"the driver exited {code} on SIGTERM:\n{fuzz.driver.log()[-3000:]}"
