"""synth: the method's data step. For each prompt and each class of the
prompt's response type, a generator is told the class's instruction (from the
policy itself: compiler/instructions.py), samples K completions, the grader
grades them through the one grading pipeline (data/probabilities.py), and a
completion is kept only where the policy puts it in the class it was asked
for. What is kept is written as `rbrc fit`'s comparison lines.

prompts.py reads the prompts (the one routing rule, located errors); cache.py
keeps every generation so that a killed run resumes; run.py is the loop."""
from .cache import GenerationCache
from .prompts import SynthPrompt, read_prompts
from .run import SynthResult, synthesize

__all__ = ["GenerationCache", "SynthPrompt", "SynthResult", "read_prompts", "synthesize"]
