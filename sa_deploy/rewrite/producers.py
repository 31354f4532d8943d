"""Which conv (+ BN) feeds each SA layer, read from the model's traced graph (torch.fx, SA layers kept as leaves).

The fold lowering permutes that conv's output channels, which is exact only when nothing else sees them: the conv's
output (and the BN's, and any channel-wise activation's between them and SA) must have SA as its only consumer,
each module must be called once, and the conv's groups must not be crossed by the shuffle permutation."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from sa_deploy.models.sa_layer import shuffle_permutation

# channel-wise ops that commute with a channel permutation (so they may sit between the BN and SA)
POINTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.LeakyReLU, nn.ELU,
                     nn.Mish, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout)
POINTWISE_FUNCTIONS = {F.relu, F.relu6, F.silu, F.hardswish, F.hardsigmoid, F.gelu, F.leaky_relu, F.elu, F.mish,
                       F.dropout, torch.relu, torch.sigmoid, torch.tanh}
POINTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous"}
BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class Producer:
    conv: str  # qualified module names in the model
    bn: str | None


class _SALeafTracer(fx.Tracer):
    """torch.fx tracer that keeps the SA layers whole (their forward does shape arithmetic)."""

    def __init__(self, leaves: set[int]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self.leaves or super().is_leaf_module(m, module_qualified_name)


def _is_pointwise(node: fx.Node, model: nn.Module) -> bool:
    if node.op == "call_module":
        return isinstance(model.get_submodule(node.target), POINTWISE_MODULES)
    if node.op == "call_function":
        return node.target in POINTWISE_FUNCTIONS
    return node.op == "call_method" and node.target in POINTWISE_METHODS


def _describe(node: fx.Node) -> str:
    return f"{node.op} {getattr(node.target, '__name__', node.target)}"


def _only_consumer(node: fx.Node, what: str) -> str | None:
    """Why the fold cannot permute ``node``'s output (None when it can): another consumer sees its channels."""
    if len(node.users) == 1:
        return None
    others = ", ".join(_describe(u) for u in list(node.users)[:3])
    return f"the output of {what} has {len(node.users)} consumers ({others})"


def _trace(model: nn.Module, sa_layers: list[nn.Module]) -> fx.Graph | str:
    try:
        return _SALeafTracer({id(m) for m in sa_layers}).trace(model)
    except Exception as exc:  # noqa: BLE001 - untraceable user code: fold is then not possible, say why
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {first})"


def find_producers(model: nn.Module, sa_layers: list[nn.Module]) -> list[Producer | str]:
    """For each SA layer (in order): the Producer the fold lowering may permute, or why there is none."""
    graph = _trace(model, sa_layers)
    if isinstance(graph, str):
        return [graph] * len(sa_layers)
    calls: dict[int, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(id(model.get_submodule(node.target)), []).append(node)
    shared = _shared_parameters(model)
    return [_producer(model, calls, shared, sa) for sa in sa_layers]


def _shared_parameters(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {pid for pid, n in seen.items() if n > 1}


def _called_once(model: nn.Module, calls: dict[int, list[fx.Node]], node: fx.Node) -> str | None:
    n = len(calls[id(model.get_submodule(node.target))])
    return None if n == 1 else f"{node.target} is called {n} times in forward"


def _producer(model: nn.Module, calls: dict[int, list[fx.Node]], shared: set[int],
              sa: nn.Module) -> Producer | str:
    sa_calls = calls.get(id(sa), [])
    if len(sa_calls) != 1:
        return f"the SA layer is called {len(sa_calls)} times in forward"
    node = sa_calls[0].args[0] if sa_calls[0].args else None
    if not isinstance(node, fx.Node):
        return "the SA layer's input is not a traced tensor"
    while _is_pointwise(node, model):  # channel-wise activations commute with the permutation
        reason = _only_consumer(node, _describe(node)) or (_called_once(model, calls, node)
                                                           if node.op == "call_module" else None)
        if reason:
            return reason
        node = node.args[0]
    bn = None
    if node.op == "call_module" and isinstance(model.get_submodule(node.target), BATCH_NORMS):
        reason = _only_consumer(node, node.target) or _called_once(model, calls, node)
        if reason:
            return reason
        bn, node = node.target, node.args[0]
    if node.op != "call_module" or not isinstance(model.get_submodule(node.target), nn.Conv2d):
        return f"SA is fed by {_describe(node)}, not by a Conv2d (+ BatchNorm2d)"
    conv: nn.Conv2d = model.get_submodule(node.target)
    reason = _only_consumer(node, f"conv {node.target}") or _called_once(model, calls, node)
    if reason:
        return reason
    per_group = conv.out_channels // conv.groups
    perm = shuffle_permutation(conv.out_channels)
    if any(perm[i] // per_group != i // per_group for i in range(conv.out_channels)):
        return (f"conv {node.target} has groups={conv.groups}: the shuffle would move channels across its groups "
                "(a depthwise or grouped conv cannot absorb it)")
    modules = [conv] + ([model.get_submodule(bn)] if bn else [])
    if any(id(p) in shared for m in modules for p in m.parameters(recurse=False)):
        return f"conv {node.target} or its BN shares parameters with another module"
    return Producer(node.target, bn)
