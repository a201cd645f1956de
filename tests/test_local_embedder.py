"""The real all-MiniLM-L6-v2 on the CPU, and the pipeline's guarantee that it never truncates."""

from __future__ import annotations

import math

from tidal.chunking import ChunkingOptions
from tidal.pipeline import Pipeline
from tidal.records import Document


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_vectors_are_normalised_and_meaningful(embedder) -> None:  # type: ignore[no-untyped-def]
    assert (embedder.name, embedder.dimension, embedder.max_input_tokens) == (
        "local:all-MiniLM-L6-v2",
        384,
        256,
    )
    sync, offline, tokens = embedder.embed(
        [
            "How do we sync changes made while offline?",
            "Edits made without a connection are queued and merged on reconnect.",
            "Dark mode surface colour tokens and contrast ratios.",
        ]
    )
    assert all(math.isclose(_cos(v, v), 1.0, abs_tol=1e-4) for v in (sync, offline, tokens))
    assert _cos(sync, offline) > _cos(sync, tokens) + 0.2


def test_empty_batches(embedder) -> None:  # type: ignore[no-untyped-def]
    assert len(embedder.embed([])) == 0
    assert embedder.count_tokens([]) == []
    assert embedder.count_tokens(["hello world"]) == [4]  # [CLS] hello world [SEP]


def test_no_chunk_is_longer_than_the_model_reads(embedder) -> None:  # type: ignore[no-untyped-def]
    """Dense key paths cost more word pieces than cl100k tokens: the pipeline re-splits them."""
    lines = [
        f"screens[{i}].components[{j}].tokens.spacing_{i}_{j}: {i * j}px/{j}rem;"
        for i in range(20)
        for j in range(20)
    ]
    document = Document("designs/T/dense.json", "design", "\n".join(lines), "dense")
    pipeline = Pipeline(
        source=None, embedder=embedder, store=None, chunking=ChunkingOptions(600, 0)
    )  # type: ignore[arg-type]
    chunks = pipeline.chunk(document)
    counts = embedder.count_tokens([c.text for c in chunks])
    assert max(counts) <= 256
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for c in chunks) == document.text  # nothing dropped (overlap 0)
    assert max(c.token_count for c in chunks) < 600  # they were re-split


def test_tokens_are_counted_as_the_model_reads_them_before_it_loads(embedder) -> None:  # type: ignore[no-untyped-def]
    """The counter built from ``tokenizer.json`` (no torch, no weights) gives exactly the
    counts of the loaded model's own tokenizer, past its 128-token stored truncation too."""
    import json as json_module
    import subprocess
    import sys

    from tidal.settings import SAMPLE_CORPUS

    texts = [p.read_text(encoding="utf-8") for p in sorted(SAMPLE_CORPUS.rglob("*.*"))]
    texts += [
        "",
        "Ünïcödé façade — naïve café 東京 🚀 emoji and CJK",
        json_module.dumps({"screens": [{"id": i, "label": f"Écran {i}"} for i in range(40)]}),
        "word " * 1000,
    ]
    code = (
        "import sys, json; from tidal.embedders.local import LocalEmbedder; e = LocalEmbedder();"
        "counts = e.count_tokens(json.loads(sys.stdin.read()));"
        "print(json.dumps([counts, 'torch' in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json_module.dumps(texts),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    counted, loaded_torch = json_module.loads(done.stdout.strip().splitlines()[-1])
    tokenizer = embedder._model.tokenizer
    reference = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]

    assert counted == reference
    assert max(counted) > 1000  # long texts counted whole, not cut at 128
    assert loaded_torch is False


def test_the_model_loads_on_first_use_and_its_declared_shape_is_its_real_one() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from tidal.embedders.local import LocalEmbedder;"
        "e = LocalEmbedder(); print(e.dimension, e.max_input_tokens,"
        " 'sentence_transformers' in sys.modules, 'torch' in sys.modules);"
        "e.embed(['x']); m = e._model;"
        "print(m.get_embedding_dimension(), m.max_seq_length)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    declared, loaded = done.stdout.split("\n")[:2]
    assert declared == "384 256 False False"  # nothing heavy imported to learn the shape
    assert loaded == "384 256"


def test_warm_up_loads_the_model_and_asks_nothing_more() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from tidal.embedders import Embedder; from tidal.embedders.local import "
        "LocalEmbedder; e = LocalEmbedder(); print(isinstance(e, Embedder), 'torch' in "
        "sys.modules); e.warm_up(check=True); print(e._loaded is not None, 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.split() == ["True", "False", "True", "True"]


def test_files_embedding_at_once_share_encode_calls_and_get_their_own_rows(
    embedder, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Concurrent callers are merged into shared encode calls, each answered with exactly the
    rows of its own texts (the vectors a call of its own would give)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    texts = [
        [f"File {f} talks about topic {f * 7 + i} at length {i}." for i in range(f % 4 + 1)]
        for f in range(12)
    ]
    alone = [embedder.embed(t) for t in texts]
    sizes: list[int] = []
    real = type(embedder)._encode

    def counting(self, batch):  # type: ignore[no-untyped-def]
        sizes.append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(type(embedder), "_encode", counting)
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(embedder.embed, texts))
    for mine, reference in zip(together, alone, strict=True):
        assert np.allclose(mine, reference, atol=1e-5)
    assert sum(sizes) == sum(len(t) for t in texts)
    assert len(sizes) < len(texts)  # some calls carried more than one file's texts


def test_files_arriving_while_the_encoder_works_wait_together_for_its_next_call(
    embedder, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A file that asks while a call is encoding queues its texts at once, so every file that
    came meanwhile shares the next call (they used to wait on the encoder's lock first and
    queue one by one as it let go, leaving that call with one or two files)."""
    import threading

    embedder.embed(["load the model"])
    sizes: list[int] = []
    encoding = threading.Event()
    real = type(embedder)._encode

    def counting(self, batch):  # type: ignore[no-untyped-def]
        sizes.append(len(batch))
        encoding.set()
        return real(self, batch)

    monkeypatch.setattr(type(embedder), "_encode", counting)
    long_call = threading.Thread(
        target=embedder.embed, args=([f"sentence number {i} of a long file" for i in range(400)],)
    )
    long_call.start()
    assert encoding.wait(30)
    late = [threading.Thread(target=embedder.embed, args=([f"file {f}"] * 3,)) for f in range(5)]
    for thread in late:
        thread.start()
    for thread in [long_call, *late]:
        thread.join(60)

    assert sizes == [400, 15]


def test_a_failure_in_a_merged_call_lands_on_the_file_that_caused_it(embedder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    real = type(embedder)._encode

    def refusing(self, batch):  # type: ignore[no-untyped-def]
        if "poison" in batch:
            raise RuntimeError("the model refused an input")
        return real(self, batch)

    monkeypatch.setattr(type(embedder), "_encode", refusing)

    def embed(texts: list[str]) -> str:
        try:
            return f"{len(embedder.embed(texts))} rows"
        except RuntimeError as exc:
            return str(exc)

    asked = [["fine one"], ["poison"], ["fine two", "fine three"]] * 4
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(embed, asked))
    assert answers == ["1 rows", "the model refused an input", "2 rows"] * 4


def test_a_model_that_will_not_load_fails_each_file_that_asks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The encoder thread loads the model; a load that fails is the failure of the file that
    asked, raised in it, and the next file meets it again rather than waiting forever."""
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    import pytest

    from tidal.embedders.local import LocalEmbedder, _model_path

    broken = tmp_path / "broken-model"
    shutil.copytree(_model_path("all-MiniLM-L6-v2"), broken)
    (broken / "model.safetensors").write_bytes(b"not a tensor file")
    embedder = LocalEmbedder(str(broken))
    assert embedder.count_tokens(["counted without the weights"]) == [6]

    with ThreadPoolExecutor(2) as pool:
        asked = [pool.submit(embedder.embed, [f"file {i}"]) for i in range(2)]
        for future in asked:
            with pytest.raises(Exception) as raised:
                future.result(timeout=120)
            assert not isinstance(raised.value, TimeoutError)
    with pytest.raises(Exception):  # noqa: B017 - whatever the load raises
        embedder.warm_up(check=False)
