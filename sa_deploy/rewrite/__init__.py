"""Deploy lowerings of the SA layer (reshape-transpose, fold), each proven equal to the reference."""
from sa_deploy.rewrite.lowering import LOWERINGS, count_sa_layers, lower_model
from sa_deploy.rewrite.sa_gate import SAGate, gate_from_sa

__all__ = ["LOWERINGS", "lower_model", "count_sa_layers", "SAGate", "gate_from_sa"]
