"""Generated arithmetic and algebra word problems with worked, checkable solutions.

The math field needs a task a *tiny* proxy model can make progress on, so the generator spans
four levels: level 1 is a single step on one-digit numbers ("What is 7 + 5?"), level 4 takes
three steps. Every computation in a worked solution is one binary operation on integers written
``a op b = c``, so the solutions can be checked mechanically (the tests recompute every one).

Training documents come in two formats, both starting like the held-out prompt::

    Problem: Sam has 5 apples and gets 3 more. How many apples does Sam have now?
    Solution: 5 + 3 = 8.
    Answer: 8

    Problem: What is 7 + 5?
    Answer: 12

The held-out task (:func:`heldout_rows`) uses the second, *direct* format: the prompt is
``"Problem: <question>\\nAnswer:"`` and the model must produce the answer itself; the worked
solution is not part of the prompt (it is stored in the row for reference and for
chain-of-thought evaluations). With the solution in the prompt the task would reduce to copying
its last number, which every model learns at once and which would say nothing about a mixture.
Held-out questions are generated from their own seeded stream and removed from the training
stream by question text, so no held-out question appears in training.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

GENERATOR_VERSION = "problems-v1"
KINDS = ("arithmetic", "algebra")
LEVELS = (1, 2, 3, 4)
_LEVEL_WEIGHTS = (0.3, 0.3, 0.25, 0.15)  # easy problems are common, so a tiny model can score

_NAMES = (
    "Ava", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena",
    "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen",
    "Yusuf", "Zoe",
)
_ITEMS = (
    "apples", "pencils", "books", "marbles", "cookies", "stickers", "coins", "cards", "eggs",
    "shells", "stamps", "balloons", "oranges", "buttons",
)
_THINGS = ("shirt", "lamp", "backpack", "game", "jacket", "kettle", "chair", "clock")


@dataclass(frozen=True)
class Problem:
    """One problem: the question, its worked steps, the answer, and an independent check.

    ``check`` is an integer-only Python comparison with the answer substituted into the problem's
    own statement (e.g. ``"3*5 + 5 == 20"``); it verifies the answer without the steps.
    """

    kind: str
    level: int
    question: str
    steps: tuple[str, ...]
    answer: str
    check: str

    @property
    def solution(self) -> str:
        return " ".join(self.steps)

    def worked(self) -> str:
        """The training text with the step-by-step solution."""
        return f"Problem: {self.question}\nSolution: {self.solution}\nAnswer: {self.answer}"

    def direct(self) -> str:
        """The training text without steps: the format of the held-out task."""
        return f"Problem: {self.question}\nAnswer: {self.answer}"

    def prompt(self) -> str:
        """The held-out prompt: everything up to, not including, the answer."""
        return f"Problem: {self.question}\nAnswer:"


def _op(a: int, op: str, b: int) -> tuple[str, int]:
    """One worked step ``a op b = c`` and its value (division must be exact)."""
    if op == "+":
        c = a + b
    elif op == "-":
        c = a - b
    elif op == "*":
        c = a * b
    elif op == "/":
        if b == 0 or a % b:
            raise ValueError(f"inexact division {a} / {b}")
        c = a // b
    else:  # pragma: no cover - programming error
        raise ValueError(op)
    return f"{a} {op} {b} = {c}", c


def _problem(kind: str, level: int, question: str, steps: list[str], answer: int, check: str) -> Problem:
    return Problem(kind, level, question, tuple(s if s.endswith(".") else s + "." for s in steps), str(answer), check)


# -- arithmetic ------------------------------------------------------------------------------


def _arith_level1(rng: random.Random) -> Problem:
    op = rng.choice("+-*/")
    if op == "+":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        q = rng.choice(
            ("What is {a} + {b}?", "Compute {a} + {b}.", "What is the sum of {a} and {b}?", "Add {a} and {b}.")
        )
    elif op == "-":
        a = rng.randint(0, 9)
        b = rng.randint(0, a)
        q = rng.choice(("What is {a} - {b}?", "Subtract {b} from {a}.", "What is {a} minus {b}?"))
    elif op == "*":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        q = rng.choice(("What is {a} * {b}?", "What is {a} times {b}?", "Multiply {a} by {b}."))
    else:
        b, k = rng.randint(1, 9), rng.randint(0, 9)
        a = b * k
        q = rng.choice(("What is {a} / {b}?", "Divide {a} by {b}."))
    step, c = _op(a, op, b)
    return _problem("arithmetic", 1, q.format(a=a, b=b), [step], c, f"{a} {op.replace('/', '//')} {b} == {c}")


def _arith_level2(rng: random.Random) -> Problem:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    form = rng.randrange(7)
    if form == 0:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        op, q = "+", f"What is {a} + {b}?"
    elif form == 1:
        a = rng.randint(10, 99)
        b = rng.randint(1, a)
        op, q = "-", f"What is {a} - {b}?"
    elif form == 2:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        op, q = "*", f"What is {a} * {b}?"
    elif form == 3:
        a, b = rng.randint(2, 40), rng.randint(2, 30)
        op, q = "+", f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
    elif form == 4:
        a = rng.randint(5, 50)
        b = rng.randint(1, a - 1)
        op, q = "-", f"{name} had {a} {item} and gave away {b}. How many {item} are left?"
    elif form == 5:
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        op, q = "*", f"There are {a} boxes with {b} {item} in each box. How many {item} are there in total?"
    else:
        b, k = rng.randint(2, 9), rng.randint(2, 12)
        a = b * k
        op, q = "/", f"{a} {item} are shared equally among {b} friends. How many {item} does each friend get?"
    step, c = _op(a, op, b)
    return _problem("arithmetic", 2, q, [step], c, f"{a} {op.replace('/', '//')} {b} == {c}")


def _arith_level3(rng: random.Random) -> Problem:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    form = rng.randrange(5)
    if form == 0:
        a, b, c = rng.randint(2, 30), rng.randint(2, 6), rng.randint(2, 10)
        s1, d = _op(b, "*", c)
        s2, e = _op(a, "+", d)
        q = (
            f"{name} has {a} {item}. {name} buys {b} packs with {c} {item} in each pack. "
            f"How many {item} does {name} have now?"
        )
        check = f"{a} + {b} * {c} == {e}"
    elif form == 1:
        a, p = rng.randint(2, 9), rng.randint(2, 15)
        m = rng.choice((10, 20, 50, 100, 200))
        while m < a * p:
            m *= 2
        s1, t = _op(a, "*", p)
        s2, e = _op(m, "-", t)
        q = f"{name} buys {a} {item} at {p} dollars each and pays with {m} dollars. How much change does {name} get?"
        check = f"{m} - {a} * {p} == {e}"
    elif form == 2:
        a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(1, 50)
        s1, d = _op(a, "*", b)
        s2, e = _op(d, "+", c)
        q = f"What is {a} * {b} + {c}?"
        check = f"{a} * {b} + {c} == {e}"
    elif form == 3:
        a, b, c = rng.randint(1, 20), rng.randint(1, 20), rng.randint(2, 9)
        s1, d = _op(a, "+", b)
        s2, e = _op(d, "*", c)
        q = f"What is ({a} + {b}) * {c}?"
        check = f"({a} + {b}) * {c} == {e}"
    else:
        w, ln = rng.randint(2, 30), rng.randint(2, 30)
        s1, d = _op(w, "+", ln)
        s2, e = _op(d, "*", 2)
        q = f"A rectangle is {w} meters wide and {ln} meters long. What is its perimeter in meters?"
        check = f"2 * ({w} + {ln}) == {e}"
    return _problem("arithmetic", 3, q, [s1, s2], e, check)


def _arith_level4(rng: random.Random) -> Problem:
    name = rng.choice(_NAMES)
    form = rng.randrange(3)
    if form == 0:
        k = rng.choice((10, 20, 25, 50))
        p = rng.randint(2, 20) * (100 // math.gcd(k, 100))  # so that p * k / 100 is whole
        thing = rng.choice(_THINGS)
        s1, x = _op(p, "*", k)
        s2, d = _op(x, "/", 100)
        s3, e = _op(p, "-", d)
        q = f"A {thing} costs {p} dollars. It is on sale for {k} percent off. What is the sale price in dollars?"
        check = f"{p} - {p} * {k} // 100 == {e}"
    elif form == 1:
        m = rng.randint(2, 30)
        a, b = rng.randint(1, 40), rng.randint(1, 40)
        c = 3 * m - a - b
        while c < 0:
            m += 5
            c = 3 * m - a - b
        s1, t = _op(a, "+", b)
        s2, u = _op(t, "+", c)
        s3, e = _op(u, "/", 3)
        q = f"What is the average of {a}, {b} and {c}?"
        check = f"({a} + {b} + {c}) == 3 * {e}"
    else:
        a, d, b = rng.randint(5, 30), rng.randint(2, 9), rng.randint(1, 40)
        n = a * d + b + rng.randint(1, 100)
        s1, x = _op(a, "*", d)
        s2, y = _op(x, "+", b)
        s3, e = _op(n, "-", y)
        q = (
            f"{name} reads {a} pages a day for {d} days and then {b} more pages. "
            f"The book has {n} pages. How many pages are left?"
        )
        check = f"{n} - ({a} * {d} + {b}) == {e}"
    return _problem("arithmetic", 4, q, [s1, s2, s3], e, check)


# -- algebra ---------------------------------------------------------------------------------


def _lin(a: int, b: int) -> str:
    """``ax + b`` written the usual way: ``x + 3``, ``4x - 2``, ``5x``."""
    head = "x" if a == 1 else f"{a}x"
    if b > 0:
        return f"{head} + {b}"
    if b < 0:
        return f"{head} - {-b}"
    return head


def _solve(eq: str, rng: random.Random) -> str:
    return rng.choice(("Solve for x: {eq}.", "Find x if {eq}.", "{eq}. What is x?")).format(eq=eq)


def _move_constant(a_text: str, b: int, c: int) -> tuple[str, int]:
    """Take ``+ b`` (or ``- |b|``) to the other side: ``a_text = c - b`` (or ``c + |b|``)."""
    if b >= 0:
        step, d = _op(c, "-", b)
        return f"Subtract {b} from both sides: {a_text} = {step}", d
    step, d = _op(c, "+", -b)
    return f"Add {-b} to both sides: {a_text} = {step}", d


def _alg_level1(rng: random.Random) -> Problem:
    b = rng.randint(1, 9)
    if rng.random() < 0.5:
        x = rng.randint(0, 9)
        c = x + b
        eq = f"x + {b} = {c}"
        step, _ = _move_constant("x", b, c)
    else:
        c = rng.randint(0, 9)
        x = c + b
        eq = f"x - {b} = {c}"
        step, _ = _move_constant("x", -b, c)
    return _problem("algebra", 1, _solve(eq, rng), [step], x, _py(eq, x))


def _alg_level2(rng: random.Random) -> Problem:
    form = rng.randrange(3)
    if form == 0:
        a, x = rng.randint(2, 9), rng.randint(1, 12)
        c = a * x
        step, _ = _op(c, "/", a)
        eq = f"{a}x = {c}"
        return _problem("algebra", 2, _solve(eq, rng), [f"Divide both sides by {a}: x = {step}"], x, _py(eq, x))
    if form == 1:
        a, c = rng.randint(2, 9), rng.randint(1, 12)
        step, x = _op(c, "*", a)
        steps = [f"Multiply both sides by {a}: x = {step}"]
        return _problem("algebra", 2, _solve(f"x / {a} = {c}", rng), steps, x, f"{x} // {a} == {c} and {x} % {a} == 0")
    a, b, v = rng.randint(2, 9), rng.randint(1, 20), rng.randint(1, 10)
    s1, t = _op(a, "*", v)
    s2, r = _op(t, "+", b)
    return _problem("algebra", 2, f"If x = {v}, what is {_lin(a, b)}?", [s1, s2], r, f"{a} * {v} + {b} == {r}")


def _alg_level3(rng: random.Random) -> Problem:
    form = rng.randrange(3)
    if form == 0:
        a, x = rng.randint(2, 9), rng.randint(-10, 12)
        b = rng.choice([v for v in range(-20, 21) if v != 0])
        c = a * x + b
        eq = f"{_lin(a, b)} = {c}"
        s1, d = _move_constant(f"{a}x", b, c)
        s2, _ = _op(d, "/", a)
        return _problem("algebra", 3, _solve(eq, rng), [s1, f"Divide both sides by {a}: x = {s2}"], x, _py(eq, x))
    if form == 1:
        a, x, b = rng.randint(2, 9), rng.randint(1, 20), rng.randint(1, 30)
        c = a * x + b
        q = f"I think of a number, multiply it by {a} and then add {b}. The result is {c}. What is my number?"
        s1, d = _move_constant(f"{a}x", b, c)
        s2, _ = _op(d, "/", a)
        steps = [f"Let the number be x, so {a}x + {b} = {c}", s1, f"Divide both sides by {a}: x = {s2}"]
        return _problem("algebra", 3, q, steps, x, f"{a} * {x} + {b} == {c}")
    x, y = rng.randint(2, 20), rng.randint(1, 19)
    if y >= x:
        x, y = y + 1, x
    s, d = x + y, x - y
    s1, t = _op(s, "+", d)
    s2, _ = _op(t, "/", 2)
    q = f"If x + y = {s} and x - y = {d}, what is x?"
    steps = [f"Add the two equations: 2x = {s1}", f"Divide both sides by 2: x = {s2}"]
    return _problem("algebra", 3, q, steps, x, f"{x} + {y} == {s} and {x} - {y} == {d}")


def _alg_level4(rng: random.Random) -> Problem:
    if rng.random() < 0.6:
        # ax + b = cx + d  ->  (a - c)x + b = d  ->  (a - c)x = d - b  ->  x
        c = rng.randint(1, 6)
        a = c + rng.randint(2, 6)
        x = rng.randint(-9, 12)
        b = rng.choice([v for v in range(-20, 21) if v != 0])
        d = (a - c) * x + b
        eq = f"{_lin(a, b)} = {_lin(c, d)}"
        s1, e = _op(a, "-", c)
        s2, f = _move_constant(f"{e}x", b, d)
        s3, _ = _op(f, "/", e)
        steps = [
            f"Subtract {_lin(c, 0)} from both sides: {s1}, so {_lin(e, b)} = {d}",
            s2,
            f"Divide both sides by {e}: x = {s3}",
        ]
        return _problem("algebra", 4, _solve(eq, rng), steps, x, _py(eq, x))
    x, y = rng.randint(2, 20), rng.randint(1, 19)
    if y >= x:
        x, y = y + 1, x
    s, d = x + y, x - y
    s1, t = _op(s, "+", d)
    s2, _ = _op(t, "/", 2)
    s3, _ = _op(s, "-", x)
    q = f"If x + y = {s} and x - y = {d}, what is y?"
    steps = [f"Add the two equations: 2x = {s1}", f"Divide both sides by 2: x = {s2}", f"Then y = {s3}"]
    return _problem("algebra", 4, q, steps, y, f"{x} + {y} == {s} and {x} - {y} == {d}")


def _py(eq: str, x: int) -> str:
    """An equation in the problem's notation (``3x - 5 = 10``) as a Python check with ``x`` bound."""
    lhs, rhs = eq.split(" = ")

    def expr(side: str) -> str:
        out = []
        for tok in side.split(" "):
            if tok.endswith("x"):
                coef = tok[:-1] or "1"
                out.append(f"{coef} * ({x})")
            else:
                out.append(tok)
        return " ".join(out)

    return f"{expr(lhs)} == {expr(rhs)}"


_GENERATORS = {
    "arithmetic": (_arith_level1, _arith_level2, _arith_level3, _arith_level4),
    "algebra": (_alg_level1, _alg_level2, _alg_level3, _alg_level4),
}


def generate(kind: str, rng: random.Random, level: int | None = None) -> Problem:
    """One problem of a kind; the level is drawn (easy ones more often) unless given."""
    if kind not in _GENERATORS:
        raise ValueError(f"unknown problem kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if level is None:
        level = rng.choices(LEVELS, weights=_LEVEL_WEIGHTS)[0]
    return _GENERATORS[kind][level - 1](rng)


def heldout_problems(seed: int, count: int) -> list[Problem]:
    """The held-out set: ``count`` distinct questions, stratified over kinds and levels."""
    rng = random.Random(f"heldout/{GENERATOR_VERSION}/{seed}")
    strata = [(k, lv) for k in KINDS for lv in LEVELS]
    seen: set[str] = set()
    out: list[Problem] = []
    attempts = 0
    while len(out) < count:
        kind, level = strata[len(out) % len(strata)]
        p = generate(kind, rng, level)
        attempts += 1
        if attempts > 1000 * max(count, 1):  # pragma: no cover - the question space is large
            raise RuntimeError("could not generate enough distinct held-out problems")
        if p.question in seen:
            continue
        seen.add(p.question)
        out.append(p)
    return out


def training_documents(
    kind: str, seed: int, max_chars: int, exclude: set[str], direct_fraction: float = 0.3
) -> Iterator[str]:
    """Training texts of one kind until ``max_chars``; questions in ``exclude`` are never emitted.

    A fraction are in the direct format (question then answer), the rest worked; see the module
    docstring.
    """
    rng = random.Random(f"train/{GENERATOR_VERSION}/{kind}/{seed}")
    total = 0
    while total < max_chars:
        p = generate(kind, rng)
        if p.question in exclude:
            continue
        text = p.direct() if rng.random() < direct_fraction else p.worked()
        total += len(text)
        yield text


def heldout_rows(problems: list[Problem]) -> list[dict[str, object]]:
    """Task rows for ``DataDirWriter.add_task``: prompt, answer, and reference fields."""
    return [
        {
            "prompt": p.prompt(),
            "answer": p.answer,
            "question": p.question,
            "solution": p.solution,
            "kind": p.kind,
            "level": p.level,
        }
        for p in problems
    ]
