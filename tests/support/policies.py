"""Policies that tests of more than one file compile and grade, and edited
copies of the compiled safety policy."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .files import SAFETY

# The small policy most tests start from: two graded propositions, three
# classes, one response type, routed.
MINIMAL = """\
rbr 1

proposition a {
  question "Is a?"
}

proposition b {
  question "Is b?"
}

classes good > ok > bad

response r {
  good = a and b
  ok   = a and not b
  bad  = not a
}

route "C-R" -> r
route default -> r
"""

# The static-first layout: instructions, question and examples before the
# conversation (the shipped templates put the conversation first).
STATIC_FIRST = """\
rbr 1

template first \"\"\"
  Answer one question about the assistant's final message.
  Question: {{ question }}
  {{ examples }}
  The conversation:
  {{ conversation | transcript }}
  ASSISTANT: {{ response }}
  Answer yes or no.
  \"\"\"

grader {
  template first
}
""" + MINIMAL[len("rbr 1\n"):].replace('question "Is a?"', 'question "Is a?"\n  example yes "A!"')


def edit_document(folder: Path, edit) -> None:
    """Apply `edit` (a function that changes the parsed JSON in place) to `folder`'s policy.json."""
    doc = json.loads((folder / "policy.json").read_text())
    edit(doc)
    (folder / "policy.json").write_text(json.dumps(doc, indent=2))


def copy_safety(folder: Path, edit=None) -> Path:
    """A copy of compiled/safety at `folder` (the original stays as committed), `edit` applied to its policy.json."""
    shutil.copytree(SAFETY, folder)
    if edit is not None:
        edit_document(folder, edit)
    return folder
