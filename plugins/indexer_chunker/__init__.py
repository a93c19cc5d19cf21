"""The built-in chunker: cuts documents into overlapping windows of the embedding model's own tokens.

Each document is tokenised once; chunks carry their token ids so the embedder does not tokenise again, and their
text is the exact source substring the tokens came from (never decoded tokens, which lose case and spacing).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

from indexer.components import Chunker
from indexer.hookspecs import hookimpl
from indexer.options import Options, option
from indexer.types import Chunk, Document, chunk_id, content_hash

# A cut is allowed right after a match's end: the cut falls before the first token that starts at or after it.
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")


@dataclass(frozen=True)
class TokenChunkerOptions(Options):
    batch_docs: int = option(256, "documents tokenised together (one encode_batch call)", ge=1)


class TokenChunker(Chunker):
    """Windows of at most ``max_tokens`` content tokens, ``overlap`` tokens shared between neighbours.

    Besides the base's settings it takes the options :class:`TokenChunkerOptions`.

    The tokenizer is never modified: when it truncates or pads (MiniLM's tokenizer.json truncates at 128), a
    private copy without truncation and padding is used, since either would silently drop or invent tokens.
    """

    name = "token"
    Options = TokenChunkerOptions

    def __init__(self, tokenizer: Any, **kwargs: Any):
        super().__init__(tokenizer, **kwargs)
        self.batch_docs = self.options.batch_docs
        self._encoder: Any = None

    def check(self) -> None:
        from indexer.errors import ConfigError

        super().check()
        if not hasattr(self._backend(), "encode_batch"):
            raise ConfigError(
                f"the token chunker needs a fast tokenizer (tokenizers.Tokenizer), got {type(self.tokenizer).__name__}"
            )

    # ----------------------------------------------------------------------------------------------------------

    def chunk(self, doc: Document) -> list[Chunk]:
        enc = self._tok().encode(doc.text, add_special_tokens=False)
        return self._chunks(doc, enc, self.settings_key())

    def chunk_many(self, docs: Iterable[Document]) -> Iterator[Chunk]:
        tok = self._tok()
        key = self.settings_key()
        docs = iter(docs)
        groups = iter(lambda: list(islice(docs, self.batch_docs)), [])
        # encode_batch releases the GIL, so the next group is tokenised (in Rust, on every core) while this
        # thread builds the chunks of the previous one; at most two groups are held at a time.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="indexer-chunker") as pool:
            pending = None
            for group in groups:
                future = pool.submit(tok.encode_batch, [d.text for d in group], add_special_tokens=False)
                if pending is not None:
                    yield from self._group_chunks(*pending, key)
                pending = (group, future)
            if pending is not None:
                yield from self._group_chunks(*pending, key)

    # ----------------------------------------------------------------------------------------------------------

    def _backend(self) -> Any:
        # transformers' fast tokenizers wrap a tokenizers.Tokenizer; accept either.
        return getattr(self.tokenizer, "backend_tokenizer", self.tokenizer)

    def _tok(self) -> Any:
        if self._encoder is None:
            tok = self._backend()
            if getattr(tok, "truncation", None) is not None or getattr(tok, "padding", None) is not None:
                tok = type(tok).from_str(tok.to_str())
                tok.no_truncation()
                tok.no_padding()
            self._encoder = tok
        return self._encoder

    def _group_chunks(self, group: list[Document], future: Any, key: str) -> Iterator[Chunk]:
        for doc, enc in zip(group, future.result()):
            yield from self._chunks(doc, enc, key)

    def _chunks(self, doc: Document, enc: Any, key: str) -> list[Chunk]:
        n = len(enc)
        if n == 0:
            return []
        # Offsets are read per needed token: converting the whole offsets list to Python costs about a third
        # of the tokenizer's own time, and only the chunk ends (and a few boundary probes) are ever needed.
        span = enc.token_to_chars
        ids = enc.ids
        text = doc.text
        if n <= self.max_tokens:
            windows = [(0, n)]
        else:
            windows = self._windows(n, span, text)
        out = []
        for i, (s, e) in enumerate(windows):
            a, b = span(s)[0], span(e - 1)[1]
            piece = text[a:b]
            out.append(
                Chunk(
                    id=chunk_id(doc.id, i),
                    doc_id=doc.id,
                    chunk_index=i,
                    text=piece,
                    token_count=e - s,
                    char_start=a,
                    char_end=b,
                    content_hash=content_hash(piece, key),
                    metadata=doc.metadata,
                    token_ids=ids if e - s == n else ids[s:e],
                )
            )
        return out

    def _windows(self, n: int, span: Any, text: str) -> list[tuple[int, int]]:
        """Token ranges ``[start, end)`` of the chunks of a document of ``n`` tokens (``n > max_tokens``)."""
        M, O, m = self.max_tokens, self.overlap, self.min_tokens
        half = (M + 1) // 2
        cuts = self._cut_finder(n, span, text)
        out: list[tuple[int, int]] = []
        s = c = 0  # start of the next chunk; end of the previous one (tokens before c are covered)
        while True:
            e = s + M
            if e >= n:
                out.append((s, n))
                return out
            if cuts is not None:
                e = cuts(max(s + half, c + 1), e) or e
            if n - e < m:
                # The chunk after this one would add fewer than min_tokens new tokens: share what is left between
                # this chunk and one final chunk instead, ending this one at a boundary when one fits.
                p = None
                if cuts is not None:
                    p = cuts(max(s + half, c + 1, n - M + O), min(s + M, n - m))
                if p is None:
                    p = c + (n - c + 1) // 2
                # Overlap shrinks only where the settings leave no room for it (min_tokens > max_tokens - overlap).
                s = max(s, p - M)
                out.append((s, p))
                out.append((max(p - O, n - M, s), n))
                return out
            out.append((s, e))
            c = e
            # A chunk cut short at a boundary can be shorter than the overlap; never start before it does.
            s = max(e - O, s)

    def _cut_finder(self, n: int, span: Any, text: str) -> Any:
        """``cuts(lo, hi)``: the last boundary token index in ``[lo, hi]`` (a cut before that token), or None."""
        if self.boundaries == "token":
            return None
        pattern = _SENTENCE_END if self.boundaries == "sentence" else _PARAGRAPH_BREAK
        marks = [mt.end() for mt in pattern.finditer(text)]  # char positions, ascending
        if not marks:
            return lambda lo, hi: None

        def first_token_at(x: int, lo: int, hi: int) -> int:
            # First token in [lo, hi] starting at or after char x, by bisection over token starts.
            while lo < hi:
                mid = (lo + hi) // 2
                if span(mid)[0] < x:
                    lo = mid + 1
                else:
                    hi = mid
            return lo

        def cuts(lo: int, hi: int) -> int | None:
            if lo > hi or lo < 1 or hi >= n:
                return None
            # A mark at char x cuts before token t(x) = first token starting at or after x, and t grows with x,
            # so the last cut <= hi comes from the last mark x <= start(hi); it is >= lo iff x > start(lo - 1).
            i = bisect_right(marks, span(hi)[0]) - 1
            if i < 0 or marks[i] <= span(lo - 1)[0]:
                return None
            return first_token_at(marks[i], lo, hi)

        return cuts


class DocumentChunker(TokenChunker):
    """One chunk per document, holding the whole text. The embedder sees the first ``max_tokens`` tokens, as
    sentence-transformers would after truncation; ``token_count`` counts those."""

    name = "document"

    def _chunks(self, doc: Document, enc: Any, key: str) -> list[Chunk]:
        n = min(len(enc), self.max_tokens)
        if n == 0:
            return []
        return [
            Chunk(chunk_id(doc.id, 0), doc.id, 0, doc.text, n, 0, len(doc.text), content_hash(doc.text, key),
                  doc.metadata, enc.ids[:n])
        ]


@hookimpl(trylast=True)
def register_chunkers(register):
    register("token", TokenChunker)
    register("document", DocumentChunker)
