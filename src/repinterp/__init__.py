"""repinterp: representative interpretations of CNN classifiers (Lam, Chu et al., ICCV 2021).

>>> from repinterp import RepresentativeInterpreter
>>> interp = RepresentativeInterpreter(model, layer="features").fit(images)
>>> region = interp.explain(0)
>>> region.members[:10], interp.heatmap(region, images[region.members[:10]])

The names of ``__all__`` are the public API. Behind them, and not promised to stay as
they are: the method's core (:mod:`repinterp.core`), the application that loads the
user's images and models and writes reports (:mod:`repinterp.app`), the built-in
Fashion-MNIST demo (:mod:`repinterp.demo`) and the command line (:mod:`repinterp.cli`).
"""
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .app.index import build_index, load_index
from .app.io import load_summary, save_summary
from .app.loading import load_images
from .core.errors import NotFittedError, UserError
from .core.interpreter import RepresentativeInterpreter
from .core.layers import suggest_layer
from .core.region import Region
from .core.summary import Summary


def show(image, heat=None, *, alpha: float = 0.7, mean=None, std=None,
         scale: int | None = None):
    """An image with a heat map on top, as a PIL image (a notebook shows it; ``.save``
    writes it), in the spirit of pytorch-grad-cam's ``show_cam_on_image``.

    ``image``: ``[C, H, W]`` or ``[H, W, C]`` (tensor or array; bytes are divided by
    255); drawn as it is when in ``[0, 1]``, min-max scaled otherwise, or un-normalised
    with ``mean`` and ``std`` (per channel) when given. ``heat``: ``[H, W]`` (e.g.
    ``interp.heatmap(region, images)[k]``), scaled to its own range and drawn in the
    jet colours with opacity ``alpha * heat`` (low heat leaves the image as it is).
    Small images are enlarged by ``scale`` (default: to about 112 px).

    >>> repinterp.show(images[i], interp.heatmap(region, images[i:i + 1])[0])
    """
    from .app.report import show_image
    return show_image(image, heat, alpha=alpha, mean=mean, std=std, scale=scale)


__all__ = ["NotFittedError", "Region", "RepresentativeInterpreter", "Summary", "UserError",
           "build_index", "load_images", "load_index", "load_summary", "save_summary",
           "show", "suggest_layer"]
try:
    __version__ = _version("repinterp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
