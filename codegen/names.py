"""Python names and einsum letters for the generated code.

Every tensor, size and constant of a model gets a Python identifier that is
unique in the generated function and never shadows what the code itself uses
(``np``, ``self``, builtins, keywords). Every index gets one einsum letter; the
map is written into the generated module's docstring.
"""

from __future__ import annotations

import builtins
import keyword
import string

import sympy as sp

# Names the emitted code relies on; a model's tensor may be called any of them.
TAKEN = frozenset(
    {
        "np",
        "self",
        "dtype",
        "input",
        "output_grad",
        "sliding_window_view",
        "expect_array",
        "reversed_slice",
        "draw_keep_mask",
        "make_generator",
        "Module",
    }
    | set(keyword.kwlist)
    | set(dir(builtins))
)


class Names:
    """Hands out unique Python identifiers, deterministically."""

    def __init__(self):
        self.used: set[str] = set(TAKEN)
        self.by_key: dict = {}
        self.counter = 0

    def name(self, key, wanted: str) -> str:
        """The identifier for ``key``, made from ``wanted`` on first use."""
        if key in self.by_key:
            return self.by_key[key]
        base = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in wanted)
        if not base or base[0].isdigit():
            base = "v_" + base
        candidate = base
        while candidate in self.used:
            candidate += "_"
        self.used.add(candidate)
        self.by_key[key] = candidate
        return candidate

    def temporary(self, hint: str = "t") -> str:
        """A fresh identifier for an intermediate array."""
        while True:
            candidate = f"{hint}{self.counter}"
            self.counter += 1
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate


class Letters:
    """One einsum letter per index: its initial when free, else the next free one."""

    def __init__(self, indices):
        self.letters: dict = {}
        for index in indices:
            self.letter(index)

    def letter(self, index: sp.Idx) -> str:
        if index in self.letters:
            return self.letters[index]
        taken = set(self.letters.values())
        initial = str(index.label)[0]
        pool = [initial, initial.upper()] + list(
            string.ascii_lowercase + string.ascii_uppercase
        )
        for candidate in pool:
            if candidate.isalpha() and candidate.isascii() and candidate not in taken:
                self.letters[index] = candidate
                return candidate
        raise NotImplementedError(
            f"more than 52 distinct indices (einsum has 52 letters); index {index}"
        )

    def table(self) -> list[tuple[str, str]]:
        return [(str(index.label), letter) for index, letter in self.letters.items()]
