"""A file conversion's own session on a small CPU gives the network one thread
(convert.one_model_thread): only on the uint8 path, only on at most 2 cores, only where the
threads were not chosen, and without changing the process's thread setting."""

import pytest

from rvm_clips import make_clip

from rvmatte import hardware
from rvmatte.inference import convert
from rvmatte.inference.session import Matter
from rvmatte.spec import ModelSpec


@pytest.fixture
def cores(monkeypatch):
    def set_cores(n):
        monkeypatch.setattr(hardware, "physical_cores", lambda: n)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(hardware, "_threads", None)
    return set_cores


def test_the_rule(cores, monkeypatch):
    cores(2)
    assert convert.one_model_thread(ModelSpec(), True)
    assert not convert.one_model_thread(ModelSpec(), False)          # the tensor path
    assert not convert.one_model_thread(ModelSpec(threads=2), True)  # --threads chosen
    cores(4)
    assert not convert.one_model_thread(ModelSpec(), True)
    cores(1)
    assert convert.one_model_thread(ModelSpec(), True)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert not convert.one_model_thread(ModelSpec(), True)


@pytest.mark.parametrize("n,want", [(2, 1), (8, None)])
def test_a_conversion_builds_its_runner_with_one_thread_on_two_cores(tmp_path, cores,
                                                                     monkeypatch, n, want):
    cores(n)
    made = []
    runner_for = Matter._runner_for

    def spy(self, ratio):
        runner = runner_for(self, ratio)
        made.append((self.runner_threads, runner))
        return runner

    monkeypatch.setattr(Matter, "_runner_for", spy)
    clip = make_clip(tmp_path / "in.mp4", w=96, h=64, n=3, audio=False)
    convert.convert_video(clip, tmp_path / "c.mp4", backend="fused", downsample_ratio=0.5)
    assert made and {t for t, _ in made} == {want}
    assert made[0][1].threads == (want or hardware.default_threads())  # what the runner got
    assert hardware._threads is None  # nothing set process-wide
