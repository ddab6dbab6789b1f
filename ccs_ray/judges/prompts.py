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
    return [{"role": r, "content": Template(t).substitute(values) if i == last else t}
            for i, (r, t) in enumerate(turns)]


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
                   _schema("ccs_aligned", {"type": "array", "items": {"type": "integer", "enum": [0, 1]}}),
                   n=len(spans))


def _json_field(text: str, key: str):
    """``obj[key]`` of the first JSON object in ``text`` that has ``key`` (code fences, prose and nesting
    allowed), or a KeyError."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value = decoder.raw_decode(text, match.start())[0]
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and key in value:
            return value[key]
    raise KeyError(key)


# the int keys are also the bool ones: True == 1 and False == 0 (bool is an int), so JSON true/false parse too
_BITS: dict[str | int, int] = {"1": 1, "0": 0, "yes": 1, "no": 0, "true": 1, "false": 0, 1: 1, 0: 0}


def _bit(value, text: str) -> int:
    key = value.strip().lower() if isinstance(value, str) else value
    if not isinstance(key, (str, int)) or key not in _BITS:  # bool is an int; 1.0 and containers are not bits
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


_FENCE = re.compile(r"^\s*```[a-z]*\s*|\s*```\s*$")
_NUMBERED = re.compile(r"^\s*(\d+)\s*[.):-]\s*(.*)$")
_BIT_WORD = r"(?:[01]|yes|no|true|false)"


def _numbered_bits(lines: list[str], n: int, text: str) -> list[int] | None:
    """Bits of a list numbered exactly 1..n, one ``N. <bit> [comment]`` line each (other lines are prose);
    None when no line is numbered."""
    numbered = [m.groups() for m in map(_NUMBERED.match, lines) if m]
    if not numbered:
        return None
    if [int(i) for i, _ in numbered] != list(range(1, n + 1)):
        raise UnparseableAnswer(f"expected a list numbered 1..{n}, got {text[:200]!r}")
    bits = [re.match(rf"{_BIT_WORD}\b", rest.strip().lower()) for _, rest in numbered]
    if not all(bits):
        raise UnparseableAnswer(f"expected '<number>. <1/0/yes/no>' lines, got {text[:200]!r}")
    return [_BITS[b.group(0)] for b in bits if b]


def parse_batched(text: str, n: int) -> list[int]:
    """n judgments from ``{"aligned": [..]}`` (anywhere, fenced or not), a bare JSON list, a list numbered exactly
    1..n (``1. yes``), or nothing but n bare 1/0/yes/no/true/false tokens; else UnparseableAnswer."""
    body = _FENCE.sub("", text.strip())
    try:
        values = _json_field(text, "aligned")
    except KeyError:
        try:
            values = json.loads(body)
        except json.JSONDecodeError:
            values = _numbered_bits(body.splitlines(), n, text)
            if values is None:
                tokens = re.split(r"[\s,;]+", body.strip().lower())
                if not all(re.fullmatch(_BIT_WORD, t) for t in tokens):
                    raise UnparseableAnswer(f"expected {n} judgments 1/0, got {text[:200]!r}") from None
                values = tokens
    if not isinstance(values, list) or len(values) != n:
        raise UnparseableAnswer(f"expected {n} judgments 1/0, got {text[:200]!r}")
    return [_bit(v, text) for v in values]
