"""Find the SA layers of any torch module, wherever they sit, and prove each one computes Shuffle Attention.

A module is a candidate when it has SA's parameters (``models.sa_layer.sa_width``): the official ``sa_layer``, our
``SALayer`` and the common re-implementations all do. Its channel count (hence its groups) is read from one forward
pass of the model, and the candidate is run against the reference ``SALayer`` with the same, randomised,
parameters: a look-alike that computes something else is refused here, before any lowering touches it."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from sa_deploy.errors import SADeployError
from sa_deploy.models.sa_layer import SA_PARAMETERS, SALayer, sa_modules, sa_width

# allowed |candidate - reference| relative to the reference's scale: float32 rounding of the same arithmetic
# written in another order stays far below it; a different formula does not
MATCH_TOLERANCE = 1e-5


@dataclass
class FoundSA:
    name: str  # qualified name in the model (the first one, if the module is held under several)
    module: nn.Module
    reference: SALayer  # the reference layer with the module's parameters, proven to compute the same
    calls: int  # how many times the model's forward calls it

    @property
    def channel(self) -> int:
        return self.reference.channel

    @property
    def groups(self) -> int:
        return self.reference.groups


def _input_shapes(model: nn.Module, candidates: list[nn.Module], example: torch.Tensor) -> dict[int, list[tuple]]:
    """The input shape of every call of each candidate in one forward pass of ``model`` on ``example``."""
    shapes: dict[int, list[tuple]] = {id(m): [] for m in candidates}

    def record(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            shapes[id(module)].append(tuple(args[0].shape))

    hooks = [m.register_forward_pre_hook(record) for m in candidates]
    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:  # noqa: BLE001 - the user's model: say what failed in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SADeployError(f"{type(model).__name__} fails on a {tuple(example.shape)} example input, needed to "
                            f"find its SA layers ({type(exc).__name__}: {first}); check --input-size") from None
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _reference_like(module: nn.Module, channel: int, k: int) -> SALayer:
    ref = SALayer(channel, channel // (2 * k))
    with torch.no_grad():
        for name in SA_PARAMETERS:
            getattr(ref, name).copy_(getattr(module, name).detach().reshape(1, k, 1, 1))
        gn = module.gn
        ref.gn.weight.copy_(gn.weight.detach() if gn.affine else torch.ones(k))
        ref.gn.bias.copy_(gn.bias.detach() if gn.affine else torch.zeros(k))
    ref.gn.eps = gn.eps
    return ref.eval()


def _check_computes_sa(name: str, module: nn.Module, shape: tuple, k: int) -> None:
    """The candidate, with random SA parameters, against the reference with the same parameters on one input of
    the shape it sees in the model (random values: at init both branches are plain scalings, too weak a test)."""
    probe = copy.deepcopy(module).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for pname in SA_PARAMETERS:
            getattr(probe, pname).copy_(torch.randn((1, k, 1, 1), generator=g))
        if probe.gn.affine:
            probe.gn.weight.copy_(1 + 0.5 * torch.randn(k, generator=g))
            probe.gn.bias.copy_(0.5 * torch.randn(k, generator=g))
        reference = _reference_like(probe, shape[1], k)
        x = torch.randn((2, *shape[1:]), generator=g)
        want = reference(x)
        try:
            got = probe(x)
        except Exception as exc:  # noqa: BLE001 - a look-alike may fail on its own input
            got = exc
    what = f"{name} ({type(module).__name__}) has SA's parameters but does not compute Shuffle Attention"
    if isinstance(got, BaseException):
        raise SADeployError(f"{what}: it fails on a {tuple(x.shape)} input ({type(got).__name__}); "
                            "export it with lowering none")
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        raise SADeployError(f"{what}: its output shape differs from SA's; export it with lowering none")
    diff = (got - want).abs().max().item()
    if not diff <= MATCH_TOLERANCE * max(1.0, want.abs().max().item()):
        raise SADeployError(f"{what} (max |difference| {diff:.2e} from SA with groups={reference.groups} on a "
                            f"{tuple(x.shape)} input); export it with lowering none")


def find_sa_layers(model: nn.Module, example: torch.Tensor) -> list[FoundSA]:
    """Every SA layer ``model``'s forward calls on ``example``, each proven equal to the reference SA layer.
    Candidates the forward never calls are left out (they do not reach an export)."""
    held: dict[int, tuple[str, nn.Module]] = {}
    for name, module in sa_modules(model):
        held.setdefault(id(module), (name, module))
    shapes = _input_shapes(model, [m for _, m in held.values()], example)
    found = []
    for name, module in held.values():
        calls = shapes[id(module)]
        if not calls:
            continue
        k = sa_width(module)
        channels = {s[1] for s in calls}
        if any(len(s) != 4 for s in calls) or len(channels) != 1 or next(iter(channels)) % (2 * k):
            raise SADeployError(f"{name} ({type(module).__name__}) has SA's parameters (k={k}) but receives inputs "
                                f"of shape {', '.join(map(str, sorted(set(calls))))}; SA needs (b, c, h, w) with c a "
                                f"multiple of 2*k; export it with lowering none")
        _check_computes_sa(name, module, calls[0], k)
        found.append(FoundSA(name, module, _reference_like(module, calls[0][1], k), len(calls)))
    return found
