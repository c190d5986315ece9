"""generate: the generator models `rbrc synth` asks for completions of each
class, behind one interface beside the graders (runtime/), with the same three
backends: transformers in process (`HFGenerator`), vLLM's offline engine
(`VLLMGenerator`), an OpenAI-compatible chat-completions server
(`OpenAIGenerator`, through the grader client's HTTP mechanism).

`load_generator(model, backend=...)` builds one by name. Nothing heavy is
imported here: each backend is imported when it is asked for."""
from .base import GenerationRequest, GenerationSettings, Generator
from .loading import GENERATOR_BACKENDS, load_generator

__all__ = ["GENERATOR_BACKENDS", "GenerationRequest", "GenerationSettings", "Generator", "load_generator"]
