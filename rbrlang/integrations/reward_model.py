"""A reward model to add to the RBR, as the paper does: a transformers
sequence-classification model with one output (OpenRLHF's and TRL's reward
models save as such), scoring the conversation plus the completion.

`HFRewardModel` is the `rm` callable `RBRReward` takes:
`(conversations, completions) -> [N] floats`.
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..errors import PolicyError


class HFRewardModel:
    """Scores `conversation + [assistant completion]` with a one-output classifier.

    The text is the model tokenizer's chat template over the messages when it
    has one, else `role: content` lines. Long texts keep their end (the
    completion): truncation drops tokens from the left.
    """

    def __init__(self, model, tokenizer, max_length: int = 4096, batch_size: int = 16):
        if getattr(model.config, "num_labels", 1) != 1:
            raise PolicyError(f"a reward model has one output (num_labels=1); this one has {model.config.num_labels}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id  # where the classifier finds the last token
        tokenizer.truncation_side = "left"
        self.max_length = max_length
        self.batch_size = max(1, int(batch_size))
        self.device = next(model.parameters()).device

    @classmethod
    def from_pretrained(cls, path_or_id: str, device: str = "auto", dtype: str = "auto",
                        allow_untrained_head: bool = False, **kwargs) -> "HFRewardModel":
        """Load a saved reward model. A checkpoint without the score head's weights
        (a causal LM, a base model) would load with a random head and give random
        scores: that is a `PolicyError` unless `allow_untrained_head`."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ..runtime.base import device_and_dtype

        device, dtype = device_and_dtype(device, dtype)
        tokenizer = AutoTokenizer.from_pretrained(path_or_id)
        model, info = AutoModelForSequenceClassification.from_pretrained(path_or_id, dtype=dtype, num_labels=1,
                                                                         output_loading_info=True)
        # transformers reports the weights it had to initialise; those outside the base
        # model are the head's.
        prefix = getattr(model, "base_model_prefix", "") + "."
        head = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(prefix))
        if head and not allow_untrained_head:
            raise PolicyError(f"`{path_or_id}` has no trained score head ({', '.join(head)} missing from its "
                              "checkpoint: is it a causal LM rather than a reward model?), so its scores would be "
                              "random; give a one-output sequence classifier, or `allow_untrained_head` to use it "
                              "anyway", params=("allow_untrained_head",))
        return cls(model.to(device), tokenizer, **kwargs)

    def text(self, conversation: Sequence, completion: str) -> str:
        messages = [*conversation, {"role": "assistant", "content": completion}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    def __call__(self, conversations: Sequence, completions: Sequence[str]) -> list[float]:
        import torch

        texts = [self.text(c, r) for c, r in zip(conversations, completions)]
        templated = bool(getattr(self.tokenizer, "chat_template", None))  # the template writes BOS itself
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                     truncation=True, max_length=self.max_length, add_special_tokens=not templated)
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
                scores += logits[:, 0].float().tolist()
        return scores

    def __repr__(self) -> str:
        return f"HFRewardModel({getattr(self.model.config, '_name_or_path', '')!r})"


def load_reward_model(path_or_id: Optional[str], **kwargs) -> Optional[HFRewardModel]:
    return None if not path_or_id else HFRewardModel.from_pretrained(path_or_id, **kwargs)
