"""The Modal A100 function: its configuration read from the Modal objects, its body run through ``.local()`` on
CPU (the Volume is a local folder there; nothing reaches Modal)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

pytest.importorskip("ragatouille")
pytest.importorskip("indexer_colbert")

from colbert_helpers import colbert_model, demo_docs, open_index, write_corpus  # noqa: E402, F401  (a fixture)

modal = pytest.importorskip("modal")


def _closure(fn) -> dict:
    """What Modal keeps only in an object's loader closure (modal 1.x has no public accessor for an undeployed
    function's image, or an image's build steps)."""
    return dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__ or ())))


def _build_functions(image) -> list:
    """(function, args, kwargs) of every ``Image.run_function`` step of ``image``, outermost first."""
    from modal._serialization import deserialize
    from modal._utils.async_utils import synchronizer

    out = []
    im = synchronizer._translate_in(image)
    while im is not None and im._load is not None:
        step = _closure(im._load)
        if step.get("build_function") is not None:
            args, kwargs = deserialize(step["build_function_input"].args, None)
            out.append((step["build_function"]._raw_f, args, kwargs))
        im = (step.get("base_images") or {}).get("base")
    return out


@pytest.fixture
def modal_app(monkeypatch):
    for var in ("INDEXER_COLBERT_MODEL", "INDEXER_COLBERT_GPU", "INDEXER_COLBERT_VOLUME", "INDEXER_COLBERT_MEMORY",
                "INDEXER_COLBERT_TIMEOUT", "INDEXER_COLBERT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    import indexer_colbert.modal_app as app

    return importlib.reload(app)


def test_a100_function_configuration(modal_app):
    from modal._utils.async_utils import synchronizer

    info = modal_app.build_index.info()
    assert info.gpus == [("A100", 1)]
    assert {path: v.name for path, v in info.volumes.items()} == {"/index": "indexer-colbert"}
    assert info.memory_mib == 65536 and info.cpu == 8.0 and info.timeout == 24 * 3600
    image = _closure(synchronizer._translate_in(modal_app.build_index)._load)["image"]
    assert synchronizer._translate_in(image) is synchronizer._translate_in(modal_app.image)
    # The weights are downloaded while the image is built, once, not by every container.
    assert _build_functions(modal_app.image) == [(modal_app.download_weights, (), {"model": "colbert-ir/colbertv2.0"})]
    assert "ragatouille==0.0.9.post2" in modal_app.PACKAGES and "torch==2.13.0" in modal_app.PACKAGES
    assert any(p.startswith("transformers") and "<5" in p for p in modal_app.PACKAGES)
    # The image installs what the plugin's environment pins (.ci/constraints-colbert.txt): same packages, same
    # exact versions and upper bounds.
    import re

    constraints = Path(__file__).resolve().parents[2] / ".ci" / "constraints-colbert.txt"
    image = dict((name.lower(), spec.split(",")) for name, spec in
                 (re.split(r"(?=[<>=!~])", p, maxsplit=1) for p in modal_app.PACKAGES if re.search("[<>=]", p)))
    for line in (ln.strip() for ln in constraints.read_text().splitlines()):
        if not line or line.startswith("#"):
            continue
        name, spec = re.split(r"(?=[<>=!~])", line, maxsplit=1)
        assert name.lower() in image, f"{name} is pinned for the plugin but not installed in the Modal image"
        for clause in spec.split(","):
            if clause.startswith(("<", "==")):
                assert clause in image[name.lower()], (line, image[name.lower()])


def test_configuration_follows_the_environment(monkeypatch, modal_app):
    monkeypatch.setenv("INDEXER_COLBERT_GPU", "A100-80GB")
    monkeypatch.setenv("INDEXER_COLBERT_MODEL", "my-org/my-colbert")
    monkeypatch.setenv("INDEXER_COLBERT_VOLUME", "my-index")
    app = importlib.reload(modal_app)
    info = app.build_index.info()
    assert info.gpus == [("A100-80GB", 1)]
    assert {path: v.name for path, v in info.volumes.items()} == {"/index": "my-index"}
    assert _build_functions(app.image)[0][2] == {"model": "my-org/my-colbert"}


@pytest.mark.filterwarnings("ignore:The build_index function is executing locally")
def test_function_body_builds_a_searchable_index_locally(modal_app, colbert_model, tmp_path):
    source = write_corpus(tmp_path / "corpus.jsonl", demo_docs(300, 320))
    db = str(tmp_path / "index" / "db.lancedb")
    result = modal_app.build_index.local(source, db, colbert_model, {"title_field": "title"})
    assert result["summary"]["documents"] == 20 and not result["summary"].get("error")
    assert result["estimate"]["passages"] == result["summary"]["chunks"]
    assert result["estimate"]["tokens"] >= result["summary"]["tokens"]
    json.dumps(result)  # travels back from the container
    hits = open_index(db, sink_name="colbert").search(["Norse mythology"], 3)[0]
    assert len(hits) == 3
