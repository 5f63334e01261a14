"""What this installation is: settings, versions, device and checkpoint (``python -m dlum info``)."""
from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

__all__ = ["PACKAGES", "describe"]

#: The libraries whose versions matter for reproducing a result.
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pandas", "scikit-learn", "statsmodels",
            "pydicom", "safetensors", "grad-cam", "streamlit", "plotly")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(checkpoint: str | Path | None = None, problems: list[str] | None = None) -> str:
    """A plain-text report; a setting or checkpoint that cannot be used is shown as such (and
    appended to ``problems`` when given)."""
    problems = [] if problems is None else problems
    import dlum
    from dlum.card import read_card
    from dlum.errors import DLUMError
    from dlum.settings import read_settings

    lines = [f"dlum {dlum.__version__} (Python {platform.python_version()}, {platform.system()})", ""]
    try:
        settings = read_settings()
        lines.append("settings:")
        lines += [f"  {k} = {v}" for k, v in settings.as_dict().items()]
        path = Path(checkpoint) if checkpoint else settings.checkpoint
        precision = settings.precision.value
    except DLUMError as err:
        lines.append(f"settings: error: {err}")
        problems.append(str(err))
        path, precision = (Path(checkpoint) if checkpoint else None), "auto"
    lines += ["", "versions:"] + [f"  {p} {_version(p)}" for p in PACKAGES]
    try:
        from dlum.runtime import cpu_bf16_kind, describe_device, fast_dtype, resolve_device

        device = resolve_device("auto")
        dtype = str(fast_dtype(device, precision)).replace("torch.", "")
        lines += ["", f"device: {describe_device(device)}; native bf16: {cpu_bf16_kind() or 'none'}; "
                      f"probabilities in {dtype}"]
    except Exception as err:  # an unusable torch install is reported, not raised
        lines += ["", f"device: unavailable ({type(err).__name__}: {err})"]
    lines.append("")
    if path is None:
        lines.append("checkpoint: none")
    else:
        try:
            card = read_card(path)
            thresholds = ", ".join(f"{k} {v:.3f}" for k, v in
                                   (card.operating_point.thresholds.items()
                                    if card.operating_point else []))
            lines.append(f"checkpoint: {path}")
            lines.append(f"  name {card.name or '(none)'}; arch {card.arch.value}; "
                         f"input {card.input.size} px; pairing {card.pairing or 'not recorded'}")
            lines.append(f"  thresholds: {thresholds or 'none (run python -m dlum report --held-out)'}")
            lines.append(f"  held-out results: {', '.join(card.metrics) or 'none'}")
        except DLUMError as err:
            lines.append(f"checkpoint: {path}: error: {err}")
            problems.append(str(err))
    return "\n".join(lines)
