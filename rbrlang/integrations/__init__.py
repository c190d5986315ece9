"""Trainer integrations, one thin module per engine, each importing its engine lazily:
`trl` (GRPO/RLOO reward functions), `openrlhf` (+ `openrlhf_reward_func.py`, the file
OpenRLHF loads; the server is `rbrlang.serve`), `verl` (`compute_score`); `batching` (concurrent requests into grader batches, for those
and the server)."""
