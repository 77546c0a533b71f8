"""The single-thread transform wrapper: same output, one thread inside, the count restored."""

from __future__ import annotations

import pickle

import pytest

torch = pytest.importorskip("torch")

from extractors.single_thread import SingleThreadTransform  # noqa: E402


def test_runs_with_one_thread_and_restores():
    seen = []

    def transform(x):
        seen.append(torch.get_num_threads())
        return (x - 0.5) / 0.25

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        wrapped = pickle.loads(pickle.dumps(SingleThreadTransform(_Normalise())))  # DataLoader workers pickle it
        x = torch.rand(3, 64, 64)
        torch.testing.assert_close(wrapped(x), _Normalise()(x), rtol=0, atol=0)
        assert SingleThreadTransform(transform)(x) is not None and seen == [1]
        assert torch.get_num_threads() == 2

        def failing(x):
            raise ValueError("bad image")

        with pytest.raises(ValueError):
            SingleThreadTransform(failing)(x)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


class _Normalise:
    def __call__(self, x):
        return (x - 0.5) / 0.25
