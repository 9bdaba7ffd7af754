"""Experiments that compare gradient algorithms on the same cell interface (`bptt experiment`)."""

from .influence import InfluenceCell, influence_model, run_influence

__all__ = ["InfluenceCell", "influence_model", "run_influence"]
