"""The logits in a model's output: a tensor, a tuple or list, a dict or a Hugging Face
``ModelOutput`` read the same way everywhere (the split, its check, the metrics)."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["logits_of"]


def logits_of(out: Any) -> Any:
    """The logits in a model's output: the tensor itself, the first item of a tuple or
    list (``(logits, aux)``), the ``"logits"`` entry of a dict or the ``.logits`` of an
    object (Hugging Face's ``ModelOutput``); anything else unchanged."""
    if isinstance(out, (tuple, list)) and out:
        return out[0]
    if isinstance(out, dict):
        return out.get("logits", out)
    logits = getattr(out, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else out

