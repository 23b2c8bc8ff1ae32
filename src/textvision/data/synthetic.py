"""A synthetic corpus of movie-review-like texts written from the package's own phrase banks.

Every review mixes sentences of its own sentiment with neutral plot talk and, often, a
sentence of the opposite sentiment; a fraction of labels is flipped (label noise), so a good
model scores well but not 100%.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SUBJECTS = [
    "the film",
    "this movie",
    "the sequel",
    "the director's new picture",
    "the lead actor",
    "the screenplay",
    "the soundtrack",
    "the cinematography",
    "the supporting cast",
    "the ending",
    "the script",
    "the pacing",
    "the dialogue",
    "the visual effects",
]

SENTIMENT = {
    "positive": [
        "{s} is a delight from start to finish",
        "{s} is brilliant and deeply moving",
        "I loved {s}, it kept me gripped",
        "{s} is beautifully crafted and wonderfully acted",
        "{s} deserves every award it gets",
        "{s} is funny, warm and smart",
        "{s} is a triumph and I would watch it again",
        "honestly {s} is one of the best I have seen this year",
        "{s} left me smiling for days",
        "{s} is superb, a real masterpiece",
    ],
    "negative": [
        "{s} is a complete waste of time",
        "{s} is dull, clumsy and badly written",
        "I hated {s}, it dragged on forever",
        "{s} is poorly made and terribly acted",
        "{s} is one of the worst things I have ever sat through",
        "{s} is boring, predictable and lazy",
        "{s} is a mess and I want my money back",
        "honestly {s} is an embarrassment for everyone involved",
        "{s} made me fall asleep twice",
        "{s} is awful, avoid it at all costs",
    ],
    "neutral": [
        "{s} is neither good nor bad, just average",
        "{s} is fine for a rainy afternoon",
        "{s} has some good moments and some weak ones",
        "{s} is okay but forgettable",
        "{s} is watchable, nothing more",
    ],
}

PLOT = [
    "The story follows a detective who returns to her home town.",
    "It is set in a small village during a long winter.",
    "A young musician tries to make it in the big city.",
    "Two brothers inherit a failing restaurant.",
    "The plot revolves around a heist that goes wrong.",
    "A family travels across the country in an old van.",
    "It runs for about two hours.",
    "I saw it at the cinema with a friend last weekend.",
    "The cast includes several well known faces.",
    "It is based on a novel I have not read.",
    "There is a subplot about a missing painting.",
    "Most of it was filmed on location.",
]

CLASSES = {2: ["negative", "positive"], 3: ["negative", "neutral", "positive"]}


def make_corpus(*, n_per_class: int, n_classes: int, label_noise: float, seed: int) -> pd.DataFrame:
    """Return columns id, text, label (class name); labels balanced before noise."""
    if n_classes not in CLASSES:
        raise ValueError(f"n_classes must be one of {sorted(CLASSES)}, got {n_classes}")
    names = CLASSES[n_classes]
    rng = np.random.default_rng(seed)
    rows = []
    for label in names:
        others = [n for n in names if n != label]
        for _ in range(n_per_class):
            sentences = [_sentence(rng, SENTIMENT[label]) for _ in range(rng.integers(2, 4))]
            if rng.random() < 0.5:  # mixed-sentiment review
                sentences.append(_sentence(rng, SENTIMENT[others[rng.integers(len(others))]]))
            sentences += list(rng.choice(PLOT, size=rng.integers(1, 4), replace=False))
            order = rng.permutation(len(sentences))
            rows.append((" ".join(sentences[i] for i in order), label))
    frame = pd.DataFrame(rows, columns=["text", "label"])
    flip = rng.random(len(frame)) < label_noise
    frame.loc[flip, "label"] = [
        names[(names.index(lbl) + rng.integers(1, n_classes)) % n_classes]
        for lbl in frame.loc[flip, "label"]
    ]
    frame.insert(0, "id", [f"synthetic-{i:06d}" for i in range(len(frame))])
    return frame


def _sentence(rng: np.random.Generator, bank: list[str]) -> str:
    text = bank[rng.integers(len(bank))].format(s=SUBJECTS[rng.integers(len(SUBJECTS))])
    return text[0].upper() + text[1:] + rng.choice([".", "!", "."])
