"""Embedded text generators: simple English, children's stories and Lua.

No dataset can be downloaded here, so the demo's corpora are generated. They are small recursive
grammars, not a handful of templates: identifiers, nesting depth, lengths and sentence shapes all
vary, and they carry the structures the paper studies (assignments in both languages, `local`,
`end`, `~=`, `..`, `pcall`, indentation, dialogue, names, punctuation).
"""

from __future__ import annotations

import random
from typing import Callable, Iterator

NAMES = """Anna Ben Lily Tom Mia Max Sara Sam Lucy Jack Emma Leo Zoe Tim Ella Noah Amy Finn Rosa Jake
Nina Omar Ivy Kai Ruby Eli Maya Theo Lena Hugo Alice Oscar Grace Felix Chloe Adam Hannah Luke""".split()
ANIMALS = "cat dog bird bunny fox bear frog duck mouse owl lion puppy kitten pig horse fish turtle".split()
NOUNS = """ball tree house garden park box car book cake toy hat cup boat kite river hill flower apple
door window bed chair table sun moon star cloud rock shell bike train spoon sock drum bag""".split()
ADJS = """big small red blue happy sad little old new shiny soft loud quiet warm cold green yellow funny
kind brave tiny tall bright dark sleepy hungry""".split()
VERBS_T = "see want like have find take make help hold eat throw push pull open draw build".split()
VERBS_I = "play run jump sing dance sleep swim laugh cry walk read hide fly".split()
PLACES = "the park|the garden|the forest|the beach|school|the kitchen|the store|the farm|the lake".split("|")
FEELINGS = "happy|sad|scared|excited|proud|tired|surprised|angry|curious".split("|")
TIMES = "One day|In the morning|After lunch|That night|The next day|Later|Soon|At last".split("|")


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


class _Gen:
    def __init__(self, rng: random.Random):
        self.r = rng

    def pick(self, xs):
        return self.r.choice(xs)

    def np(self) -> str:
        """A noun phrase: 'the big red ball', 'Anna's cup', 'a dog'."""
        r = self.r
        noun = self.pick(NOUNS + ANIMALS)
        adjs = " ".join(r.sample(ADJS, r.choice([0, 0, 1, 1, 2])))
        det = r.choice(["the", "a", "my", "your", f"{self.pick(NAMES)}'s", "this", "that"])
        phrase = f"{adjs} {noun}".strip()
        return _a(phrase) if det == "a" else f"{det} {phrase}"


# ------------------------------------------------------------------------------------- simple English
class EnglishGen(_Gen):
    """Child-directed, BabyLM-like English: short statements, questions, dialogue, descriptions."""

    def sentence(self) -> str:
        r, n = self.r, self.pick(NAMES)
        kind = r.randrange(9)
        if kind == 0:
            return f"{n} can {self.pick(VERBS_I)}."
        if kind == 1:
            return f"Do you {self.pick(VERBS_T)} {self.np()}?"
        if kind == 2:
            return f"{n} wants to {self.pick(VERBS_T)} {self.np()} in {self.pick(PLACES)}."
        if kind == 3:
            return f"Look at {self.np()}! It is {self.pick(ADJS)}."
        if kind == 4:
            return f"Where is {self.np()}? It is under {self.np()}."
        if kind == 5:
            c = r.randint(2, 12)
            return f"We have {c} {self.pick(NOUNS)}s and {r.randint(1, 9)} {self.pick(ANIMALS)}s."
        if kind == 6:
            return f"I think {n} is {self.pick(FEELINGS)} because {self.clause()}."
        if kind == 7:
            return f"If you {self.pick(VERBS_T)} {self.np()}, {self.clause()}."
        return f"{self.clause().capitalize()}, and {self.clause()}."

    def clause(self) -> str:
        r = self.r
        subj = r.choice([self.pick(NAMES), "she", "he", "they", "we", self.np()])
        if r.random() < 0.5:
            return f"{subj} {r.choice(['will', 'can', 'did not', 'wants to'])} {self.pick(VERBS_I)}"
        return f"{subj} {r.choice(['saw', 'found', 'took', 'made', 'liked'])} {self.np()}"

    def dialogue(self) -> str:
        speakers = self.r.sample(["MOTHER", "FATHER", "CHILD", "TEACHER", "GRANDMA"], 2)
        lines = []
        for i in range(self.r.randint(3, 8)):
            lines.append(f"{speakers[i % 2]}: {self.sentence()}")
        return "\n".join(lines)

    def document(self) -> str:
        parts = []
        for _ in range(self.r.randint(2, 6)):
            if self.r.random() < 0.3:
                parts.append(self.dialogue())
            else:
                parts.append(" ".join(self.sentence() for _ in range(self.r.randint(2, 7))))
        return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------- stories
class StoryGen(_Gen):
    """TinyStories-like children's stories with a hero, a problem, dialogue and a resolution."""

    def document(self) -> str:
        r = self.r
        hero, friend = r.sample(NAMES, 2)
        kind = self.pick(ANIMALS + ["girl", "boy"])
        adj = self.pick(ADJS)
        thing = self.np().split(" ", 1)[-1]
        out = [
            r.choice([
                f"Once upon a time, there was {_a(adj + ' ' + kind)} named {hero}.",
                f"There once was {_a(kind)} called {hero} who lived near {self.pick(PLACES)}.",
                f"{hero} was {_a(adj + ' ' + kind)}.",
            ]),
            f"{hero} loved to {self.pick(VERBS_I)} with {self.pick(['a', 'the', 'his', 'her'])} {thing}.",
        ]
        for _ in range(r.randint(1, 4)):
            out.append(self.event(hero, friend, thing))
        feeling = self.pick(FEELINGS)
        out.append(r.choice([
            f"In the end, {hero} and {friend} were very {feeling}.",
            f"From that day on, {hero} always shared the {thing}.",
            f"{hero} smiled. It was the best day ever.",
        ]))
        if r.random() < 0.4:
            out.append("The end.")
        return " ".join(out)

    def event(self, hero: str, friend: str, thing: str) -> str:
        r = self.r
        t = self.pick(TIMES)
        k = r.randrange(5)
        if k == 0:
            return (f'{t}, {hero} met {friend}. "Can I {self.pick(VERBS_I)} with you?" asked {hero}. '
                    f'"Yes!" said {friend}. "Let\'s go to {self.pick(PLACES)}."')
        if k == 1:
            return (f"{t}, the {thing} was lost. {hero} felt {self.pick(FEELINGS)}. "
                    f"{hero} looked under {self.np()} and behind {self.np()}.")
        if k == 2:
            return (f'{friend} said, "I am {self.pick(FEELINGS)}, {hero}. My {self.pick(NOUNS)} is broken." '
                    f'{hero} said, "Don\'t worry, I will help you!"')
        if k == 3:
            return (f"{t}, it started to rain. {hero} and {friend} ran to {self.pick(PLACES)}. "
                    f"They saw {self.np()} and {self.np()}.")
        return (f"{hero} wanted to {self.pick(VERBS_T)} {self.np()}, but it was too {self.pick(ADJS)}. "
                f"So {hero} asked {friend} for help, and {friend} said yes.")


# --------------------------------------------------------------------------------------------- Lua
WORDS = """count total value item name list data node key result index size buf line text user player
score level config state cache path file msg err item_count max_len offset width height pos vec color
speed queue stack tree parent child left right sum acc tmp str num flag done ok handler callback""".split()


class LuaGen(_Gen):
    """Lua modules: locals, functions, tables, loops, branches, pcall / error, string ops."""

    def ident(self) -> str:
        r = self.r
        a = self.pick(WORDS)
        style = r.randrange(4)
        if style == 0:
            return a
        b = self.pick(WORDS)
        if style == 1:
            return f"{a}_{b}"
        if style == 2:
            return a + b.capitalize()
        return f"{a}{r.randint(1, 9)}"

    def expr(self, depth: int = 0) -> str:
        r = self.r
        k = r.randrange(9 if depth < 2 else 5)
        if k == 0:
            return str(r.choice([0, 1, 2, 10, r.randint(3, 999)]))
        if k == 1:
            return f'"{self.pick(WORDS)}{self.pick(["", " ", ": ", "_"])}"'
        if k == 2:
            return self.ident()
        if k == 3:
            return f"#{self.ident()}"
        if k == 4:
            return self.pick(["nil", "true", "false", "{}"])
        if k == 5:
            return f"{self.expr(depth + 1)} {self.pick(['+', '-', '*', '/', '%', '//'])} {self.expr(depth + 1)}"
        if k == 6:
            return f"{self.expr(depth + 1)} .. {self.expr(depth + 1)}"
        if k == 7:
            return f"{self.ident()}({', '.join(self.expr(depth + 1) for _ in range(r.randint(0, 3)))})"
        return f"{self.pick(['string.format', 'tostring', 'math.max', 'table.concat', 'string.sub'])}({self.expr(depth + 1)})"

    def cond(self) -> str:
        a, b = self.ident(), self.expr(1)
        c = f"{a} {self.pick(['==', '~=', '<', '>', '<=', '>='])} {b}"
        if self.r.random() < 0.25:
            c = f"{c} {self.pick(['and', 'or'])} not {self.ident()}"
        return c

    def block(self, ind: int, depth: int) -> list[str]:
        lines: list[str] = []
        for _ in range(self.r.randint(1, 4 if depth < 2 else 2)):
            lines += self.stmt(ind, depth)
        return lines

    def stmt(self, ind: int, depth: int) -> list[str]:
        r, p = self.r, self.unit * ind
        k = r.randrange(11 if depth < 3 else 4)
        if k in (0, 1):
            return [f"{p}local {self.ident()} = {self.expr()}"]
        if k == 2:
            return [f"{p}{self.ident()} = {self.expr()}"]
        if k == 3:
            return [f"{p}{self.ident()}.{self.ident()} = {self.expr()}"]
        if k == 4:
            out = [f"{p}if {self.cond()} then"] + self.block(ind + 1, depth + 1)
            if r.random() < 0.4:
                out += [f"{p}elseif {self.cond()} then"] + self.block(ind + 1, depth + 1)
            if r.random() < 0.5:
                out += [f"{p}else"] + self.block(ind + 1, depth + 1)
            return out + [f"{p}end"]
        if k == 5:
            i = r.choice(["i", "j", "k", "n"])
            return [f"{p}for {i} = 1, {self.expr(1)} do"] + self.block(ind + 1, depth + 1) + [f"{p}end"]
        if k == 6:
            return ([f"{p}for {r.choice(['_', 'i', 'k'])}, {self.ident()} in {r.choice(['ipairs', 'pairs'])}({self.ident()}) do"]
                    + self.block(ind + 1, depth + 1) + [f"{p}end"])
        if k == 7:
            return [f"{p}while {self.cond()} do"] + self.block(ind + 1, depth + 1) + [f"{p}end"]
        if k == 8:
            ok, err = r.choice([("ok", "err"), ("success", "result"), ("status", "msg")])
            return ([f"{p}local {ok}, {err} = pcall(function()"] + self.block(ind + 1, depth + 1)
                    + [f"{p}end)", f"{p}if not {ok} then", f'{p}{self.unit}print("error: " .. tostring({err}))', f"{p}end"])
        if k == 9:
            return [f'{p}error("{self.pick(WORDS)} {self.pick(["is nil", "failed", "out of range", "not found"])}")']
        return [f"{p}return {self.expr()}"]

    def function(self, module: str | None) -> list[str]:
        r = self.r
        args = ", ".join(dict.fromkeys(self.ident() for _ in range(r.randint(0, 3))))
        name = self.ident()
        head = f"function {module}.{name}({args})" if module else r.choice(
            [f"local function {name}({args})", f"function {name}({args})"])
        body = self.block(1, 1)
        if r.random() < 0.6:
            body.append(f"{self.unit}return {self.expr()}")
        return [head] + body + ["end"]

    def document(self) -> str:
        r = self.r
        self.unit = r.choice(["  ", "  ", "    ", "\t"])
        lines: list[str] = []
        if r.random() < 0.3:
            lines.append(f"-- {self.pick(WORDS)} {self.pick(WORDS)} module")
        module = self.pick(["M", "Module", self.ident().capitalize()]) if r.random() < 0.5 else None
        if module:
            lines.append(f"local {module} = {{}}")
        for _ in range(r.randint(0, 3)):
            lines.append(f"local {self.ident()} = {self.expr()}")
        if r.random() < 0.4:
            fields = ", ".join(f"{self.ident()} = {self.expr(1)}" for _ in range(r.randint(1, 4)))
            lines.append(f"local {self.ident()} = {{ {fields} }}")
        for _ in range(r.randint(1, 4)):
            lines.append("")
            lines += self.function(module)
        if module:
            lines += ["", f"return {module}"]
        return "\n".join(lines) + "\n"


GENERATORS: dict[str, Callable[[random.Random], _Gen]] = {
    "babylm": EnglishGen,
    "tinystories": StoryGen,
    "lua": LuaGen,
}


def generate(domain: str, chars: int, seed: int) -> Iterator[str]:
    """Yield generated documents for `domain` until about `chars` characters have been produced."""
    gen = GENERATORS[domain](random.Random(f"{domain}:{seed}"))
    n = 0
    while n < chars:
        doc = gen.document()
        n += len(doc)
        yield doc
