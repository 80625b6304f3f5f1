"""Would this pass as yours? An authorship classifier that says how many replies would pass as the person's: a
logistic regression classifier (scikit-learn) on character n-gram TF-IDF and each reply's own habits (length, lines,
how it opens and ends, markdown; measured as in style_fingerprint.py), trained on the person's training replies
against the base model's replies to the same prompts and the other speakers' lines that prompted them.
"""

from __future__ import annotations

import math

import numpy as np

from ftg.style_fingerprint import emoji_in, ending, line_count, markdown_marks, start_case, words_in

CLASSIFIER = {"analyzer": "char_wb", "ngram_range": [1, 4], "min_df": 2, "max_features": 50_000, "C": 4.0,
              "reply_habits": "standardised, block weighted 1/sqrt(columns)"}
"""Character 1-4-grams inside word boundaries (they see "))", "ахах", emoji, case and punctuation), at most 50,000
of them, beside the reply's own habits (reply_habits); logistic regression with C = 4 (weak regularisation: the two
classes are few hundred replies each)."""

ENDINGS = (".", "!", "?", "…", ")", "emoji", "other")
STARTS = ("lowercase", "uppercase", "other")
MARKS = ("list", "heading", "bold")


def reply_habits(text: str) -> list[float]:
    """One reply's habits as numbers, for the classifier: log(1 + words), log(1 + lines), log(1 + emoji), then 1/0
    for each way it can end (ENDINGS), start (STARTS) and each markdown structure (MARKS).

    Why: TF-IDF rows are scaled to length 1 and an n-gram does not know where in the reply it stands, so the
    n-grams alone cannot hear that a reply is six times too long or opens with a capital. A person hears both first.
    Measured on the texter bench (dev_log.txt, 2026-12-03, stop 26): 4 of 39 base replies passed on n-grams alone,
    Russian, all four opening with a capital (the texter's 95 % do not), three of 60 words (the texter's median is
    10); with these habits beside the n-grams, none."""
    words, lines, emoji = len(words_in(text)), line_count(text), len(emoji_in(text))
    end, start, marks = ending(text), start_case(text), markdown_marks(text)
    return ([math.log1p(words), math.log1p(lines), math.log1p(emoji)]
            + [float(end == name) for name in ENDINGS]
            + [float(start == name) for name in STARTS]
            + [float(name in marks) for name in MARKS])


def pass_as_yours(person_train: list[str], base_train: list[str], candidates: dict[str, list[str]],
                  others_train: list[str] = (), seed: int = 0) -> dict:
    """Train the authorship classifier on the person's training replies (1) against the base model's replies to the
    same prompts and the other speakers' lines that prompted them (0), then the share of each candidate set that it
    takes for the person's (probability >= 0.5).

    Why the other speakers: a chat partner writes the person's language and letters too, so a base reply in that
    language, or one that only echoes the prompt, looked like the person's to a classifier that knew the person and
    the base alone. A person would not take their friend's words for their own; with the friend's lines as
    negatives the classifier does not either. Measured on the texter bench, the same 13 base replies (dev_log.txt,
    2026-12-03): 3 passed without the friend's lines (one a copy of the prompt, two Russian -pt ramblings), 1 with.

    The features: the n-grams (each row of length 1) and reply_habits, standardised on the training replies and
    divided by sqrt(their number), so that the habits weigh about as much as the n-grams together.

    Returns {name: share for each candidate, "train": {"person": n, "base": n, "others": n}, "settings": CLASSIFIER}.
    Deterministic: the solver (liblinear) is seeded and the features do not depend on order.
    """
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    vectorizer = TfidfVectorizer(analyzer=CLASSIFIER["analyzer"], ngram_range=tuple(CLASSIFIER["ngram_range"]),
                                 min_df=CLASSIFIER["min_df"], max_features=CLASSIFIER["max_features"],
                                 sublinear_tf=True, lowercase=False, dtype=np.float32)
    scaler = StandardScaler()

    def features(replies: list[str], fit: bool = False):
        habits = np.array([reply_habits(reply) for reply in replies], dtype=np.float32)
        habits = (scaler.fit_transform(habits) if fit else scaler.transform(habits)) / math.sqrt(habits.shape[1])
        ngrams = vectorizer.fit_transform(replies) if fit else vectorizer.transform(replies)
        return hstack([ngrams, csr_matrix(habits)]).tocsr()

    negatives = list(base_train) + list(others_train)
    labels = np.array([1] * len(person_train) + [0] * len(negatives))
    model = LogisticRegression(C=CLASSIFIER["C"], solver="liblinear", class_weight="balanced", random_state=seed,
                               max_iter=1000)
    model.fit(features(list(person_train) + negatives, fit=True), labels)
    result = {}
    for name, replies in candidates.items():
        replies = list(replies)
        result[name] = float(np.mean(model.predict_proba(features(replies))[:, 1] >= 0.5)) if replies else None
    result["train"] = {"person": len(person_train), "base": len(base_train), "others": len(others_train)}
    result["settings"] = dict(CLASSIFIER)
    return result
