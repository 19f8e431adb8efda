"""The paper's evaluation protocol (METHOD §5), benchmark code outside the library:
Average Drop and Average Increase of heat maps on *unseen* images retrieved for a seed.

For a seed ``x`` of predicted class ``c``:

* **RI** retrieves the top ``k`` unseen images inside ``x``'s region by semantic distance
  and draws each with the region's heat map.
* **CAM baselines** (pytorch-grad-cam's Grad-CAM, Grad-CAM++, Score-CAM) compute channel
  weights on ``x`` for ``c`` and reuse them on the top ``k`` unseen images by Euclidean
  distance in feature space: ``map(e) = ReLU(sum_k a_k A_k(e))``.
* Each retrieved image ``e`` is masked to ``e'``: the 20% most important pixels of its heat
  map are kept (ties broken by pixel index), every other pixel is set to 0 in normalised
  input space, i.e. the dataset mean.
* ``AD = mean_e max(0, Y_c(e) - Y_c(e')) / Y_c(e)``, ``AI = mean_e 1[Y_c(e) < Y_c(e')]``
  with ``Y_c`` the softmax probability of ``c``; mAD and mAI average over seeds.

Every heat map is upsampled bilinearly to the input size before masking; min-max scaling
does not change which pixels are kept.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from repinterp import RepresentativeInterpreter
from repinterp.core.copies import inference_mode
from repinterp.core.errors import UserError
from repinterp.core.heatmap import METHODS as HEATMAPS
from repinterp.core.metrics import average_drop_increase, keep_top
from repinterp.core.split import split_model

__all__ = ["CAM_METHODS", "KS", "EvalResult", "cam_weights", "class_gradients",
           "evaluate_seeds", "own_cam", "reused_cam"]

KS = (5, 10, 20, 50)


def _cam_classes() -> dict[str, type]:
    try:
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UserError("the evaluation needs pytorch-grad-cam: "
                        "pip install 'repinterp[eval]'") from exc
    return {"Grad-CAM": GradCAM, "Grad-CAM++": GradCAMPlusPlus, "Score-CAM": ScoreCAM}


CAM_METHODS = ("Grad-CAM", "Grad-CAM++", "Score-CAM")


def class_gradients(interp: RepresentativeInterpreter, head: nn.Module,
                    points: torch.Tensor, cls: int) -> torch.Tensor:
    """``grad_z log softmax(G(z))_cls`` at flattened feature points ``[P, D]``, ``G`` the
    model's ``head`` after the interpreter's layer (``split_model``; the weights of the
    interpreter's private copy): the normals the ``logprob`` heat map takes, computed as
    :meth:`RepresentativeInterpreter.heatmap` computes them."""
    z = points.detach().to(interp.logits_.device, interp.logits_.dtype).clone()
    z.requires_grad_(True)
    with inference_mode(interp.model), torch.enable_grad():
        lp = head(z.reshape(-1, *interp.feature_shape_)).log_softmax(1)[:, cls].sum()
        (g,) = torch.autograd.grad(lp, z)
    return g


def cam_weights(method: str, model: nn.Module, layer: nn.Module, image: torch.Tensor,
                cls: int) -> torch.Tensor:
    """Channel weights ``[C]`` of a pytorch-grad-cam method computed on one image."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(cls)]
    with inference_mode(model), _cam_classes()[method](model, [layer]) as cam, \
            contextlib.redirect_stderr(io.StringIO()):  # Score-CAM's own progress bar
        cam.batch_size = 256
        cam(image[None], targets=targets)
        acts = cam.activations_and_grads.activations[0].cpu().numpy()
        grads = (cam.activations_and_grads.gradients[0].cpu().numpy()
                 if cam.activations_and_grads.gradients else None)
        weights = cam.get_cam_weights(image[None], [layer], targets, acts, grads)
    model.zero_grad(set_to_none=True)
    return torch.as_tensor(np.asarray(weights)[0], dtype=image.dtype)


def reused_cam(weights: torch.Tensor, features: torch.Tensor,
               size: tuple[int, int]) -> torch.Tensor:
    """``ReLU(sum_k a_k A_k)`` for features ``[n, C, h, w]``, upsampled to ``size``."""
    cam = torch.einsum("c,nchw->nhw", weights.to(features), features).relu()
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def own_cam(method: str, model: nn.Module, layer: nn.Module, images: torch.Tensor,
            cls: int) -> torch.Tensor:
    """Each image's own CAM from pytorch-grad-cam, ``[n, H, W]``."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with inference_mode(model), _cam_classes()[method](model, [layer]) as cam:
        out = cam(images, targets=[ClassifierOutputTarget(cls)] * len(images))
    model.zero_grad(set_to_none=True)
    return torch.as_tensor(out)


@dataclass
class EvalResult:
    """Per-seed AD and AI at each k, per row: ``ad[row][k]`` is an array over seeds
    (NaN where fewer than one image was retrieved)."""

    seeds: list[int]
    ks: tuple[int, ...]
    ad: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    ai: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    retrieved: dict[str, np.ndarray] = field(default_factory=dict)

    def table(self) -> dict[str, dict[int, tuple[float, float]]]:
        """``row -> k -> (mAD, mAI)`` in percent, NaN seeds left out."""
        return {r: {k: (100 * float(np.nanmean(self.ad[r][k])),
                        100 * float(np.nanmean(self.ai[r][k]))) for k in self.ks}
                for r in self.ad}




def evaluate_seeds(interp: RepresentativeInterpreter, references: torch.Tensor,
                   unseen: torch.Tensor, seeds: list[int], *, ks: tuple[int, ...] = KS,
                   keep: float = 0.2,
                   heatmaps: tuple[str, ...] = HEATMAPS, cams: tuple[str, ...] = CAM_METHODS,
                   extra_rows: bool = True, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> EvalResult:
    """Run the protocol for reference indices ``seeds`` of an interpreter fitted on
    ``references``; ``unseen`` are the held-out images retrieved from.

    Rows: ``RI (<heat map>)`` for each region heat map, ``<CAM> (reused)`` for each CAM,
    and with ``extra_rows`` ``RI retrieval + Grad-CAM++ (reused)`` and ``own Grad-CAM++``
    on RI's retrieval.
    """
    model = interp.model
    layer = model.get_submodule(interp.layer_)
    # where and in which dtype the interpreter computes: its logits'
    device, dtype = interp.logits_.device, interp.logits_.dtype
    head = split_model(model, interp.layer_).head if "logprob" in heatmaps else None
    kmax = max(ks)
    size = tuple(unseen.shape[-2:])
    feats = interp.features(unseen, progress=progress)   # [M, D]
    fmap = feats.reshape(-1, *interp.feature_shape_)
    res = EvalResult(seeds=list(seeds), ks=tuple(ks))
    rows: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    n_ri: list[int] = []

    def score(name: str, idx: torch.Tensor, heat: Callable[[], torch.Tensor],
              cls: int) -> None:
        if len(idx) == 0:
            rows.setdefault(name, []).append((np.zeros(0), np.zeros(0)))
            return
        x = unseen[idx.cpu()].to(device, dtype)
        drop, inc = average_drop_increase(model, x, keep_top(x, heat().to(x), keep), cls)
        rows.setdefault(name, []).append((drop.cpu().numpy(), inc.cpu().numpy()))

    for s in tqdm(seeds, desc="evaluate", unit="seed", disable=not progress, leave=False):
        region = interp.explain(s)
        cls = region.predicted_class
        ri_idx, _ = region.rank_features(feats)
        ri_idx = ri_idx[:kmax]
        ri_fi = ri_idx.to(fmap.device)
        n_ri.append(len(ri_idx))
        for hm in heatmaps:
            score(f"RI ({hm})", ri_idx, lambda: region.heatmap_features(
                fmap[ri_fi], size, hm, class_gradients(interp, head, region.boundary_points,
                                                       cls) if hm == "logprob" else None),
                  cls)
        eu = torch.cdist(interp.features_[s][None].to(feats), feats)[0].topk(
            kmax, largest=False).indices
        seed_img = references[s].to(device, dtype)
        for cam in cams:
            w = cam_weights(cam, model, layer, seed_img, cls)
            score(f"{cam} (reused)", eu, lambda: reused_cam(w, fmap[eu], size), cls)
            if extra_rows and cam == "Grad-CAM++":
                score("RI retrieval + Grad-CAM++ (reused)", ri_idx,
                      lambda: reused_cam(w, fmap[ri_fi], size), cls)
        if extra_rows:
            score("own Grad-CAM++ (RI retrieval)", ri_idx, lambda: own_cam(
                "Grad-CAM++", model, layer, unseen[ri_idx].to(device, dtype),
                cls), cls)
    for name, per_seed in rows.items():
        res.ad[name], res.ai[name] = {}, {}
        for k in ks:
            res.ad[name][k] = np.array([d[:k].mean() if len(d) else np.nan
                                        for d, _ in per_seed])
            res.ai[name][k] = np.array([i[:k].mean() if len(i) else np.nan
                                        for _, i in per_seed])
    res.retrieved["RI"] = np.array(n_ri)
    return res

