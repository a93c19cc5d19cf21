"""The token chunker, with the real MiniLM tokenizer: every promise of the chunk contract, checked on seeded random
texts (unicode, emoji, CJK, long words, newlines, control characters) and on real Wikipedia text."""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
import random
import re
from itertools import islice
from pathlib import Path

import pytest

from indexer.errors import ConfigError
from indexer.plugins import get_host
from indexer.types import Document, chunk_id, content_hash

REPO = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO / "data" / "demo" / "wiki-demo.jsonl"
WIKI_SAMPLE = REPO.parent / "shared" / "data" / "wiki-sample" / "summaries_en-us.json"

# (max_tokens, overlap, min_tokens, boundaries)
SETTINGS = [
    (1, 0, 0, "token"),
    (1, 0, 1, "sentence"),
    (2, 1, 2, "token"),
    (7, 3, 7, "paragraph"),
    (10, 9, 10, "token"),  # overlap leaves no room for min_tokens: the tail rule must still keep chunks valid
    (16, 0, 0, "token"),
    (16, 4, 3, "token"),
    (24, 6, 5, "sentence"),
    (32, 8, 5, "paragraph"),
    (48, 30, 4, "sentence"),  # overlap above max_tokens / 2
    (64, 16, 16, "sentence"),
    (254, 32, 16, "token"),
    (254, 32, 16, "paragraph"),
]
IDS = [f"max{m}-ov{o}-min{n}-{b}" for m, o, n, b in SETTINGS]


@pytest.fixture(scope="module")
def tokenizer(model_path):
    """The tokenizer as shipped: its tokenizer.json truncates at 128 and pads, which the chunker must undo."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
    assert tok.truncation is not None
    return tok


@pytest.fixture(scope="module")
def reference(model_path):
    """Whole-document tokenisation, to check chunks against."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


@pytest.fixture(scope="module")
def TokenChunker():
    return get_host().component("chunker", "token")


def make(cls, tokenizer, settings, **kw):
    max_tokens, overlap, min_tokens, boundaries = settings
    chunker = cls(
        tokenizer, max_tokens=max_tokens, overlap=overlap, min_tokens=min_tokens, boundaries=boundaries,
        tokenizer_key="minilm", **kw,
    )
    chunker.check()
    return chunker


# --------------------------------------------------------------------------------------------------------------
# Texts
# --------------------------------------------------------------------------------------------------------------

WORDS = [
    "the", "cat", "sat", "on", "a", "mat", "Tokenization", "unbelievably", "naïve", "Straße", "café", "über",
    "e\u0301", "ﬁne", "😀", "👍🏽", "🇫🇷", "中文字符", "日本語のテキスト", "한국어", "Привет", "مرحبا", "x" * 150,
    "pneumonoultramicroscopicsilicovolcanoconiosis", "3.14159", "U.S.A.", "e-mail", "(parenthesis)", "\"quoted\"",
    "don't", "#hashtag", "http://example.com/a?b=c", "\x00", "\u200b", "\x07bell",
]
SEPARATORS = [" "] * 12 + ["  ", "\t", ". ", "! ", "? ", ".\n", "\n", "\n\n", "\n \n", "\r\n\r\n", ", ", "..."]
SEPARATORS.append(" \x00 ")


def random_text(rng: random.Random, n_words: int) -> str:
    parts = []
    for _ in range(n_words):
        parts.append(rng.choice(WORDS))
        parts.append(rng.choice(SEPARATORS))
    lead = rng.choice(["", " ", "\n", "  \t"])
    return lead + "".join(parts)[: rng.randint(0, 10**6)]


def random_docs(seed: int, count: int) -> list[Document]:
    rng = random.Random(seed)
    sizes = [0, 1, 2, 3, 5, 8, 13, 30, 60, 120, 250, 600]
    return [
        Document(id=f"r{seed}-{i}", text=random_text(rng, rng.choice(sizes)), metadata={"i": i, "seed": seed})
        for i in range(count)
    ]


def real_texts() -> list[str]:
    if DEMO_CORPUS.exists():
        with DEMO_CORPUS.open(encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in islice(f, 60)]
    elif WIKI_SAMPLE.exists():
        texts = [r["extract"] for r in islice(json.loads(WIKI_SAMPLE.read_text(encoding="utf-8")).values(), 60)]
    else:
        pytest.skip("no real corpus here")
    # Long multi-paragraph documents too, as whole articles would be.
    return texts[:40] + ["\n\n".join(texts[i : i + 10]) for i in range(40, 60, 10)]


def exact_size_docs(settings) -> list[Document]:
    """Documents of exactly max_tokens, max_tokens + 1, and a full window plus tails of 1..min_tokens + 1."""
    max_tokens, overlap, min_tokens, _ = settings
    step = max_tokens - overlap
    sizes = {1, max(1, min_tokens - 1), min_tokens, max_tokens, max_tokens + 1, 3 * max_tokens + 7}
    for tail in range(1, min_tokens + 2):
        sizes |= {max_tokens + tail, max_tokens + step + tail}
    sizes.discard(0)
    return [Document(id=f"exact-{n}", text=sentences_of(n)) for n in sorted(sizes)] + [
        Document(id=f"para-{n}", text="\n\n".join(["the"] * n)) for n in sorted(sizes)
    ]


def sentences_of(n_tokens: int) -> str:
    """Text of exactly ``n_tokens`` tokens ("the" and "." are one each), a sentence end every five tokens."""
    out = []
    for i in range(n_tokens):
        out.append("." if i % 5 == 4 else (" the" if out else "the"))
    return "".join(out)


# --------------------------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------------------------


def boundary_set(text: str, offsets, boundaries: str) -> set[int]:
    """Token indices b (0 < b < n) where a chunk may end before token b, straight from the definition."""
    if boundaries == "token":
        return set()
    out = set()
    for b in range(1, len(offsets)):
        end, start = offsets[b - 1][1], offsets[b][0]
        gap = text[end:start]
        if boundaries == "sentence":
            if (text[end - 1] in ".!?" and gap[:1].isspace()) or "\n" in gap:
                out.add(b)
        elif re.search(r"\n[^\S\n]*\n", gap):
            out.add(b)
    return out


def check_document(chunker, reference, doc: Document, chunks) -> None:
    M, O, m, mode = chunker.max_tokens, chunker.overlap, chunker.min_tokens, chunker.boundaries
    enc = reference.encode(doc.text, add_special_tokens=False)
    ids, offsets, n = enc.ids, enc.offsets, len(enc.ids)
    if n == 0:
        assert chunks == []
        return
    assert chunks, f"{doc.id}: {n} tokens but no chunks"
    if n <= M:
        assert len(chunks) == 1

    key = chunker.settings_key()
    spans = []
    for i, c in enumerate(chunks):
        assert c.id == chunk_id(doc.id, i) and c.chunk_index == i and c.doc_id == doc.id
        assert c.metadata == doc.metadata
        assert 1 <= c.token_count <= M
        assert c.text == doc.text[c.char_start : c.char_end]
        assert c.content_hash == content_hash(c.text, key)
        # Several tokens can share one character (Hangul splits into jamo), so find the chunk's first token by
        # its ids and both character ends; chunks never start before their predecessor.
        k = c.token_count
        s = next(
            (
                t for t in range(spans[-1][0] if spans else 0, n - k + 1)
                if offsets[t][0] == c.char_start and offsets[t + k - 1][1] == c.char_end
                and ids[t : t + k] == c.token_ids
            ),
            None,
        )
        assert s is not None, f"{doc.id}: chunk {i} is not a run of the document's tokens"
        spans.append((s, s + k))

    assert spans[0][0] == 0 and spans[-1][1] == n, "chunks must cover the document"
    degenerate = 2 * m > M - O + 1  # then an even split of the last windows is the best there is
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert e1 > e0, "every chunk must add tokens"
        assert s1 >= s0
        assert s1 <= e0, "no token may fall between two chunks"
        assert e0 - s1 <= O
        if mode == "token" and not degenerate:
            assert e0 - s1 == O

    if len(spans) > 1:
        new_last = spans[-1][1] - spans[-2][1]
        new_before = spans[-2][1] - (spans[-3][1] if len(spans) > 2 else 0)
        if mode == "token" and not degenerate:
            assert new_last >= m
        else:
            assert new_last >= m or new_before - new_last in (0, 1), "a short tail must be spread evenly"

    bounds = boundary_set(doc.text, offsets, mode)
    ordered = sorted(bounds)
    half = (M + 1) // 2
    prev_end = 0
    for s, e in spans[:-2]:  # the last two may have been rebalanced for min_tokens
        later = ordered[bisect_left(ordered, max(s + half, prev_end + 1)) : bisect_right(ordered, s + M)]
        if e in bounds:
            assert e >= s + half and e == max(later), f"{doc.id}: cut at {e}, a later boundary fits: {later}"
        else:
            assert e == s + M and not later, f"{doc.id}: cut at {e} by count although boundaries {later} fit"
        prev_end = e


# --------------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_random_texts(TokenChunker, tokenizer, reference, settings):
    chunker = make(TokenChunker, tokenizer, settings)
    for seed in range(3):
        for doc in random_docs(seed, 40):
            check_document(chunker, reference, doc, chunker.chunk(doc))


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_real_texts(TokenChunker, tokenizer, reference, settings):
    chunker = make(TokenChunker, tokenizer, settings)
    for i, text in enumerate(real_texts()):
        doc = Document(id=f"wiki-{i}", text=text, metadata={"source": "wiki"})
        check_document(chunker, reference, doc, chunker.chunk(doc))


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_exact_sizes_and_tails(TokenChunker, tokenizer, reference, settings):
    chunker = make(TokenChunker, tokenizer, settings)
    for doc in exact_size_docs(settings):
        chunks = chunker.chunk(doc)
        check_document(chunker, reference, doc, chunks)
        n = len(reference.encode(doc.text, add_special_tokens=False))
        assert n == int(doc.id.split("-")[1])
        if n <= settings[0]:
            assert len(chunks) == 1


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_chunk_many_equals_chunk(TokenChunker, tokenizer, settings):
    docs = random_docs(7, 30) + [Document("wiki", "\n\n".join(real_texts()[:5]))]
    for kw in ({}, {"batch_docs": 3}):
        chunker = make(TokenChunker, tokenizer, settings, **kw)
        one_by_one = [c for doc in docs for c in chunker.chunk(doc)]
        many = list(chunker.chunk_many(iter(docs)))
        assert many == one_by_one
        assert [c.token_ids for c in many] == [c.token_ids for c in one_by_one]


def test_short_document_is_one_chunk_of_its_tokens(TokenChunker, tokenizer, reference):
    chunker = make(TokenChunker, tokenizer, (254, 32, 16, "sentence"))
    text = "  Short, but not dropped: naïve café 😀 中文.\n"
    (chunk,) = chunker.chunk(Document("d", text, {"lang": "en"}))
    # The shipped tokenizer pads to 128; the reference is the same tokenizer without padding.
    assert chunk.token_ids == reference.encode(text, add_special_tokens=False).ids
    assert chunk.text == text.strip() and chunk.char_start == 2 and chunk.char_end == len(text) - 1
    assert chunk.metadata == {"lang": "en"} and chunk.id == "d#0"
    # Fewer tokens than min_tokens is still a chunk.
    assert len(chunker.chunk(Document("e", "Hi."))) == 1


def test_long_document_is_not_truncated_and_tokenizer_untouched(TokenChunker, tokenizer, reference):
    truncation, padding = tokenizer.truncation, tokenizer.padding
    text = " ".join(real_texts()[:8])
    n = len(reference.encode(text, add_special_tokens=False))
    assert n > 600
    chunker = make(TokenChunker, tokenizer, (100, 10, 5, "token"))
    chunks = list(chunker.chunk_many([Document("long", text)]))
    assert chunks[-1].char_end == len(text.rstrip())
    assert sum(c.token_count for c in chunks) - 10 * (len(chunks) - 1) == n
    assert tokenizer.truncation == truncation and tokenizer.padding == padding


def test_no_tokens_no_chunks(TokenChunker, tokenizer):
    chunker = make(TokenChunker, tokenizer, (16, 4, 3, "sentence"))
    empty = Document("ctl", "\x00\x01\x02\u200b")
    assert chunker.chunk(empty) == []
    docs = [Document("a", "first"), empty, Document("b", "second")]
    assert [c.doc_id for c in chunker.chunk_many(docs)] == ["a", "b"]
    assert list(chunker.chunk_many([])) == []


def test_deterministic_and_settings_in_hash(TokenChunker, tokenizer):
    docs = random_docs(3, 20)
    a = make(TokenChunker, tokenizer, (32, 8, 5, "sentence"))
    b = make(TokenChunker, tokenizer, (32, 8, 5, "sentence"))
    first = [(c.id, c.content_hash, c.text) for c in a.chunk_many(docs)]
    assert first == [(c.id, c.content_hash, c.text) for c in a.chunk_many(docs)]
    assert first == [(c.id, c.content_hash, c.text) for c in b.chunk_many(docs)]

    doc = Document("d", "A short text that fits in one chunk.")
    (x,) = a.chunk(doc)
    (y,) = make(TokenChunker, tokenizer, (32, 9, 5, "sentence")).chunk(doc)
    (z,) = TokenChunker(tokenizer, max_tokens=32, overlap=8, min_tokens=5, boundaries="sentence",
                        tokenizer_key="other").chunk(doc)
    assert x.text == y.text == z.text
    assert len({x.content_hash, y.content_hash, z.content_hash}) == 3


def test_chunk_many_can_stop_early(TokenChunker, tokenizer):
    chunker = make(TokenChunker, tokenizer, (16, 4, 3, "token"), batch_docs=2)
    gen = chunker.chunk_many(random_docs(5, 50))
    assert len(list(islice(gen, 5))) == 5
    gen.close()


@pytest.mark.parametrize(
    "kw",
    [
        {"max_tokens": 0},
        {"max_tokens": 16, "overlap": -1},
        {"max_tokens": 16, "overlap": 16},
        {"max_tokens": 16, "min_tokens": 17},
        {"max_tokens": 16, "min_tokens": -1},
        {"max_tokens": 16, "boundaries": "word"},
        {"max_tokens": 16, "batch_docs": 0},
    ],
)
def test_check_rejects_bad_settings(TokenChunker, tokenizer, kw):
    with pytest.raises(ConfigError):
        TokenChunker(tokenizer, **kw).check()


def test_check_rejects_a_slow_tokenizer(TokenChunker):
    with pytest.raises(ConfigError, match="fast tokenizer"):
        TokenChunker(object(), max_tokens=16).check()


def test_registered_as_token():
    host = get_host()
    assert "token" in host.registry("chunker")
    assert host.component("chunker", "token").__name__ == "TokenChunker"


def test_document_chunker_keeps_whole_documents_and_truncates_like_the_model(tokenizer, reference):
    tok = reference
    chunker = get_host().component("chunker", "document")(tokenizer, max_tokens=20, overlap=5, min_tokens=2)
    long_text = "word " * 50
    [short] = chunker.chunk(Document("s", "A short one."))
    [long] = chunker.chunk(Document("l", long_text))
    assert short.text == "A short one." and short.token_ids == tok.encode("A short one.", add_special_tokens=False).ids
    assert long.text == long_text and long.token_count == 20 and len(long.token_ids) == 20
    assert long.id == "l#0" and long.char_end == len(long_text)
