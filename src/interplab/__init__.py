"""interplab: a lab for mechanistic interpretability of small neural networks.

Example:
    >>> import interplab
    >>> interplab.__version__
    '0.1.0'
"""

__version__ = "0.1.0"

from interplab.errors import InterplabError  # noqa: E402
from interplab.runs import load  # noqa: E402

__all__ = ["InterplabError", "load", "__version__"]
