"""A backend manager: everything sa-deploy knows about one runtime's artifacts, in that runtime's folder (the idea
of mmdeploy's backend managers, in this project's own style).

Each ``backends/<name>/__init__.py`` defines a ``BackendManager`` subclass and the registry (``backends.BACKENDS``)
holds one instance per runtime. Whatever asks "which runtime owns this file, what precision is it, how big, is it
sound, may I overwrite it, what does it hold, how do I run it, what deploy metadata does it carry, how is its INT8
judged" asks the manager; no code outside ``backends/`` and ``data/`` decides by a file suffix. Optional libraries
stay optional: a manager imports its runtime only inside the methods that need it."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sa_deploy.backends.base import Runner
from sa_deploy.errors import SADeployError


@dataclass(frozen=True)
class Int8Plan:
    """How to score one INT8 artifact (validate.int8_numerics): the runner options it is ``judged`` with, what
    judges it (``kernels``: this machine's int8 kernels; ``emulation``: the Q/DQ graph in float, int32 semantics),
    and its ``twin`` (file, runner options) scored on the same images, or None."""

    judged_options: dict[str, Any]
    judged_by: str
    twin: tuple[Path, dict[str, Any]] | None
    flavour: str | None = None
    weight_bits: int | None = None


@dataclass
class ArtifactSpec:
    """One artifact a run plans, derived once from the run plan (``plan.RunPlan.artifacts``, plus each registered
    runtime's ``plan_artifacts``): the planned outputs, the progress note, the build, the evaluation and the
    report all read it."""

    name: str  # e.g. "onnx-fold-fp32", "openvino-int8"
    backend: str  # the runtime that runs it (its manager)
    format: str  # the report's format column
    precision: str
    path: Path
    lowering: str | None = None
    variant: str | None = None  # the report's precision column, e.g. "int8 tensorrt"
    source: str | None = None  # the spec it is built from (None: the model)
    evaluate: bool = True  # False: an intermediate (built for another artifact, not scored)
    options: dict[str, Any] = field(default_factory=dict)  # build options (flavour, method, weight bits...)
    runner_options: dict[str, Any] = field(default_factory=dict)  # e.g. OpenVINO's precision hint
    stage: str = ""  # the run's stage title (default: "<backend>: <name>")


@dataclass
class BuildContext:
    """What a run gives its builds: the model being deployed and the calibration images (read once)."""

    model: Any  # the nn.Module (create_model, or a user's module with its deploy config)
    calib: Any = None  # a data source (batches of preprocessed images), for INT8 and CoreML W8A8
    cache_dir: Path | None = None  # the calibration range cache
    calib_num: int = 256  # CoreML W8A8: calibration images


class SkipArtifact(Exception):
    """Raised by a build that cannot make its artifact on this machine (not an error): the run records the
    stage as skipped with this reason (e.g. the bf16 hint on a CPU without bf16)."""


class BackendManager:
    """One runtime. Subclasses set ``name``, ``suffixes`` (the artifact files it runs), ``runner_path``
    (``"module:Class"`` of its Runner) and override what their format needs."""

    name: str = ""
    suffixes: tuple[str, ...] = ()  # artifacts it runs and owns
    companion_suffixes: tuple[str, ...] = ()  # files written beside an artifact (an IR's .bin): owned, not run
    runner_path: str = ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.suffixes})"

    # --- availability and running ---------------------------------------------------------------------------------
    def is_available(self) -> str | None:
        """None when this backend can run here, else why not (with the install hint)."""
        return None

    def runner_class(self) -> type[Runner]:
        module, cls = self.runner_path.split(":")
        return getattr(importlib.import_module(module), cls)

    def runner(self, path: str | Path, threads: int | None = None, **options: Any) -> Runner:
        """A (not yet activated) runner for ``path``; ``options`` are the runner's own (e.g. a precision hint)."""
        return self.runner_class()(Path(path), threads=threads, **options)

    # --- what a file is -------------------------------------------------------------------------------------------
    def owns(self, path: Path) -> bool:
        """Whether ``path`` is an artifact of this backend (by suffix; a manager may also probe the file)."""
        return path.suffix in self.suffixes

    def owns_output(self, path: Path) -> bool:
        """Whether this backend writes files named like ``path`` (an artifact or a companion file)."""
        return self.owns(path) or path.suffix in self.companion_suffixes

    def metadata(self, path: Path) -> Any:
        """The deploy metadata the artifact carries: a ``models.deploy_metadata.DeployMetadata`` read by its
        container's one reader (a mapping of the ``sa_deploy.*`` strings will do for a simple runtime)."""
        return {}

    def precision_of(self, path: Path) -> str:
        return self.metadata(path).get("precision") or "fp32"

    def files_of(self, path: Path) -> list[Path]:
        """The artifact and its companion files (what a size, a copy or a cleanup covers)."""
        companions = [path.with_suffix(s) for s in self.companion_suffixes]
        return [path] + [c for c in companions if c.exists()]

    def size_of(self, path: Path) -> int:
        """Bytes on disk of the artifact and its companions (a package folder: every file in it)."""
        total = 0
        for p in self.files_of(path):
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        return total

    def check(self, path: Path, input_size: int | None = None, num_classes: int | None = None) -> None:
        """Open the artifact far enough to know it can run (before any image is read); one SADeployError if not."""

    def owned_output(self, path: Path) -> bool:
        """Whether an existing ``path`` is a file sa-deploy wrote (and may replace)."""
        return False

    def inspect(self, path: Path) -> Any:
        """What the artifact holds: an object with ``to_dict()`` and ``lines()``."""
        raise SADeployError(f"sa-deploy cannot inspect {path.name} ({self.name})")

    def int8_plan(self, path: Path) -> Int8Plan | None:
        """How its INT8 is judged (None: it does not run int8, or there is nothing to compare with)."""
        return None

    # --- building, for `sa-deploy run` ----------------------------------------------------------------------------
    stage_group: str = ""  # how the run names this runtime's stages when it skips them all (e.g. "OpenVINO IR")

    def plan_artifacts(self, plan: Any, upstream: list[ArtifactSpec]) -> list[ArtifactSpec]:
        """The artifacts this runtime adds to a run (``plan``: the RunPlan), built from ``upstream`` ones (the
        ONNX family and what other runtimes planned before it). The built-in runtimes are planned by
        ``RunPlan.artifacts``; a runtime registered from elsewhere (a plugin, a test) plans its own here."""
        return []

    def build(self, spec: ArtifactSpec, source: Path | None, context: BuildContext) -> dict[str, Any]:
        """Writes ``spec.path`` (atomically: a failure leaves no file) from the built file of ``spec.source``
        (None: from ``context.model``); returns what the report should add to its row (e.g. a ``variant``)."""
        raise SADeployError(f"{self.name} does not build artifacts in `sa-deploy run`")
