"""repinterp: representative interpretations of CNN classifiers (Lam, Chu et al., ICCV 2021).

>>> from repinterp import RepresentativeInterpreter
>>> interp = RepresentativeInterpreter(model, layer="features").fit(images)
>>> region = interp.explain(0)
>>> region.members[:10], interp.heatmap(region, images[region.members[:10]])

The method's core is :mod:`repinterp.core`; :mod:`repinterp.app` loads the user's
images and models and writes reports; :mod:`repinterp.demo` is the built-in
Fashion-MNIST demo; :mod:`repinterp.cli` is the command line.
"""
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .core.errors import NotFittedError, NotPiecewiseLinearError, UserError
from .core.interpreter import RepresentativeInterpreter
from .core.network import SplitNetwork
from .core.region import Region
from .core.split import head_verdict, layer_table, split_model, suggest_layer
from .core.summary import ClassSummary, Summary

__all__ = ["ClassSummary", "NotFittedError", "NotPiecewiseLinearError", "Region",
           "RepresentativeInterpreter", "SplitNetwork", "Summary", "UserError",
           "head_verdict", "layer_table", "split_model", "suggest_layer"]
try:
    __version__ = _version("repinterp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
