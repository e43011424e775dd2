"""Builds the documentation site with `mkdocs build --strict`.

Strict mode turns every warning into an error: a broken link or nav entry,
a docstring mkdocstrings cannot render. The build needs no network (no web
fonts, no CDN at build time; math renders in the browser).
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.backend_independent,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("mkdocs") is None,
        reason="mkdocs is not installed (pip install 'keras-cskd[docs]' to build the docs)",
    ),
]


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    process = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, f"mkdocs build --strict failed:\n{process.stderr[-6000:]}"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in (
        "keras_cskd.distiller.Distiller",
        "keras_cskd.caching.cache_teacher_logits",
        "keras_cskd.losses.CosineSimilarityDistillation",
        "keras_cskd.layers.CosineSimilarityWeightedTemperature",
        "keras_cskd.callbacks.TemperatureRecorder",
        "keras_cskd.ops.cosine_similarity_distillation",
        "keras_cskd.data.load_digits",
    ):
        assert f'id="{name}"' in api, f"{name} missing from the API reference"
    # Docstring examples render as Python console code, not as Markdown quotes.
    assert "language-pycon" in api or 'class="gp"' in api
    methods = (site / "methods" / "index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in methods
    for page in (
        "index",
        "which-loss",
        "examples",
        "results",
        "performance",
        "distributed",
        "reliability",
    ):
        path = site / "index.html" if page == "index" else site / page / "index.html"
        assert path.exists(), f"{page} page not built"
