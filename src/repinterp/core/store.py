"""The reference features and the one product every explanation needs.

``side_values = Z W^T + b`` gives every reference's side of every boundary: the only pass
over all ``N x D`` features an explanation makes. Two things make it cheap:

* **Linear prefix.** When the head starts with ``Flatten -> Linear(A, a)`` (VGG-style
  classifiers), ``p = A z + a`` is captured once during the logits pass of ``fit``, and
  boundaries are sampled in that *working space*: along a segment ``p`` moves linearly,
  so only the head after the linear layer (``rest``) is evaluated, and a boundary there,
  ``g . p + c = 0``, gives side values ``P g + c`` in ``N x out`` (``3136 -> 256`` for the
  demo). In feature space the same boundary is ``w = A^T g``, ``b = c + g . a``
  (:meth:`FeatureStore.lift`), used for heat maps and for new images. No inverse of
  ``A`` is ever formed.
* **Half-precision or on-disk storage.** ``features`` may be float16 or bfloat16, and
  may live in a memory-mapped file (:func:`repinterp.core.network.SplitNetwork.features`
  with ``storage=``) on the CPU while products run on another device: every product then
  reads, moves and upcasts one chunk of about 64 MB at a time, so that the memory a
  product needs beyond its ``[N, Q]`` result is a few chunks, whatever ``N``.

Without a prefix the working space is feature space and ``rest`` is the whole head.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeatureStore"]

CHUNK_BYTES = 1 << 26


def chunk_rows(row_bytes: int, most: int = 8192) -> int:
    """Rows of ``row_bytes`` each that fit in one chunk of about 64 MB (1 to ``most``)."""
    return max(1, min(most, CHUNK_BYTES // max(int(row_bytes), 1)))


class FeatureStore:
    """Flattened reference features ``[N, D]``, optionally with their projections
    ``P = Z A^T + a`` by the head's first linear layer.

    Parameters
    ----------
    features
        ``[N, D]`` features, kept in their own dtype (e.g. float16).
    compute_dtype, device
        The dtype of every product (the model's dtype) and where products run (default:
        where ``features`` are).
    head
        The head ``G`` (feature maps -> logits); it is ``rest`` when there is no prefix.
    prefix
        ``(linear, projected, rest)``: the head's first ``nn.Linear``, ``P`` ``[N, out]``
        and the head after the linear layer.
    """

    def __init__(self, features: torch.Tensor, compute_dtype: torch.dtype, head: nn.Module,
                 prefix: tuple[nn.Linear, torch.Tensor, nn.Module] | None = None,
                 device: torch.device | None = None):
        self.z = features
        self.compute_dtype = compute_dtype
        self.device = features.device if device is None else torch.device(device)
        self.linear: nn.Linear | None = prefix[0] if prefix else None
        self.projected: torch.Tensor | None = prefix[1] if prefix else None
        self.rest: nn.Module = prefix[2] if prefix else head

    def __len__(self) -> int:
        return self.z.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes held: features and projections."""
        extra = 0 if self.projected is None else \
            self.projected.numel() * self.projected.element_size()
        return self.z.numel() * self.z.element_size() + extra

    @property
    def working_shape(self) -> tuple[int, ...] | None:
        """Shape ``rest`` takes per point in the working space (None: the feature map)."""
        return None if self.projected is None else (self.projected.shape[1],)

    def rows(self, idx: torch.Tensor | slice | int) -> torch.Tensor:
        """Features of the given references in the compute dtype."""
        return self.z[idx].to(self.device, self.compute_dtype)

    def working_rows(self, idx: torch.Tensor | slice | int) -> torch.Tensor:
        """The given references in the working space, in the compute dtype."""
        return self.rows(idx) if self.projected is None else \
            self.projected[idx].to(self.device, self.compute_dtype)

    def to_working(self, z: torch.Tensor) -> torch.Tensor:
        """Feature vectors ``[n, D]`` in the working space."""
        if self.linear is None:
            return z.to(self.device, self.compute_dtype)
        return nn.functional.linear(z.to(self.linear.weight), self.linear.weight,
                                    self.linear.bias)

    def lift(self, normals: torch.Tensor, biases: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Working-space boundaries ``g . p + c = 0`` as ``w . z + b = 0`` in feature
        space: ``w = A^T g``, ``b = c + g . a`` (the identity without a prefix)."""
        if self.linear is None:
            return normals, biases
        a = self.linear.weight.detach()
        g = normals.to(a.dtype)
        bias = self.linear.bias
        return g @ a, biases + (g @ bias.detach() if bias is not None else 0)

    def side_values(self, normals: torch.Tensor, biases: torch.Tensor,
                    points: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, Q]`` values ``g . p + c`` of working-space boundaries at every reference
        (or at working-space ``points`` ``[n, *]``), chunk by chunk in the compute dtype."""
        w = normals.T.to(self.compute_dtype)
        c = biases.to(self.compute_dtype)
        if points is not None:
            return torch.addmm(c, points.flatten(1).to(self.compute_dtype), w)
        data = self.z if self.projected is None else self.projected
        if data.dtype == self.compute_dtype and data.device == w.device:
            return torch.addmm(c, data, w)
        step = chunk_rows(data.shape[1] * data.element_size())
        return torch.cat([torch.addmm(c, data[i:i + step].to(w.device, self.compute_dtype), w)
                          for i in range(0, len(data), step)])

    def feature_side_values(self, weights: torch.Tensor, biases: torch.Tensor
                            ) -> torch.Tensor:
        """``[N, P]`` values ``w . z + b`` of *feature-space* hyperplanes at every
        reference, chunk by chunk (also when the store works in a projected space)."""
        w = weights.T.to(self.device, self.compute_dtype)
        c = biases.to(self.device, self.compute_dtype)
        step = chunk_rows(self.z.shape[1] * self.z.element_size())
        return torch.cat([torch.addmm(c, self.rows(slice(i, i + step)), w)
                          for i in range(0, len(self), step)])

    def mean_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The mean feature vector ``[D]`` of the given references, chunk by chunk."""
        step = chunk_rows(self.z.shape[1] * self.z.element_size())
        total = torch.zeros(self.z.shape[1], dtype=self.compute_dtype, device=self.device)
        for i in range(0, len(idx), step):
            total += self.rows(idx[i:i + step]).sum(0)
        return total / max(len(idx), 1)
