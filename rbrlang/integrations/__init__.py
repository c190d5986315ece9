"""Trainer integrations, one thin module per engine, each importing its engine lazily:
`trl` (GRPO/RLOO reward functions)."""
