"""The query embedder (the local model in numpy) against the real sentence-transformers model:
the same vectors and the same search results, a refusal of any model it does not implement,
and a search's embedding path that never imports torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tidal.embedders import open_query_embedder
from tidal.embedders.local import LocalEmbedder, _model_path
from tidal.embedders.local_query import QueryEmbedder, UnsupportedModel
from tidal.errors import ConfigError
from tidal.settings import SAMPLE_CORPUS, load_settings

REPO = Path(__file__).resolve().parent.parent

TEXTS = [
    "how do we handle offline sync?",
    "ST-5",
    "#1A2B3C",
    "",
    " ",
    "\n\t  ",
    "  padded with spaces and a newline \n",
    "Ünïcödé façade — naïve café 東京 🚀 emoji, CJK 中文字符 and Ελληνικά",
    "ｆｕｌｌｗｉｄｔｈ, the ﬁ ligature, A\u030a decomposed",
    # far past the model's 256 word pieces: cut where sentence-transformers cuts it
    "word " * 1000,
    "x" * 5000,  # one unknown-ish word, thousands of characters
    json.dumps({"screens": [{"id": i, "label": f"Écran {i}"} for i in range(60)]}),
    "design.states[3].tokens.color.surface.dark: #121212; contrast 4.5:1",
]
SEARCHES = [
    "how do we handle offline sync?",
    "who can edit a shared itinerary?",
    "when are passport expiry reminders sent",
    "delete my account and export my data",
    "split the cost of a dinner between travellers",
    "quiet hours for push notifications",
    "ST-5",
]


@pytest.fixture(scope="module")
def query() -> QueryEmbedder:
    return QueryEmbedder()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_same_shape_and_name_as_the_local_embedder(query, embedder) -> None:  # type: ignore[no-untyped-def]
    assert (query.name, query.dimension, query.max_input_tokens) == (
        embedder.name,
        embedder.dimension,
        embedder.max_input_tokens,
    )


def test_same_vectors_as_sentence_transformers(query, embedder) -> None:  # type: ignore[no-untyped-def]
    files = sorted(p for p in SAMPLE_CORPUS.rglob("*.*") if p.is_file())
    texts = TEXTS + [p.read_text(encoding="utf-8") for p in files[::4]]
    expected = np.asarray(embedder.embed(texts))
    got = query.embed(texts)

    assert got.dtype == np.float32 and got.shape == expected.shape
    cosines = _cosines(got, expected)
    assert cosines.min() >= 0.9999, [(t[:40], c) for t, c in zip(texts, cosines, strict=True)]
    # float32 rounding apart: the 0.9999 cosine alone would let GELU's tanh approximation pass
    assert np.abs(got - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # a text past the limit is cut where sentence-transformers cuts it: not at tokenizer.json's
    # stored 128, and not left whole
    assert query.count_tokens(["word " * 1000]) == [1002]
    long = "offline sync " * 100
    assert _cosines(query.embed([long]), np.asarray(embedder.embed([long])))[0] >= 0.9999


def test_same_token_counts_as_the_local_embedder(query, embedder) -> None:  # type: ignore[no-untyped-def]
    assert query.count_tokens(TEXTS) == embedder.count_tokens(TEXTS)
    assert query.count_tokens([]) == []
    assert query.embed([]).shape == (0, query.dimension)


def test_same_results_for_searches_over_a_small_index(query, embedder) -> None:  # type: ignore[no-untyped-def]
    """Chunks embedded as the ingest embeds them (sentence-transformers), queries embedded both
    ways: each search ranks the same chunks first, in the same order."""
    chunks = [
        paragraph.strip()
        for path in sorted((SAMPLE_CORPUS / "prds").iterdir())
        for paragraph in path.read_text(encoding="utf-8").split("\n\n")
        if len(paragraph.strip()) > 80
    ][:90]
    assert len(chunks) >= 60
    index = np.asarray(embedder.embed(chunks))
    reference = index @ np.asarray(embedder.embed(SEARCHES)).T
    numpy_path = index @ query.embed(SEARCHES).T
    for i, search in enumerate(SEARCHES):
        expected_top = list(np.argsort(-reference[:, i])[:5])
        got_top = list(np.argsort(-numpy_path[:, i])[:5])
        assert got_top == expected_top, search
        assert np.abs(numpy_path[:, i] - reference[:, i]).max() < 1e-5, search


def test_threads_share_one_query_embedder(query) -> None:  # type: ignore[no-untyped-def]
    expected = query.embed(SEARCHES)
    results: dict[int, np.ndarray] = {}

    def embed(i: int) -> None:
        results[i] = query.embed([SEARCHES[i]])[0]

    threads = [threading.Thread(target=embed, args=(i,)) for i in range(len(SEARCHES))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(np.stack([results[i] for i in range(len(SEARCHES))]), expected)


def _model_copy(tmp_path: Path) -> Path:
    """The bundled model's folder, its big files linked, its config files copies to edit."""
    source = _model_path("all-MiniLM-L6-v2")
    copy = tmp_path / "model"
    shutil.copytree(
        source, copy, ignore=shutil.ignore_patterns("model.safetensors", "*.bin", "*.onnx")
    )
    (copy / "model.safetensors").symlink_to(source / "model.safetensors")
    return copy


def _edit(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_the_copy_of_the_bundled_model_is_supported(tmp_path: Path) -> None:
    """The baseline of the refusals below: the same folder, unedited, is accepted."""
    model = _model_copy(tmp_path)
    assert QueryEmbedder(str(model)).embed(["x"]).shape == (1, 384)


UNSUPPORTED = {
    "activation": (lambda m: _edit(m / "config.json", hidden_act="gelu_new"), "hidden_act"),
    "architecture": (
        lambda m: _edit(m / "config.json", model_type="roberta", architectures=["RobertaModel"]),
        "model_type 'roberta'",
    ),
    "relative positions": (
        lambda m: _edit(m / "config.json", position_embedding_type="relative_key"),
        "position_embedding_type",
    ),
    "cls pooling": (
        lambda m: _edit(
            m / "1_Pooling" / "config.json",
            pooling_mode_cls_token=True,
            pooling_mode_mean_tokens=False,
        ),
        "pooling_mode_cls_token",
    ),
    "mean and max pooling": (
        lambda m: _edit(m / "1_Pooling" / "config.json", pooling_mode_max_tokens=True),
        "pooling_mode_max_tokens",
    ),
    "a dense layer": (
        lambda m: (m / "modules.json").write_text(
            json.dumps(
                [
                    *json.loads((m / "modules.json").read_text())[:2],
                    {"idx": 2, "name": "2", "path": "2_Dense", "type": "models.Dense"},
                ]
            )
        ),
        "Dense",
    ),
    "lower-casing": (
        lambda m: _edit(m / "sentence_bert_config.json", do_lower_case=True),
        "do_lower_case",
    ),
    "half-precision weights": (lambda m: _half_precision(m), "F16"),
    "no safetensors": (lambda m: (m / "model.safetensors").unlink(), "model.safetensors"),
}


def _half_precision(model: Path) -> None:
    from safetensors.numpy import load_file, save_file

    weights = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    save_file({k: v.astype(np.float16) for k, v in weights.items()}, model / "model.safetensors")


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_an_unsupported_model_is_refused_and_searches_fall_back(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model_copy(tmp_path)
    change, named = UNSUPPORTED[case]
    change(model)

    with pytest.raises(UnsupportedModel) as refused:
        QueryEmbedder(str(model))
    assert isinstance(refused.value, ConfigError)
    assert named in str(refused.value) and str(model) in str(refused.value)

    if case == "a dense layer":
        return  # LocalEmbedder would load this one to learn its width, and it has no Dense files
    monkeypatch.setenv("TIDAL_EMBEDDING_MODEL", str(model))
    with caplog.at_level("INFO", logger="tidal.embedders"):
        fallback = open_query_embedder(load_settings())
    assert type(fallback) is LocalEmbedder  # its own vectors, seconds later
    assert fallback.name == "local:model"
    assert named in caplog.text  # the reason is logged


def test_the_bundled_model_gets_the_numpy_embedder() -> None:
    assert type(open_query_embedder(load_settings())) is QueryEmbedder


@pytest.mark.slow  # a fresh interpreter
def test_a_search_embeds_without_torch_in_a_fresh_interpreter() -> None:
    """What ``tidal search`` loads to embed its query, and what importing the CLI loads."""
    code = (
        "import sys, flows.cli;"
        "from tidal.embedders import open_query_embedder;"
        "from tidal.settings import load_settings;"
        "e = open_query_embedder(load_settings());"
        "v = e.embed(['how do we handle offline sync?']);"
        "heavy = ['torch', 'sentence_transformers', 'transformers', 'prefect', 'pandas',"
        " 'sklearn', 'scipy', 'tiktoken', 'tidal.run', 'tidal.pipeline'];"
        "print(type(e).__name__, v.shape, [m for m in heavy if m in sys.modules])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=env,
    )
    assert done.stdout.split("\n")[0] == "QueryEmbedder (1, 384) []"


@pytest.mark.slow  # fresh interpreters
def test_a_process_that_never_embeds_exits_cleanly() -> None:
    """``tidal search --mode text`` opens the embedder for its width and exits while the weights
    may still be loading: the exit waits for them rather than abort mid-read."""
    code = (
        "from tidal.embedders import open_query_embedder;"
        "from tidal.settings import load_settings;"
        "open_query_embedder(load_settings())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    env["PYTHONPATH"] = str(REPO)
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
        )
        assert (done.returncode, done.stderr) == (0, "")
