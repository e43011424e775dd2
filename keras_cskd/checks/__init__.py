"""Input checks: each names the problem and the fix, before any weight moves.

- `tensors`: the tensors a loss receives (every loss and the CSWT layer).
- `models`: the models given to a `Distiller`.
- `data`: the arrays and batches given to `Distiller.fit`.
"""
