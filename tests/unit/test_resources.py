"""Lifecycles: a loader starts nothing in its constructor, retries until it loads, and stops
when told; the chat engine's batching thread starts with the first batched call and ends on
stop."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from medxiaohe.common.errors import NotReady
from medxiaohe.storage import open_store
from medxiaohe_services.runtime.resources import Loader, TaggerLoader
from tests.conftest import publish_small_tree


def wait_for(condition: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


def test_a_loader_retries_until_the_tree_is_published_and_stops_when_told(tmp_path: Path) -> None:
    store_uri = str(tmp_path / "store")
    loader = TaggerLoader(open_store(store_uri), retry_s=0.05)
    assert not loader.running  # nothing happens in the constructor
    assert not loader.ready
    with pytest.raises(NotReady, match="tagger not loaded: loading"):
        loader.check()
    loader.start()
    wait_for(lambda: loader.error)
    assert loader.running  # waiting to retry: no tree yet
    with pytest.raises(NotReady, match="nothing has been published"):
        loader.check()
    publish_small_tree(store_uri)
    wait_for(lambda: loader.ready)
    assert loader.ready
    assert not loader.running
    assert loader.tag("chest pain") is not None

    idle = TaggerLoader(open_store(str(tmp_path / "empty")), retry_s=60)
    idle.start()
    wait_for(lambda: idle.error)
    began = time.monotonic()
    idle.stop()
    assert not idle.running
    assert time.monotonic() - began < 10  # stop ends the wait for the next retry


def test_a_passing_failure_is_retried_ever_more_rarely_and_then_forgotten() -> None:
    """E.g. the in-process model's loader losing a race with another thread importing
    transformers: it must come up on a retry, not stay down."""

    class Flaky(Loader):
        what = "flaky"

        def __init__(self) -> None:
            super().__init__(retry_s=0.05, max_retry_s=0.2)
            self.tries: list[float] = []

        def load(self) -> None:
            self.tries.append(time.monotonic())
            if len(self.tries) < 5:
                raise ImportError("cannot import name 'AutoConfig'")

    flaky = Flaky()
    flaky.start()
    wait_for(lambda: flaky.ready)
    assert flaky.ready
    assert flaky.error == ""  # the last failure is not reported once it is in
    assert len(flaky.tries) == 5
    assert list(itertools.islice(flaky.delays(), 5)) == [0.05, 0.1, 0.2, 0.2, 0.2]


def test_the_batching_thread_starts_on_first_use_and_ends_on_stop(tmp_path: Path) -> None:
    from medxiaohe.models.chat import ChatModel, ChatParams
    from medxiaohe.models.tiny import build_tiny
    from medxiaohe.models.vlm import load_vlm

    model = ChatModel(load_vlm(build_tiny("qwen2_vl", tmp_path / "tiny", seed=0)))
    assert not model.batching
    question = [{"role": "user", "content": "Findings?"}]
    first = model.chat(question, ChatParams(max_tokens=4))
    assert model.batching
    model.stop()
    assert not model.batching
    again = model.chat(question, ChatParams(max_tokens=4))  # after stop: alone, same answer
    assert again.text == first.text


def test_the_embedded_tiny_model_is_rebuilt_when_partial_or_of_an_earlier_recipe(
    tmp_path: Path,
) -> None:
    from medxiaohe.models.tiny import MARK, is_current
    from medxiaohe_services.runtime.embedded import tiny_model

    folder = tiny_model(tmp_path)
    assert is_current(folder)
    weights = (folder / "model.safetensors").stat().st_mtime_ns
    assert tiny_model(tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == weights  # kept as it is

    (folder / MARK).write_text('{"recipe": 1}')  # a home from before the model layer
    (folder / "model.safetensors").write_bytes(b"")
    assert tiny_model(tmp_path) == folder
    assert is_current(folder)
    assert (folder / "model.safetensors").stat().st_size > 0
    (folder / MARK).unlink()  # a build killed half-way
    assert is_current(tiny_model(tmp_path))
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tiny-vlm"]  # no leftovers
