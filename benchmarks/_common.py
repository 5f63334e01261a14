"""Shared tools for the benchmark scripts: machine description, timing, a text table, JSON results.

Results go to ``benchmarks/results/<name>.json`` (git-ignored); each file records the machine and date
so figures from different machines are never mixed up.
"""
from __future__ import annotations

import datetime as _dt
import gc
from importlib import metadata
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

__all__ = ["RESULTS_DIR", "cpu_features", "machine_info", "timeit", "write_results", "format_table",
           "readme_row", "device_label", "BF16_PEAK_TFLOPS"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features(flags: Iterable[str] | None = None) -> str:
    """The CPU features that decide DL-UM's speed, from /proc/cpuinfo's flags: the widest vector
    unit ("AVX-512", "AVX2") and native bf16 ("AVX512-BF16", "AMX"), e.g. "AVX-512, AVX512-BF16";
    "" where unknown. Machines with one model name can differ here (the project's have)."""
    if flags is None:
        from dlum.runtime import cpu_flags

        flags = cpu_flags()
    flags = set(flags)
    out = ["AVX-512"] if "avx512f" in flags else ["AVX2"] if "avx2" in flags else []
    out += [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX")) if flag in flags]
    return ", ".join(out)


def machine_info(packages: Iterable[str] = ("numpy", "scipy", "pandas", "scikit-learn", "statsmodels", "torch")
                 ) -> dict:
    """Where and when the figures were taken: CPU model and count, OS, Python and the installed versions of
    ``packages`` (distribution names, read from metadata without importing them), date (UTC)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu_model": _cpu_model(),
        "cpu_features": cpu_features(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def timeit(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls (wall clock, perf_counter).

    Returns seconds: ``median``, ``iqr`` (Q3 - Q1), ``min``, ``max``, ``mean`` and every ``times``.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    if len(times) >= 2:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    else:
        q1 = q3 = times[0]
    return {"median": statistics.median(times), "iqr": q3 - q1, "min": min(times), "max": max(times),
            "mean": statistics.fmean(times), "repeats": repeats, "warmup": warmup, "times": times}


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain fixed-width text table of ``rows`` (dicts) over ``columns``; floats with 4 significant digits."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(b) for b in body])


def write_results(name: str, rows: Sequence[dict], extra: dict | None = None) -> Path:
    """Write ``{"benchmark": name, "machine": machine_info(), "rows": rows, **extra}`` to
    ``benchmarks/results/<name>.json`` and return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "machine": machine_info(), "rows": list(rows), **(extra or {})}
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return path


def readme_row(row: dict, what: str, figure: str | None = None, *, target_s: float | None = None,
               device: str = "cpu") -> dict:
    """Mark a result row for the README speed table (see :mod:`benchmarks.readme`).

    ``what`` names the figure in the clinic's or researcher's words; ``figure`` is the measured
    value as text (default: the row's median in seconds); ``target_s`` is the acceptance target in
    seconds, so the table can say whether it was met and by how much it was missed; ``device`` is
    ``"cpu"`` or ``"cuda"`` (which machine description goes into the table).
    """
    row["readme"] = {"what": what, "figure": figure or f"{row['median_s']:.3g} s", "device": device}
    if target_s is not None:
        row["readme"]["target_s"] = float(target_s)
    return row


#: Dense bf16 tensor-core peaks from the vendors' data sheets (TFLOP/s), for the roofline fraction.
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}


def device_label(device) -> dict:
    """The accelerator a figure came from: its name (``dlum.runtime.describe_device``), the torch
    version, and for a known GPU its dense bf16 peak in TFLOP/s."""
    import torch

    from dlum.runtime import describe_device

    out = {"type": device.type, "name": describe_device(device), "torch": torch.__version__}
    if device.type == "cuda":
        out["cuda"] = torch.version.cuda
        for key, peak in BF16_PEAK_TFLOPS.items():
            if key in out["name"]:
                out["bf16_peak_tflops"] = peak
    return out
