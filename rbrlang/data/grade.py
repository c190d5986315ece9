"""`rbrc grade`: a JSONL file of conversations and completions → probabilities,
features and class probabilities per line."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from .. import diagnostics as dg
from ..policy import CompiledPolicy
from ..files import AtomicFile, check_output_file
from .jsonl import line_texts, read_records
from .probabilities import CHUNK, probabilities, too_long
from .records import read_line


@dataclass(frozen=True)
class GradeItem:
    line: int
    conversation: list
    response: str
    response_type: Optional[str]  # None: the category routes nowhere (no RBR reward)


def read_items(policy: CompiledPolicy, path: Path) -> Iterator[Union[GradeItem, dg.Diagnostic]]:
    """Each line as a `GradeItem`, or an E0300/E0301/E0302 diagnostic at the bad field."""
    def item(number: int, _: str, row) -> GradeItem:
        response_type, conversation, completion = read_line(policy, row)
        return GradeItem(number, conversation, completion, response_type)
    return read_records(path, item)


def check_lengths(policy: CompiledPolicy, grader, items: Sequence[GradeItem],
                  path: Path) -> tuple[list[GradeItem], list[dg.Diagnostic]]:
    """(the items the grader's context holds, an E0311 at the line of each it
    cannot): checked before any forward pass, so one over-long line costs no
    grading and, with `--keep-going`, does not stop the others."""
    problems = too_long(policy, grader, [i.conversation for i in items], [i.response for i in items])
    if not problems:
        return list(items), []
    texts = line_texts(path, [items[k].line for k in problems])
    diags = [problems[k].diagnostic(str(path), items[k].line, texts.get(items[k].line, ""))
             for k in sorted(problems)]
    return [item for k, item in enumerate(items) if k not in problems], diags


def is_grade_output(path: Path) -> bool:
    """An earlier `rbrc grade` output (its first line is one of our rows): the
    only existing file `grade -o` replaces, besides an empty one."""
    try:
        with open(path, encoding="utf-8") as fh:
            row = json.loads(fh.readline())
    except (OSError, ValueError):
        return False
    return isinstance(row, dict) and {"line", "propositions", "answer_mass", "classes"} <= set(row)


GRADE_OUTPUT = "an earlier `rbrc grade` output"


def write_grades(policy: CompiledPolicy, grader, items: Sequence[GradeItem], fh, chunk: int = CHUNK,
                 progress: bool = True) -> int:
    """Grade items and write one JSON row per item to `fh`; returns the count.

    The rows hold raw P(yes) (`calibration=None`): they are what `rbrc eval
    --probs` reads as the grader's answers, to score and calibrate on."""
    result = probabilities(policy, grader, [i.conversation for i in items], [i.response for i in items],
                           calibration=None, chunk=chunk, progress=progress, detailed=True)
    for k, item in enumerate(items):
        fh.write(json.dumps(_row(policy, item, result.p_yes[k:k + 1], result.answer_mass[k]), ensure_ascii=False)
                 + "\n")
    return len(items)


def grade_file(policy: CompiledPolicy, grader, data: Path, out: Path, keep_going: bool = False,
               chunk: int = CHUNK, progress: bool = True) -> tuple[int, list[dg.Diagnostic]]:
    """Grade every line; returns (lines written, diagnostics for bad lines).

    Reads and checks every line first, then every prompt's length against the
    grader's context; any bad line stops the run before grading unless
    `keep_going`. `out` is replaced only when missing, empty or an earlier
    grade output (else `PathError`), and is written under a temporary name and
    renamed, so a failed run leaves no partial file."""
    out = check_output_file(out, "the `out` argument", GRADE_OUTPUT, is_grade_output, inputs=[Path(data)])
    items, bad = [], []
    for entry in read_items(policy, data):
        (bad if isinstance(entry, dg.Diagnostic) else items).append(entry)
    if bad and not keep_going:
        return 0, bad
    items, long = check_lengths(policy, grader, items, Path(data))
    bad = sorted(bad + long, key=lambda d: d.span.line)
    if long and not keep_going:
        return 0, bad
    with AtomicFile(out, keep_mode=False) as fh:
        written = write_grades(policy, grader, items, fh, chunk, progress)
    return written, bad


def _row(policy: CompiledPolicy, item: GradeItem, probs, mass) -> dict:
    names = policy.proposition_names
    # float64 (as `probabilities` gives them): class probabilities sum to 1 to the last digit
    row = {
        "line": item.line,
        "response_type": item.response_type,
        "propositions": dict(zip(names, probs[0].tolist())),
        "answer_mass": dict(zip(names, mass.tolist())),
        "features": None,
        "classes": None,
    }
    if item.response_type is not None:
        rt = policy.response_type(item.response_type)
        row["features"] = dict(zip(rt.features, policy.features(rt.name, probs)[0].tolist()))
        row["classes"] = dict(zip(rt.classes, policy.class_probabilities(rt.name, probs)[0].tolist()))
        row["schema_hash"] = rt.schema_hash
    return row
