"""Deploy lowerings of the SA layer (reshape-transpose, fold), each proven equal to the reference; SA layers are
found anywhere in a model (find_sa) and the conv that absorbs a fold is read from its traced graph (producers)."""
from sa_deploy.rewrite.lowering import LOWERINGS, LayerLowering, Lowered, count_sa_layers, lower, lower_model
from sa_deploy.rewrite.sa_gate import SAGate, gate_from_sa

__all__ = ["LOWERINGS", "LayerLowering", "Lowered", "lower", "lower_model", "count_sa_layers", "SAGate",
           "gate_from_sa"]
