"""The verifiers judge plugin `rbrlang-judge`: verifiers' loader imports a judge id
as a top-level module (`rbrlang-judge` -> `rbrlang_judge`) and takes the one `Judge`
subclass in its `__all__`. The judge is `rbrlang.integrations.verifiers.RBRJudge`."""
from rbrlang.integrations.verifiers import RBRJudge

__all__ = ["RBRJudge"]
