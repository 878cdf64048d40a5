"""dualrec: related-product recommendation with dual embeddings on a directed product graph."""

from dualrec.graph import DualrecError, ProductGraph, UnknownProductError

__all__ = ["DualrecError", "ProductGraph", "UnknownProductError"]
__version__ = "0.1.0"
