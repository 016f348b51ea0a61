"""The pipeline's work, one subpackage per stage; ``flows/`` wires it into Prefect flows.

ingest -> tokens -> pretrain -> retrieval, and nightly around them; ``shared`` holds what
several stages use. Stages never import each other (import-linter checks it, pyproject.toml).
"""
