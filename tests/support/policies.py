"""Policies that tests of more than one file compile and grade."""
from __future__ import annotations

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
