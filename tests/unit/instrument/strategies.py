"""Hypothesis strategies for names, label values and help text."""

from __future__ import annotations

from hypothesis import strategies as st

metric_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,40}", fullmatch=True)
label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}", fullmatch=True).filter(
    lambda n: not n.startswith("__") and n not in ("le", "quantile")
)
#: Any text a label value may carry: quotes, backslashes, newlines, non-ASCII.
label_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
#: Help text: anything printable plus the characters that need escaping.
help_texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters='\\"\n'),
    max_size=60,
)
invalid_metric_names = st.text(max_size=20).filter(
    lambda s: (
        not s
        or not (s[0].isascii() and (s[0].isalpha() or s[0] in "_:"))
        or any(not (c.isascii() and (c.isalnum() or c in "_:")) for c in s)
    )
)
