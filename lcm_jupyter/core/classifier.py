"""A fast, deterministic request classifier: what the user asks for, and is it simple.

Auto routing sends a call one step down the provider's model ladder when the request is
simple enough that the small model answers it as well as the large one. Routing a hard
request down is the costly mistake (a worse answer for a real user); not routing an easy
one only forgoes a saving. So the classifier must see positive evidence of simplicity
before it is confident: every signal adds to a complexity score, the score starts on the
complex side, brevity alone is weak evidence, and conflicting evidence lowers the
confidence.

Signals, read from the last user turn (plus the sizes of the system prompt and of the
conversation): its length; code (fences, code-shaped lines, error messages, tracebacks);
reasoning cues (proofs, maths, design, comparison, critique, "why", "step by step", a
judgement asked for, statistics/ML methodology beyond a definition, the user's own setup
to diagnose); several asks in one message; explicit constraints; and the payload size
of summaries, translations and extractions, whose difficulty grows with the text handed
over. Simple cues (greetings, look-ups, unit conversions, tool how-tos, short rewrites,
short-form writing) pull the other way.

Stdlib only, no model. The text is lower-cased and split into word tokens once (C-level
`str.translate` and `split`); cues are set intersections and phrase look-ups in the
space-joined tokens, plus a few anchored regular expressions for code shape. Cues are
read from bounded windows of the text, so a 100 kB prompt costs about what a 5 kB one
does.
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


# --- tuning constants -------------------------------------------------------------------------

# Complexity score: > 0 is complex. It starts on the complex side so that a prompt with no
# evidence either way is judged complex, with low confidence, and is not routed.
_PRIOR = 0.15
# Slope of the |score| -> confidence curve: 0.5 -> 0.70, 1.0 -> 0.85, 2.0 -> 0.97.
_SLOPE = 1.75
_MAX_CONFIDENCE = 0.97  # rules never deserve certainty
# Share of the smaller of the positive and negative evidence taken off |score|: a short
# message that also asks for a proof is a case to be unsure about.
_CONFLICT = 0.3

# Windows. The ask is nearly always at the start or the end of a message (an
# instruction then a pasted document, or a document then "summarize the above"): intent
# is read there. Cues are read from a larger window; past it the size signal decides.
_INSTR_HEAD, _INSTR_TAIL = 400, 300
_CUE_HEAD, _CUE_TAIL = 1500, 500
_CODE_HEAD, _CODE_TAIL = 4000, 1500

# ASCII punctuation becomes a word break: "what's" -> "what s", "step-by-step" ->
# "step by step", "a/b" -> "a b", "t-test" -> "t test". Phrases below are written so.
_BREAKS = {c: " " for c in range(128) if not chr(c).isalnum()}


def _vocab(text: str) -> frozenset[str]:
    """A set of words written as one space-separated string."""
    return frozenset(text.split())


class _Cue:
    """A cue vocabulary: single words as a set, phrases indexed by their first word."""

    __slots__ = ("firsts", "phrases", "words")

    def __init__(self, *entries: str) -> None:
        words: set[str] = set()
        phrases: dict[str, list[str]] = {}
        for entry in entries:
            for item in entry.split(","):
                item = " ".join(item.split())
                if not item:
                    continue
                if " " in item:
                    # Padded with spaces: matches whole words of the space-joined tokens.
                    phrases.setdefault(item.split()[0], []).append(f" {item} ")
                else:
                    words.add(item)
        self.words = frozenset(words)
        self.phrases = {first: tuple(group) for first, group in phrases.items()}
        # Only phrases whose first word occurs in the text are looked for: a set
        # intersection replaces most substring searches.
        self.firsts = frozenset(self.phrases)


class _Text:
    """One window of the message, tokenized once: its word set and space-joined tokens."""

    __slots__ = ("joined", "tokens", "words")

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.words = frozenset(tokens)
        self.joined = " " + " ".join(tokens) + " "

    def count(self, cue: _Cue) -> int:
        """Distinct words and phrases of `cue` present."""
        n = len(cue.words & self.words)
        for first in cue.firsts & self.words:
            for phrase in cue.phrases[first]:
                if phrase in self.joined:
                    n += 1
        return n

    def has(self, cue: _Cue) -> bool:
        """Whether any word or phrase of `cue` is present."""
        if not cue.words.isdisjoint(self.words):
            return True
        for first in cue.firsts & self.words:
            for phrase in cue.phrases[first]:
                if phrase in self.joined:
                    return True
        return False

    def phrase(self, cue: _Cue) -> bool:
        """Whether any phrase (not single word) of `cue` is present."""
        for first in cue.firsts & self.words:
            for phrase in cue.phrases[first]:
                if phrase in self.joined:
                    return True
        return False


# --- vocabularies -------------------------------------------------------------------------------
_LANGS = _vocab(
    "english french spanish german italian portuguese dutch swedish norwegian danish finnish "
    "polish czech slovak hungarian romanian greek turkish russian ukrainian arabic hebrew "
    "persian farsi hindi bengali urdu tamil japanese chinese mandarin cantonese korean "
    "vietnamese thai indonesian malay tagalog swahili catalan latin"
)
_TRANSLATE = _Cue(
    "translate, translated, translates, translating, translation, translations",
    "how do you say, how do i say, how would you say, how would i say, how to say",
)
_LANG_NOUNS = frozenset({"word", "words", "translation", "equivalent", "version", "term"})
_SUMMARIZE = _Cue(
    "summary, summaries, summarize, summarise, summarized, summarised, summarizing, "
    "summarising, summarization, tldr, recap, condense, gist",
    "tl dr, key points, main points, key takeaways, main takeaways, main ideas, "
    "key findings, main themes, boil it down, boil this down, in a nutshell, shorten this",
)
_EXTRACT = _Cue(
    "extract, extracts, extracted, extracting, extraction, sentiment",
    "pull out, parse out, named entities, named entity, structured data, structured output, "
    "fill in the, classify this, categorize this, tag this",
)
_EXTRACT_VERBS = _vocab("list find get identify pull give")
_EXTRACT_ALL = _vocab("all every each")
_EXTRACT_NOUNS = _vocab(
    "names name dates date emails email addresses address amounts amount entities numbers "
    "phone urls links people persons companies company organizations organisations products "
    "skus ids prices figures mentions locations values"
)
_JSON = frozenset({"json", "yaml"})
_JSON_VERBS = frozenset({"return", "output", "as", "into", "format", "fields"})
_CREATIVE_VERBS = _Cue(
    "write, compose, draft, create, craft, generate, brainstorm, suggest, pen, tell",
    "come up with, give me, make up",
)
_CREATIVE_NOUNS = _vocab(
    "poem poems haiku haikus limerick limericks sonnet sonnets verse verses couplet couplets "
    "ode rhyme rhymes story stories tale tales fable fables song songs lyrics rap jingle "
    "joke jokes pun puns riddle riddles slogan slogans tagline taglines motto mottos caption "
    "captions tweet tweets headline headlines title titles name names essay essays blog "
    "article articles speech toast eulogy screenplay dialogue monologue scene chapter novel "
    "bio card note letter newsletter post email message announcement pitch description "
    "copy storyboard keynote"
)
_SHORT_FORM = _Cue(
    "haiku, haikus, limerick, limericks, couplet, slogan, slogans, tagline, taglines, motto, "
    "caption, captions, tweet, tweets, headline, headlines, title, titles, name, names, joke, "
    "jokes, pun, puns, riddle, toast, jingle",
    "short poem, quick poem, one liner, subject line, two line, 2 line, one line, "
    "birthday message, thank you note, short message, short email, short note, short bio, "
    "out of office",
)
_LONG_FORM = _Cue(
    "story, stories, essay, article, blog, chapter, novel, novella, screenplay, speech, "
    "keynote, eulogy, newsletter, whitepaper, narrative, saga, sonnet, ballad, storyboard",
    "op ed, press release, white paper, long form",
)
_LONG_SIZE = re.compile(
    r"\b\d[\d,]{2,5}[- ]words?\b|\b(?:several|multiple|\d+|three|four|five|six) "
    r"(?:paragraphs|pages|chapters|stanzas|verses|scenes|acts)\b|\b\d+ minutes? (?:spoken|long)"
)
_GREETING = _vocab(
    "hi hello hey hiya yo howdy thanks thank thx ty cheers ok okay cool great nice awesome "
    "perfect bye goodbye lol haha sorry sure np morning afternoon evening"
)
_GREETING_PHRASES = _Cue(
    "good morning, good afternoon, good evening, how are you, how s it going, what s up, "
    "see you, got it, sounds good, never mind, nevermind, that worked, it works, well done, "
    "great job, nice work, you rock"
)
_META = _Cue(
    "from now on, are you there, ignore my last, ignore that, my last message, wrong cell, "
    "can you help, you recommended, you said, you mentioned, you suggested, earlier you, "
    "what did you, our conversation, conversation so far, you wrote"
)
_CONTINUE = _Cue(
    "continue, proceed, more, next, finish, again",
    "go on, keep going, carry on, go ahead, the rest, do it, yes please",
)

_CODE_STRONG = _Cue(
    "python, pandas, numpy, np, pd, dataframe, dataframes, df, sql, postgres, postgresql, "
    "mysql, sqlite, bigquery, snowflake, regex, regexp, function, functions, script, "
    "scripts, snippet, jupyter, notebook, notebooks, ipython, matplotlib, seaborn, plotly, "
    "sklearn, scikit, pytorch, torch, tensorflow, keras, pyspark, spark, dask, polars, "
    "airflow, dbt, git, github, docker, kubernetes, bash, shell, javascript, typescript, "
    "java, golang, html, css, vlookup, pip, conda, virtualenv, venv, api, json, yaml, csv, "
    "parquet, query, queries, compile, traceback, stacktrace, exception, bug, unittest, "
    "pytest, decorator, lambda, dtype, groupby, py, ipynb, streamlit, asyncio, aiohttp, "
    "sqlalchemy, loc, iloc, fillna, dropna, astype, concat, apply, dict, cell, cells, dplyr",
    "regular expression, list comprehension, stack trace, excel formula, f string, "
    "data frame, for loop",
)
_CODE_WEAK = _Cue(
    "code, column, columns, row, rows, index, array, arrays, list, tuple, string, strings, "
    "integer, float, loop, variable, syntax, import, class, method, module, package, "
    "library, merge, pivot, join, datetime, timestamp, thread, async, kernel, cuda, gpu, "
    "algorithm, recursion, parse, error, null, nan, schema, table, database, print, "
    "install, version, plot, figure, environment, commit, file, files"
)
_CODE_HOWTO = _Cue(
    "how do i, how can i, how do you, how to, what s the syntax, what is the syntax, "
    "what s the command, what is the command, what s the function, what is the function, "
    "is there a way, is there a function, is there a built in, one liner, shortcut, "
    "what does this do, quick example, give me the sql, give me an example"
)
_CODE_WRITE = _vocab("write implement build create generate make convert rewrite port")
_CODE_FIX = _Cue(
    "fix, debug, broken, fails, fail, failing, crash, crashes, crashed, hangs, throws, raises, "
    "wrong, unexpected, nan",
    "not working, doesn t work, does not work, isn t working, why does, why is, why do, "
    "getting an error, getting this, i get",
)
_CODE_HARD = _Cue(
    "optimize, optimise, optimizing, optimization, vectorize, vectorise, faster, slow, slower, "
    "performance, memory, refactor, review, productionize, parallelize, parallelise, "
    "concurrency, concurrent, deadlock, leak, profile, profiling, benchmark, architecture, "
    "migrate, reproducible, reproducibility, scale, skew, distributed",
    "speed up, race condition",
)

_PROOF = _Cue(
    "prove, proves, proving, proof, proofs, derive, derivation, derivations, rigorous, "
    "rigorously, formally, induction, contradiction, counterexample",
    "show that, demonstrate that",
)
_MATH = _Cue(
    "integral, integrals, integrate, derivative, derivatives, differentiate, eigenvalue, "
    "eigenvalues, eigenvector, eigenvectors, determinant, probability, probabilities, "
    "expectation, variance, covariance, bayes, bayesian, posterior, likelihood, "
    "combinatorics, combinatorial, permutation, permutations, equation, equations, "
    "inequality, inequalities, converge, convergence, converges, lagrange, lagrangian, "
    "gradient, hessian, asymptotic, asymptotically, recurrence, modulo, irrational, "
    "polynomial, logarithm, logarithmic, calculus, markov, stochastic, iid, estimator, "
    "estimators, unbiased, dice, marbles, theorem, lemma, eigen",
    "expected value, expected number, how many ways, solve for, limit of, closed form, big o, "
    "time complexity, vector space, linear algebra, random variable, random variables, "
    "fair coin, fair die, deck of cards, in a row, without replacement",
)
_WORD_PROBLEM = _Cue(
    "each, per, every, if, rate, speed, cost, costs, remaining, total, save, saves",
    "how long, how much, how many, how far, what is the probability, at what",
)
_DESIGN = _Cue(
    "design, designing, architect, architecture, architectures, scalable, scalability, "
    "tradeoff, tradeoffs, strategy, strategies, roadmap, migration, evaluate, evaluation, "
    "critique, assess, assessment, recommend, recommendation, recommendations, "
    "infrastructure, distributed, propose, plan",
    "trade off, trade offs, pros and cons, scale to, best approach, which approach, "
    "best practice, best practices, production ready, at scale, end to end, framework for, "
    "should we use, should i use, should we choose, should i choose, should we go with, "
    "should we switch, should we migrate, which one should, which model should, "
    "which should, should we deploy, should we ship, what to ship",
)
_ANALYSIS = _Cue(
    "analyze, analyse, analyzing, analysing, compare, comparing, comparison, contrast, "
    "versus, vs, implications, diagnose, diagnosing, investigate, interpret, interpreting, "
    "interpretation, hypothesis, hypotheses, causal, causality, confounder, confounders, "
    "confounding, significance, experiment, justify, argue, counterargument, "
    "counterarguments, weigh, critically, discuss, attribution, persuasive",
    "impact of, root cause, a b test, statistically significant",
)
_DEEP = _Cue(
    "detailed, thorough, thoroughly, comprehensive, elaborate, exhaustive, nuanced",
    "in detail, in depth, step by step, walk me through, deep dive, intuition behind, "
    "intuition for, from first principles, show the calculation, show your work, "
    "explain each step, justify each step",
)
_EXPLAIN = _Cue(
    "explain why, explain how, explain the intuition, explain the reasoning, "
    "explain precisely, explain what could, help me build the argument, help me understand why"
)
_CRITIQUE = _Cue(
    "assumptions, pitfalls, caveats, limitations, riskiest, weaknesses, flaw, flaws, "
    "consequences, wrong",
    "what s wrong with, what is wrong with, failure modes, how is that possible, "
    "how can that be, doesn t make sense, what could cause, what could explain, "
    "what would cause, what are the risks, what does that mean for, what could be causing, "
    "where would you start, what else would you",
)
_OPINION = _Cue(
    "how should i, how should we, what s the best way, what is the best way, "
    "what s the best approach, what is the best approach, what would be the best, "
    "when should i, when should we, is it better, is it worth, is it a good idea, "
    "would you recommend, what would you do, what would you try, what would you suggest, "
    "how would you, what should i, what should we, which would you, is it valid, "
    "is it ok to, is it okay to, does it make sense, which would you pick, "
    "what are my options, what are the options, would you pick, should our, whether we, "
    "whether to, whether i, issues with, problems with, is it ethical, is it fair",
    "decide, rank, prioritize, prioritise, reconcile, ethical, ethics, convince",
)
_JUDGE_HOWTO = _vocab(
    "know choose decide pick determine detect interpret evaluate handle deal approach "
    "design justify measure estimate validate select tell compare explain convince "
    "prioritize structure figure"
)
_HOW_SUBJECT = frozenset({"i", "we", "you"})
_SITUATION = re.compile(
    r" (?:my|our) (?:\w+ ){0,2}?(?:model|models|code|data|dataset|query|queries|pipeline|"
    r"network|training|loss|accuracy|results?|experiment|notebook|function|script|job|jobs|"
    r"cluster|app|service|tests?|suite|regression|classifier|forecasts?|lstm|cnn|"
    r"transformer|estimates?|metrics?|validation|features?|team|company|system|forest|"
    r"curves?|survey|dag|warehouse|dashboard|kernel|predictions?|coefficients?|bill|"
    r"conversion|churn|revenue|users|customers|spark|gpu|loop)s? "
    r"| (?:i m|i am|we re|we are|i ve|we ve) (?:training|building|fitting|running|"
    r"deploying|seeing|getting|choosing|trying|using) "
)
_ML = _Cue(
    "overfit, overfits, overfitting, underfit, underfitting, regularization, "
    "regularisation, hyperparameter, hyperparameters, backprop, backpropagation, lstm, rnn, "
    "cnn, transformer, transformers, attention, embedding, embeddings, finetune, finetuning, "
    "dropout, vanishing, exploding, convergence, imbalanced, leakage, shap, auc, roc, "
    "heteroscedasticity, multicollinearity, collinear, autocorrelation, stationary, "
    "stationarity, arima, sarima, bootstrap, bootstrapping, propensity, mcmc, variational, "
    "drift, calibration, calibrated, generalization, generalisation, estimator, unbiased, "
    "consistent, smote, bert, classifier, logistic, kmeans, clusters, clustering, survival, "
    "cox, hausman, anova, wilcoxon, kruskal, whitney, f1, precision, recall, xgboost, "
    "lightgbm, catboost, relu, softmax, churn, forecasting, "
    "forecast, seasonality, coefficients, importance, cohort, retention, pca, svd, tsne, "
    "umap, normalization, standardization, imputation, outliers, stratified, resampling, "
    "predict, predicting, prediction, predictions, predictive",
    "cross validation, learning rate, fine tune, fine tuning, batch norm, batch normalization, "
    "feature engineering, feature importance, feature selection, p value, p values, "
    "confidence interval, confidence intervals, instrumental variable, mixed effects, "
    "fixed effects, random effects, bias variance, time series, t test, k means, log rank, "
    "random forest, gradient boosting, sample size, effect size, multiple comparisons, "
    "test set, validation set, label leakage, target encoding",
)

_SEQUENCE = _Cue(
    "then, also, additionally, finally, next, furthermore", "after that, as well as, and then"
)
_CONSTRAINT = _Cue(
    "must, ensure, requirements, requirement, constraints, constraint, robust, idempotent, "
    "validate, validation, efficient, efficiently, production, cite, citations, justify, "
    "handle, handles, handling, strictly, exact, precisely, correctly, properly",
    "must not, should not, shouldn t, make sure, edge case, edge cases, corner case, "
    "corner cases, without using, no external, only use, thread safe, backward compatible, "
    "backwards compatible, unit test, unit tests, type hints, error handling, o 1, o n, "
    "don t lose, keep the, as far as possible",
)
_LITERARY = _Cue(
    "poem, poetry, lyrics, verse, rhyme, rhymes, meter, literary, novel, prose, idiom, "
    "idioms, idiomatic, pun, puns, wordplay, slang, tone, register, nuance, nuances, "
    "cultural, culturally, localize, localise, localization, adapt, legal, contract, clause, "
    "patent, medical, clinical, pharmaceutical, regulatory, terminology, glossary, style, "
    "voice, preserve, placeholders, markdown, formatting, documentation, humour, humor, "
    "newspaper, audience, privacy, policy, compliance, gdpr, agreement, terms",
)
_SCHEMA = _Cue(
    "nested, schema, normalize, normalise, normalizing, deduplicate, deduplicated, resolve, "
    "resolving, infer, inferred, canonical, relationships, hierarchy, hierarchical, triples, "
    "graph, table, comparison, duplicates",
    "array of objects, list of objects, for each, per line, per row, per item, per person",
)

_LOOKUP = _Cue(
    "define, definition, synonym, synonyms, antonym, antonyms, pronounce, acronym, abbreviation",
    "stand for, stands for, capital of, how do you spell, plural of, past tense of, "
    "meaning of, what year, what time, which year, how old, how tall, how big, how far is, "
    "what is the formula, what s the formula, what is the default, what s the default",
)
_WH = frozenset({"what", "who", "when", "where", "which"})
_WH_VERB = frozenset({"is", "s", "are", "was", "were"})
_HOW_QTY = frozenset({"many", "much", "long", "far", "old", "big"})
_CLOSED = frozenset({"is", "are", "was", "were", "does", "do", "did", "can"})
_NOT_TERMS = frozenset({"that", "this", "it", "these", "those"})
# A look-up is impersonal and definitional. The user's own situation ("the smallest sample
# I need"), a way or a best to be found, a judgement ("wrong", "good") or a puzzle make a
# "what is ..." question a problem to solve.
_NOT_LOOKUP = _vocab(
    "i my me we our us way ways approach method methods strategy best better worse fastest "
    "cheapest optimal minimum maximum smallest largest good bad wrong ideal efficient "
    "should would could next here"
)
_BRIEF = _Cue(
    "briefly",
    "one sentence, one word, one line, single sentence, in a few words, in short, "
    "short answer, yes or no, two sentences, 2 sentences, in a sentence, quick one, "
    "few words",
)
_EDIT = _Cue(
    "proofread, rephrase, reword, paraphrase, alphabetically",
    "fix the grammar, fix grammar, fix my grammar, fix the typos, fix typos, fix the spelling, "
    "more formal, more polite, less harsh, more concise, more friendly, more professional, "
    "sort these, make this sound",
)
_CONVERSION = re.compile(
    r"\bconvert\b[^.?!\n]{0,40}\b(?:to|into|in)\b"
    r"|\bhow many \w+(?: \w+)? (?:are )?in (?:a|an|one|\d[\d.,]*)\b"
    r"|\b\d[\d.,]*\s?(?:km|kilometers?|kilometres?|mi|miles?|kg|kilograms?|grams?|lbs?|pounds?"
    r"|°?[cf]|degrees|celsius|fahrenheit|feet|ft|foot|inch(?:es)?|cm|mm|meters?|metres?"
    r"|gb|mb|tb|kb|gib|mib|ml|liters?|litres?|gallons?|cups?|oz|ounces?|mph|km/h|kph"
    r"|usd|eur|gbp|dollars?|euros?|bytes?|bits?)\b[^.?!\n]{0,20}\b(?:in|to|into) \w+"
    r"|\bwhat(?:'s| is) (?:\d[\d.,]*\s*(?:%|percent)?\s*(?:of|times|plus|minus|divided by"
    r"|[-+*/x])\s*\$?\d|the square root of|\d+ to the power)"
)
_WH_COUNT = (" what ", " why ", " how ", " when ", " which ", " whether ")

# --- code and maths shape (raw text; substring guards first, most prompts have none) ---------
_TRACEBACK_MARKS = ("Traceback (most recent call last)", "panicked at", "Caused by: ", "error[E")
# Line patterns start with a literal "\n" (the text is wrapped in newlines) rather than "^"
# under MULTILINE: the regex engine then jumps from line break to line break.
_TRACEBACK_FRAME = re.compile(
    r'\n[ \t]*File "[^"\n]+", line \d+|\n[ \t]+at [\w.$<>]+\([^\n]*\)[ \t]*(?=\n)|\nerror: '
)
# Error lines by root: a root is looked for first, its precise forms only if it is there.
_ERROR_MARKS = (
    ("rror", ("Error:", "Error at ")),
    ("xception", ("Exception:", "Exception at ")),
    ("ERR", ("ERROR ", "ERROR:", "ERROR-", "npm ERR!")),
    ("SQLSTATE", ()),
    ("ORA-", ()),
    ("Segmentation fault", ()),
    ("FAILED", ()),
)
_CODE_LINE = re.compile(
    r"\n[ \t]*(?:def |class |import |from [\w.]+ import |return\b|for \w+(?:, ?\w+)* in .+:"
    r"|while .+:|if .+:[ \t]*(?=\n)|elif |else:|try:|except\b|with .+ as \w+:|@\w+|print\("
    r"|SELECT\b|FROM\b|WHERE\b|GROUP BY\b|ORDER BY\b|(?:LEFT |INNER |RIGHT |FULL )?JOIN\b"
    r"|INSERT INTO\b|UPDATE \w+ SET\b|CREATE TABLE\b|#include|const |let |var |library\("
    r"|\w+ = \w+\(|\w+(?:\[[^\]\n]*\])?[ \t]*(?:=|\+=|-=|<-)[ \t]*[\w\[\({\"'-]"
    r"|\w+\.\w+\([^\n]*\)[ \t]*(?=\n)|>>> )"
)
# Lines ending in ";" (C-like languages, SQL) or a dplyr pipe are counted with str.count.
_CODE_LINE_ENDS = (";\n", "%>%\n")
_LIST_ITEM = re.compile(r"\n[ \t]*(?:\d{1,2}[.)]|[a-h][.)]|\([a-h1-9]\)|[-*\u2022])[ \t]+\S")
_MATH_CHARS = frozenset("∫∑∏√≤≥≠±∞∂∇πθλμσ")
_EQUATION = re.compile(r"\d*[a-z][ \t]*[-+*/^][ \t]*\d+[^=\n]{0,20}=")
_MATH_CALL = re.compile(r"\b(?:f\(x\)|p\([a-z]|e\[[a-z]|sqrt\()")
_NUMBER_TOKEN = re.compile(r" \d")
_FENCED = re.compile(r"```.*?(?:```|$)", re.DOTALL)

# (upper bound in words, score). Brevity is weak evidence: a one-line question can hide a
# hard problem; a page of text usually carries context and sub-asks.
_GENERIC_SIZE = (
    (6, -0.5), (15, -0.35), (30, -0.1), (60, 0.2), (120, 0.55), (250, 1.0), (600, 1.5),
    (10**9, 2.0),
)  # fmt: skip
# Payload tasks: condensing a paragraph is easy; a long document needs the big model to
# pick what matters without dropping or inventing facts. Same for extraction. Faithful
# transformations (translation, proofreading) stay easy longer.
_SUMMARY_SIZE = ((80, -0.8), (150, -0.55), (250, -0.1), (400, 0.7), (800, 1.4), (10**9, 2.0))
_TRANSLATE_SIZE = ((25, -0.8), (60, -0.55), (120, -0.15), (250, 0.6), (10**9, 1.3))
_EXTRACT_SIZE = ((60, -0.65), (150, -0.35), (300, 0.2), (600, 0.8), (10**9, 1.5))

_BASE = {
    "chat": -0.6,
    "simple_qa": -0.3,
    "summarize": 0.0,
    "translate": -0.2,
    "extract": -0.1,
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

    def add(self, weight: float, label: str = "") -> None:
        if weight > 0:
            self.pos += weight
        elif weight < 0:
            self.neg += weight
        else:
            return
        if label:
            self.items.append((weight, label))


def _tokens(text: str) -> list[str]:
    """Lower-cased word tokens (ASCII punctuation breaks words)."""
    return text.lower().translate(_BREAKS).split()


def _text(text: str) -> _Text:
    """A window of text, tokenized."""
    return _Text(_tokens(text))


def _words(text: str) -> int:
    """Word count; for long text an O(n) C-level approximation (spaces and newlines)."""
    if len(text) <= 600:
        count = len(text.split())
    else:
        # Word breaks counted in C: splitting a long text into strings costs more than
        # all the rest of the classification.
        count = text.count(" ") + text.count("\n") - text.count("  ") + 1
    # Scripts without spaces (CJK) would read as one word: count ~7 characters per word.
    return max(count, len(text) // 7)


def _size(words: int, table: tuple[tuple[int, float], ...]) -> float:
    """Score of a size: the first row whose bound is not below `words`."""
    for bound, score in table:
        if words <= bound:
            return score
    return table[-1][1]


def _window(text: str, head: int, tail: int) -> str:
    """The whole text if short, else its start and its end."""
    if len(text) <= head + tail:
        return text
    return text[:head] + "\n" + text[-tail:]


_ASK_STOPS = (":", "\n", "? ", " '", ' "', " \u201c")


def _ask_part(text: str) -> str:
    """The instruction around a handed-over text: its first line (to a colon) and last line."""
    head = text[:300]
    # The handed-over text starts after a colon, a line break, a question, or a quote.
    for stop in _ASK_STOPS:
        cut = head.find(stop)
        if cut > 0:
            head = head[:cut]
    tail = text[-300:].rstrip()
    cut = tail.rfind("\n")
    tail = tail[cut + 1 :] if cut >= 0 else ""
    return head if not tail or tail in head else head + "\n" + tail


def _confidence(score: float, sig: _Signals) -> float:
    """Map |score| to 0.5..0.97, discounted when strong evidence points both ways."""
    margin = abs(score) - _CONFLICT * min(sig.pos, -sig.neg)
    if margin <= 0:
        return 0.5
    conf = 1.0 / (1.0 + math.exp(-_SLOPE * margin))
    return round(min(conf, _MAX_CONFIDENCE), 3)


def _translation_ask(instr: _Text) -> bool:
    """'translate ...', 'how do you say ...', '... in French?', 'the German word for ...'."""
    if instr.has(_TRANSLATE):
        return True
    if _LANGS.isdisjoint(instr.words):
        return False
    tokens = instr.tokens
    if len(tokens) >= 2 and tokens[-1] in _LANGS and tokens[-2] in ("in", "into", "to"):
        return True
    return any(
        t in _LANGS and i + 1 < len(tokens) and tokens[i + 1] in _LANG_NOUNS
        for i, t in enumerate(tokens[:40])
    )


def _lookup(instr: _Text, words: int) -> bool:
    """A look-up question: 'what is X', 'who/when/where ...', 'define X', 'X stands for'."""
    if words > 20 or not _NOT_LOOKUP.isdisjoint(instr.words):
        return False
    tokens = instr.tokens
    if len(_NUMBER_TOKEN.findall(instr.joined)) >= 2:
        return False  # numbers to work with: a computation, not a look-up
    if instr.has(_LOOKUP):
        return True
    if len(tokens) < 3:
        return False
    first, second = tokens[0], tokens[1]
    if first in _WH and second in _WH_VERB:
        return True
    if first == "how" and second in _HOW_QTY:
        return True
    if first == "explain" and second == "what" and words <= 10:
        return True  # "Explain what a p-value is."
    # "What does 'idempotent' mean?" (not "What does that mean for ...").
    return first == "what" and second == "does" and tokens[2] not in _NOT_TERMS and (
        "mean" in tokens or "stand" in tokens
    )  # fmt: skip


def _judgement_howto(instr: _Text) -> bool:
    """'how do I choose/know/detect ...': a judgement, not a tool how-to."""
    if "how" not in instr.words or _JUDGE_HOWTO.isdisjoint(instr.words):
        return False
    tokens = instr.tokens
    for i in range(min(len(tokens) - 3, 80)):
        if (
            tokens[i] == "how"
            and tokens[i + 1] in ("do", "can", "should", "would")
            and tokens[i + 2] in _HOW_SUBJECT
            and tokens[i + 3] in _JUDGE_HOWTO
        ):
            return True
    return False


class _Reasoning:
    """Reasoning cues counted in one window of text."""

    __slots__ = (
        "analysis", "critique", "deep", "design", "explain", "math_kw", "ml", "opinion",
        "proof", "situation", "why",
    )  # fmt: skip

    def __init__(self, t: _Text, instr: _Text) -> None:
        self.proof = t.count(_PROOF)
        self.math_kw = t.count(_MATH)
        self.design = t.count(_DESIGN)
        self.analysis = t.count(_ANALYSIS)
        self.deep = t.count(_DEEP)
        self.explain = instr.has(_EXPLAIN)
        self.critique = t.count(_CRITIQUE)
        self.why = "why" in instr.words or " how come " in instr.joined
        self.opinion = (
            instr.has(_OPINION)
            or _judgement_howto(instr)
            or (bool(instr.tokens) and instr.tokens[0] == "should")  # "Should I ...?"
        )
        self.ml = t.count(_ML)
        joined = t.joined
        self.situation = (
            " my " in joined or " our " in joined or " i " in joined or " we " in joined
        ) and _SITUATION.search(joined) is not None

    def judgement(self) -> bool:
        """Whether something beyond technical vocabulary asks for reasoning."""
        return bool(
            self.proof or self.design or self.analysis or self.deep or self.explain
            or self.critique or self.why or self.opinion
        )  # fmt: skip


def classify(view: PromptView) -> Classification:
    """Intent and simple/complex of a request, with a confidence and a one-line reason."""
    text = view.last_user
    tokens_est = -(-max(view.total_chars, len(text) + len(view.system)) // 4)
    if not text or text.isspace():
        if view.has_media:
            return Classification(
                "simple_qa", "complex", 0.6, "media without text to judge", tokens_est
            )
        return Classification("chat", "complex", 0.5, "no user text found", tokens_est)

    n = len(text)
    words = _words(text)
    short = n < 600
    # Windows, tokenized once each: the instruction (start and end) and the cue window
    # (a larger start and end). For a long text the instruction's pieces are reused.
    if n <= _INSTR_HEAD + _INSTR_TAIL:
        instr_low = text.lower()
        instr = cue = _text(instr_low)
    else:
        head, tail = text[:_INSTR_HEAD], text[-_INSTR_TAIL:]
        instr_low = (head + "\n" + tail).lower()
        head_tokens, tail_tokens = _tokens(head), _tokens(tail)
        instr = _Text(head_tokens + tail_tokens)
        if n <= _CUE_HEAD + _CUE_TAIL:
            middle = text[_INSTR_HEAD:-_INSTR_TAIL]
        else:
            middle = text[_INSTR_HEAD:_CUE_HEAD] + "\n" + text[-_CUE_TAIL:-_INSTR_TAIL]
        cue = _Text(head_tokens + _tokens(middle) + tail_tokens)
    raw = "\n" + _window(text, _CODE_HEAD, _CODE_TAIL) + "\n"

    # --- code shape -------------------------------------------------------------------------
    fences = raw.count("```") // 2
    traceback = any(mark in raw for mark in _TRACEBACK_MARKS) or (
        ('File "' in raw or "\n    at " in raw or "\tat " in raw or "error: " in raw)
        and _TRACEBACK_FRAME.search(raw) is not None
    )
    error_line = traceback or any(
        root in raw and (not forms or any(form in raw for form in forms))
        for root, forms in _ERROR_MARKS
    )
    code_lines = sum(raw.count(end) for end in _CODE_LINE_ENDS)
    if raw.count("\n") > 2:
        for _ in _CODE_LINE.finditer(raw):
            code_lines += 1
            if code_lines >= 60:
                break
    inline_code = raw.count("`") - 6 * fences >= 2
    artifact = fences > 0 or error_line or code_lines >= 3
    strong = instr.count(_CODE_STRONG)
    code_kw = min(strong + 0.4 * instr.count(_CODE_WEAK) + 0.6 * inline_code, 3.0)
    howto = instr.has(_CODE_HOWTO) and not _judgement_howto(instr)
    fix = instr.has(_CODE_FIX)
    write = not _CODE_WRITE.isdisjoint(instr.words)
    code_score = 2.5 if artifact else code_kw
    if (strong or inline_code) and (howto or fix or write):
        code_score += 0.8

    # --- payload tasks: what is asked of a handed-over text --------------------------------------
    # The task verbs are read outside code blocks: `summarise(...)` in pasted R code is not
    # a request for a summary.
    task = _text(_window(_FENCED.sub("\n", text), _INSTR_HEAD, _INSTR_TAIL)) if fences else instr
    explicit_extract = task.has(_EXTRACT) or (
        not _JSON.isdisjoint(task.words) and not _JSON_VERBS.isdisjoint(task.words)
    )
    # "list all the dates ...": an extraction unless it is about code ("... all RFC cases").
    inferred_extract = (
        not strong
        and not _EXTRACT_VERBS.isdisjoint(task.words)
        and not _EXTRACT_ALL.isdisjoint(task.words)
        and not _EXTRACT_NOUNS.isdisjoint(task.words)
    )
    if _translation_ask(task):
        payload = "translate"
    elif task.has(_SUMMARIZE):
        payload = "summarize"
    elif (explicit_extract and not (fences and strong)) or inferred_extract:
        payload = "extract"
    elif task.has(_EDIT):
        payload = "edit"
    else:
        payload = ""
    edit = short and payload == "edit"
    # In a payload task the cue words may belong to the handed-over text: reasoning cues are
    # read from the instruction line(s) only.
    r = _Reasoning(_text(_ask_part(text)) if payload else cue, instr)

    math_sym = 0
    if not _MATH_CHARS.isdisjoint(instr_low):
        math_sym += 1
    if "=" in instr_low and _EQUATION.search(instr_low):
        math_sym += 1
    if ("(" in instr_low or "[" in instr_low) and _MATH_CALL.search(instr_low):
        math_sym += 1
    if "\\frac" in instr_low or "\\sum" in instr_low or "\\int" in instr_low:
        math_sym += 1
    conversion = short and _CONVERSION.search(instr_low) is not None
    lookup = _lookup(instr, words)
    word_problem = (
        not conversion
        and not payload
        and len(_NUMBER_TOKEN.findall(cue.joined, 0, 3000)) >= 3
        and cue.count(_WORD_PROBLEM) >= 2
        and ("?" in text or not cue.words.isdisjoint(("find", "calculate", "compute")))
    )
    reasoning_score = (
        1.5 * min(r.proof, 2)
        + 0.9 * min(r.math_kw, 2)
        + 0.5 * min(math_sym, 2)
        + 1.0 * word_problem
        + 1.0 * min(r.design, 2)
        + 0.7 * min(r.analysis, 2)
        + 0.8 * min(r.deep, 2)
        + 0.6 * r.explain
        + 0.7 * min(r.critique, 2)
        + 0.5 * r.why
        + 0.6 * r.opinion
        + 0.3 * r.situation
        + 0.35 * min(r.ml, 2)
    )

    # --- intent ---------------------------------------------------------------------------------
    first = instr.tokens[:4]
    greeting = words <= 12 and (
        (bool(first) and first[0] in _GREETING) or instr.has(_GREETING_PHRASES)
    )
    continuation = words <= 8 and (not _CONTINUE.words.isdisjoint(first) or instr.phrase(_CONTINUE))
    meta = words <= 40 and instr.has(_META)
    lead = instr.tokens[:14]
    creative_ask = not _CREATIVE_NOUNS.isdisjoint(instr.words) and (
        not _CREATIVE_VERBS.words.isdisjoint(lead) or _Text(lead).phrase(_CREATIVE_VERBS)
    )  # fmt: skip

    if payload in ("translate", "summarize", "extract"):
        intent = payload
    elif (creative_ask or payload == "edit") and code_score < 2.0:
        intent = "creative"
    elif (artifact or code_score >= 1.4) and code_score >= reasoning_score:
        intent = "code"
    elif meta or (continuation and view.turns >= 3):
        intent = "chat"
    elif lookup and reasoning_score < 1.5 and not r.judgement() and not word_problem:
        # "What does 'step size' mean in gradient descent?": a definition, not a problem.
        intent = "simple_qa"
    elif reasoning_score >= 1.0:
        intent = "reasoning"
    elif greeting and not lookup:
        intent = "chat"
    elif code_score >= 1.0:
        intent = "code"
    else:
        intent = "simple_qa"

    # --- complexity -------------------------------------------------------------------------------
    sig = _Signals()
    sig.add(_PRIOR)
    sig.add(_BASE[intent])

    if intent == "summarize":
        sig.add(_size(words, _SUMMARY_SIZE), f"text to summarize is {words} words")
    elif intent == "translate" or payload == "edit":
        what = "translate" if intent == "translate" else "rewrite"
        sig.add(_size(words, _TRANSLATE_SIZE), f"text to {what} is {words} words")
        literary = instr.count(_LITERARY)
        if literary:
            sig.add(min(0.6 * literary, 1.2), "literary, technical or tone-sensitive text")
    elif intent == "extract":
        sig.add(_size(words, _EXTRACT_SIZE), f"source text is {words} words")
        schema = instr.count(_SCHEMA)
        if schema:
            sig.add(min(0.45 * schema, 1.0), "structured output with nesting or normalisation")
    else:
        size = _size(words, _GENERIC_SIZE)
        if size < 0 and (intent == "reasoning" or (r.ml and not lookup)):
            # A short question can hide a hard problem ("Prove that sqrt(2) is irrational.",
            # "Why does my LSTM overfit?"): brevity is no evidence of simplicity then.
            size = 0.0
        if intent == "creative":
            size = _creative_form(instr, instr_low, sig, size)
        sig.add(size, "short message" if size < 0 else "long message")

    # Code.
    if traceback:
        sig.add(1.4, "stack trace to debug")
    elif error_line:
        sig.add(0.6, "error message to diagnose")
    if code_lines >= 40:
        sig.add(1.4, f"{code_lines}+ lines of code")
    elif code_lines >= 12:
        sig.add(0.9, f"{code_lines} lines of code")
    elif fences or code_lines >= 3:
        sig.add(0.4, "code snippet")
    if intent == "code":
        if instr.has(_CODE_HARD):
            sig.add(0.9, "optimisation, review or refactoring")
        if fix and not traceback:
            sig.add(0.5, "debugging")
        if write and not howto and (words > 20 or not short):
            sig.add(0.35, "code to write")
        if howto and not artifact:
            sig.add(-0.45, "tool how-to")

    # Reasoning.
    if r.proof:
        sig.add(1.5 * min(r.proof, 2), "proof or derivation")
    if r.math_kw or math_sym:
        sig.add(min(0.6 * r.math_kw + 0.4 * math_sym, 1.4), "mathematics")
    if word_problem:
        sig.add(0.9, "multi-step word problem")
    if r.design:
        sig.add(min(0.9 * r.design, 1.5), "design, strategy or recommendation")
    if r.analysis:
        sig.add(min(0.6 * r.analysis, 1.1), "analysis or comparison")
    if r.deep:
        sig.add(min(0.9 * r.deep, 1.4), "asks for depth or step-by-step")
    if r.explain:
        sig.add(0.5, "asks to explain why or how")
    if r.critique:
        sig.add(min(0.7 * r.critique, 1.2), "critique, risks or a puzzle")
    if r.why:
        sig.add(0.45, "asks why")
    if r.opinion:
        sig.add(0.6, "asks for judgement")
    if r.situation:
        # The user's own model/data/pipeline: the answer depends on details not given.
        diagnosis = r.why or fix or r.critique or r.opinion or intent in ("code", "reasoning")
        sig.add(0.5 if diagnosis else 0.3, "diagnosis of the user's own setup")
    if r.ml:
        if lookup and not (r.why or r.opinion or r.critique):
            sig.add(0.15, "ML/statistics term")
        else:
            sig.add(min(0.45 * r.ml, 0.9), "ML/statistics methodology")

    # Several asks in one message, explicit constraints (in a payload task, list items and
    # question marks may be the text's own).
    if not payload or n < 1500:
        items = 0
        if raw.count("\n") > 3:
            for _ in _LIST_ITEM.finditer(raw):
                items += 1
                if items >= 8:
                    break
        if items >= 3:
            sig.add(0.9 if items >= 5 else 0.6, f"{items} listed items or asks")
        questions = raw.count("?")
        if questions >= 3:
            sig.add(0.8, f"{questions} questions in one message")
        elif questions == 2:
            sig.add(0.3, "two questions")
    ask = cue if not payload else instr
    wh = sum(ask.joined.count(w) for w in _WH_COUNT)
    if wh >= 3:
        sig.add(0.6, "several things asked")
    elif wh == 2:
        sig.add(0.25, "two things asked")
    if ask.count(_SEQUENCE) >= 2:
        sig.add(0.35, "sequenced steps")
    constraints = ask.count(_CONSTRAINT)
    if constraints >= 4:
        sig.add(1.1, f"{constraints} explicit constraints")
    elif constraints >= 2:
        sig.add(0.55, f"{constraints} explicit constraints")

    # Positive evidence of a simple request (only meaningful in a short message).
    if short:
        if greeting and intent == "chat":
            sig.add(-0.8, "greeting or thanks")
        if conversion:
            sig.add(-0.7, "unit conversion or arithmetic")
        if lookup:
            sig.add(-0.5, "look-up question")
        elif words <= 10 and instr.tokens and instr.tokens[0] in _CLOSED:
            sig.add(-0.2, "closed question")
        if instr.has(_BRIEF):
            sig.add(-0.25, "asks for a brief answer")
        if edit:
            sig.add(-0.5, "light rewrite")
        if meta and not continuation:
            sig.add(-0.3, "about the conversation itself")

    # Context around the turn.
    if continuation and view.turns >= 3:
        # "ok, continue": the next part of whatever the conversation was producing.
        sig.add(1.0, "continues an earlier answer")
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
    context = view.total_chars - n - system_chars
    if context > 24000:
        sig.add(1.0, f"large context ({context} chars before this turn)")
    elif context > 6000:
        sig.add(0.5, f"sizeable context ({context} chars before this turn)")
    if view.has_media:
        sig.add(0.5, "image or file attached")

    score = sig.pos + sig.neg
    complexity = "complex" if score > 0 else "simple"
    return Classification(
        intent,
        complexity,
        _confidence(score, sig),
        _reason(intent, complexity, words, sig),
        tokens_est,
    )


def _creative_form(instr: _Text, instr_low: str, sig: _Signals, size: float) -> float:
    """Score the form asked for (haiku vs. essay); returns the size score to use."""
    long_at = _LONG_FORM.words & instr.words
    short_at = _SHORT_FORM.words & instr.words
    longish = bool(long_at) or instr.phrase(_LONG_FORM) or _LONG_SIZE.search(instr_low) is not None
    shortish = bool(short_at) or instr.phrase(_SHORT_FORM)
    if long_at and short_at and _LONG_SIZE.search(instr_low) is None:
        # "titles for a blog post": the deliverable is the noun named first.
        first_long = min(instr.tokens.index(w) for w in long_at)
        first_short = min(instr.tokens.index(w) for w in short_at)
        longish, shortish = first_long < first_short, first_short < first_long
    if longish:
        sig.add(1.2, "long-form writing")
    elif shortish:
        sig.add(-0.7, "short-form piece")
    # The request for a piece is short even when the piece is not.
    return size * 0.5 if size < 0 else size


def _reason(intent: str, complexity: str, words: int, sig: _Signals) -> str:
    """One readable line: the task, then the strongest signals behind the verdict."""
    head = f"{_DESCRIBE[intent]} ({words} words)"
    if complexity == "complex":
        cues = sorted((w, label) for w, label in sig.items if w > 0)
        cues.reverse()
        if not cues:
            return f"{head}: no clear sign of a simple request"
        return f"{head}: " + "; ".join(label for _, label in cues[:3])
    cues = sorted((w, label) for w, label in sig.items if w < 0)
    text = f"{head}: " + ", ".join(label for _, label in cues[:2]) if cues else head
    against = [label for w, label in sig.items if w > 0.3]
    if against:
        return f"{text}; despite {against[0]}"
    return f"{text}, no code or multi-step cues"


def classify_body(body: Mapping | None) -> Classification:
    """Classify a request body of any wire (prompt_view, then classify)."""
    return classify(prompt_view(body))
