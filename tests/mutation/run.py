"""`make mutation`: cosmic-ray over the modules whose bugs brick or open a charger.

Each module is mutated with only its own fast tests (seconds per mutant, not the e2e suite).
A session per module lives in build/mutation/ (resumable: run again to finish the pending
mutants); the report lists survivors with their diffs. Mutants that cannot change behaviour are
listed in equivalent.toml with why, and the score is given with and without them.

Usage: python -m tests.mutation.run [--again | --report] [MODULE ...]   (default: all of MODULES)
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "mutation"
EQUIVALENT = Path(__file__).with_name("equivalent.toml")
PYTEST = f"{sys.executable} -m pytest -x -q -p no:cacheprovider"
# Loading hypothesis's plugin is most of a pytest start here; only the property tests need it.
NO_HYPOTHESIS = "-p no:hypothesispytest"
MODULES: dict[str, list[str]] = {
    "agent/firmware/signature.py": ["tests/firmware/test_signature.py"],
    "agent/firmware/certs.py": [
        "tests/firmware/test_certs.py",
        "tests/firmware/test_certs_pss.py",
        # The policy, the online CRL fetch and the OCSP verdicts are certs.py's too; the
        # daemon tests are e2e.
        "tests/security/test_cert_policy.py",
        "tests/security/test_cert_online.py",
        "--deselect=tests/security/test_cert_online.py::test_the_daemon_fetches_before_answering",
        "tests/security/test_cert_ocsp.py",
        "--deselect=tests/security/test_cert_ocsp.py::test_the_daemon_asks_before_answering",
        "tests/security/test_cert_fields_hostile.py",
    ],
    "agent/firmware/writer.py": [
        "tests/firmware/test_writer.py",
        "tests/firmware/test_pipeline.py",
    ],
    "agent/firmware/machine.py": ["tests/unit/test_machine.py"],
    "agent/firmware/job.py": ["tests/unit/test_job.py"],
    "agent/ocpp/outbox.py": ["tests/unit/test_outbox.py"],
    # The online revocation checks: one bounded HTTP exchange, and the OCSP verdict. A bug in
    # either takes a revoked signing certificate for a good one, or lets a hostile responder
    # hold the update; their daemon tests are e2e.
    "agent/firmware/online.py": [
        "tests/security/test_cert_online.py",
        "--deselect=tests/security/test_cert_online.py::test_the_daemon_fetches_before_answering",
        "tests/security/test_cert_ocsp.py",
        "--deselect=tests/security/test_cert_ocsp.py::test_the_daemon_asks_before_answering",
    ],
    "agent/firmware/ocsp.py": [
        "tests/security/test_ocsp_verdict.py",
        "tests/security/test_cert_ocsp.py",
        "--deselect=tests/security/test_cert_ocsp.py::test_the_daemon_asks_before_answering",
        "tests/security/test_ocsp_fuzz.py",
    ],
}
TIMEOUT = 120.0  # per mutant; a mutant that hangs the tests counts as killed


def config(module: str, tests: list[str]) -> str:
    uses_hypothesis = any(name in t for t in tests for name in ("test_pipeline", "_fuzz"))
    plugins = "" if uses_hypothesis else f" {NO_HYPOTHESIS}"
    command = f"{PYTEST}{plugins} {' '.join(tests)}"
    return (
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(module)}\n"
        f"timeout = {TIMEOUT}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(command)}\n"
        '[cosmic-ray.distributor]\nname = "local"\n'
    )


def cosmic(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("cosmic-ray")), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def locate(source: list[str], code: str, line: int) -> int | None:
    """The line holding `code` (stripped), the one nearest `line` when it moved; None if gone."""
    if 0 < line <= len(source) and source[line - 1].strip() == code:
        return line
    found = [number for number, text in enumerate(source, 1) if text.strip() == code]
    return min(found, key=lambda number: abs(number - line)) if found else None


def equivalents(module: str, strict: bool = True) -> dict[tuple[str, int, int], str]:
    """(operator, line, occurrence-free column) -> why, for this module.

    An entry names its line by number and by its text (`code`): lines move whenever the module
    is edited above them, and a number alone would then excuse whatever mutant lands there. An
    entry whose text is no longer in the module stops the run: it must be looked at again."""
    doc = tomllib.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    source = (ROOT / module).read_text().splitlines()
    found, stale = {}, []
    for entry in doc.get("equivalent", []):
        if entry["module"] == module:
            line = locate(source, entry["code"], entry["line"])
            if line is None:
                stale.append(f"  line {entry['line']} {entry['operator']}: {entry['code']!r}")
                continue
            found[(entry["operator"], line, entry.get("column", -1))] = entry["why"]
    if stale and not strict:  # --report on a running session: a line may be mutated now
        print(f"{module}: not counted, their line is mutated now or gone:\n" + "\n".join(stale))
    elif stale:
        raise SystemExit(
            f"{EQUIVALENT.name}: these lines are no longer in {module}; "
            "test their mutants again and list or drop them:\n" + "\n".join(stale)
        )
    return found


def annotation_spans(module: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where the module's type annotations are. Every module here has `from __future__ import
    annotations`, so an annotation is never evaluated: `str | None` made `str + None` changes
    nothing at run time (mypy would refuse it), and such mutants are equivalent by construction."""
    tree = ast.parse((ROOT / module).read_text())
    assert any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    ), f"{module}: annotations are evaluated here; the annotation filter does not apply"
    spans = []
    for node in ast.walk(tree):
        found: list[ast.expr | None] = []
        if isinstance(node, ast.arg):
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
        for annotation in found:
            if annotation is not None and annotation.end_lineno is not None:
                start = (annotation.lineno, annotation.col_offset)
                end = (annotation.end_lineno, annotation.end_col_offset or 0)
                spans.append((start, end))
    return spans


def skip_annotations(module: str, session: Path) -> int:
    """Mark the mutants inside annotations as skipped before `exec`: they are equivalent by
    construction (see annotation_spans) and are a third of some modules' mutants, each of which
    would otherwise cost a test run. Returns how many were skipped."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = annotation_spans(module)
    skipped = WorkResult(
        worker_outcome=WorkerOutcome.SKIPPED, output="inside a type annotation: never evaluated"
    )
    count = 0
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in db.pending_work_items:
            start = item.mutations[0].start_pos
            if any(first <= (start[0], start[1]) < last for first, last in spans):
                db.set_result(item.job_id, skipped)
                count += 1
    return count


def listed(known: dict[tuple[str, int, int], str], operator: str, line: int, column: int) -> bool:
    """Whether equivalent.toml lists this mutant (by operator and line, and column if given)."""
    return any((op, ln) == (operator, line) and col in (-1, column) for op, ln, col in known)


def forget_survivors(module: str, session: Path) -> int:
    """Make the surviving mutants pending again, so `exec` tests only them (after tests were
    added: a killed mutant stays killed as long as no test is removed); those listed as
    equivalent stay as they are. cosmic-ray has no command for this; its session keeps one
    row per finished mutant in `work_results`, its position in `mutation_specs`."""
    known = equivalents(module)
    with contextlib.closing(sqlite3.connect(session)) as db, db:
        survivors = db.execute(
            "SELECT r.job_id, s.operator_name, s.start_pos_row, s.start_pos_col"
            " FROM work_results r JOIN mutation_specs s ON r.job_id = s.job_id"
            " WHERE r.test_outcome = 'SURVIVED'"
        ).fetchall()
        again = [
            (job,) for job, operator, line, column in survivors
            if not listed(known, operator, line, column)
        ]  # fmt: skip
        db.executemany("DELETE FROM work_results WHERE job_id = ?", again)
        return len(again)


def run(
    module: str, tests: list[str], again: bool = False, report: bool = False
) -> dict[str, object]:
    name = Path(module).stem
    OUT.mkdir(parents=True, exist_ok=True)
    cfg, session = OUT / f"{name}.toml", OUT / f"{name}.sqlite"
    if report:  # a session still running (or stopped): count what it has, test nothing
        return summarize(module, tests, session, report=True)
    cfg.write_text(config(module, tests))
    if again and session.exists():
        forgotten = forget_survivors(module, session) - skip_annotations(module, session)
        print(f"{module}: testing {forgotten} survivors again", flush=True)
    if not session.exists():
        baseline = cosmic("baseline", str(cfg))
        if baseline.returncode != 0:
            raise SystemExit(
                f"{module}: the tests fail unmutated:\n{baseline.stdout}{baseline.stderr}"
            )
        init = cosmic("init", str(cfg), str(session))
        if init.returncode != 0:
            raise SystemExit(f"{module}: cosmic-ray init failed:\n{init.stderr}")
        skip_annotations(module, session)
    done = cosmic("exec", str(cfg), str(session))
    if done.returncode != 0:
        raise SystemExit(f"{module}: cosmic-ray exec failed:\n{done.stderr}")
    return summarize(module, tests, session)


def summarize(
    module: str, tests: list[str], session: Path, report: bool = False
) -> dict[str, object]:
    """Count the session's results against equivalent.toml; write the survivors and the
    summary beside it."""
    name = Path(module).stem
    dumped = cosmic("dump", str(session)).stdout.splitlines()
    known = equivalents(module, strict=not report)
    annotations = annotation_spans(module)
    killed = survived = pending = equivalent = in_annotations = incompetent = 0
    survivors = []
    for line in dumped:
        item, result = json.loads(line)
        if result is None:
            pending += 1
            continue
        if result["test_outcome"] == "incompetent":
            # cosmic-ray failed to build this mutant (its ExceptionReplacer cannot rewrite a
            # dotted name such as `online.OnlineFailed`): there was nothing to test.
            incompetent += 1
            continue
        mutation = item["mutations"][0]
        line_no, column = mutation["start_pos"][0], mutation["start_pos"][1]
        position = (line_no, column)
        if result["test_outcome"] == "killed":
            killed += 1
        elif any(start <= position < end for start, end in annotations):
            in_annotations += 1
        elif listed(known, mutation["operator_name"], line_no, column):
            equivalent += 1
        else:
            survived += 1
            survivors.append(
                f"{module}:{line_no}:{column} {mutation['operator_name']} "
                f"(occurrence {mutation['occurrence']})\n{result.get('diff') or ''}"
            )
    equivalent += in_annotations
    total = killed + survived + equivalent
    summary = {
        "module": module,
        "tests": tests,
        "mutants": total,
        "killed": killed,
        "equivalent": equivalent,
        "equivalent_in_annotations": in_annotations,
        "survived": survived,
        "pending": pending,
        "not_built_by_cosmic_ray": incompetent,
        "score": round(100 * killed / total, 1) if total else None,
        "score_without_equivalent": round(100 * killed / (killed + survived), 1)
        if killed + survived
        else None,
    }
    (OUT / f"{name}.survivors.txt").write_text("\n".join(survivors))
    (OUT / f"{name}.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES))
    parser.add_argument(
        "--report",
        action="store_true",
        help="only count an existing session (one still running, too); test nothing",
    )
    parser.add_argument(
        "--again",
        action="store_true",
        help="test the survivors of an earlier session again (after adding tests)",
    )
    args = parser.parse_args()
    failed = False
    for module in args.modules:
        summary = run(module, MODULES[module], args.again, args.report)
        print(
            f"{module}: {summary['killed']} killed, {summary['survived']} survived, "
            f"{summary['equivalent']} equivalent of {summary['mutants']}, "
            f"{summary['pending']} pending "
            f"-> {summary['score_without_equivalent']} % of the non-equivalent killed "
            f"(survivors: build/mutation/{Path(module).stem}.survivors.txt)"
        )
        failed |= bool(summary["survived"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
