"""A fast, deterministic request classifier: what the user asks for, and is it simple.

Auto routing sends a call one step down the provider's model ladder when the request is
simple enough that the small model answers it as well as the large one. Routing a hard
request down is the costly mistake (a worse answer for a real user); not routing an easy
one only forgoes a saving. The classifier is therefore built to be sure before it says
"simple": every signal adds to a complexity score, the score starts slightly on the
complex side, and conflicting evidence lowers the confidence.

Signals, read from the last user turn (and the sizes of the system prompt and the
conversation): its length, code (fences, code-shaped lines, tracebacks), reasoning cues
(proofs, maths, design, comparison, "why", "step by step", "in detail"), several asks in
one message, explicit constraints, and the payload size of summaries, translations and
extractions, whose difficulty grows with the text handed over. Simple cues (greetings,
look-ups, unit conversions, short rewrites) pull the other way.

Stdlib only, no model: a few precompiled regular expressions over a bounded window of
the text, so a 100 kB prompt costs about what a 5 kB one does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .prompt import PromptView, prompt_view

__all__ = ["INTENTS", "Classification", "classify", "classify_body"]

INTENTS = (
    "chat",
    "simple_qa",
    "summarize",
    "translate",
    "extract",
    "code",
    "reasoning",
    "creative",
)
"""Every intent `classify` can return."""


@dataclass(frozen=True, slots=True)
class Classification:
    """Intent and complexity of one request, with how sure the classifier is and why."""

    intent: str
    """One of INTENTS."""
    complexity: str
    """"simple" or "complex"."""
    confidence: float
    """0..1: how sure the classifier is of `complexity`."""
    reason: str
    """One line a user can read."""
    prompt_tokens: int
    """Estimate of the prompt size: ceil(total characters / 4)."""


# --- windows --------------------------------------------------------------------------------
# The ask is nearly always at the start or the end of a message (an instruction, then a
# pasted document; or a document, then "summarize the above"): intent verbs are looked for
# there only, so a word inside a pasted text does not change the task.
_HEAD, _TAIL = 400, 300
# Code and reasoning cues are looked for in a bounded window: past a few thousand
# characters the size signal already decides, and the cost must not grow with the prompt.
_SCAN_HEAD, _SCAN_TAIL = 4000, 1500

# Complexity score: > 0 is complex. It starts on the complex side so that a prompt with no
# evidence either way is not routed.
_PRIOR = 0.15
# Slope of the score -> confidence curve: |score| 0.5 -> 0.70, 1.0 -> 0.85, 2.0 -> 0.97.
_SLOPE = 1.75
_MAX_CONFIDENCE = 0.97  # rules never deserve certainty
# Share of the smaller of the positive and negative evidence taken off |score|:
# a short prompt that also asks for a proof is a case to be unsure about.
_CONFLICT = 0.3

_LANGS = (
    r"english|french|spanish|german|italian|portuguese|dutch|swedish|norwegian|danish|"
    r"finnish|polish|czech|slovak|hungarian|romanian|greek|turkish|russian|ukrainian|"
    r"arabic|hebrew|persian|farsi|hindi|bengali|urdu|tamil|japanese|chinese|mandarin|"
    r"cantonese|korean|vietnamese|thai|indonesian|malay|tagalog|swahili|catalan|latin"
)


def _rx(pattern: str, flags: int = re.IGNORECASE) -> re.Pattern[str]:
    return re.compile(pattern, flags)


# --- intent cues (instruction window) ---------------------------------------------------------
_TRANSLATE = _rx(
    r"\btranslat(?:e|ed|es|ion|ing)\b|\bhow (?:do|would|can|should) (?:you|i|we) say\b"
    rf"|\b(?:in|into|to) (?:{_LANGS})\s*[?.!:]*\s*$"
    rf"|\b(?:{_LANGS}) (?:word|translation|equivalent|version) (?:for|of)\b",
    re.IGNORECASE | re.MULTILINE,
)
_SUMMARIZE = _rx(
    r"\bsummar(?:y|ies|i[sz]e|i[sz]ed|i[sz]ing|i[sz]ation)\b|\btl;?dr\b|\brecap\b"
    r"|\bcondense\b|\b(?:key|main) (?:points|takeaways|ideas|findings)\b|\bgist\b"
    r"|\bboil (?:it|this|that) down\b|\bin a nutshell\b|\bshorten (?:this|the|it)\b"
)
_EXTRACT = _rx(
    r"\bextract(?:s|ed|ing|ion)?\b|\bpull out\b|\bparse (?:out|this|the|these|each)\b"
    r"|\b(?:list|find|get|identify|give me) (?:all|every|each)(?: of)?(?: the)? "
    r"(?:names?|dates?|e-?mails?|email addresses|amounts?|entities|numbers|phone numbers?"
    r"|addresses|urls|links|people|persons|companies|organi[sz]ations|products|skus?|ids"
    r"|prices|figures|mentions|locations|values)\b"
    r"|\bnamed entit|\bfill (?:in )?(?:this|the) (?:schema|template|form)\b"
    r"|\bstructured (?:data|output|fields|record)\b"
    r"|\b(?:return|output|give me|as|into|to) (?:a |an |the )?(?:json|yaml)\b"
)
_CREATIVE = _rx(
    r"\b(?:write|compose|draft|create|craft|come up with|give me|generate|make up|brainstorm"
    r"|suggest|pen|need)\b[^.?!\n]{0,50}?\b(?:poems?|haikus?|limericks?|sonnets?|verses?"
    r"|couplets?|odes?|rhymes?|story|stories|tales?|fables?|songs?|lyrics|raps?|jingles?"
    r"|jokes?|puns?|riddles?|slogans?|taglines?|mottos?|captions?|tweets?|headlines?"
    r"|titles?|names?|essays?|blog posts?|articles?|speech|toast|eulogy|screenplay"
    r"|dialogue|monologue|scene|chapter|novel|bio|birthday (?:message|card|wish)"
    r"|greeting card|thank[- ]you note|cover letter|newsletter|linkedin post|post"
    r"|e-?mail|message|announcement|pitch|product description|ad copy|limerick)\b"
)
_SHORT_FORM = _rx(
    r"\b(?:haikus?|limericks?|couplets?|slogans?|taglines?|mottos?|captions?|tweets?"
    r"|headlines?|titles?|names?|jokes?|puns?|riddles?|one-liners?|subject lines?|toast"
    r"|short poem|quick poem|(?:two|2|one|1|three|3|four|4)[- ]line|birthday (?:message|wish)"
    r"|thank[- ]you note|jingles?|short (?:e-?mail|message|note|bio|post|description))\b"
)
_LONG_FORM = _rx(
    r"\b(?:story|stories|essay|article|blog post|chapter|novel|novella|screenplay|speech"
    r"|eulogy|op-ed|newsletter|white ?paper|narrative|saga|epic|sonnet|ballad|press release)\b"
    r"|\b\d{3,5}[- ]words?\b|\b(?:several|multiple|\d+|two|three|four|five) "
    r"(?:paragraphs|pages|chapters|stanzas|verses|scenes|acts)\b|\blong[- ]form\b"
)
_GREETING = _rx(
    r"^\W*(?:hi|hello|hey|hiya|yo|howdy|good (?:morning|afternoon|evening|night)|thanks"
    r"|thank you|thx|ty|cheers|ok(?:ay)?|cool|great|nice|awesome|perfect|bye|goodbye"
    r"|see you|got it|sounds good|lol|haha|how are you|how's it going|what's up|sup"
    r"|you rock|nice work|great job|well done|no worries|that worked|it works|nevermind"
    r"|never mind|sorry|yes|no|sure)\b"
)
_CONVERSION = _rx(
    r"\bconvert\b[^.?!\n]{0,40}\b(?:to|into|in)\b"
    r"|\bhow many \w+(?: \w+)? (?:are )?in (?:a|an|one|\d[\d.,]*)\b"
    r"|\b\d[\d.,]*\s?(?:km|kilometers?|kilometres?|mi|miles?|kg|kilograms?|grams?|lbs?|pounds?"
    r"|°?[cf]|degrees|celsius|fahrenheit|feet|ft|foot|inch(?:es)?|cm|mm|meters?|metres?"
    r"|gb|mb|tb|kb|gib|mib|ml|liters?|litres?|gallons?|cups?|oz|ounces?|mph|km/h|kph"
    r"|hours?|minutes?|seconds?|days?|weeks?|years?|usd|eur|gbp|dollars?|euros?|bytes?"
    r"|bits?)\b[^.?!\n]{0,20}\b(?:in|to|into) \w+"
    r"|\bwhat(?:'s| is) \d[\d.,]*\s*(?:%|percent)?\s*(?:of|times|plus|minus|divided by|[-+*/x])"
    r"\s*\$?\d"
)
_LOOKUP = _rx(
    r"^\W*(?:what|who|when|where|which)(?:'s| is| are| was| were| does| did)\b|^\W*define\b"
    r"|\bwhat does [^?\n]{1,40} (?:stand for|mean)\b|\b(?:capital of|synonyms? (?:of|for)"
    r"|antonyms? (?:of|for)|how do you spell|spelling of|plural of|past tense of"
    r"|meaning of|stand for)\b",
    re.IGNORECASE | re.MULTILINE,
)
_BRIEF = _rx(
    r"\b(?:one|single|1) (?:sentence|word|line)\b|\bbriefly\b|\bshort answer\b"
    r"|\byes or no\b|\bin a few words\b|\bin short\b|\bjust (?:the|give me the)\b"
)
_EDIT = _rx(
    r"\b(?:fix (?:the |my |any )?(?:grammar|typos?|spelling|punctuation)|proofread|rephrase"
    r"|reword|paraphrase|make (?:this|it) (?:sound )?(?:more )?(?:formal|casual|polite"
    r"|concise|friendly|professional|shorter)|sort (?:these|this|the) (?:\w+ )?alphabetically)\b"
)
_INFO_ASK = _rx(
    r"^\W*(?:what|who|when|where|which|how|is|are|can|does|do|should|could|would|why)\b"
    r"|\?\s*$"
)

# --- code cues ------------------------------------------------------------------------------
# Case-sensitive: Python tracebacks, error lines, Java/JS stack frames, compiler errors.
_TRACEBACK = re.compile(
    r"Traceback \(most recent call last\)|^\s*File \"[^\"\n]+\", line \d+"
    r"|^\s+at [\w.$<>]+\(.*\)\s*$|\bpanicked at\b|^error(?:\[E\d+\])?: |^\s*\^{3,}\s*$"
    r"|\bCaused by: ",
    re.MULTILINE,
)
_ERROR_LINE = re.compile(
    r"\b[A-Z]\w*(?:Error|Exception|Warning)\b(?::|\s+at\b)|\bSQLSTATE\b|\bORA-\d{5}\b"
    r"|\bSegmentation fault\b|\berror: \w"
)
_CODE_LINE = re.compile(
    r"^[ \t]*(?:def |class |import |from [\w.]+ import |return\b|for \w+(?:, ?\w+)* in .+:"
    r"|while .+:|if .+:[ \t]*$|elif |else:|try:|except\b|with .+ as \w+:|@\w+|print\("
    r"|SELECT\b|FROM\b|WHERE\b|GROUP BY\b|ORDER BY\b|(?:LEFT |INNER |RIGHT |FULL )?JOIN\b"
    r"|INSERT INTO\b|UPDATE \w+ SET\b|CREATE TABLE\b|#include|public |private |const |let "
    r"|var |function\b|fn |[}\])]+;?[ \t]*$|\w+ = \w+\(|\w+(?:\[[^\]\n]*\])?\s*(?:=|\+=|-=)\s*"
    r"[\w\[\({\"'-]|\w+\.\w+\(.*\)[ \t]*$|[^\n]*;[ \t]*$|>>> )",
    re.MULTILINE,
)
_CODE_STRONG = _rx(
    r"\b(?:python|pandas|numpy|np\.\w+|pd\.\w+|dataframes?|df\.\w+|sql|postgres(?:ql)?|mysql"
    r"|sqlite|bigquery|snowflake|regex|regexp|regular expression|functions?|script|scripts"
    r"|code|snippet|jupyter|notebook|ipython|matplotlib|seaborn|plotly|sklearn|scikit-learn"
    r"|pytorch|torch|tensorflow|keras|xgboost|lightgbm|pyspark|spark|dask|polars|airflow"
    r"|dbt|git|docker|kubernetes|bash|shell|javascript|typescript|java|c\+\+|rust|golang"
    r"|html|css|excel formula|vlookup|pip|conda|virtualenv|venv|api|json|yaml|csv|parquet"
    r"|query|queries|compile|traceback|stack ?trace|exception|bug|unittest|pytest|decorator"
    r"|lambda|list comprehension|dtype|groupby|\.py|\.ipynb)\b"
)
_CODE_WEAK = _rx(
    r"\b(?:columns?|rows?|index|array|list|dict(?:ionary)?|tuple|string|integer|float|loop"
    r"|variable|syntax|import|class|method|module|package|library|merge|pivot|join|datetime"
    r"|timestamp|thread|async|kernel|cuda|gpu|algorithm|recursion|parse|error|null|nan"
    r"|schema|table|database)\b"
)
_CODE_HOWTO = _rx(
    r"\bhow (?:do|can|would) (?:i|you|we)\b|\bwhat(?:'s| is) the (?:syntax|command|function"
    r"|method|flag|option|shortcut|keyword)\b|\bis there a (?:way|function|method|built-?in)\b"
    r"|\bwhat does [^?\n]{1,60} do\b|\bone-?liner\b"
)
_CODE_WRITE = _rx(r"\b(?:write|implement|build|create|generate|code up|make)\b")
_CODE_FIX = _rx(
    r"\b(?:fix|debug|not working|doesn't work|does not work|isn't working|broken|fails?"
    r"|failing|crash\w*|hangs?|throws?|raises?|wrong (?:result|output|answer)|unexpected"
    r"|why (?:does|is|do|am|doesn't|isn't|won't|can't)|getting (?:an? )?\w*\s?error)\b"
)
_CODE_HARD = _rx(
    r"\b(?:optimi[sz]e|vectori[sz]e|speed (?:it |this )?up|faster|slow|performance|memory"
    r"|refactor|review|productioni[sz]e|paralleli[sz]e|scale|concurren\w*|race condition"
    r"|deadlock|leak|profil\w*|benchmark|architecture|migrate)\b"
)

# --- reasoning cues -------------------------------------------------------------------------
_PROOF = _rx(
    r"\b(?:prove|proof|proofs|derive|derivation|theorem|lemma|rigorous(?:ly)?|formally"
    r"|show that|demonstrate that|by induction|contradiction|counterexample)\b"
)
_MATH = _rx(
    r"\b(?:integral|integrate|derivative|differentiat\w*|eigen\w*|matri(?:x|ces)|determinant"
    r"|probability|probabilities|expected value|expectation|variance|covariance"
    r"|bayes(?:ian)?|posterior|likelihood|combinatori\w*|permutations?|how many ways"
    r"|solve for|equations?|inequalit\w*|limit of|converge\w*|lagrang\w*|gradient|hessian"
    r"|closed[- ]form|asymptotic\w*|big-?o|time complexity|recurrence|modulo|primes?"
    r"|irrational|polynomial|logarithm\w*|vector space|linear algebra|calculus|markov"
    r"|stochastic|random variables?|i\.i\.d|independent)\b"
)
_MATH_SYMBOL = re.compile(
    r"[∫∑∏√≤≥≠±∞∂∇πθλμσ]|\b[a-z]\^\d|\^\{|\\frac|\\sum|\\int|\bf\(x\)|\bP\(|\bE\[|\bsqrt\("
    r"|\b\d*[a-z]\s*[+\-]\s*\d+\s*=|\bmod \d"
)
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
_WORD_PROBLEM = _rx(
    r"\b(?:each|per|every|if|how long|how much|how many|how far|what is the probability"
    r"|at what|rate|speed|costs?|remaining|total|left over)\b"
)
_DESIGN = _rx(
    r"\b(?:design|architect\w*|scalab\w*|scale to|trade-?offs?|pros and cons|strateg\w*"
    r"|roadmap|plan (?:for|out|the|a|an)|migration|best approach|which approach"
    r"|which (?:one|option|model|method|tool|database|framework|metric|test) should"
    r"|should (?:i|we) (?:use|choose|go with|pick|switch|migrate|move)|evaluate|critique"
    r"|assess\w*|recommend\w*|best practices?|infrastructure|production[- ]ready|at scale"
    r"|distributed|end[- ]to[- ]end|framework for)\b"
)
_ANALYSIS = _rx(
    r"\b(?:analy[sz]e|analysis|compare|comparison|contrast|versus|vs\.?|implications"
    r"|impact of|root cause|diagnos\w*|investigat\w*|interpret\w*|hypothes[ie]s|causal\w*"
    r"|confound\w*|significan\w*|a/b test\w*|experiment\w*|justify|argue|counterargument"
    r"|weigh|critically)\b"
)
_DEEP = _rx(
    r"\b(?:in detail|in depth|in-depth|detailed|thorough\w*|comprehensive|step[- ]by[- ]step"
    r"|walk me through|deep dive|elaborate|intuition (?:behind|for)|from first principles"
    r"|nuanc\w*|exhaustive)\b"
)
_WHY = _rx(r"(?:^|[.?!]\s+)why\b|\bwhy (?:does|do|is|are|did|would|should|can't|won't"
           r"|isn't|doesn't|am|was|were)\b|\bhow come\b", re.IGNORECASE | re.MULTILINE)  # fmt: skip
_SITUATION = _rx(
    r"\b(?:my|our)\s+(?:\w+\s+){0,2}?(?:model|models|code|data|dataset|query|queries|pipeline"
    r"|network|training|loss|accuracy|results?|experiment|notebook|function|script|job"
    r"|cluster|app|service|tests?|regression|classifier|forecasts?|lstm|cnn|transformer"
    r"|estimates?|metrics?|validation|features?|team|company|startup|system)\b"
)
_ML = _rx(
    r"\b(?:overfit\w*|underfit\w*|regulari[sz]\w*|cross[- ]validation|hyperparameters?"
    r"|learning rate|backprop\w*|lstm|rnn|cnn|transformers?|attention|embeddings?"
    r"|fine[- ]tun\w*|batch ?norm\w*|dropout|vanishing|exploding|convergence|imbalanced"
    r"|leakage|feature (?:engineering|importance|selection)|shap|auc|roc|p-?values?"
    r"|confidence intervals?|heteroscedastic\w*|multicollinear\w*|autocorrelat\w*"
    r"|stationar\w*|arima|bootstrap\w*|instrumental variables?|propensity|mixed[- ]effects?"
    r"|mcmc|variational|bias[- ]variance|drift|calibrat\w*|generali[sz]\w*)\b"
)
_OPINION = _rx(
    r"\b(?:how should (?:i|we)|what(?:'s| is| would be) the best (?:way|approach|strategy)"
    r"|when should (?:i|we)|is it (?:better|worth|a good idea)|would you recommend"
    r"|what would you do)\b"
)

# --- task shape -----------------------------------------------------------------------------
_LIST_ITEM = re.compile(r"^[ \t]*(?:\d{1,2}[.)]|[a-h][.)]|\([a-h1-9]\)|[-*•])[ \t]+\S", re.M)
_SEQUENCE = _rx(r"\b(?:then|after that|also|additionally|finally|next|furthermore|as well as)\b")
_CONSTRAINT = _rx(
    r"\b(?:must|must not|should not|shouldn't|ensure|make sure|edge[- ]cases?|corner cases?"
    r"|requirements?|constraints?|without using|no external|only use|handle|robust"
    r"|thread[- ]safe|idempotent|backwards?[- ]compatib\w*|validat\w*|unit tests?|type hints"
    r"|error handling|efficient\w*|o\(n|under \d+ ?(?:ms|seconds|mb|gb)|production|cite"
    r"|citations?|sources|justify)\b"
)
_LITERARY = _rx(
    r"\b(?:poem|poetry|lyrics|verse|rhym\w*|meter|literary|novel|prose|idiom\w*|puns?"
    r"|wordplay|slang|tone|register|nuanc\w*|cultur\w*|locali[sz]\w*|legal|contract|clause"
    r"|patent|medical|clinical|pharma\w*|regulatory|terminology|glossary|style|voice"
    r"|preserv\w*|keep (?:the )?(?:formatting|markdown|placeholders|variables))\b"
)
_SCHEMA = _rx(
    r"\b(?:nested|schema|array of objects|list of objects|normali[sz]\w*|deduplicat\w*"
    r"|resolve|infer\w*|canonical|relationships?|hierarch\w*|for each|per (?:line|row|item"
    r"|person|entry|record)|every|all of)\b"
)

_WORD = re.compile(r"\S+")


def _words(text: str) -> int:
    """Word count; for long text an O(n) C-level approximation (spaces and newlines)."""
    if len(text) <= 2000:
        count = len(_WORD.findall(text))
    else:
        count = text.count(" ") + text.count("\n") - text.count("  ") + 1
    # Scripts without spaces (CJK) would read as one word: count ~2 characters per word.
    return max(count, len(text) // 7)


def _size(words: int, table: tuple[tuple[int, float], ...]) -> float:
    """Score of a size: the first row whose bound is not below `words`."""
    for bound, score in table:
        if words <= bound:
            return score
    return table[-1][1]


# (upper bound in words, score). Generic requests: a question of one line is usually a
# look-up, a question of a page usually carries context and sub-asks.
_GENERIC_SIZE = (
    (6, -0.9), (15, -0.6), (30, -0.25), (60, 0.15), (120, 0.55), (250, 1.0), (600, 1.5),
    (10**9, 2.0),
)  # fmt: skip
# Summaries: condensing a paragraph is easy; a long document needs the big model to pick
# what matters and not to drop or invent facts.
_SUMMARY_SIZE = (
    (80, -0.8), (150, -0.55), (250, -0.1), (400, 0.7), (800, 1.4), (10**9, 2.0),
)  # fmt: skip
_TRANSLATE_SIZE = (
    (25, -0.8), (60, -0.55), (120, -0.15), (250, 0.6), (10**9, 1.3),
)  # fmt: skip
_EXTRACT_SIZE = (
    (60, -0.65), (150, -0.35), (300, 0.2), (600, 0.8), (10**9, 1.5),
)  # fmt: skip

_BASE = {
    "chat": -0.9,
    "simple_qa": -0.45,
    "summarize": 0.0,
    "translate": -0.3,
    "extract": -0.2,
    "code": 0.0,
    "reasoning": 0.9,
    "creative": 0.0,
}
_DESCRIBE = {
    "chat": "chit-chat",
    "simple_qa": "factual question",
    "summarize": "summary",
    "translate": "translation",
    "extract": "extraction",
    "code": "code request",
    "reasoning": "reasoning task",
    "creative": "creative writing",
}


class _Signals:
    """Complexity evidence: a running score and the labelled contributions behind it."""

    __slots__ = ("items", "neg", "pos")

    def __init__(self) -> None:
        self.items: list[tuple[float, str]] = []
        self.pos = 0.0
        self.neg = 0.0

    def add(self, weight: float, label: str) -> None:
        if weight == 0.0:
            return
        self.items.append((weight, label))
        if weight > 0:
            self.pos += weight
        else:
            self.neg += weight


def _count(pattern: re.Pattern[str], text: str, cap: int) -> int:
    """Matches of `pattern` in `text`, stopping at `cap`."""
    n = 0
    for _ in pattern.finditer(text):
        n += 1
        if n >= cap:
            break
    return n


def _instruction(low: str) -> str:
    """Where the ask is: the whole text if short, else its start and its end."""
    if len(low) <= _HEAD + _TAIL:
        return low
    return low[:_HEAD] + "\n" + low[-_TAIL:]


def _scan(text: str) -> str:
    """The window code and reasoning cues are looked for in."""
    if len(text) <= _SCAN_HEAD + _SCAN_TAIL:
        return text
    return text[:_SCAN_HEAD] + "\n" + text[-_SCAN_TAIL:]


def _confidence(score: float, sig: _Signals) -> float:
    """Map |score| to 0.5..0.97, discounted when strong evidence points both ways."""
    margin = abs(score) - _CONFLICT * min(sig.pos, -sig.neg)
    if margin <= 0:
        return 0.5
    conf = 1.0 / (1.0 + math.exp(-_SLOPE * margin))
    return round(min(conf, _MAX_CONFIDENCE), 3)


def _empty(view: PromptView, tokens: int) -> Classification:
    """Nothing the user wrote to judge: never routed."""
    if view.has_media:
        return Classification("simple_qa", "complex", 0.6, "media without text to judge", tokens)
    return Classification("chat", "complex", 0.5, "no user text found", tokens)


def classify(view: PromptView) -> Classification:
    """Intent and simple/complex of a request, with a confidence and a one-line reason."""
    text = view.last_user
    tokens = -(-max(view.total_chars, len(text) + len(view.system)) // 4)
    if not text or text.isspace():
        return _empty(view, tokens)
    scan = _scan(text)
    low = scan.lower()
    instr = _instruction(low)
    words = _words(text)
    short = len(text) < 600

    # --- code evidence (on the scan window, case-sensitive where case matters) -------------
    fences = scan.count("```") // 2
    traceback = _TRACEBACK.search(scan) is not None
    error_line = traceback or _ERROR_LINE.search(scan) is not None
    code_lines = _count(_CODE_LINE, scan, 60)
    code_kw = min(_count(_CODE_STRONG, instr, 3) + 0.4 * _count(_CODE_WEAK, instr, 4), 3.0)
    artifact = fences > 0 or traceback or code_lines >= 3

    # --- intent -----------------------------------------------------------------------------
    greeting = _GREETING.search(instr) is not None and words <= 12
    creative = _CREATIVE.search(instr) is not None
    proof = _count(_PROOF, low, 3)
    math_kw = _count(_MATH, low, 3)
    math_sym = _count(_MATH_SYMBOL, scan, 3)
    design = _count(_DESIGN, low, 3)
    analysis = _count(_ANALYSIS, low, 3)
    deep = _count(_DEEP, low, 2)
    why = _WHY.search(instr) is not None
    situation = _SITUATION.search(low) is not None
    ml = _count(_ML, low, 3)
    opinion = _OPINION.search(instr) is not None
    conversion = _CONVERSION.search(instr) is not None
    numbers = _count(_NUMBER, low, 6)
    word_problem = (
        numbers >= 3
        and not conversion
        and _count(_WORD_PROBLEM, low, 2) >= 2
        and ("?" in text or "find" in low or "calculate" in low or "compute" in low)
    )

    reasoning_score = (
        1.5 * min(proof, 2)
        + 0.9 * min(math_kw, 2)
        + 0.5 * min(math_sym, 2)
        + 1.0 * word_problem
        + 1.0 * min(design, 2)
        + 0.7 * min(analysis, 2)
        + 0.8 * deep
        + 0.5 * why
        + 0.3 * situation
        + 0.35 * min(ml, 2)
        + 0.6 * opinion
    )
    code_score = 0.0
    if artifact:
        code_score = 2.5
    elif code_kw:
        code_score = code_kw
        if (
            _CODE_HOWTO.search(instr)
            or _CODE_WRITE.search(instr)
            or _CODE_FIX.search(instr)
            or error_line
        ):
            code_score += 0.8

    if _TRANSLATE.search(instr):
        intent = "translate"
    elif _SUMMARIZE.search(instr):
        intent = "summarize"
    elif _EXTRACT.search(instr) and not (artifact and code_kw >= 1 and fences == 0 and short):
        intent = "extract"
    elif creative and code_score < 2.0:
        intent = "creative"
    elif code_score >= 1.0 and code_score >= reasoning_score:
        intent = "code"
    elif reasoning_score >= 0.9:
        intent = "reasoning"
    elif greeting and not _INFO_ASK.search(instr[len(instr) // 2 :] if words > 6 else ""):
        intent = "chat"
    elif words <= 3 and "?" not in text and not code_kw:
        intent = "chat"
    else:
        intent = "simple_qa"

    # --- complexity -------------------------------------------------------------------------
    sig = _Signals()
    sig.add(_PRIOR, "")
    sig.add(_BASE[intent], "")
    payload_task = intent in ("summarize", "translate", "extract")
    # In a summary/translation/extraction the cues may be words of the handed-over text.
    cue_weight = 0.5 if payload_task else 1.0

    if intent == "summarize":
        sig.add(_size(words, _SUMMARY_SIZE), f"text to summarize is {words} words")
    elif intent == "translate":
        sig.add(_size(words, _TRANSLATE_SIZE), f"text to translate is {words} words")
        literary = _count(_LITERARY, instr, 2)
        if literary:
            sig.add(0.7 * literary, "literary, technical or tone-sensitive translation")
    elif intent == "extract":
        sig.add(_size(words, _EXTRACT_SIZE), f"source text is {words} words")
        schema = _count(_SCHEMA, instr, 2)
        if schema:
            sig.add(0.45 * schema, "structured output with nesting or normalisation")
    elif intent == "creative":
        if _LONG_FORM.search(instr):
            sig.add(1.2, "long-form writing")
        elif _SHORT_FORM.search(instr):
            sig.add(-0.7, "short-form piece")
        size = _size(words, _GENERIC_SIZE)
        sig.add(size if size > 0 else 0.5 * size, f"{words}-word request")
    else:
        size = _size(words, _GENERIC_SIZE)
        if intent == "reasoning" and size < 0:
            # A short question can hide a hard problem ("Prove that sqrt(2) is irrational."):
            # brevity is no evidence of simplicity once reasoning cues are present.
            size = 0.0
        label = f"short message ({words} words)" if size < 0 else f"long message ({words} words)"
        sig.add(size, label)

    # Code.
    if traceback:
        sig.add(1.4, "stack trace to debug")
    elif error_line:
        sig.add(0.6, "error message to diagnose")
    if fences or code_lines >= 3:
        if code_lines >= 40:
            sig.add(1.4, f"{code_lines}+ lines of code")
        elif code_lines >= 12:
            sig.add(0.9, f"{code_lines} lines of code")
        else:
            sig.add(0.4, "code snippet")
    if intent == "code":
        if _CODE_HARD.search(instr):
            sig.add(0.9, "optimisation, review or refactoring")
        if _CODE_FIX.search(instr) and not traceback:
            sig.add(0.5, "debugging")
        if _CODE_WRITE.search(instr) and not _CODE_HOWTO.search(instr):
            sig.add(0.35, "code to write")
        if _CODE_HOWTO.search(instr) and not artifact:
            sig.add(-0.35, "how-to question")

    # Reasoning.
    if proof:
        sig.add(cue_weight * 1.5 * min(proof, 2), "proof or derivation")
    if math_kw or math_sym:
        sig.add(cue_weight * min(0.6 * math_kw + 0.4 * math_sym, 1.4), "mathematics")
    if word_problem:
        sig.add(0.9, "multi-step word problem")
    if design:
        sig.add(cue_weight * min(0.9 * design, 1.5), "design or strategy question")
    if analysis:
        sig.add(cue_weight * min(0.6 * analysis, 1.1), "analysis or comparison")
    if deep:
        sig.add(cue_weight * 0.9 * deep, "asks for depth or step-by-step")
    if why:
        sig.add(cue_weight * 0.45, "asks why")
    if situation and (why or intent in ("code", "reasoning")):
        sig.add(0.5, "diagnosis of the user's own setup")
    if ml:
        sig.add(cue_weight * min(0.4 * ml, 0.8), "ML/statistics methodology")
    if opinion:
        sig.add(0.5, "asks for judgement")

    # Several asks in one message, explicit constraints.
    if not payload_task or len(text) < 1500:
        items = _count(_LIST_ITEM, scan, 8)
        if items >= 3:
            sig.add(0.9 if items >= 5 else 0.6, f"{items} listed items or asks")
        questions = scan.count("?")
        if questions >= 3:
            sig.add(0.8, f"{questions} questions in one message")
        elif questions == 2:
            sig.add(0.3, "two questions")
        if _count(_SEQUENCE, low, 3) >= 2:
            sig.add(0.35, "sequenced steps")
    constraints = _count(_CONSTRAINT, low, 5)
    if constraints >= 4:
        sig.add(cue_weight * 1.1, f"{constraints} explicit constraints")
    elif constraints >= 2:
        sig.add(cue_weight * 0.55, f"{constraints} explicit constraints")

    # Simple cues (only meaningful in a short message).
    if short:
        if greeting:
            sig.add(-0.6, "greeting or thanks")
        if conversion:
            sig.add(-0.6, "unit conversion or arithmetic")
        if _LOOKUP.search(instr):
            sig.add(-0.35, "look-up question")
        if _BRIEF.search(instr):
            sig.add(-0.25, "asks for a brief answer")
        if _EDIT.search(instr):
            sig.add(-0.5, "light rewrite")

    # Context around the turn.
    system_chars = len(view.system)
    if system_chars > 3000:
        sig.add(1.0, f"long system prompt ({system_chars} chars)")
    elif system_chars > 1200:
        sig.add(0.5, f"long system prompt ({system_chars} chars)")
    elif system_chars > 400:
        sig.add(0.15, "detailed system prompt")
    if view.turns > 10:
        sig.add(0.6, f"long conversation ({view.turns} turns)")
    elif view.turns > 4:
        sig.add(0.3, f"conversation of {view.turns} turns")
    context = view.total_chars - len(text) - system_chars
    if context > 24000:
        sig.add(1.0, f"large context ({context} chars before this turn)")
    elif context > 6000:
        sig.add(0.5, f"sizeable context ({context} chars before this turn)")
    if view.has_media:
        sig.add(0.5, "image or file attached")

    score = sig.pos + sig.neg
    complexity = "complex" if score > 0 else "simple"
    confidence = _confidence(score, sig)
    return Classification(
        intent, complexity, confidence, _reason(intent, complexity, words, sig), tokens
    )


def _reason(intent: str, complexity: str, words: int, sig: _Signals) -> str:
    """One readable line: the task, then the strongest signals behind the verdict."""
    head = f"{_DESCRIBE[intent]} ({words} words)"
    if complexity == "complex":
        cues = sorted((w, label) for w, label in sig.items if w > 0 and label)
        cues.reverse()
        if not cues:
            return f"{head}: no clear sign of a simple request"
        return f"{head}: " + "; ".join(label for _, label in cues[:3])
    cues = sorted((w, label) for w, label in sig.items if w < 0 and label)
    against = [label for w, label in sig.items if w > 0.3 and label]
    text = f"{head}: " + ", ".join(label for _, label in cues[:2]) if cues else head
    if against:
        return f"{text}; despite {against[0]}"
    return f"{text}, no code or multi-step cues"


def classify_body(body: Mapping | None) -> Classification:
    """Classify a request body of any wire (prompt_view, then classify)."""
    return classify(prompt_view(body))
