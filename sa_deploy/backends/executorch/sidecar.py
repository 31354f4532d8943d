"""The JSON sidecar written next to every ExecuTorch program (``model.pte`` -> ``model.pte.json``).

A .pte has no place for user metadata, so the sidecar carries the deploy config every sa-deploy artifact carries
(the ``sa_deploy.*`` keys: model, preprocessing, lowering, precision, SA gate form, versions...), what the program
was built with (backend, partitions, quantizer and calibration) and the SHA-256 of the .pte it describes. A .pte
is sa-deploy's own (and may be replaced) only when its sidecar is sa-deploy's and names that very file. No
ExecuTorch import here: all of this works and is tested without it."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sa_deploy import __version__
from sa_deploy.errors import SADeployError
from sa_deploy.models.deploy_metadata import DeployMetadata
from sa_deploy.util.atomic import atomic_path
from sa_deploy.util.hashing import bytes_sha256, file_sha256

SCHEMA = 1
FORMAT = "executorch"
MAX_SIDECAR_BYTES = 1 << 20


def sidecar_path(pte: str | Path) -> Path:
    pte = Path(pte)
    return pte.with_name(pte.name + ".json")


def is_sidecar_name(path: Path) -> bool:
    return path.name.endswith(".pte.json")


@dataclass(frozen=True)
class Sidecar:
    """What one .pte is: its deploy config (stored strings), the program's build record and the file's hash."""

    deploy_config: dict[str, str]
    pte_sha256: str
    program: dict[str, Any] = field(default_factory=dict)  # backend, partitions, input shape, batch, ops...
    quantization: dict[str, Any] | None = None  # INT8: quantizer, scheme, calibration
    build_seconds: float = 0.0
    sa_deploy_version: str = __version__
    format: str = FORMAT
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # sa_deploy_version first: the signature sa-deploy's JSON files start with
        return {"sa_deploy_version": d.pop("sa_deploy_version"), **d}

    def metadata(self, where: str = "the sidecar") -> DeployMetadata:
        """The typed deploy metadata (a damaged value: one line naming ``where``)."""
        return DeployMetadata.from_strings(self.deploy_config, where)


def make_sidecar(meta: DeployMetadata, pte_bytes: bytes, program: dict[str, Any],
                 quantization: dict[str, Any] | None, build_seconds: float) -> Sidecar:
    return Sidecar(meta.to_strings(), bytes_sha256(pte_bytes), dict(program),
                   dict(quantization) if quantization else None, round(build_seconds, 2))


def write_program(pte: str | Path, pte_bytes: bytes, sidecar: Sidecar) -> Path:
    """The .pte and its sidecar as one unit: both written to temp files first, then put in place back to back
    (sidecar, then program), so a failure while writing leaves neither; each may replace only sa-deploy's own file.
    Returns the sidecar's path."""
    pte = Path(pte)
    with atomic_path(pte, owned_pte) as tmp_pte, atomic_path(sidecar_path(pte), owned_sidecar) as tmp_sidecar:
        tmp_pte.write_bytes(pte_bytes)
        tmp_sidecar.write_text(json.dumps(sidecar.to_dict(), indent=2) + "\n")
    return sidecar_path(pte)


def _load_json(path: Path) -> Any:
    if not path.is_file() or path.stat().st_size > MAX_SIDECAR_BYTES:
        return None
    return json.loads(path.read_text())


def owned_sidecar(path: Path) -> bool:
    """Whether an existing file is a sidecar sa-deploy wrote: a JSON object of this format with its program's hash."""
    try:
        data = _load_json(path)
    except (OSError, ValueError):
        return False
    return (isinstance(data, dict) and data.get("format") == FORMAT and "pte_sha256" in data
            and "sa_deploy_version" in data)


def owned_pte(path: Path) -> bool:
    """An existing .pte is sa-deploy's when the sidecar beside it is and records this file's SHA-256 (a user's
    program put where sa-deploy once wrote one is theirs)."""
    if not path.is_file() or not owned_sidecar(sidecar_path(path)):
        return False
    try:
        return json.loads(sidecar_path(path).read_text()).get("pte_sha256") == file_sha256(path)
    except (OSError, ValueError):
        return False


def read_sidecar(pte: str | Path) -> Sidecar | None:
    """The sidecar of ``pte`` (None when there is none: a program sa-deploy did not write); one-line errors for a
    damaged one."""
    path = sidecar_path(pte)
    if not path.exists():
        return None
    try:
        data = _load_json(path)
    except (OSError, ValueError) as exc:
        raise SADeployError(f"{path.name} is not readable JSON ({type(exc).__name__}); rebuild the program with "
                            "`sa-deploy run` or remove the sidecar") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("deploy_config"), dict):
        raise SADeployError(f"{path.name} is not an ExecuTorch sidecar of sa-deploy (a JSON object with format "
                            f"'{FORMAT}' and a deploy_config); rebuild the program or remove the sidecar")
    known = {"deploy_config", "pte_sha256", "program", "quantization", "build_seconds", "sa_deploy_version",
             "format", "schema"}
    values = {k: v for k, v in data.items() if k in known}
    values["deploy_config"] = {str(k): str(v) for k, v in values["deploy_config"].items()}
    values.setdefault("pte_sha256", "")
    return Sidecar(**values)


def check_sidecar(pte: Path, sidecar: Sidecar) -> None:
    """The sidecar describes this very file (else its preprocessing and precision may be another program's)."""
    if sidecar.pte_sha256 != file_sha256(pte):
        raise SADeployError(f"{pte.name} does not match {sidecar_path(pte).name} (pte_sha256 differs): the program "
                            "was replaced or is incomplete; rebuild it with `sa-deploy run`, or remove the sidecar "
                            "to run it as a program sa-deploy did not write")


def read_metadata(pte: str | Path) -> dict[str, str]:
    """The stored ``sa_deploy.*`` strings of a program (its sidecar's deploy config); {} without a sidecar."""
    sidecar = read_sidecar(pte)
    return dict(sidecar.deploy_config) if sidecar is not None else {}
