"""Deploy lowerings of the SA layer (reshape-transpose, fold), each proven equal to the reference; SA layers are
found anywhere in a model (find_sa) and the conv that absorbs a fold is read from its traced graph (producers).
The other attention modules (SE, CBAM, ECA, GC) get their exact deploy forms from a registry (deploy_forms,
attention_forms) under every lowering except ``none``."""
from sa_deploy.rewrite.deploy_forms import DeployForm, deploy_form_for, register_deploy_form
from sa_deploy.rewrite.lowering import (
    LOWERINGS,
    LayerLowering,
    Lowered,
    ModuleLowering,
    count_sa_layers,
    lower,
    lower_model,
)
from sa_deploy.rewrite.sa_gate import SAGate, gate_from_sa

__all__ = ["LOWERINGS", "LayerLowering", "Lowered", "ModuleLowering", "lower", "lower_model", "count_sa_layers",
           "SAGate", "gate_from_sa", "DeployForm", "deploy_form_for", "register_deploy_form"]
