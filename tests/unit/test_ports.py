"""Ports for `weed mini`: it puts each server's gRPC port 10000 above its HTTP port and refuses
to start when one of its ports is another's gRPC port (CI once drew filer = master + 10000)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from medxiaohe.common import ports


class _Drawn:
    """A stand-in socket: binding port 0 gets the next port of ``draws``; any other bind works."""

    draws: Iterator[int] = iter(())

    def __init__(self) -> None:
        self.port = 0

    def __enter__(self) -> _Drawn:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def bind(self, address: tuple[str, int]) -> None:
        self.port = address[1] or next(_Drawn.draws)

    def getsockname(self) -> tuple[str, int]:
        return "127.0.0.1", self.port


@pytest.mark.parametrize(
    ("draws", "beside", "want"),
    [
        ([30000, 40000, 30001], (), [30000, 30001]),  # 40000 is 30000's gRPC port
        ([40000, 30000, 30001], (), [40000, 30001]),  # 30000's gRPC port is 40000
        ([30000, 30001], (40000,), [30001]),  # the same, against a port chosen before
        ([30000, 30000, 30002], (), [30000, 30002]),  # twice the same port
    ],
)
def test_spaced_ports_never_land_on_each_others_grpc_port(
    monkeypatch: pytest.MonkeyPatch, draws: list[int], beside: tuple[int, ...], want: list[int]
) -> None:
    monkeypatch.setattr(_Drawn, "draws", iter(draws))
    monkeypatch.setattr(ports.socket, "socket", _Drawn)
    assert ports.free_ports(len(want), spaced=10000, beside=beside) == want


def test_real_draws_keep_every_port_and_grpc_port_apart() -> None:
    for _ in range(200):
        drawn = ports.free_ports(7, below=45000, spaced=10000)
        assert len({p + d for p in drawn for d in (0, 10000)}) == 14, drawn
