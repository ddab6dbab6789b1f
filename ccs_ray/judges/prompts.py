"""Judge prompts: editable chat templates (``prompts/*.txt``), structured-output schemas and strict parsers.

A template file is a chat: ``### system``, ``### user`` and ``### assistant`` lines start the messages;
the in-context examples are user/assistant turns; ``$spans``, ``$numbered_spans``, ``$label`` and ``$span``
(``string.Template``) are filled in the last user turn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from string import Template

KINDS = ("label", "judge", "batched")
ROLES = ("system", "user", "assistant")
# Completion-token estimates per request kind, for rate limits and --dry-run costs.
COMPLETION_TOKENS = {"label": 12, "judge": 8, "batched": 10}  # batched: + 4 per span


class UnparseableAnswer(ValueError):
    """A judge answer that does not have the required form."""


@dataclass(frozen=True)
class Request:
    """One chat request: ``kind`` (label, judge, batched), its messages and structured-output schema."""

    kind: str
    messages: list[dict] = field(hash=False)
    schema: dict = field(hash=False)
    n: int = 1  # spans judged (batched)

    def parse(self, text: str):
        """The answer as a label (str), a judgment (0/1) or judgments (list of n 0/1); UnparseableAnswer if not."""
        if self.kind == "label":
            return parse_label(text)
        if self.kind == "judge":
            return parse_aligned(text)
        return parse_batched(text, self.n)

    def estimated_tokens(self) -> tuple[int, int]:
        """(prompt, completion) token estimates: 4 characters a token, plus 4 per message."""
        chars = sum(len(m["content"]) for m in self.messages)
        completion = COMPLETION_TOKENS[self.kind] + (4 * self.n if self.kind == "batched" else 0)
        return chars // 4 + 4 * len(self.messages), completion


@cache
def template(kind: str) -> list[tuple[str, str]]:
    """The (role, text) turns of ``prompts/<kind>.txt``."""
    if kind not in KINDS:
        raise ValueError(f"unknown prompt {kind!r}; prompts: {', '.join(KINDS)}")
    text = resources.files(__package__).joinpath("prompts", f"{kind}.txt").read_text()
    turns: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        head = re.fullmatch(r"### (\w+)\s*", line)
        if head:
            if head.group(1) not in ROLES:
                raise ValueError(f"prompts/{kind}.txt: unknown role {head.group(1)!r}; roles: {', '.join(ROLES)}")
            turns.append((head.group(1), []))
        elif turns:
            turns[-1][1].append(line)
    if not turns or turns[-1][0] != "user":
        raise ValueError(f"prompts/{kind}.txt must end with a '### user' turn")
    return [(role, "\n".join(lines).strip()) for role, lines in turns]


def _render(kind: str, **values) -> list[dict]:
    turns = template(kind)
    last = len(turns) - 1
    return [{"role": r, "content": Template(t).substitute(values) if i == last else t} for i, (r, t) in enumerate(turns)]


def _schema(name: str, prop: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": {
        "type": "object", "properties": {name.removeprefix("ccs_"): prop},
        "required": [name.removeprefix("ccs_")], "additionalProperties": False}}}


def label_request(spans: list[str]) -> Request:
    """Ask for the one-word property common to ``spans``."""
    return Request("label", _render("label", spans="\n".join(f"- {s}" for s in spans)),
                   _schema("ccs_label", {"type": "string"}))


def judge_request(span: str, label: str) -> Request:
    """Ask whether ``span`` is associated with ``label`` (1/0)."""
    return Request("judge", _render("judge", span=span, label=label),
                   _schema("ccs_aligned", {"type": "integer", "enum": [0, 1]}))


def batched_request(spans: list[str], label: str) -> Request:
    """Ask for a 1/0 per span against ``label``, in one call."""
    numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(spans, 1))
    return Request("batched", _render("batched", numbered_spans=numbered, label=label),
                   _schema("ccs_aligned", {"type": "array", "items": {"type": "integer", "enum": [0, 1]}}), n=len(spans))


def _json_field(text: str, key: str):
    """``obj[key]`` of the first JSON object in ``text`` (code fences and prose around it allowed), or a KeyError."""
    for match in re.finditer(r"\{.*?\}", text, re.S):
        try:
            obj = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and key in obj:
            return obj[key]
    raise KeyError(key)


_BITS = {"1": 1, "0": 0, "yes": 1, "no": 0, "true": 1, "false": 0, True: 1, False: 0, 1: 1, 0: 0}


def _bit(value, text: str) -> int:
    key = value.strip().lower() if isinstance(value, str) else value
    if isinstance(key, float) or key not in _BITS:
        raise UnparseableAnswer(f"expected 1/0, got {value!r} in answer {text[:200]!r}")
    return _BITS[key]


def parse_label(text: str) -> str:
    """``{"label": "x"}``, or a bare answer of 1-3 words; anything else is UnparseableAnswer."""
    try:
        value = _json_field(text, "label")
    except KeyError:
        value = text.strip().strip("\"'`.")
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z][A-Za-z'-]*( [A-Za-z][A-Za-z'-]*){0,2}", value.strip()):
        return value.strip()
    raise UnparseableAnswer(f"expected a label of 1-3 words, got {text[:200]!r}")


def parse_aligned(text: str) -> int:
    """``{"aligned": 1}``, or a bare 1/0/yes/no/true/false answer; anything else is UnparseableAnswer."""
    try:
        return _bit(_json_field(text, "aligned"), text)
    except KeyError:
        first = re.match(r"\W*(\w+)", text)
        return _bit(first.group(1) if first else "", text)


def parse_batched(text: str, n: int) -> list[int]:
    """``{"aligned": [..n bits..]}``, a bare JSON list, or exactly n bare 1/0 tokens; else UnparseableAnswer."""
    try:
        values = _json_field(text, "aligned")
    except KeyError:
        try:
            values = json.loads(text.strip())
        except json.JSONDecodeError:
            values = re.findall(r"\b(?:[01]|yes|no|true|false)\b", text.lower())
    if not isinstance(values, list) or len(values) != n:
        raise UnparseableAnswer(f"expected {n} judgments 1/0, got {text[:200]!r}")
    return [_bit(v, text) for v in values]
