"""The saved linear probe: normalisation, the fixed linear map and its autograd ops.

A :class:`LinearProbe` is what :func:`probes.linear.fit_linear_probe` returns and what attacks
differentiate through, so its logits have input gradients written out in closed form on the fast
GEMM of :mod:`probes._matmul`.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featkit.errors import FeatkitError
from probes import _matmul
from probes.defaults import NORMALIZATIONS


def normalization_stats(
    features: np.ndarray, normalization: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(mean, std) for ``standardize`` (std of constant features set to 1), else (None, None)."""
    if normalization not in NORMALIZATIONS:
        raise FeatkitError(
            f"unknown normalisation {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}"
        )
    if normalization != "standardize":
        return None, None
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def normalize_tensor(
    x: torch.Tensor, normalization: str, mean: torch.Tensor | None, std: torch.Tensor | None
) -> torch.Tensor:
    """Apply ``normalization`` to feature rows (differentiably): unit L2 norm (norms clamped at
    1e-12), ``(x - mean) / std``, or nothing."""
    if normalization == "l2":
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if normalization == "standardize":
        return (x - mean) / std
    return x


class _ProbeLinear(torch.autograd.Function):
    """``x @ W.T + b``, differentiable in ``x`` only (the probe is fixed), on the fast GEMM of
    :mod:`probes._matmul` both ways: the input gradient is ``g @ W = linear(g, W.T)``."""

    @staticmethod
    def forward(ctx, x, weight, bias, packed, weight_t, packed_t):
        ctx.save_for_backward(weight_t)
        ctx.packed_t = packed_t
        return _matmul.linear(x, weight, packed).add_(bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (weight_t,) = ctx.saved_tensors
        grad_x = _matmul.linear(grad.contiguous(), weight_t, ctx.packed_t)
        return grad_x, None, None, None, None, None


class _L2NormalizedLinear(torch.autograd.Function):
    """``(x / max(|x|, 1e-12)) @ W.T + b``, differentiable in ``x`` only, with a fused gradient.

    Autograd's chain through the row norm makes several passes over the ``N x D`` input and took
    half of a PGD step on CUB-sized features. With ``n = |x|``, ``u = x / n`` and ``g`` the logit
    gradient, ``dL/dx = (g / n) @ W - x * (g . u W^T) / n^2``, and ``u W^T`` is the forward's
    output less the bias, so the input gradient is one GEMM and one pass over ``x``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, packed, weight_t, packed_t):
        raw_norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        norm = raw_norm.clamp_min(1e-12)
        projected = _matmul.linear(x, weight, packed).div_(norm)  # (x / n) W^T
        ctx.save_for_backward(x, weight_t, norm, projected, raw_norm >= 1e-12)
        ctx.packed_t = packed_t
        return projected + bias

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight_t, norm, projected, on_sphere = ctx.saved_tensors
        grad_x = _matmul.linear((grad / norm).contiguous(), weight_t, ctx.packed_t)
        radial = (grad * projected).sum(dim=-1, keepdim=True).div_(norm * norm)
        grad_x.addcmul_(x, radial.mul_(on_sphere), value=-1.0)  # below 1e-12 the norm is clamped
        return grad_x, None, None, None, None, None


# --------------------------------------------------------------------------- saved probe


@dataclass(frozen=True)
class LinearProbe:
    """A trained linear classifier over raw features: normalise, then ``x @ weight.T + bias``.

    ``weight`` is ``K x D`` and ``bias`` ``K`` (float32); ``mean``/``std`` are set only for
    ``normalization == "standardize"`` (train statistics). :meth:`logits` is differentiable in
    its input, so attacks can perturb raw features.
    """

    weight: np.ndarray
    bias: np.ndarray
    class_names: tuple[str, ...]
    normalization: str = "none"
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    C: float = float("nan")
    _tensors: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _tensor(self, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """The array ``name`` as a tensor on (device, dtype), converted once per pair (attacks
        call :meth:`logits` many times)."""
        value = getattr(self, name)
        if value is None:
            return None
        key = (name, str(device), dtype)
        if key not in self._tensors:
            self._tensors[key] = torch.as_tensor(value, device=device, dtype=dtype)
        return self._tensors[key]

    def __getstate__(self) -> dict:
        """Pickle and deepcopy without the tensor cache (oneDNN-packed weights have no storage
        to copy; they are rebuilt on first use)."""
        return {**self.__dict__, "_tensors": {}}

    def _gemm_operands(self, device: torch.device, dtype: torch.dtype) -> tuple:
        """``(weight, packed, weight.T, packed weight.T)`` for :mod:`probes._matmul`, built once
        per (device, dtype)."""
        key = ("gemm", str(device), dtype)
        if key not in self._tensors:
            weight = self._tensor("weight", device, dtype)
            weight_t = weight.T.contiguous()
            self._tensors[key] = (weight, _matmul.pack(weight), weight_t, _matmul.pack(weight_t))
        return self._tensors[key]

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """Apply the stored normalisation (differentiably) to raw features."""
        dev, dt = features.device, features.dtype
        return normalize_tensor(features, self.normalization, self._tensor("mean", dev, dt),
                                 self._tensor("std", dev, dt))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits ``N x K`` for raw features ``N x D`` (normalisation, then linear map)."""
        if features.shape[-1] != self.dim:
            raise ValueError(f"probe expects {self.dim}-d features, got {features.shape[-1]}-d")
        dev, dt = features.device, features.dtype
        operands = self._gemm_operands(dev, dt)
        bias = self._tensor("bias", dev, dt)
        if self.normalization == "l2":  # (x / |x|) W^T == (x W^T) / |x|: no normalised copy
            return _L2NormalizedLinear.apply(features.contiguous(), operands[0], bias,
                                             *operands[1:])
        return _ProbeLinear.apply(self.normalize(features).contiguous(), operands[0], bias,
                                  *operands[1:])

    def predict_scores(self, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Logits as a NumPy ``N x K`` float32 array."""
        x = np.asarray(features, dtype=np.float32)
        out = np.empty((x.shape[0], self.num_classes), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))
                out[start : start + batch_size] = self.logits(chunk).numpy()
        return out

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted class ids (ties go to the lower id)."""
        return np.argmax(self.predict_scores(features), axis=1)

    def save(self, path: str | Path) -> Path:
        """Write to ``.npz`` (NumPy arrays + JSON-free scalars) or ``.pt`` (a plain dict).

        Keys: ``weight`` (K x D float32), ``bias`` (K), ``class_names`` (K str),
        ``normalization`` (str), ``mean``/``std`` (D, present only for standardize), ``C``.
        """
        path = Path(path)
        payload = self._payload()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npz":
            arrays = {k: v for k, v in payload.items() if v is not None}
            arrays["class_names"] = np.asarray(payload["class_names"], dtype=np.str_)
            arrays["normalization"] = np.asarray(payload["normalization"])
            arrays["C"] = np.asarray(payload["C"], dtype=np.float64)
            with path.open("wb") as handle:
                np.savez(handle, **arrays)
        elif path.suffix == ".pt":
            tensors = {
                k: torch.from_numpy(np.asarray(v)) if isinstance(v, np.ndarray) else v
                for k, v in payload.items()
            }
            torch.save(tensors, path)
        else:
            raise FeatkitError(f"probe file {path} must end in .npz or .pt")
        return path

    def _payload(self) -> dict[str, Any]:
        return {
            "weight": np.asarray(self.weight, dtype=np.float32),
            "bias": np.asarray(self.bias, dtype=np.float32),
            "class_names": list(self.class_names),
            "normalization": self.normalization,
            "mean": None if self.mean is None else np.asarray(self.mean, dtype=np.float32),
            "std": None if self.std is None else np.asarray(self.std, dtype=np.float32),
            "C": float(self.C),
        }

    @classmethod
    def load(cls, path: str | Path) -> LinearProbe:
        """Read a probe written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FeatkitError(f"probe file {path} does not exist")
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    raw = {k: data[k] for k in data.files}
                raw["class_names"] = [str(c) for c in raw["class_names"].tolist()]
                raw["normalization"] = str(raw["normalization"])
                raw["C"] = float(raw["C"])
            elif path.suffix == ".pt":
                raw = torch.load(path, map_location="cpu", weights_only=True)
                raw = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in raw.items()}
            else:
                raise FeatkitError(f"probe file {path} must end in .npz or .pt")
        except (KeyError, ValueError, OSError, RuntimeError, zipfile.BadZipFile) as err:
            raise FeatkitError(f"probe file {path} is not a saved linear probe ({err})") from err
        missing = {"weight", "bias", "class_names", "normalization"} - set(raw)
        if missing:
            raise FeatkitError(f"probe file {path} lacks {', '.join(sorted(missing))}")
        return cls(
            weight=np.asarray(raw["weight"], dtype=np.float32),
            bias=np.asarray(raw["bias"], dtype=np.float32),
            class_names=tuple(raw["class_names"]),
            normalization=str(raw["normalization"]),
            mean=None if raw.get("mean") is None else np.asarray(raw["mean"], dtype=np.float32),
            std=None if raw.get("std") is None else np.asarray(raw["std"], dtype=np.float32),
            C=float(raw.get("C", float("nan"))),
        )
