"""dualrec: related-product recommendation with dual embeddings on a directed product graph."""

from dualrec.errors import DualrecError, UnknownProductError

__all__ = ["DualrecError", "ProductGraph", "UnknownProductError", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # ProductGraph needs torch: imported on first use, so `import dualrec` (and `dualrec --help`) stays fast
    if name == "ProductGraph":
        from dualrec.graph import ProductGraph

        return ProductGraph
    raise AttributeError(f"module 'dualrec' has no attribute {name!r}")
