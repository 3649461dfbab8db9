"""The registry: TUF metadata (python-tuf), image documents, backends, verified reads.

Kept import-free on purpose: deployers import ``bake.registry.client`` and ``bake.deploy``
on every resolve, and start-up time is a feature (see ``bench/resolve_bench.py``).
"""
