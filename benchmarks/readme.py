"""The README's speed table, rebuilt from benchmark results.

Every result row marked with :func:`benchmarks._common.readme_row` becomes one line: what was
measured, the figure (and, where the issue set a target, whether it was met or by how much it was
missed), and the machine it came from. Rows come from ``benchmarks/results/*.json`` (this machine's
latest run) and ``benchmarks/recorded/*.json`` (figures kept in the repository, e.g. from a GPU
machine); a result overrides a recorded file of the same name.

Run:  python -m benchmarks.readme   (``python -m benchmarks`` runs it after the benchmarks)
      python -m benchmarks.readme --keep-absent   (after one benchmark: other rows stay)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
RECORDED_DIR = Path(__file__).resolve().parent / "recorded"
START, END = "<!-- speed:start -->", "<!-- speed:end -->"
#: Table order: the clinician's waits first, then the researcher's.
ORDER = ("inference", "uncertainty", "localize", "precision", "app", "stats", "training", "training-recipe", "inference-cuda",
         "precision-cuda", "training-cuda")


def load_results(results_dir: Path | None = None, recorded_dir: Path | None = None) -> list[dict]:
    """Benchmark result files (recorded first, then this machine's results over them), in ORDER."""
    from benchmarks import _common

    found: dict[str, dict] = {}
    for folder in (recorded_dir or RECORDED_DIR, results_dir or _common.RESULTS_DIR):
        for path in sorted(Path(folder).glob("*.json")):
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a half-written or foreign file is not a result
            if isinstance(payload, dict) and "rows" in payload:
                found[payload.get("benchmark", path.stem)] = payload
    rank = {name: i for i, name in enumerate(ORDER)}
    return [found[k] for k in sorted(found, key=lambda k: (rank.get(k, len(ORDER)), k))]


def machine_text(payload: dict, device: str) -> str:
    """Where a figure came from: the GPU's name, or the CPU model, features and usable cores; torch;
    date."""
    machine = payload.get("machine", {})
    versions = machine.get("versions", {})
    date = str(machine.get("date", ""))[:10]
    label = payload.get("device") or {}
    if device == "cuda":
        where = label.get("name", "GPU")
        torch_version = label.get("torch") or versions.get("torch", "?")
    else:
        cores = machine.get("cpu_usable") or machine.get("cpu_count")
        features = machine.get("cpu_features")
        where = f"{machine.get('cpu_model', 'CPU')}{f' ({features})' if features else ''}, {cores} cores"
        torch_version = versions.get("torch", label.get("torch", "?"))
    return f"{where}; torch {torch_version}; {date}"


def target_text(seconds: float, target: float) -> str:
    if seconds <= target:
        return f"met (target {target:g} s)"
    return f"**missed by {seconds - target:.2f} s** (target {target:g} s)"


def speed_table(payloads: list[dict]) -> str:
    """The markdown table of every README-marked row in ``payloads``."""
    lines = ["| what | figure | target | machine |", "|---|---|---|---|"]
    for payload in payloads:
        for row in payload.get("rows", []):
            mark = row.get("readme")
            if not isinstance(mark, dict):
                continue
            device = mark.get("device", "cpu")
            target = (target_text(row["median_s"], mark["target_s"])
                      if "target_s" in mark and "median_s" in row else "")
            cells = [mark["what"], mark["figure"], target, machine_text(payload, device)]
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    if len(lines) == 2:
        lines.append("| (no benchmark results yet: run `python -m benchmarks`) | | | |")
    return "\n".join(lines)


def _table_rows(table: str) -> list[str]:
    return [line for line in table.strip().splitlines()[2:] if line.startswith("| ")]


def _what(row: str) -> str:
    return row[2:].split(" | ", 1)[0]


def merge_tables(old: str, new: str) -> str:
    """``new``, keeping the rows of ``old`` whose figure (the *what* cell) ``new`` does not have,
    each after the row it followed: for refreshing the table from the benchmarks run on this
    machine while the others' results are not here (``--keep-absent``)."""
    fresh, before = _table_rows(new), _table_rows(old)
    have, had = {_what(r) for r in fresh}, {_what(r) for r in before}
    merged, after = list(fresh), None
    for row in before:
        if _what(row) in have:
            after = _what(row)
            continue
        at = 0
        if after is not None:  # after its old neighbour (and the new figures run with it)
            at = next(i for i, r in enumerate(merged) if _what(r) == after) + 1
            while after in have and at < len(merged) and _what(merged[at]) not in had:
                at += 1
        merged.insert(at, row)
        after = _what(row)
    if len(merged) > 1:  # the placeholder row is not kept beside real ones
        merged = [r for r in merged if "no benchmark results yet" not in r]
    return "\n".join(new.strip().splitlines()[:2] + merged)


def update_readme(readme: Path = REPO / "README.md", payloads: list[dict] | None = None, *,
                  keep_absent: bool = False) -> bool:
    """Replace the text between the speed markers in ``readme``; returns whether it changed.
    ``keep_absent`` keeps the rows of figures no result file gives (:func:`merge_tables`).

    Raises ValueError when the markers are missing (the README is not rewritten then).
    """
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise ValueError(f"{readme.name}: no '{START}' … '{END}' section to refresh")
    table = speed_table(load_results() if payloads is None else payloads)
    if keep_absent:
        table = merge_tables(text.split(START, 1)[1].split(END, 1)[0], table)
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{table}\n{END}{tail}"
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-absent", action="store_true",
                        help="keep the table's rows of benchmarks that have no result file here "
                        "(refresh after running one benchmark)")
    args = parser.parse_args(argv)
    changed = update_readme(keep_absent=args.keep_absent)
    print("README speed table " + ("refreshed" if changed else "unchanged"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
