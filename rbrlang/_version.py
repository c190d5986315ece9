"""rbrlang's version, in a leaf module: the modules that stamp it (policy.json's
`compiler`, the report, `rbrc --version`) import it from here, not from the
package `__init__`, whose lazy re-exports import them (a circle otherwise)."""
__version__ = "0.1.0"  # as pyproject.toml's `version`
