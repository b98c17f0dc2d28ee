"""The pod-start benchmark's log parsing, on lines in the real formats of the driver (-v=5) and
containerd (CRI plugin, logrus text)."""

from __future__ import annotations

import pytest

from benchmarks.podstart_logs import (
    create_container_attempts,
    create_container_span,
    driver_rpc_ms,
)

SANDBOX = "c76b9d1efdce99f488970ea3a44cc3a9f5539d1414293e5985395c087d49ccad"
OTHER = "d1fa4ceddd88fa3a46e55c41bf668c77b4ad7a230c82d07b3c016a9f14a4cf2e"


def line(when: str, msg: str) -> str:
    return f'time="2026-11-30T15:{when}Z" level=info msg="{msg}"'


CONTAINERD = "\n".join(
    [
        line(
            "31:26.257099960",
            "RunPodSandbox for &PodSandboxMetadata{Name:shell,Uid:246b,Namespace:x,Attempt:0,} "
            f'returns sandbox id \\"{OTHER}\\"',
        ),
        line(
            "31:26.294895930",
            "RunPodSandbox for &PodSandboxMetadata{Name:recursive-0,Uid:13d5,Namespace:p,"
            f'Attempt:0,}} returns sandbox id \\"{SANDBOX}\\"',
        ),
        line(
            "31:26.381703970",
            f'CreateContainer within sandbox \\"{OTHER}\\" for container '
            "&ContainerMetadata{Name:app,Attempt:0,}",
        ),
        line(
            "31:26.500000000",
            f'CreateContainer within sandbox \\"{SANDBOX}\\" for container '
            "&ContainerMetadata{Name:app,Attempt:0,}",
        ),
        line(
            "33:26.600000000",
            f'CreateContainer within sandbox \\"{SANDBOX}\\" for container '
            "&ContainerMetadata{Name:app,Attempt:0,}",
        ),
        line(
            "33:40.750000000",
            f'CreateContainer within sandbox \\"{SANDBOX}\\" for &ContainerMetadata{{Name:app,'
            'Attempt:0,} returns container id \\"19dbfb9f\\"',
        ),
    ]
)


def test_the_span_runs_from_the_first_call_to_the_success_of_that_pods_container() -> None:
    span = create_container_span(CONTAINERD, "recursive-0", "13d5", "app")
    assert span.seconds == pytest.approx(134.25)
    assert span.calls == 2


def test_a_pod_containerd_never_saw_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="no sandbox for pod gone"):
        create_container_span(CONTAINERD, "gone", "0000", "app")


def test_a_container_still_being_created_is_a_lookup_error() -> None:
    unfinished = "\n".join(CONTAINERD.splitlines()[:-1])
    with pytest.raises(LookupError, match="no finished CreateContainer"):
        create_container_span(unfinished, "recursive-0", "13d5", "app")


def test_driver_rpc_times_add_up_successful_calls_only() -> None:
    log = "\n".join(
        [
            "2026-11-30 15:31:40,123 DEBUG csi_hostpath_selinux.interceptor: "
            "NodeStageVolume finished OK in 812.5 ms",
            "2026-11-30 15:31:40,200 DEBUG csi_hostpath_selinux.interceptor: "
            "NodePublishVolume finished ABORTED in 3.0 ms",
            "2026-11-30 15:31:41,000 DEBUG csi_hostpath_selinux.interceptor: "
            "NodePublishVolume finished OK in 40.25 ms",
            "2026-11-30 15:31:41,100 DEBUG csi_hostpath_selinux.interceptor: "
            "NodeGetVolumeStats finished OK in 2.0 ms",
        ]
    )
    assert driver_rpc_ms(log) == {"NodeStageVolume": 812.5, "NodePublishVolume": 40.25}


def test_each_attempt_is_timed_on_its_own_and_an_unfinished_one_is_none() -> None:
    retried = CONTAINERD.replace('Attempt:0,}"', 'Attempt:0,}"')  # attempt 0 as above
    retried += "\n" + line(
        "34:00.000000000",
        f'CreateContainer within sandbox \\"{SANDBOX}\\" for container '
        "&ContainerMetadata{Name:app,Attempt:1,}",
    )
    attempts = create_container_attempts(retried, "recursive-0", "13d5", "app")
    assert attempts == [(0, pytest.approx(134.25)), (1, None)]
