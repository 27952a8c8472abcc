"""CLIP's byte-level BPE tokenizer (Radford et al. 2021), as open_clip's ``SimpleTokenizer`` encodes prompts for
the ViT-H/14 text tower: text cleaned (ftfy, HTML entities unescaped twice, whitespace collapsed, lower case),
split into words, numbers and punctuation runs, each word's UTF-8 bytes mapped to printable characters and
merged by the ranked merges of the vocabulary file, then ``<start_of_text> ... <end_of_text>`` padded with 0 to
the context length (a longer prompt is cut and still ends with ``<end_of_text>``).

The merges file is the one open_clip ships (``open_clip/bpe_simple_vocab_16e6.txt.gz``): it is not bundled
here; pass its path. Needs the ``regex`` (Unicode classes) and ``ftfy`` packages: ``pip install regex ftfy``.
"""
import gzip
import html
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # merges open_clip reads (after the header line): 48,894, for a 49,408-token vocab
SPECIAL = ("<start_of_text>", "<end_of_text>")
CONTEXT_LENGTH = 77
WORDS = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@lru_cache()
def byte_alphabet() -> Dict[int, str]:
    """Each byte value -> one printable character: the 188 printable Latin-1 bytes stand for themselves, the
    other 68 take the characters from U+0100 on, in byte order. The table's order (printable bytes first) is
    the order of the vocabulary's first 256 ids."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for extra, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + extra)
    return table


class ClipTokenizer:
    def __init__(self, vocab_file: Union[str, Path], context_length: int = CONTEXT_LENGTH):
        try:
            import ftfy  # noqa: F401
            import regex
        except ImportError as e:
            raise ImportError(f"the CLIP tokenizer needs the regex and ftfy packages (pip install regex ftfy): "
                              f"{e}") from None
        path = Path(vocab_file)
        if not path.is_file():
            raise FileNotFoundError(f"CLIP vocabulary {path} not found: it is open_clip's {VOCAB_FILE} "
                                    f"(python -c \"import open_clip, os; print(os.path.dirname(open_clip.__file__))\")")
        lines = gzip.open(path).read().decode("utf-8").split("\n")[1:NUM_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{path} is not CLIP's merges file: expected {NUM_MERGES} pairs after the header")
        alphabet = list(byte_alphabet().values())
        vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + list(SPECIAL)
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.context_length = context_length
        self.start, self.end = self.ids[SPECIAL[0]], self.ids[SPECIAL[1]]
        self._words = regex.compile(WORDS, regex.IGNORECASE)
        self._cache: Dict[str, Tuple[str, ...]] = {s: (s,) for s in SPECIAL}

    @staticmethod
    def clean(text: str) -> str:
        import ftfy
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    def merge(self, word: str) -> Tuple[str, ...]:
        """A word's symbols after applying the merges, lowest rank first; the last symbol ends in ``</w>``."""
        if word in self._cache:
            return self._cache[word]
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        self._cache[word] = tuple(symbols)
        return self._cache[word]

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` without the start and end tokens."""
        alphabet = byte_alphabet()
        ids = []
        for word in self._words.findall(self.clean(text)):
            ids += [self.ids[s] for s in self.merge("".join(alphabet[b] for b in word.encode("utf-8")))]
        return ids

    def __call__(self, texts: Union[str, Sequence[str]]) -> np.ndarray:
        """(N, context_length) int32 token ids of one prompt or several."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), self.context_length), np.int32)
        for row, text in enumerate(texts):
            ids = [self.start] + self.encode(text) + [self.end]
            if len(ids) > self.context_length:
                ids = ids[:self.context_length - 1] + [self.end]
            out[row, :len(ids)] = ids
        return out
