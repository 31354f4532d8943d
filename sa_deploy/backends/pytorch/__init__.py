"""The PyTorch reference every artifact is compared against (always available)."""


def is_available() -> str | None:
    return None
