"""Training of the difficulty scorer: writes lcm_jupyter/core/difficulty_weights.json.

    .venv/bin/pip install scikit-learn      # training only; the shipped scorer is stdlib-only
    python tests/benchmarks/train_router.py [--c-type C] [--c-outcome C] [--mix W ...]
                                            [--dry-run]

Three logistic regressions over the features `lcm_jupyter.core.difficulty.features` computes
at run time (word uni/bigrams, dense length/maths/code features), all from public data whose
license allows shipping weights trained on it, or written for this project:

- the type head: which kind of request. Demanding kinds: GSM8K and HumanEval (train split of
  `split_of`), MMLU's STEM question stems without their choices (train split), MBPP's first 27
  tasks (tests/data/routing_public/, CC BY 4.0), the project's complex prompts (the "tune"
  part of tests/data/routing_eval.jsonl) and DEMANDING, DEMANDING_SETUPS and DEMANDING_LONG
  below. Everyday kinds: self-instruct's seed tasks (Apache-2.0; train split), the project's
  simple prompts other than code how-tos, and EVERYDAY, EVERYDAY_ROLES, EVERYDAY_LONG and
  COMMON_FACTS below. Both sides weigh the same in total; grams of function words only,
  newlines and question marks are kept out of it so that it learns what is asked rather than
  which set a prompt came from;
- the outcome head: GSM8K's train split, target "the strong model right where the weak one is
  wrong" (RouteLLM's GPT-4 / Mixtral outcomes, ../shared/data/routing/);
- the exam head: MMLU's train split, same target; it alone judges multiple-choice prompts.

The written prompts are the shapes the public sets lack (short maths and number-theory
questions, short code asks, obscure facts against common ones, everyday asks with a paragraph
of context); every fifth of them is kept for validation.

Never trained on: the val/test splits, NQ-open (CC BY-SA), the evaluation sets under
tests/data/routing_public/, tests/data/routing_probes.jsonl. The type head's weight in the mix
is chosen on the validation split (mean APGR of MMLU and GSM8K, everyday savings as a check);
the threshold is the highest validation score that keeps at most HARD_SHARE of the hard
validation prompts under it, moved to difficulty.THRESHOLD by the mix's bias. Deterministic:
fixed splits, no sampling, a fixed solver (a second run writes the same bytes).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy import sparse  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from lcm_jupyter.core import difficulty  # noqa: E402
from tests.benchmarks import eval_routing as ev  # noqa: E402

MIN_DF = 3
KEEP = 0.02  # grams with a smaller |weight| in a head are left out of the shipped file
WRITTEN_WEIGHT = 4.0
DENSE = difficulty.DENSE_NAMES
HEADS = ["type", "outcome", "exam"]  # the order of the weights in each "grams" entry
HARD_SHARE = 0.01  # half the target (2% on unseen sets), as margin for generalisation
STYLE = frozenset({"log_newlines", "questions"})
STOP = difficulty._ENGLISH | difficulty._wordset(
    "a in on at up out off no yes one two some any other same own too than into onto upon "
    "per via also just even still yet"
)
STEM = frozenset(
    {
        "abstract_algebra",
        "college_mathematics",
        "high_school_mathematics",
        "elementary_mathematics",
        "college_physics",
        "high_school_physics",
        "college_chemistry",
        "high_school_chemistry",
        "high_school_statistics",
        "machine_learning",
        "college_computer_science",
        "high_school_computer_science",
        "formal_logic",
        "econometrics",
        "computer_security",
        "electrical_engineering",
    }
)

# Everyday requests a small model answers as well: chit-chat, common facts, light writing.
EVERYDAY = """
What's a good name for a golden retriever puppy?
Give me three ideas for a rainy Sunday afternoon with kids.
How long should I boil an egg for a runny yolk?
Write a short thank-you note to my neighbour for watering the plants.
What is the capital of Canada?
Who painted the Mona Lisa?
Suggest a healthy snack I can take to work.
Can you recommend a few classic novels for a teenager?
What does RSVP mean?
How many days are there in a leap year?
Write a two-sentence birthday message for my coworker.
What's the difference between weather and climate?
Tell me a fun fact about octopuses.
How do I politely decline a meeting invitation?
What time zone is London in?
Give me a synonym for happy.
How do you say good night in French?
Make this sentence sound friendlier: Send me the report today.
What are some tips for sleeping better?
Write a haiku about autumn leaves.
What is the boiling point of water in Fahrenheit?
Suggest a title for my blog post about houseplants.
What should I pack for a weekend beach trip?
Who wrote Pride and Prejudice?
How do I remove a coffee stain from a shirt?
Write a short caption for a photo of my dog at the beach.
What is photosynthesis in simple terms?
List five fruits that are high in vitamin C.
How often should I water a cactus?
Rewrite this to be more polite: I need the files now.
What's the largest ocean on Earth?
Give me a quick recipe for pancakes.
What are the primary colors?
Recommend a board game for a family of four.
How many continents are there?
Write a short out-of-office reply for my email.
What does a thermometer measure?
Give me an easy stretching routine for the morning.
Who was the first person to walk on the moon?
Translate thank you very much into Spanish.
Summarize the plot of Cinderella in two sentences.
What's a polite way to ask someone to repeat themselves?
Can you suggest a name for a bakery?
What is the opposite of generous?
How do I make my houseplants grow faster?
Write a limerick about a cat who loves naps.
What is the tallest animal in the world?
Give me a motivational quote for Monday morning.
What are good gifts for a ten year old?
How many legs does a spider have?
Write a friendly reminder that the team lunch is on Friday.
What is the freezing point of water in Celsius?
How do I say hello in Japanese?
Suggest three icebreaker questions for a team meeting.
What colour do you get when you mix blue and yellow?
Describe a sunset in one sentence.
Who invented the telephone?
What are some fun things to do in Paris?
Write a short poem for my mom's birthday.
How can I stay focused while studying?
What's the plural of mouse?
Give me a packing list for a camping trip.
What is a noun?
Write an invitation for a housewarming party on Saturday.
Why do leaves change colour in the fall?
What is the main ingredient in guacamole?
Suggest a weekly workout plan for a beginner.
How do I tie a tie?
Correct the spelling: I recieved the pakage yesterday.
What does a bee make?
Can you help me write a message to cancel my dentist appointment?
What's a good way to start a conversation at a party?
Give me a fun name for a book club.
What should I cook for dinner tonight with chicken and rice?
How do I keep my cut flowers fresh longer?
Write a short welcome message for new members of our hiking group.
What is the meaning of the word serendipity?
Recommend some relaxing music for studying.
How many hours of sleep does an adult need?
Write a cute caption for a picture of my cat sleeping.
What are some easy indoor plants for beginners?
How do I say thank you in German?
Suggest a name for a fantasy kingdom.
What are the rules of tic-tac-toe?
Write a short apology text to a friend for being late.
What's the difference between a crocodile and an alligator?
Give me three tips for a job interview.
What is the national animal of Scotland?
Make this email subject more catchy: Monthly newsletter.
How can I be more productive in the morning?
Write a toast for my sister's wedding, two sentences long.
What is a good gift for a coworker who is retiring?
Which season comes after winter?
Summarize in one sentence why exercise is good for you.
Tell me a joke about penguins.
What are the benefits of learning a second language as an adult?
How can I make my small apartment feel more spacious?
Write a short blog post about the joys of gardening in spring.
What are some good habits for saving money each month?
How does regular exercise affect mental health?
Describe the experience of visiting a busy farmers market on a Saturday morning.
What should I consider when adopting a rescue dog?
Write a product description for a handmade ceramic coffee mug.
What are some ways to reduce food waste at home?
How can parents encourage their children to read more?
Write an email inviting my team to a volunteer day at the local food bank.
What are the pros and cons of working from home?
How can I prepare for my first marathon?
Write a short story about a lost umbrella finding its way home.
Why do people enjoy traveling to new places?
What are some tips for making friends in a new city?
Describe the atmosphere of a cozy cafe on a rainy day.
How can I become a better listener?
Write a welcome speech for a community picnic.
What are the main reasons people choose to become vegetarian?
How can small businesses use social media to attract customers?
Write a thank-you letter to a teacher who made a difference.
What are the advantages of public libraries for a community?
How do I plan a budget-friendly birthday party for a child?
Write a review of a family-friendly restaurant with great pancakes.
What are some creative ways to celebrate a friend's promotion?
How can I reduce screen time in the evening?
Explain why sleep is important for students.
What are some fun team-building activities for a small office?
Write a social media post announcing our bakery's new seasonal menu.
How do cultural traditions around holidays differ across countries?
What are the benefits of keeping a journal?
Write a cover letter opening for a job at a bookstore.
How can I stay motivated to learn a musical instrument?
What makes a good neighbour?
Describe a perfect lazy Sunday.
How can I make my morning routine less stressful?
Write a motivational message for a friend starting a new job.
What are the health benefits of drinking enough water?
What should I know before starting a vegetable garden?
""".strip().splitlines()

# Demanding prompts, short ones above all: maths, number theory, code, careful reasoning,
# obscure facts a small model tends to get wrong.
DEMANDING = """
Prove that there are infinitely many primes of the form 4k + 3.
Find all integer solutions of x^2 - 7y^2 = 1 with x < 200.
What is the remainder when 3^100 is divided by 7?
Compute the sum of all divisors of 360.
How many trailing zeros does 125! have?
Find the smallest n such that n! is divisible by 1000.
Is 2^61 - 1 prime? Justify.
Solve the recurrence a_n = 3a_{n-1} - 2a_{n-2} with a_0 = 0, a_1 = 1.
Evaluate the integral of x^2 e^x from 0 to 1.
What is the probability that two random integers are coprime, and why?
Show that the square root of 3 is irrational.
Find the number of lattice paths from (0,0) to (6,4) that never cross y = x.
Determine the eigenvalues of [[2, 1], [1, 2]].
How many ways can you tile a 2x10 board with dominoes?
A train leaves at 3:15 pm at 72 km/h; another leaves 40 minutes later at 90 km/h. When does it pass?
If I invest $2,500 at 4.5% compounded monthly, how much will I have after 7 years?
What is the last digit of 7^2024?
Find gcd(1071, 462) and express it as a combination of the two numbers.
Why does my recursive Fibonacci in Python hit the recursion limit, and how do I fix it?
Write a thread-safe LRU cache in Python.
Implement Dijkstra's algorithm with a binary heap in C++.
Why is my React component re-rendering infinitely when I call setState in useEffect?
Explain the difference between optimistic and pessimistic locking and when each fails.
How do I debug a memory leak in a long-running Node.js service?
Write a SQL query to find the second highest salary in each department.
What is the time complexity of building a heap, and why is it not n log n?
Design a rate limiter for a distributed API gateway.
Refactor this function to avoid the N+1 query problem in Django.
Why does floating point 0.1 + 0.2 not equal 0.3, and how should I compare floats?
Write a regex that validates IPv4 addresses without accepting 256.
How does Raft handle a leader crash during log replication?
Explain why my Kubernetes pod is stuck in CrashLoopBackOff and how to investigate it.
Write a bash script that renames all .jpeg files to .jpg recursively, handling spaces.
What is the difference between a mutex and a semaphore, with an example of a deadlock?
Convert this recursive function to an iterative one using an explicit stack.
How do I fix 'TypeError: Cannot read properties of undefined' in my Express route?
Analyze the trade-offs between microservices and a modular monolith for a team of six.
If all bloops are razzies and some razzies are lazzies, must some bloops be lazzies?
Three boxes are mislabeled apples, oranges and mixed. You may draw one fruit. How to fix the labels?
What is the expected number of coin flips to get two heads in a row?
Who was the second abbot of the monastery of Cluny?
In what year was the Treaty of Nerchinsk signed, and between whom?
Which chemist first isolated fluorine, and in what year?
What was the name of the ship on which Darwin's FitzRoy served before the Beagle?
Who composed the opera Die tote Stadt?
What is the atomic number of hafnium and who discovered it?
Which Byzantine emperor issued the Ecloga?
What is the Chandrasekhar limit and how is it derived?
Explain Gödel's first incompleteness theorem and its proof idea.
What is a Lagrange multiplier, and solve max xy subject to x + 2y = 10.
Derive the formula for the variance of a binomial distribution.
Why does gradient descent converge slowly on ill-conditioned problems?
Compare the bias of the MLE and the unbiased estimator of variance.
Calculate the determinant of a 3x3 matrix with rows (1,2,3), (0,1,4), (5,6,0).
How many subsets of {1,...,10} contain no two consecutive numbers?
Given f(x) = x^3 - 6x^2 + 9x + 1, find the local extrema.
Why is the halting problem undecidable?
Is the language {a^n b^n c^n} context-free? Prove it.
What's wrong with double-checked locking in Java without volatile?
Write a Python function returning all distinct permutations of a string with repeated letters.
Estimate how many piano tuners there are in Chicago, showing each step.
What is 17 * 23 + 19 * 29?
Find x if log2(x) + log2(x - 2) = 3.
What are the last two digits of 2^100?
Solve 5x ≡ 3 (mod 17).
Who was the architect of the Palazzo Rucellai in Florence?
Which Mughal emperor commissioned the Shalimar Gardens in Lahore?
What is the type locality of the mineral vesuvianite?
Who was the first Prince-Bishop of Würzburg?
In what year was the Kalmar Union dissolved?
Which composer wrote the opera Le roi d'Ys?
What is the half-life of protactinium-231?
Who translated the Rubaiyat into English before FitzGerald?
Which dynasty built the fortress of Rumeli Hisari?
What was the capital of the Khanate of Kokand?
Who discovered the asteroid 16 Psyche?
Which treaty ended the War of the Bavarian Succession?
What is the boiling point of osmium tetroxide?
Who was the last king of the Kingdom of Sardinia before unification?
Which botanist first described the genus Welwitschia?
What language was spoken in the Kingdom of Aksum?
Who founded the Abbey of Saint-Gall?
In which city was the mathematician Sophus Lie born?
What is the Curie temperature of gadolinium?
Which Ming admiral led the third treasure voyage?
Who wrote the Tirukkural?
What is the capital of the Faroese region of Suðuroy?
Which Roman emperor issued the Edict of Thessalonica?
Who designed the Zeiss Tessar lens?
What was the original name of the city of Oslo under Danish rule?
Which chemist synthesized urea from ammonium cyanate?
Who succeeded Charlemagne as King of Aquitaine?
What is the atomic mass of technetium-99?
Which Portuguese navigator first reached the Moluccas?
Who painted the Arnolfini Portrait's companion work, the Ghent Altarpiece, with his brother?
Write a function that checks whether a binary tree is balanced.
Implement quicksort in Go.
Write a Python script that merges two sorted CSV files by timestamp.
How do I reverse a linked list in place in Java?
Write a TypeScript type that makes every nested property optional.
Create a REST API in Flask with JWT authentication.
Write a unit test for a function that parses ISO dates, covering time zones.
How can I make this pandas groupby faster on 50 million rows?
Write a SQL query that returns customers who ordered in three consecutive months.
Implement a trie with insert, search and prefix count.
Write a Rust function that splits a string on commas while respecting quotes.
Why does my async Python code still run sequentially?
Fix the off-by-one error in my binary search.
Write a shell one-liner to find the 10 largest files under a directory.
How do I prevent SQL injection in a Node.js app using pg?
Write a C function that reverses the words in a sentence in place.
Implement an LRU cache in JavaScript with O(1) get and put.
Explain the output of this code: print([i for i in range(10) if i % 3 == 0][::-1])
Write a Dockerfile for a Django app with Postgres and Celery.
How do I parse nested JSON into a flat table in Spark?
Write a Python generator that yields prime numbers forever.
Build a simple tokenizer for arithmetic expressions and evaluate them with correct precedence.
What is the difference between a process and a thread, and when is multiprocessing faster in Python?
Write a function to detect a cycle in a directed graph.
How do I implement pagination with a cursor in GraphQL?
Write code to compute the edit distance between two strings.
Write an algorithm that finds the longest palindromic substring.
Prove that the sum of the first n odd numbers is n^2.
Find all real solutions of x^4 - 5x^2 + 4 = 0.
What is the derivative of x^x?
Integrate sin^2(x) dx.
How many primes are there between 100 and 200?
If a fair die is rolled three times, what is the probability of getting at least one six?
Find the area of a triangle with sides 7, 8 and 9.
What is the sum of the infinite series 1/2 + 1/4 + 1/8 + ...?
Show that every group of order 4 is abelian.
Compute 2^10 mod 11 and explain using Fermat's little theorem.
A bag has 5 red and 3 blue balls; two are drawn without replacement. What is P(both red)?
What is the smallest positive integer with exactly 12 divisors?
Solve the system 2x + 3y = 7 and 4x - y = 5.
How many diagonals does a convex 20-gon have?
What is the 100th term of the arithmetic sequence 3, 7, 11, ...?
Which Ottoman vizier negotiated the Treaty of Karlowitz?
What was the population of Reykjavik in 1901?
Who was the first woman to receive a doctorate in mathematics in Sweden?
""".strip().splitlines()

# Role set-ups of multi-step work: agents, reviews, simulations, threat models.
DEMANDING_SETUPS = [
    "You are the lead architect reviewing a payment platform. I will paste service designs one "
    "at a time; for each, find race conditions, failure modes and data-loss risks, then propose"
    " fixes with their trade-offs.",
    "Act as a team of three agents: a planner that breaks my research question into sub-"
    "questions, a solver that answers each with sources, and a critic that checks the "
    "reasoning. Show each agent's turn until the critic accepts.",
    "You are an orchestrator for several tools: a SQL database, a Python sandbox and a web "
    "search. For every analysis question I give you, decide which tool to call with what input,"
    " read the results and iterate until the answer is verified.",
    "Your task is to act as a compiler engineer. I will give you snippets of C code and you "
    "must explain what undefined behaviour they contain, what an optimising compiler may do "
    "with them, and how to rewrite them portably.",
    "You are a reviewer for a mathematics journal. I will submit proofs step by step; check "
    "each step for rigour, point out gaps, and suggest how to close them.",
    "You coordinate a panel of experts (a statistician, an epidemiologist and a data engineer) "
    "who must design a study to estimate vaccine effectiveness from messy registry data. Ask "
    "each expert in turn and combine their answers into one plan.",
    "Simulate a distributed system of five nodes running Paxos. I will inject failures such as "
    "crashed nodes and lost messages; after each, show every node's state and whether consensus"
    " still holds.",
    "You are a senior security engineer running a threat model of a multi-tenant SaaS "
    "application. Ask me about its architecture, then enumerate attack paths, rank them by "
    "risk, and propose mitigations.",
]

# Light role-plays: a set-up alone does not make a request demanding.
EVERYDAY_ROLES = [
    "You are a friendly travel guide. I will tell you which city I am in and you suggest a nice"
    " place to visit nearby, one at a time.",
    "Act as my English conversation partner. I will say something about my day and you answer "
    "with a short, friendly reply and one question.",
    "You are a cheerful cooking assistant. I will tell you what is in my fridge and you suggest"
    " a simple dish each time.",
    "Pretend you are a librarian. I will describe a mood and you recommend one novel that fits "
    "it, with a sentence about why.",
    "You are a motivational coach. Each morning I will tell you my plan for the day and you "
    "reply with one short encouraging message.",
]

# Long demanding requests: set-ups of multi-step work (agents, reviews, designs) over 150 words.
# Without them the type head reads "very long" as everyday, from long everyday asks alone.
DEMANDING_LONG = [
    "You are the coordinator of an incident response team for a bank's online services. The team "
    "has a network engineer, a database administrator, a security analyst and an application "
    "developer, each of whom you can question as often as you need. I will describe symptoms as "
    "they are reported: failed logins, slow transfers, alerts from the intrusion detection system. "
    "For each report, decide which specialist to ask and what to ask them, then I will paste their "
    "answers. Keep a running hypothesis of the root cause, say what evidence would confirm or "
    "refute it, and propose containment steps that do not destroy forensic evidence. When you "
    "have enough information, write a timeline of the incident, the root cause, the customer "
    "impact, and a list of remediation items ranked by risk and effort. Do not guess facts you "
    "have not been given; ask for them instead. Start by asking the questions you need answered "
    "first, in order of priority, and explain briefly why each matters.",
    "I am building a multi-tenant analytics service. Each tenant uploads event data (up to 50 "
    "million rows a day per tenant, a few hundred tenants), and users run ad-hoc dashboards with "
    "filters over the last 90 days. We currently use a single PostgreSQL instance and queries "
    "have become slow, with some taking over a minute, while ingestion lags by hours at peak. "
    "Propose an architecture that keeps p95 dashboard latency under two seconds and ingestion "
    "lag under five minutes. Compare at least three options (for example partitioned PostgreSQL "
    "with rollup tables, a columnar store such as ClickHouse, and a lakehouse with a query "
    "engine), covering data layout, tenant isolation, schema evolution, backfills, cost, "
    "operational burden for a team of four engineers, and failure modes. Then pick one, give a "
    "migration plan that avoids downtime, and list the metrics you would watch to know whether "
    "it worked. Point out any assumptions in my description that you think are wrong.",
    "Act as three agents working together on a proof. The first agent proposes a strategy for "
    "proving the statement I give, the second writes the proof in full detail, and the third "
    "checks every step as a strict referee would, naming any gap, unjustified claim or circular "
    "argument. If the referee finds a problem, the first agent must revise the strategy and the "
    "second must rewrite the affected part, and the referee checks again. Continue until the "
    "referee accepts or until you conclude the statement is false, in which case give a "
    "counterexample and verify it. Label each agent's turn clearly. The statement: every finite "
    "group whose order is the square of a prime is abelian, and there are exactly two such groups "
    "up to isomorphism for each prime. State which standard results you rely on, and prove any "
    "lemma that is not in a first course in group theory. At the end, summarise the final proof "
    "in a clean form without the agents' discussion.",
    "You will act as a code reviewer for a pull request in a large Python codebase that handles "
    "payments. I will paste the diff in parts. For each part, look for concurrency bugs, missing "
    "error handling, places where money is computed with floats, database transactions that can "
    "leave partial state, retries that can charge a customer twice, and log lines that may leak "
    "card numbers or tokens. For every issue, quote the lines, explain the failure scenario step "
    "by step, rate its severity, and propose a concrete fix as code. Also note what tests are "
    "missing and write them using pytest. After all parts, give an overall verdict: approve, "
    "approve with changes, or request changes, with the three most important reasons. Be "
    "precise and do not comment on style unless it hides a bug. If something depends on code "
    "you have not seen, say what you would need to check and why it matters for correctness.",
    "I want you to plan and carry out a small research study with me over several messages. The "
    "question is whether retrieval-augmented generation reduces factual errors in answers about "
    "internal company documents compared with fine-tuning a model on those documents. First, "
    "design the study: the datasets we need, how to build a question set with gold answers, how "
    "to measure factual errors reliably (including inter-annotator agreement), which baselines to "
    "include, and how many questions we need to detect a ten percent difference with reasonable "
    "power. Then list the threats to validity and how to mitigate each. After I reply with "
    "constraints (budget, time, data access), revise the design. Finally write the analysis plan, "
    "including the statistical tests and how to handle questions where annotators disagree. Ask "
    "me for any information you need before you commit to choices that are hard to change later, "
    "and justify each choice with reference to standard practice in the field.",
]

# Longer everyday requests: a paragraph of context around an ordinary ask. Without them the
# type head would learn "long means demanding" from the long word problems alone.
EVERYDAY_LONG = [
    "Can you fix the grammar in this paragraph? My brother and me goes to the park every "
    "sunday, we plays football there and sometimes we eats ice cream after. Last week it were "
    "raining so we stayed home and watched a movies instead.",
    "I'm writing a message to my landlord. The kitchen tap has been dripping for two weeks "
    "and it keeps me awake at night. Can you help me write a polite but firm email asking "
    "him to send a plumber this week?",
    "We are planning a three-day trip to Barcelona in May with two kids aged 6 and 9. We like "
    "beaches, easy walks and good food, but not long museum visits. Can you suggest a simple "
    "plan for each day?",
    "Please write a short cover letter for a part-time job at a bookshop. I am a university "
    "student, I love reading fantasy and history books, and I worked last summer at a cafe, "
    "so I am used to talking with customers.",
    "My friend is turning forty next month and loves gardening, old movies and Italian food. "
    "Give me some gift ideas under fifty dollars and a funny line to write in the card.",
    "I have eggs, spinach, feta cheese, half an onion and some leftover potatoes. I want a "
    "quick dinner for two people that takes less than thirty minutes. What can I make?",
    "Rewrite this note so it sounds friendlier: Staff are reminded that the kitchen must be "
    "cleaned after use. Dirty dishes left in the sink will be thrown away on Friday.",
    "Summarize this in two sentences for a newsletter: Our local library will be closed from "
    "June 3 to June 10 for renovation. During this time books can be returned at the town "
    "hall, and the children's reading club will meet in the community centre.",
    "I want to start running but I get tired after five minutes. I am 35 and work in an "
    "office all day. Can you give me a gentle plan for the first month, three days a week?",
    "Write a short, warm speech for my grandparents' 50th wedding anniversary dinner. They "
    "met at a dance in 1974, have three children and seven grandchildren, and still go "
    "dancing every Saturday.",
    "Our team is having a farewell party for a colleague who is moving to Canada after eight "
    "years with us. Can you write a few lines for the card that are heartfelt but not too "
    "sad?",
    "My cat keeps scratching the sofa even though she has a scratching post in the corner of "
    "the room. What can I try to make her use the post instead?",
    "Please turn these notes into a friendly reminder email: team lunch Friday 12:30, Luigi's "
    "on Main Street, bring your own drinks, tell Anna by Wednesday if you can't come.",
    "I'm nervous about a job interview for a receptionist position tomorrow morning. What "
    "questions might they ask and how can I answer them in a calm and friendly way?",
    "Write a product description for our online shop: a hand-knitted wool scarf, 180 cm long, "
    "available in grey, navy and mustard, soft and warm, made by local artisans.",
    "My son is eight and doesn't like vegetables at all. Can you suggest some fun ways to get "
    "him to eat more of them, maybe recipes or little games at the table?",
    "Can you make this paragraph shorter and easier to read? The meeting that was originally "
    "scheduled to take place on Tuesday afternoon has been moved, due to a number of "
    "unforeseen scheduling conflicts, to Thursday morning at ten o'clock in room four.",
    "We're hosting a board game night for eight adults who mostly don't know each other. "
    "Which games would be easy to learn and good for breaking the ice?",
    "I'd like to write a thank-you card to the nurses who looked after my mother during her "
    "two weeks in hospital. Can you help me with a few sincere sentences?",
    "Give me a packing list for a week-long summer holiday at the seaside with a baby, "
    "including things people often forget.",
    "Write a short bedtime story for a five-year-old about a little turtle who is afraid of "
    "the dark and learns that the night sky is beautiful.",
    "I moved to a new town last month and don't know anyone yet. I like hiking, cooking and "
    "board games. How can I meet people and make friends here?",
    "Please write a friendly Instagram caption for our cafe's new autumn menu: pumpkin soup, "
    "apple cake and a cinnamon latte, available from next Monday.",
    "Help me reply to this message from a neighbour: Hi! We're having a small barbecue on "
    "Saturday afternoon, would you like to join us? I want to say yes and offer to bring a "
    "salad.",
    "What are some ideas for a relaxing weekend at home when it's raining and I don't want to "
    "spend money? I live alone and like books, music and cooking.",
]

# Common facts (the everyday side of the look-up questions above).
COMMON_FACTS = """
What is the capital of Germany?
Who painted the Sistine Chapel ceiling?
How many days are in a week?
What is the largest planet in our solar system?
Who wrote Harry Potter?
What language is spoken in Mexico?
What is the chemical formula for water?
Which country is famous for the Eiffel Tower?
Who was Albert Einstein?
What is the currency of Japan?
How many sides does a triangle have?
What is the tallest mountain in the world?
Who discovered penicillin?
Which animal is known as the king of the jungle?
What is the longest river in Africa?
When is Christmas celebrated?
What is the main language of Brazil?
Who invented the light bulb?
What is the capital of the United Kingdom?
How many planets are in the solar system?
What gas do plants absorb from the air?
Which ocean lies between Europe and America?
What is the smallest prime number?
Who was the first man in space?
What is the hottest planet?
Which country has the largest population?
What do bees collect from flowers?
Who wrote The Odyssey?
What is the freezing point of water in Fahrenheit?
Which instrument has 88 keys?
What is the capital of Italy?
Who wrote Romeo and Juliet?
When did World War II end?
What is the chemical symbol for gold?
How many players are on a soccer team?
Which planet is known as the red planet?
Who was the first president of the United States?
What language is spoken in Brazil?
""".strip().splitlines()


def _text(item: dict[str, Any]) -> str:
    """The last user message of an item (what the model is trained to read)."""
    for message in reversed(item["messages"]):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


Rows = tuple[list[str], list[float], list[float]]


def training_rows() -> tuple[Rows, Rows, Rows]:
    """(texts, targets, weights) of the type, free-form outcome and exam heads (train split)."""
    type_rows: Rows = ([], [], [])
    outcome_rows: Rows = ([], [], [])
    exam_rows: Rows = ([], [], [])

    def add(rows: Rows, text: str, y: float, w: float) -> None:
        rows[0].append(difficulty.strip_pleasantries(text))
        rows[1].append(y)
        rows[2].append(w)

    hard: list[str] = []
    easy: list[str] = []
    for item in ev.load_shared():
        if item.get("split") != "train":
            continue
        name = item["dataset"]
        if name in ("mmlu", "gsm8k"):
            # The strong model's gain: right where the weak one is wrong (RouteLLM's label).
            y = float(item["strong"] > item["weak"])
            add(outcome_rows if name == "gsm8k" else exam_rows, _text(item), y, 1.0)
            if name == "gsm8k":
                hard.append(_text(item))
        elif name.startswith("humaneval"):
            hard.append(_text(item))
        elif name == "selfinstruct_seed":
            easy.append(_text(item))
    for item in ev.load_public():
        if item["dataset"].startswith("project_") and item.get("split") == "train":
            if item["kind"] == "hard":
                hard.append(_text(item))
            elif item["intent"] not in ("code", "reasoning"):
                # The project calls short code how-tos simple; public hard sets (Arena-Hard,
                # MT-Bench coding) are full of them: code is kept off the everyday side.
                easy.append(_text(item))
    # Short technical questions: MMLU's STEM question stems without their choices (train
    # split), and MBPP's first tasks (short "write a function" asks).
    for item in ev.load_shared():
        if item["dataset"] == "mmlu" and item["split"] == "train" and item["subject"] in STEM:
            stem = _text(item).split("\nA.", 1)[0].strip()
            if stem.endswith(("?", ".")) and len(stem) >= 25 and "following" not in stem:
                hard.append(stem)
    hard += [row["text"] for row in ev._jsonl(ev.PUBLIC / "mbpp_head.jsonl")]
    written_hard = [
        t for k, t in enumerate(DEMANDING + DEMANDING_SETUPS + DEMANDING_LONG) if k % 5 != 4
    ]
    written_easy = [
        t
        for k, t in enumerate(EVERYDAY + EVERYDAY_ROLES + COMMON_FACTS + EVERYDAY_LONG)
        if k % 5 != 4
    ]
    # Both classes weigh the same in total: the type head must not learn the class sizes.
    # The written prompts are few but carry the short shapes the public sets lack.
    hard_total = len(hard) + WRITTEN_WEIGHT * len(written_hard)
    easy_w = hard_total / (len(easy) + WRITTEN_WEIGHT * len(written_easy))
    for text in hard:
        add(type_rows, text, 1.0, 1.0)
    for text in written_hard:
        add(type_rows, text, 1.0, WRITTEN_WEIGHT)
    for text in easy:
        add(type_rows, text, 0.0, easy_w)
    for text in written_easy:
        add(type_rows, text, 0.0, easy_w * WRITTEN_WEIGHT)
    return type_rows, outcome_rows, exam_rows


def build_vocab(texts: list[str]) -> list[str]:
    """Grams seen in at least MIN_DF training texts, in a fixed order."""
    df: Counter[str] = Counter()
    for text in texts:
        df.update(difficulty.grams(text))
    return sorted(g for g, n in df.items() if n >= MIN_DF)


def matrix(texts: list[str], index: dict[str, int], vocab_words: frozenset[str]):
    """The feature matrix: grams scaled by 1/sqrt(#grams of the text), then dense features."""
    rows, cols, vals = [], [], []
    dense = []
    for r, text in enumerate(texts):
        found, features = difficulty.features(text, vocab_words)
        scale = 1.0 / math.sqrt(max(len(found), 1))
        for g in found:
            j = index.get(g)
            if j is not None:
                rows.append(r)
                cols.append(j)
                vals.append(scale)
        dense.append(features)
    grams_m = sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(index)))
    return sparse.hstack([grams_m, sparse.csr_matrix(np.array(dense))]).tocsr()


def fit(x, ys: list[float], ws: list[float], c: float) -> LogisticRegression:
    """Logistic regression on soft targets: each row twice, weighted by y and 1 - y."""
    y = np.asarray(ys)
    w = np.asarray(ws)
    x2 = sparse.vstack([x, x]).tocsr()
    labels = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
    weights = np.concatenate([w * y, w * (1 - y)])
    keep = weights > 0
    model = LogisticRegression(C=c, solver="lbfgs", max_iter=5000, tol=1e-6)
    model.fit(x2[keep], labels[keep], sample_weight=weights[keep])
    return model


def _logit(p: float) -> float:
    """Inverse of the logistic function."""
    return math.log(p / (1 - p))


def _style_only(gram: str) -> bool:
    """Whether a gram is made of function words, punctuation and numbers only."""
    return all(t in STOP or not t[0].isalpha() for t in gram.split(" "))


def head_json(model: LogisticRegression, vocab: list[str]) -> dict[str, Any]:
    """One head's weights: the grams that matter, dense weights, bias."""
    coef = model.coef_[0]
    n = len(vocab)
    grams = {g: round(float(w), 3) for g, w in zip(vocab, coef[:n], strict=True)}
    return {
        "bias": round(float(model.intercept_[0]), 4),
        "dense": [round(float(w), 4) for w in coef[n:]],
        "grams": {g: w for g, w in grams.items() if abs(w) >= KEEP},
    }


def val_items() -> list[dict[str, Any]]:
    """The validation rows: the val split of the shared sets and every fifth written prompt."""
    items = [i for i in ev.load_shared() if i.get("split") == "val"]
    for kind, texts in (
        ("hard", DEMANDING + DEMANDING_SETUPS + DEMANDING_LONG),
        ("easy", EVERYDAY + EVERYDAY_ROLES + COMMON_FACTS + EVERYDAY_LONG),
    ):
        for k, text in enumerate(texts):
            if k % 5 == 4:
                items.append({"dataset": "written", "messages": ev.chat(text), "kind": kind})
    return items


def val_figures(weights: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """Val-split APGR and hard/easy shares of a weights dict, loaded as the runtime loads it."""
    difficulty._MODEL = difficulty._Model(weights)
    rows = ev.scored(items)
    out: dict[str, Any] = {}
    for name in ("mmlu", "gsm8k"):
        part = [(i, d) for i, d in rows if i["dataset"] == name]
        strong = [i["strong"] for i, _ in part]
        weak = [i["weak"] for i, _ in part]
        out[name] = ev.router_figures([d.score for _, d in part], strong, weak)["apgr"]
    hard = sorted(d.score for i, d in rows if i["kind"] == "hard")
    easy = [d.score for i, d in rows if i["kind"] == "easy"]
    # The threshold under which 1% of the hard validation prompts fall, and the everyday
    # share routed there.
    t = hard[max(0, int(0.01 * len(hard)) - 1)] if hard else 0.5
    out["threshold_1pct"] = round(t, 4)
    # Just above the highest score that still keeps at most HARD_SHARE of them under it.
    k = int(HARD_SHARE * len(hard))
    out["threshold_target"] = (hard[k] + hard[k - 1]) / 2 if 0 < k < len(hard) else hard[0]
    out["easy_share"] = round(statistics.fmean(s < t for s in easy), 4)
    out["sweep"] = [
        {
            "t": t,
            "hard": round(statistics.fmean(s < t for s in hard), 4),
            "easy": round(statistics.fmean(s < t for s in easy), 4),
        }
        for t in [round(0.05 * k, 2) for k in range(1, 12)]
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c-type", type=float, default=0.5)
    parser.add_argument("--c-outcome", type=float, default=1.0)
    parser.add_argument("--mix", type=float, nargs="*", default=[1.0, 2.0, 3.0])
    parser.add_argument("--dry-run", action="store_true", help="do not write the weights")
    args = parser.parse_args(argv)

    type_rows, outcome_rows, exam_rows = training_rows()
    print(
        f"rows: type {len(type_rows[0])}, outcome (GSM8K) {len(outcome_rows[0])},"
        f" exam (MMLU) {len(exam_rows[0])}"
    )
    vocab = build_vocab(type_rows[0] + outcome_rows[0] + exam_rows[0])
    index = {g: i for i, g in enumerate(vocab)}
    words = frozenset(g for g in vocab if " " not in g)
    print(f"vocabulary: {len(vocab)} grams ({len(words)} words)")
    # The type head must learn what is asked, not which data set a prompt came from: grams of
    # function words and punctuation only, and the layout features that differ between sets
    # (newlines, question marks), are kept out of it.
    x_type = matrix(type_rows[0], index, words)
    keep = np.array([not _style_only(g) for g in vocab] + [n not in STYLE for n in DENSE])
    model = fit(x_type[:, np.flatnonzero(keep)], *type_rows[1:], args.c_type)
    full = np.zeros(len(keep))
    full[np.flatnonzero(keep)] = model.coef_[0]
    model.coef_ = full[None, :]
    type_head = head_json(model, vocab)
    outcome_head = head_json(
        fit(matrix(outcome_rows[0], index, words), *outcome_rows[1:], args.c_outcome), vocab
    )
    exam_head = head_json(
        fit(matrix(exam_rows[0], index, words), *exam_rows[1:], args.c_outcome), vocab
    )
    meta = {
        "c_type": args.c_type,
        "c_outcome": args.c_outcome,
        "type_rows": len(type_rows[0]),
        "outcome_rows": len(outcome_rows[0]),
        "exam_rows": len(exam_rows[0]),
        "min_df": MIN_DF,
    }
    validation = val_items()
    best: tuple[float, dict[str, Any], dict[str, Any]] | None = None
    # One entry per gram, its weight in each head: read at run time without conversion.
    heads = (type_head, outcome_head, exam_head)
    merged = {
        g: [h["grams"].get(g, 0) or 0 for h in heads]  # a bare 0 where a head has no weight
        for g in sorted(set().union(*(h["grams"] for h in heads)))
    }
    for b in args.mix:
        weights = {
            "format": 3,
            "words": sorted(words),
            "heads": HEADS,
            "bias": [h["bias"] for h in heads],
            "dense": [h["dense"] for h in heads],
            "grams": merged,
            "mix": {"type": b, "outcome": 1.0, "bias": 0.0},
            "meta": meta,
        }
        val = val_figures(weights, validation)
        print(
            f"mix type x{b}: val APGR mmlu {val['mmlu']:.3f} gsm8k {val['gsm8k']:.3f};"
            f" 1% hard under {val['threshold_1pct']:.3f}, everyday routed there"
            f" {val['easy_share']:.1%}"
        )
        # The mean APGR, as long as the everyday savings at the 1% point stay above 25%.
        key = (val["mmlu"] + val["gsm8k"]) / 2 + (0 if val["easy_share"] >= 0.25 else -1)
        if best is None or key > best[0]:
            best = (key, weights, val)
    assert best is not None
    _, weights, val = best
    # The shipped threshold: the largest score at which at most HARD_SHARE of the hard
    # validation prompts fall under it; the mix's bias then moves it to THRESHOLD, a round
    # value, so that scores read naturally (a monotone shift: rankings do not change).
    t_val = val["threshold_target"]
    weights["mix"]["bias"] = round(_logit(difficulty.THRESHOLD) - _logit(t_val), 4)
    weights["meta"]["threshold_rule"] = (
        f"at most {HARD_SHARE:.0%} of the hard validation prompts under THRESHOLD"
    )
    val = val_figures(weights, validation)
    print(f"threshold on the validation split: {t_val:.5f} -> bias {weights['mix']['bias']}")
    print(f"\nchosen mix: type x{weights['mix']['type']}; val sweep (hard share / everyday share):")
    for s in val["sweep"]:
        print(f"  t={s['t']:.2f} {s['hard']:.3f} / {s['easy']:.3f}")
    if not args.dry_run:
        text = json.dumps(weights, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        difficulty.WEIGHTS.write_text(text + "\n", encoding="utf-8")
        difficulty._MODEL = None
        print(f"wrote {difficulty.WEIGHTS.relative_to(ROOT)} ({len(text):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
