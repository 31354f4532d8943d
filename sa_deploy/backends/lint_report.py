"""Lint findings and the report that collects them (target-independent)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # ERROR or WARNING
    message: str
    nodes: tuple[tuple[str, str], ...] = ()  # (node name, op type); ("<graph input>", "input") for graph I/O

    def describe(self) -> str:
        where = ", ".join(f"{name or '<unnamed>'} ({op})" for name, op in self.nodes[:5])
        more = f" and {len(self.nodes) - 5} more" if len(self.nodes) > 5 else ""
        return f"[{self.severity}] {self.rule}: {self.message}" + (f" at {where}{more}" if where else "")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["nodes"] = [{"name": n, "op_type": op} for n, op in self.nodes]
        return d


@dataclass
class LintReport:
    path: str
    target: str
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # what was looked at (nodes, Q/DQ pairs...)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def passed(self) -> bool:
        return not self.errors

    def rules_failed(self) -> set[str]:
        return {f.rule for f in self.errors}

    def summary(self) -> str:
        return (f"{'passed' if self.passed else 'FAILED'}: {len(self.errors)} error(s), {len(self.warnings)} "
                f"warning(s) for {self.target}")

    def to_dict(self) -> dict:
        return {"path": self.path, "target": self.target, "passed": self.passed, "checked": dict(self.checked),
                "findings": [f.to_dict() for f in self.findings]}
