"""The reference feature store and the one product every explanation needs.

``side_values(W, b) = Z W^T + b`` gives every reference's side of every boundary. It is
the only pass over all ``N x D`` features an explanation makes, so two things make it
cheap:

* **Linear prefix.** When the head starts with ``Flatten -> Linear(A)`` (VGG-style
  classifiers), every boundary normal is ``w = A^T g`` with ``g`` the gradient at the
  linear layer's output, hence ``Z w = (Z A^T) g``. ``P = Z A^T + a`` is captured once,
  during the logits pass of ``fit`` (no extra work), and ``g = pinv(A^T) w``; each
  explanation then costs ``N x out`` instead of ``N x D`` (``3136 -> 256`` for the demo).
  Bisection runs in that space too: along a segment ``p = A z + a`` moves linearly, so
  only the rest of the head (``rest``) is evaluated, and a boundary found there with
  normal ``g`` is ``w = g A``, ``b = b_p + g . a`` in feature space.
* **Half-precision storage.** ``dtype=torch.float16`` halves the memory of ``Z``; every
  product upcasts one chunk at a time.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

__all__ = ["FeatureStore", "capture_outputs"]

CHUNK = 8192


@contextlib.contextmanager
def capture_outputs(module: nn.Module, sink: list) -> Iterator[None]:
    """Append ``module``'s outputs to ``sink`` while inside; the hook is always removed."""
    handle = module.register_forward_hook(lambda m, i, o: sink.append(o.detach()))
    try:
        yield
    finally:
        handle.remove()


class FeatureStore:
    """Flattened reference features ``[N, D]`` with an optional linear-prefix projection.

    Parameters
    ----------
    features
        ``[N, D]`` features, kept in their own dtype (e.g. float16).
    compute_dtype
        The dtype of every product (the model's dtype).
    """

    def __init__(self, features: torch.Tensor, compute_dtype: torch.dtype):
        self.z = features
        self.compute_dtype = compute_dtype
        self.prefix: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.linear: nn.Linear | None = None
        self.rest: nn.Module | None = None

    def __len__(self) -> int:
        return self.z.shape[0]

    @property
    def nbytes(self) -> int:
        extra = sum(t.numel() * t.element_size() for t in self.prefix) if self.prefix else 0
        return self.z.numel() * self.z.element_size() + extra

    def set_prefix(self, linear: nn.Linear, projected: torch.Tensor,
                   rest: nn.Module | None = None) -> None:
        """Use ``projected = Z A^T + a`` (``[N, out]``) of the head's first ``linear``;
        ``rest`` is the head after it."""
        self.linear, self.rest = linear, rest
        a = linear.weight.detach().to(torch.float64)
        pinv = torch.linalg.pinv(a.T)                     # [out, D]
        bias = self._linear_bias().to(torch.float64)
        self.prefix = (projected, pinv.to(projected.device), bias.to(projected.device))

    def _linear_bias(self) -> torch.Tensor:
        w = self.linear.weight.detach()
        return (self.linear.bias.detach() if self.linear.bias is not None
                else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))

    def lift(self, normals: torch.Tensor, biases: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """A boundary ``g . p + b_p = 0`` in the prefix's output space ``p = A z + a`` as
        ``w . z + b = 0`` in feature space: ``w = g A``, ``b = b_p + g . a``."""
        a = self.linear.weight.detach()
        g = normals.to(a.dtype)
        return g @ a, biases + g @ self._linear_bias()

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """``A z + a`` for feature vectors ``[n, D]`` (requires a prefix)."""
        return torch.nn.functional.linear(z.to(self.linear.weight), self.linear.weight,
                                          self.linear.bias)

    def rows(self, idx: torch.Tensor | slice | int) -> torch.Tensor:
        """Features of the given references in the compute dtype."""
        return self.z[idx].to(self.compute_dtype)

    def side_values(self, weights: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
        """``Z W^T + b``: ``[N, Q]`` signed values, ``>= 0`` on the seed's side."""
        if self.prefix is not None:
            projected, pinv, bias = self.prefix
            g = pinv @ weights.T.to(torch.float64)             # [out, Q]: w = A^T g
            shift = biases.to(torch.float64) - bias @ g         # b - a . g
            return torch.addmm(shift.to(projected.dtype), projected, g.to(projected.dtype))
        w = weights.T.to(self.compute_dtype)
        b = biases.to(self.compute_dtype)
        if self.z.dtype == self.compute_dtype:
            return torch.addmm(b, self.z, w)
        return torch.cat([torch.addmm(b, self.z[i:i + CHUNK].to(self.compute_dtype), w)
                          for i in range(0, len(self.z), CHUNK)])
