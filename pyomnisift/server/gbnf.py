"""Bounds on a GBNF grammar from a request, checked before llama.cpp parses it.

llama.cpp's grammar parser and sampler recurse and multiply: 20,000 nested parentheses or a chain
of 100,000 rules overflow the stack while parsing, and bounded repetitions make it expand copies
(`"a"{100000}`, `("a"{0,300}){0,300}` crash the first sampled token). A request must not take the
server down, so the grammar's shape is bounded here: its length, its rules, the nesting of its
groups, and the repetition factor along any path (a repetition's count times that of whatever it
repeats, through groups and rule references). Real grammars (JSON, lists, llama.cpp's samples,
llama-cpp-python's JSON-schema grammars) stay far inside.
"""

from __future__ import annotations

import re

MAX_CHARS = 256 * 1024
MAX_RULES = 1024
MAX_NESTING = 64
MAX_REPETITION = 1024     # the product of {m,n} counts along any path

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_REP = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


class GrammarTooLarge(ValueError):
    pass


def _tokens(text: str):
    """("name", str) | ("def",) | ("(",) | (")",) | ("|",) | ("rep", n) | ("term",); literals, classes,
    comments and llama.cpp's <token> terminals skipped as units."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif c in "\"[":
            close = '"' if c == '"' else "]"
            j = i + 1
            while j < n and text[j] != close:
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            yield ("term",)
        elif c == "<":
            j = text.find(">", i)
            i = n if j < 0 else j + 1
            yield ("term",)
        elif text.startswith("::=", i):
            i += 3
            yield ("def",)
        elif c in "()|":
            i += 1
            yield (c,)
        elif c in "*+?":
            i += 1
            yield ("rep", 1)         # llama.cpp makes these one recursive rule, not copies
        elif c == "{":
            m = _REP.match(text, i)
            if m is None:            # malformed: llama.cpp's parser reports it
                i += 1
                continue
            if len(m.group(1)) > 9 or len(m.group(2) or "") > 9:   # (and int() of 5000 digits raises)
                raise GrammarTooLarge(f"repetitions multiply to more than {MAX_REPETITION}")
            low, high = int(m.group(1)), m.group(2)
            yield ("rep", max(low, int(high)) if high else max(low, 1))
            i = m.end()
        elif c == ".":
            i += 1
            yield ("term",)
        else:
            m = _NAME.match(text, i)
            if m is None:
                i += 1
                continue
            i = m.end()
            yield ("name", m.group(0))


def check(text: str) -> None:
    """Raises GrammarTooLarge naming the bound a grammar exceeds."""
    if len(text) > MAX_CHARS:
        raise GrammarTooLarge(f"longer than {MAX_CHARS} characters")
    toks = list(_tokens(text))
    # rules: a name followed by ::= starts one; each body is a list of elements, where an element is
    # ("ref", name, factor) or ("group", [elements], factor) or ("term", factor)
    rules: dict = {}
    body = None
    stack = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t[0] == "name" and i + 1 < len(toks) and toks[i + 1][0] == "def":
            if len(rules) >= MAX_RULES:
                raise GrammarTooLarge(f"more than {MAX_RULES} rules")
            body = rules.setdefault(t[1], [])
            stack = [body]
            i += 2
            continue
        if body is None:
            i += 1
            continue
        cur = stack[-1]
        if t[0] == "(":
            if len(stack) > MAX_NESTING:
                raise GrammarTooLarge(f"groups nested more than {MAX_NESTING} deep")
            group = []
            cur.append(["group", group, 1])
            stack.append(group)
        elif t[0] == ")":
            if len(stack) > 1:
                stack.pop()
        elif t[0] == "rep":
            if cur:
                cur[-1][2] *= t[1]
                if cur[-1][2] > MAX_REPETITION:
                    raise GrammarTooLarge(f"repetitions multiply to more than {MAX_REPETITION}")
        elif t[0] == "name":
            cur.append(["ref", t[1], 1])
        elif t[0] == "term":
            cur.append(["term", None, 1])
        i += 1

    # The factor of each rule: the largest product along a path, through references (depth first,
    # without recursion: a chain of references may be as long as the rules; a reference back into a
    # rule being computed counts 1, as llama.cpp follows it by reference, not by copy).
    edges = {name: _paths(elems) for name, elems in rules.items()}
    weight: dict = {}
    for root in rules:
        if root in weight:
            continue
        todo, active = [(root, False)], set()
        while todo:
            name, expanded = todo.pop()
            if expanded:
                local, refs = edges[name]
                w = max([local] + [times * weight.get(ref, 1) for ref, times in refs if ref in rules])
                if w > MAX_REPETITION:
                    raise GrammarTooLarge(f"repetitions multiply to more than {MAX_REPETITION} (rule {name})")
                weight[name] = w
                active.discard(name)
                continue
            if name in weight or name in active:
                continue
            active.add(name)
            todo.append((name, True))
            todo.extend((ref, False) for ref, _ in edges[name][1] if ref in rules and ref not in weight)


def _paths(elems, outer: int = 1):
    """(largest factor of a terminal, [(referenced rule, factor on the way to it)]) of a body."""
    local, refs = outer, []
    for kind, inner, times in elems:
        f = outer * times
        if kind == "group":
            sub_local, sub_refs = _paths(inner, f)
            local, refs = max(local, sub_local), refs + sub_refs
        elif kind == "ref":
            refs.append((inner, f))
        else:
            local = max(local, f)
    return local, refs
