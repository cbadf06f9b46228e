"""Mutation testing of minecube's core modules with mutmut: `make mutate [MODULES="sites stats"]`.

Each module runs in a fresh copy of the committed tree (``git archive HEAD``: the working tree
is never touched) with the tests that cover it. mutmut (chosen over cosmic-ray and
pytest-gremlins: it runs only the tests that reach each mutated function, forks a warm process
per mutant instead of starting pytest, and keeps its results per mutant so a run resumes) plants
one change at a time — an operator, a constant, a dropped argument — and runs those tests; a
mutant they do not fail *survives*.

Writes ``mutation/<module>.txt`` (the date, the commit, the counts and the diff of every
survivor and of every mutant no test reaches) and prints a Markdown row per module for the
table in docs/testing.md. Killed ÷ (killed + survived + unreached) is the score: a mutant no
test reaches is a gap like a survivor. A survivor that changes nothing observable is listed in
docs/testing.md as equivalent, with its reason.

The demo worlds the tests need are generated once, by the first (unmutated) run, into a folder
every forked test process shares (``MINECUBE_TEST_WORLDS``, read by tests/conftest.py), and so
is the tests' cube store where the module under test is not one it is built with
(``MINECUBE_TEST_CUBES``); servers are still started per mutant. mutmut's first run goes
through every selected test, so whatever a forked run reuses exists before it starts. It
runs for long on two cores, so it is not part of `make test`; ``--minutes`` (``make mutate
MINUTES=…``) stops each module's run after that long, as Ctrl-C does, and keeps what it
checked (mutmut takes the mutants whose tests are quickest first); the file and the row then
say how many of the module's mutants were checked.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {
    "sensors": ["tests/test_sensors.py"],
    "cube": ["tests/test_cube.py", "tests/test_faults.py"],
    "store": ["tests/test_store.py", "tests/test_faults.py"],
    "segment": ["tests/test_segment.py"],
    "stats": ["tests/test_stats.py"],
    "chips": ["tests/test_chips.py"],
    "labels": ["tests/test_labels.py"],
    "sites": ["tests/test_sites.py"],
    "stac": ["tests/test_stac.py"],
}
BUILD_CUBES = {"sensors", "cube", "store", "stac", "sites"}
"""Modules the tests' cube store is built with: mutating another, the store of the first run is
shared by every forked test process (``MINECUBE_TEST_CUBES``) rather than built per mutant."""
COUNTS = ("killed", "survived", "no_tests", "timeout", "suspicious", "skipped")


def _run(module: str, tests: list[str], children: int, worlds: Path, log: Path,
         minutes: float | None) -> dict:  # fmt: skip
    """mutmut on one module in a copy of HEAD; its counts and the diffs of what lived (mutmut's
    own output goes to ``log``). With ``minutes``, the run is stopped then and what it checked
    is kept: mutmut records each mutant's result as it comes."""
    mutmut = [sys.executable, "-m", "mutmut"]
    # one thread for torch's and MKL's OpenMP: a pool the unmutated run starts is, in each
    # forked test process, threads that do not exist there, and the first convolution waits on
    # them for ever (a futex wait at no CPU); two children keep the two cores busy anyway
    env = os.environ | {"MINECUBE_TEST_WORLDS": str(worlds), "OMP_NUM_THREADS": "1",
                        "MKL_NUM_THREADS": "1"}  # fmt: skip
    if module not in BUILD_CUBES:
        env["MINECUBE_TEST_CUBES"] = str(worlds / "cubes")
    with tempfile.TemporaryDirectory(prefix=f"mutate-{module}-") as tmp:
        archive = subprocess.run(["git", "archive", "HEAD", "minecube", "tests", "pyproject.toml"],
                                 cwd=ROOT, capture_output=True, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        selection = "".join(f"\n    {t}" for t in tests)  # a list: one per line
        (Path(tmp) / "setup.cfg").write_text(
            "[mutmut]\nsource_paths=minecube\n"
            f"only_mutate=minecube/{module}.py\n"
            f"pytest_add_cli_args_test_selection={selection}\n"
        )
        with open(log, "w") as out:
            run = subprocess.Popen([*mutmut, "run", "--max-children", str(children)], cwd=tmp,
                                   env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
            try:  # mutmut runs in a session of its own: stopped here, with its mutants
                run.wait(timeout=None if minutes is None else 60 * minutes)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):  # the budget, or Ctrl-C
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
        return _collect(Path(tmp), module)


def _collect(tmp: Path, module: str) -> dict:
    """The counts of a mutmut run in ``tmp`` (finished or stopped) and the survivors' diffs."""
    mutmut = [sys.executable, "-m", "mutmut"]
    subprocess.run([*mutmut, "export-cicd-stats"], cwd=tmp, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    stats = json.loads((tmp / "mutants" / "mutmut-cicd-stats.json").read_text())
    listed = subprocess.run([*mutmut, "results", "--all", "true"], cwd=tmp,
                            capture_output=True, text=True).stdout  # fmt: skip
    statuses = [tuple(part.strip() for part in line.split(":")) for line in listed.splitlines()
                if ":" in line]  # fmt: skip
    stats["not_checked"] = sum(status == "not checked" for _, status in statuses)
    alive = [(name, status) for name, status in statuses if status in ("survived", "no tests")]
    return {"stats": stats, "diffs": _diffs(tmp / "mutants" / "minecube" / f"{module}.py", alive)}


def _diffs(mutated: Path, alive: list[tuple[str, str]]) -> list[str]:
    """Each mutant's diff against its original function, read from mutmut's mutated module
    (where both are defined side by side) rather than one `mutmut show` process per mutant."""
    import ast
    import difflib

    source = mutated.read_text()
    lines = source.splitlines()
    functions = {f.name: "\n".join(lines[f.lineno - 1 : f.end_lineno])
                 for f in ast.walk(ast.parse(source))
                 if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}  # fmt: skip
    out = []
    for name, status in alive:
        local = name.rsplit(".", 1)[-1]
        orig = local.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
        mutant = functions[local].replace(local, orig, 1)
        diff = difflib.unified_diff(functions[orig].splitlines(), mutant.splitlines(),
                                    lineterm="", n=1)  # fmt: skip
        out.append(f"# {name}: {status}\n" + "\n".join(list(diff)[2:]) + "\n")
    return out


def _score(stats: dict) -> float:
    caught = stats.get("killed", 0) + stats.get("timeout", 0)
    return caught / max(1, caught + stats.get("survived", 0) + stats.get("no_tests", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES))
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop each module's run after this long and keep what it checked",
    )
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    out = ROOT / "mutation"
    out.mkdir(exist_ok=True)
    print("| module | date | commit | mutants | killed | survived | no test reaches | score |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="mutate-worlds-") as worlds:
        for module in args.modules:
            log = out / f"{module}.log"
            found = _run(module, MODULES[module], args.children, Path(worlds), log, args.minutes)
            if not any(found["stats"].get(k) for k in COUNTS):
                sys.exit(f"mutmut checked no mutant of {module} (its tests fail unmutated?): "
                         f"see {log}")  # fmt: skip
            _write(out / f"{module}.txt", module, found["stats"], found["diffs"], commit)


def _write(path: Path, module: str, s: dict, diffs: list[str], commit: str) -> None:
    """A module's survivors file, and its row of the table in docs/testing.md."""
    today = dt.date.today().isoformat()
    path.write_text(
        f"minecube/{module}.py, {today}, commit {commit}, tests {' '.join(MODULES[module])}\n"
        + json.dumps(s)
        + "\n\n"
        + "\n".join(diffs)
    )
    total = s.get("total") or sum(s.get(k, 0) for k in COUNTS)
    checked = total - s.get("not_checked", 0)
    mutants = total if checked == total else f"{checked} of {total} checked"
    print(f"| {module} | {today} | {commit} | {mutants} | {s.get('killed', 0)} | "
          f"{s.get('survived', 0)} | {s.get('no_tests', 0)} | {_score(s):.1%} |",
          flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
