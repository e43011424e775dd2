"""Input checks: each names the problem and the fix, before any weight moves.

- `tensors`: the tensors a loss receives (every loss and the CSWT layer).
- `models`: the models given to a `Distiller`.
- `arrays`: the arrays given to `Distiller.fit`.
- `batches`: the batches of any input pipeline, as they are read.
"""
