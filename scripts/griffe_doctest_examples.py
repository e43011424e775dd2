"""A Griffe extension for the API reference (mkdocs.yml loads it).

keras-cskd's docstrings end with an example written for doctest:

    Example:

    >>> import keras_cskd
    ...

Griffe's Google-style parser only recognises a section whose body is
indented, so without this extension the `>>>` lines would be rendered as
Markdown (block quotes). The extension indents such blocks on the fly, turning
them into an "Examples" section that mkdocstrings renders as Python console
code. The docstrings themselves are unchanged.
"""

import re

import griffe

_HEADER = re.compile(r"^(Example|Examples):\s*$")


def _next_text_line(lines, start):
    index = start
    while index < len(lines) and not lines[index].strip():
        index += 1
    return index


def indent_examples(text):
    """Rewrites unindented `Example:` doctest blocks as indented sections."""
    lines = text.split("\n")
    out = []
    index = 0
    while index < len(lines):
        line = lines[index]
        first = _next_text_line(lines, index + 1)
        if not (_HEADER.match(line) and first < len(lines) and lines[first].startswith(">>>")):
            out.append(line)
            index += 1
            continue
        out.append("Examples:")
        index = first
        while index < len(lines):
            if not lines[index].strip():
                following = _next_text_line(lines, index)
                if following < len(lines) and lines[following].startswith(">>>"):
                    out.extend([""] * (following - index))
                    index = following
                    continue
                break
            out.append("    " + lines[index])
            index += 1
    return "\n".join(out)


class DoctestExamples(griffe.Extension):
    """Indents doctest `Example:` blocks of every loaded object's docstring."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = indent_examples(obj.docstring.value)
