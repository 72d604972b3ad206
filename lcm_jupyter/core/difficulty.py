"""A learned difficulty score for a request: how much the strong model is needed.

Auto routing may send a call one step down the model ladder (gpt-4o -> gpt-4o-mini) when
the small model is likely to answer as well. `score_body` reads the whole conversation of
any wire (OpenAI chat/completions/Responses, Anthropic messages, Gemini contents) and
returns a continuous score in [0, 1]: higher means the strong model is needed.

The model is three logistic regressions over the same features, word uni/bigrams (numbers
folded by digit count, maths and code symbols kept as tokens) and a few dense features
(length buckets, digits, maths symbols, code shape, the share of words never seen in
training), mixed into one logit:

- the "type" head tells requests of the kind a strong model is kept for (maths, code,
  careful reasoning, obscure facts) from everyday ones, trained on prompts labelled by the
  set they come from;
- the "outcome" heads rank prompts by the chance that the strong model answers right where
  the weak one does not, trained on RouteLLM's GPT-4 / Mixtral outcomes: one for free-form
  requests (GSM8K), one for exam-style multiple choice (MMLU), which alone judges those.

They are trained offline by `tests/benchmarks/train_router.py`; the weights ship in
`difficulty_weights.json` and are read once, on first use.

Around the model, three rules that the data alone does not teach:

- pleasantries ("hi", "ok so", "thanks!") are stripped before scoring: they say nothing
  about the request after them;
- a turn inherits the decayed score of the user turns before it, and of an answer just
  before it that holds code or maths, so a short follow-up ("and for n = 5?", "why?") of a
  hard conversation stays hard;
- text in a script or language the model was not trained on is marked unreadable: auto
  routing must then keep the requested model (its score is kept at or above THRESHOLD too).

Stdlib only. A decision costs about 0.15 ms at the median and 0.5 ms at p99 on the project's
2-core machine (tests/benchmarks/eval_routing.py); text windows bound the work on long prompts.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .prompt import conversation

__all__ = [
    "THRESHOLD",
    "Difficulty",
    "dense_features",
    "features",
    "grams",
    "preload",
    "readable",
    "score_body",
    "score_text",
    "strip_pleasantries",
]

THRESHOLD = 0.25
"""Route down only when score < THRESHOLD (and the text is readable).

tests/benchmarks/train_router.py finds, on its validation split, the highest score that keeps
at most 1% of the hard validation prompts under it (half the 2% target, as margin), and shifts
the model's bias so that this score reads THRESHOLD; the figures on the test split and the
other public sets are in tests/benchmarks/README.md ("Routing evaluation")."""

WEIGHTS = Path(__file__).with_name("difficulty_weights.json")

# Each earlier user turn passes on its score times DECAY per turn back: a follow-up of a hard
# exchange stays above the threshold for several turns; a chat that moved on slowly forgets.
DECAY = 0.85
_MAX_BACK = 8  # user turns looked back at; older ones are too far to matter
# Text windows: a long text costs about what a 2 kB one does.
_WINDOW_HEAD = 1200
_WINDOW_TAIL = 800
_HEAD_TOKENS = 160
_TAIL_TOKENS = 64
_SCRIPT_WINDOW = 1200
_WORDS_WINDOW = 600
# The type logit's range: above 1 a request is plainly of a demanding kind, and more evidence
# of it says nothing more; below, every bit of evidence of an everyday request counts.
_CLIP_LOW = -3.0
_CLIP_HIGH = 1.0
_HEAD_NAMES = ("type", "outcome", "exam")

_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")
# The same tokens for ASCII text (most prompts), found faster without Unicode classes.
_TOKEN_ASCII = re.compile(r"[a-z]+|[0-9]+|[^a-z0-9_\s]")
_PUNCT = ".,;:!?\"'()[]{}<>*-\u00bf\u00a1\u00ab\u00bb\u2018\u2019\u201c\u201d\u2026"
_DIGIT = re.compile(r"\d")
_CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import|return\b|for .+:|if .+:|#include|"
    r"public |private |function\b|const |let |var |SELECT |\}|\{|.*;\s*$)",
    re.MULTILINE,
)
# Exam-style multiple choice: an "A." line followed by a "B." line.
_CHOICES = re.compile(r"\n\(?A[.)] [^\n]*\n\(?B[.)] ")
_MATH_CHARS = frozenset(
    "=+*/^<>%\\$\u2211\u222b\u221a\u03c0\u2264\u2265\u2260\u00b1\u00d7\u00f7\u221e\u2202"
)
_MATH = re.compile("[" + re.escape("".join(sorted(_MATH_CHARS))) + "]")
_LATEX = re.compile(r"\\(?:frac|sqrt|sum|int|cdot|pi|theta|alpha|begin|le|ge|times)\b|\$[^$\n]+\$")

# --- pleasantries ------------------------------------------------------------------------------
# A greeting, thanks or acknowledgement in front of (or after) a request: stripped, since it
# says nothing about the request. Words that can also start a real request ("so", "well",
# "no") are stripped only when punctuation follows them.
_DASHES = "\\-\u2013\u2014"
_PLEASANT = (
    r"(?:hi|hello|hey|hiya|howdy|greetings|yo|good\s+(?:morning|afternoon|evening|day)"
    r"|ok(?:ay)?|okey|k|alright|all\s+right|cool|great|nice|perfect|awesome|excellent|"
    r"wonderful|brilliant|sure|got\s+it|understood|i\s+see|gotcha|"
    r"thanks?(?:\s+(?:you|so\s+much|a\s+lot|a\s+ton|again|very\s+much))*"
    r"(?:\s+for\s+[^.!?\n]{0,60}?(?=[.!?\n]))?|"
    r"thank\s+you(?:\s+(?:so|very)\s+much)?(?:\s+for\s+[^.!?\n]{0,60}?(?=[.!?\n]))?|"
    r"thx|ty|tysm|cheers|please|pls|plz|sorry|hmm+|um+|uh+|oh|ah|wow|lol|haha|"
    r"that\s+(?:worked|works|helps|helped|makes\s+sense|is\s+great|was\s+helpful)|"
    r"makes\s+sense|(?:dear\s+)?(?:chatgpt|claude|gemini|assistant|bot))"
)
_SOFT = r"(?:so|well|yes|yeah|yep|right|no|nope|fine|good|now|anyway)"
_LEAD = re.compile(
    rf"^(?:\s*(?:{_PLEASANT}(?:\s+(?:there|again|everyone|all|friend|mate|buddy))?"
    rf"[\s,.!:;){_DASHES}]*(?=\S|$)|{_SOFT}\s*[,.!:;{_DASHES}]+))+",
    re.IGNORECASE,
)
_SOFT_AFTER = re.compile(rf"{_SOFT}\b[\s,.!:;{_DASHES}]*", re.IGNORECASE)
_TRAIL = re.compile(
    rf"[\s,.;:!{_DASHES}]*(?:(?:many\s+)?thanks?"
    r"(?:\s+(?:you|so\s+much|a\s+lot|in\s+advance|again))*"
    r"|thank\s+you(?:\s+(?:so|very)\s+much)?(?:\s+in\s+advance)?|thx|ty|cheers|please|pls)"
    r"[\s.!:)(]*$",
    re.IGNORECASE,
)


# Cheap test before the closing-thanks pattern runs at all.
_CLOSERS = ("thank", "thx", "ty", "cheers", "please", "pls")


def _wordset(text: str) -> frozenset[str]:
    """The whitespace-separated words of a text block, as a set."""
    return frozenset(text.split())


# --- languages ---------------------------------------------------------------------------------
# Letters outside Latin, Greek (maths) and Vietnamese-extended Latin: CJK, Hangul, Cyrillic,
# Arabic, Hebrew, Devanagari, Thai...
_NON_LATIN = re.compile(r"[^\W\d_\u0000-\u024F\u0370-\u03FF\u1E00-\u1EFF]")
_LATIN = re.compile(r"[A-Za-z\u00C0-\u024F\u1E00-\u1EFF]")
# Marks of other Latin-script languages (lower case: the text is lowered first; no dotless i,
# which case-insensitive matching would confuse with "i").
_FOREIGN_MARKS = re.compile(
    "[\u00bf\u00a1\u00f1\u00e3\u00f5\u00df\u0153\u0105\u0119\u0142\u015b\u017a\u017c\u0107"
    "\u0144\u0151\u0171\u011f\u015f\u0159\u016f\u011b\u010d\u0161\u017e"
    # French, German, Portuguese, Italian accents: English borrows a few ("cafe"), so they
    # count only as one piece of evidence, like one function word.
    "\u00e9\u00e8\u00ea\u00e0\u00e7\u00f9\u00f4\u00ee\u00fb\u00e4\u00f6\u00fc\u00e1\u00ed\u00f3\u00fa]"
)
# English function words, and function words of other Latin-script languages that English
# prose (and maths: "y", "x") does not use: words both languages use, such as "a", "in",
# "die", "son", "per", "de", "en", "y", are left out of the second list.
_ENGLISH = _wordset(
    """
the of and to is are be it this that for with on what how why which who whom whose can
could would should will does did do you your my me we our they their there here from by
at as or if not but have has had been was were than then about into over between each all
any some more most please write explain give make find show tell when where while because
so also just only very much many such these those its an am being after before without
within under him her his she he them us i
"""
)
_FOREIGN = _wordset(
    """
la que una por con cómo qué cuál cuáles cuánto cuántos cuántas dónde puedes explica
explícame más pero como está este esta estos muy também não uma você isso seu sua dos
pelo pela qual quais della delle degli sono questo questa perché nel nella anche cosa des
est une pour dans avec sur pas cette pourquoi quel quelle je vous nous elle aux ne mon
mes ton ses leur sont où peux fais der und ist ein eine einen nicht mit für auf ich sie
wie warum wer bitte kannst erkläre oder auch sich dass wenn wird können welche welcher
het een niet dat wat waarom je voor zijn ook och att det som för inte jag hur varför için
ile nas\u0131l neden nedir yang untuk ini itu bagaimana tidak się nie jest że jak
dlaczego czy
"""
)


@dataclass(frozen=True, slots=True)
class Difficulty:
    """How much a request needs the strong model, whether that could be judged, and why."""

    score: float
    """In [0, 1]; higher: the strong model is needed. Continuous in the model's logit."""
    readable: bool
    """False for a language or script the model was not trained or checked on: never route."""
    reason: str
    """One short human line."""


class _Head:
    """One logistic regression's bias and dense weights (its gram weights are in _Model)."""

    __slots__ = ("bias", "dense")

    def __init__(self, bias: float, dense: list[float]) -> None:
        self.bias = float(bias)
        self.dense: tuple[float, ...] = tuple(float(v) for v in dense)


class _Model:
    """The trained weights: three heads and how their logits mix."""

    __slots__ = ("exam", "mix", "outcome", "type", "vocab", "weights")

    def __init__(self, data: Mapping[str, Any]) -> None:
        if tuple(data["heads"]) != _HEAD_NAMES:
            raise ValueError(f"weights for heads {data['heads']}, expected {_HEAD_NAMES}")
        self.type, self.outcome, self.exam = (
            _Head(b, d) for b, d in zip(data["bias"], data["dense"], strict=True)
        )
        mix = data["mix"]
        self.mix = (float(mix["type"]), float(mix["outcome"]), float(mix["bias"]))
        # Known words: every unigram seen often enough in training (its weights may be ~0).
        self.vocab = frozenset(data["words"])
        # gram -> [type, outcome, exam] weights, used as read (no per-gram conversion: the
        # file is read on the first routed call).
        self.weights: dict[str, list[float]] = data["grams"]


_MODEL: _Model | None = None
_LOCK = threading.Lock()


def _model() -> _Model:
    """The weights, read once from the package on first use."""
    global _MODEL
    if _MODEL is None:
        with _LOCK:
            if _MODEL is None:
                _MODEL = _Model(json.loads(WEIGHTS.read_text(encoding="utf-8")))
    return _MODEL


def preload() -> None:
    """Read the weights now (at server start, say) rather than on the first routed call."""
    _model()


def strip_pleasantries(text: str) -> str:
    """The text without the greetings, thanks and acknowledgements around the request."""
    lead = _LEAD.match(text)
    out = text
    if lead and lead.end():
        out = text[lead.end() :]
        # After a pleasantry, "so", "well", "now"... are filler too ("ok so prove that...").
        soft = _SOFT_AFTER.match(out)
        if soft:
            out = out[soft.end() :]
    # Only the end can hold a closing "thanks": searching the tail alone keeps this cheap.
    end = out[-40:].lower()
    if not any(word in end for word in _CLOSERS):
        return out.strip()
    tail = len(out) - 120
    if tail > 0:
        return (out[:tail] + _TRAIL.sub("", out[tail:], count=1)).strip()
    return _TRAIL.sub("", out, count=1).strip()


def readable(text: str) -> bool:
    """Whether the text is English (or language-neutral code/maths) as far as cheaply seen."""
    window = text[:_SCRIPT_WINDOW]
    other = len(_NON_LATIN.findall(window))
    if other:
        latin = len(_LATIN.findall(window))
        if other >= 0.2 * (other + latin) or other >= 40:
            return False
    # Whitespace words with their punctuation stripped: C-speed, enough for function words.
    words = [w.strip(_PUNCT) for w in window[:_WORDS_WINDOW].lower().split()]
    words = [w for w in words if w]
    if not words:
        return True
    foreign = sum(map(_FOREIGN.__contains__, words))
    marks = 1 if _FOREIGN_MARKS.search(window.lower()) else 0
    if not foreign and not marks:
        return True
    english = sum(map(_ENGLISH.__contains__, words))
    evidence = foreign + marks
    if evidence > english and (evidence >= 2 or len(words) <= 6):
        return False
    # A long text of mostly foreign function words with a few English terms in it.
    return not (len(words) >= 12 and foreign >= 4 and foreign >= 1.5 * english)


DENSE_NAMES = (
    "log_chars",
    "log_words",
    "log_numbers",
    "log_math_symbols",
    "code_lines",
    "log_newlines",
    "questions",
    "latex",
    "unknown_words",
    "words_le_4",
    "words_le_10",
    "words_le_25",
    "words_le_60",
    "words_le_150",
    "words_gt_150",
    "multiple_choice",
    "mc_log_chars",
    "mc_log_numbers",
    "mc_log_math_symbols",
    "mc_unknown_words",
)
"""The dense features, in the order of the weights."""
_MC = DENSE_NAMES.index("multiple_choice")


def _window(text: str) -> str:
    """The part of a text the features read: all of it, or its head and tail when long."""
    if len(text) <= _WINDOW_HEAD + _WINDOW_TAIL:
        return text
    return text[:_WINDOW_HEAD] + "\n" + text[-_WINDOW_TAIL:]


def features(text: str, vocab: frozenset[str] | set[str]) -> tuple[set[str], list[float]]:
    """The grams (unigrams and bigrams) and the dense features (DENSE_NAMES) of a text."""
    n = len(text)
    window = _window(text)
    lower = window.lower()
    tokens = (_TOKEN_ASCII if lower.isascii() else _TOKEN).findall(lower)
    # Grams: numbers folded by digit count, from the first and last tokens of a long text.
    head = tokens
    if len(tokens) > _HEAD_TOKENS + _TAIL_TOKENS:
        head = tokens[:_HEAD_TOKENS] + tokens[-_TAIL_TOKENS:]
    folded = [f"#{min(len(t), 4)}" if t[0].isdigit() else t for t in head]
    found = set(folded)
    found.update([a + " " + b for a, b in itertools.pairwise(folded)])

    words = [t for t in tokens if t[0].isalpha()]
    n_words = len(words) if n == len(window) else int(len(words) * n / len(window))
    numbers = sum(1 for t in head if t[0].isdigit())
    maths = len(_MATH.findall(window))
    code = min(len(_CODE_LINE.findall(window)), 12) / 12 if "\n" in window else 0.0
    if "```" in window:
        code = max(code, 0.5)
    unknown = 1.0 - sum(map(vocab.__contains__, words)) / len(words) if words else 0.0
    # In exam-style multiple choice, length and symbols mean other things than in a free-form
    # request, so they get their own weights there.
    mc = 1.0 if _CHOICES.search(window) else 0.0
    log_chars = math.log1p(n) / 9
    log_numbers = math.log1p(numbers) / 3
    log_maths = math.log1p(maths) / 3
    dense = [
        log_chars,
        math.log1p(n_words) / 7,
        log_numbers,
        log_maths,
        code,
        math.log1p(window.count("\n")) / 4,
        min(window.count("?"), 4) / 4,
        1.0 if _LATEX.search(window) else 0.0,
        unknown,
        1.0 if n_words <= 4 else 0.0,
        1.0 if 4 < n_words <= 10 else 0.0,
        1.0 if 10 < n_words <= 25 else 0.0,
        1.0 if 25 < n_words <= 60 else 0.0,
        1.0 if 60 < n_words <= 150 else 0.0,
        1.0 if n_words > 150 else 0.0,
        mc,
        mc * log_chars,
        mc * log_numbers,
        mc * log_maths,
        mc * unknown,
    ]
    return found, dense


def grams(text: str) -> set[str]:
    """The unigrams and bigrams the model reads from a text."""
    return features(text, frozenset())[0]


def dense_features(text: str, vocab: frozenset[str] | set[str]) -> list[float]:
    """The dense features of a text (DENSE_NAMES), each scaled to about [0, 1]."""
    return features(text, vocab)[1]


def head_logits(text: str, model: _Model | None = None) -> tuple[float, float, bool, str]:
    """The type logit and the outcome logit of one text, whether it is multiple choice (then
    the outcome logit is the exam head's), and its strongest cue of a demanding type."""
    model = model or _model()
    found, dense = features(text, model.vocab)
    mc = dense[_MC] > 0
    outcome = model.exam if mc else model.outcome
    k = 2 if mc else 1
    weights = model.weights
    zt = zo = 0.0
    best, cue = 0.0, ""
    for gram in found:
        w = weights.get(gram)
        if w is not None:
            zt += w[0]
            zo += w[k]
            if w[0] > best:
                best, cue = w[0], gram
    scale = 1.0 / math.sqrt(max(len(found), 1))
    zt = model.type.bias + zt * scale
    zo = outcome.bias + zo * scale
    for x, wt, wo in zip(dense, model.type.dense, outcome.dense, strict=True):
        zt += wt * x
        zo += wo * x
    return zt, zo, mc, cue


def _sigmoid(z: float) -> float:
    """Logistic function, safe for any float."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _own(text: str, model: _Model) -> tuple[float, str]:
    """The score of one (already stripped) user message on its own, and its cue."""
    zt, zo, mc, cue = head_logits(text, model)
    a, b, c = model.mix
    # The type logit is clipped: past a point, more evidence of the kind of request says
    # nothing more, and the outcome head alone ranks prompts of one kind. Exam-style multiple
    # choice is left to the outcome head, which was trained on it (the type head was not).
    kind = 0.0 if mc else a * min(max(zt, _CLIP_LOW), _CLIP_HIGH)
    return _sigmoid(kind + b * zo + c), cue


def score_text(text: str) -> float:
    """The score of one user message (pleasantries stripped), without its conversation."""
    return _own(strip_pleasantries(text), _model())[0]


def _kind(text: str, score: float) -> str:
    """A few words on what the text looks like, for the reason line."""
    head = text[:_WINDOW_HEAD]
    if "```" in head or len(_CODE_LINE.findall(head)) >= 3:
        return "code"
    if _LATEX.search(head) or len(_DIGIT.findall(head, 0, 600)) >= 6:
        return "maths or numbers"
    if score >= 0.5:
        return "demanding request"
    return "everyday request" if score < THRESHOLD else "request"


def _previous_answer(turns: tuple[tuple[str, str], ...]) -> str:
    """The assistant's text right before the last user turn, or ""."""
    seen_user = False
    for role, text in reversed(turns):
        if role == "user":
            if seen_user:
                return ""
            seen_user = True
        elif seen_user:
            return text
    return ""


def score_body(body: Mapping | None) -> Difficulty:
    """The difficulty of a request body of any wire, judged on the whole conversation."""
    turns = conversation(body)
    users = [text for role, text in turns if role == "user"]
    if not users:
        return Difficulty(0.5, True, "no user text to judge")
    model = _model()
    last = strip_pleasantries(users[-1])
    own, cue = _own(last, model)
    if not readable(" ".join(users[-2:])):
        # Kept at or above the threshold for a caller that ignores `readable`, and still
        # continuous in the model's score, so the unjudged do not pile up on one value.
        return Difficulty(THRESHOLD + (1 - THRESHOLD) * own, False, "non-English text: not judged")
    score, back = own, 0
    for k, text in enumerate(reversed(users[-1 - _MAX_BACK : -1]), start=1):
        inherited = _own(strip_pleasantries(text), model)[0] * DECAY**k
        if inherited > score:
            score, back = inherited, k
    # The answer just before the last turn, when it holds code or maths: a "why?" about it
    # continues that. (Other answers are left alone: a long everyday answer is not a hard
    # conversation, and the model was trained on prompts, not answers.)
    answer = _previous_answer(turns)
    if answer and ("```" in answer or _LATEX.search(answer, 0, _WINDOW_HEAD)):
        inherited = _own(answer[:_WINDOW_HEAD], model)[0] * DECAY
        if inherited > score:
            score, back = inherited, -1
    if back:
        what = "short follow-up" if len(last) < 200 else "follow-up"
        where = (
            "code or maths in the previous answer"
            if back < 0
            else f"a harder conversation ({back} turn{'s' * (back > 1)} back)"
        )
        reason = f"{what} to {where}"
    elif not last:
        reason = "greeting or thanks only"
    else:
        reason = _kind(last, own)
        if cue and own >= THRESHOLD:
            reason += f" (cue: {cue!r})"
    return Difficulty(min(max(score, 0.0), 1.0), True, reason)
