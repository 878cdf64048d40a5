"""Baselines, all scored by the same evaluator as DAEMON (see dualrec.evaluate)."""

from dualrec.baselines.popularity import Popularity

__all__ = ["Popularity"]
