"""repinterp: representative interpretations of CNN classifiers (Lam, Chu et al., ICCV 2021).

>>> from repinterp import RepresentativeInterpreter
>>> interp = RepresentativeInterpreter(model, layer="features").fit(images)
>>> ri = interp.explain(0)
>>> ri.members[:10], ri.heatmap(images[ri.members[:10]])
"""
from .errors import UserError
from .interpreter import RepresentativeInterpreter
from .region import RegionExplanation
from .split import NotPiecewiseLinearError, split_model
from .summary import Summary, summarize

__all__ = ["NotPiecewiseLinearError", "RegionExplanation", "RepresentativeInterpreter",
           "Summary", "UserError", "split_model", "summarize"]
__version__ = "0.1.0"
