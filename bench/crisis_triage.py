"""How long crisis triage takes on long messages, next to a plain pass over the same words.

    python -m bench.crisis_triage            # from the repository root; a few seconds

Every client message is triaged before anything else, so a slow rule (a pattern
that backtracks on a long message) would hold a client up. Each row times the
triage of one message (best of ``--repeat`` rounds, per message) and, as the
baseline measured in the same run, folding the message and splitting it into
words, the least any triage must do. The ratio is the figure to watch; the
milliseconds depend on the machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from e2ecounsel.domain import crisis_model
from e2ecounsel.domain.crisis import CrisisDetector
from e2ecounsel.domain.crisis_corpus import parse_corpus, training_examples
from e2ecounsel.policy import default_policy_dir, load_policy


def best_of(fn: Callable[[], object], repeat: int, number: int) -> float:
    """Seconds per call: the best of ``repeat`` rounds of ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        begin = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - begin) / number)
    return best


def baseline(text: str) -> Callable[[], object]:
    return lambda: text.casefold().split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds per row (best counts)")
    args = parser.parse_args()

    policy = load_policy(strict=True)
    shipped = policy.crisis.detector()
    many = CrisisDetector(
        {"en": [f"phrase{i} word{i % 97} tail{i % 13}" for i in range(5000)] + ["kill myself"]}
    )
    rows = [
        (
            "shipped rules, 3,700-character everyday message (id)",
            "aku capek banget kerja hari ini dan pengen tidur lama sekali. " * 60,
            shipped.triage,
        ),
        (
            "shipped rules, 2,000-word message ending in a crisis phrase (en)",
            " ".join(f"word{i}" for i in range(2000)) + " i want to kill myself",
            shipped.triage,
        ),
        (
            "5,000 phrases, 2,000-word message",
            " ".join(f"word{i}" for i in range(2000)) + " kill myself",
            many.detect,
        ),
    ]
    print(f"{'row':66} {'triage':>10} {'baseline':>10} {'ratio':>8}")
    for name, text, judge in rows:
        took = best_of(lambda judge=judge, text=text: judge(text), args.repeat, 5)
        base = best_of(baseline(text), args.repeat, 50)
        print(f"{name:66} {took * 1000:8.2f}ms {base * 1000:8.3f}ms {took / base:7.0f}x")

    corpus = (default_policy_dir() / "crisis" / "corpus.tsv").read_text(encoding="utf-8")
    examples = training_examples(parse_corpus(corpus))
    took = best_of(lambda: crisis_model.train(examples), args.repeat, 1)
    base = best_of(lambda: [e.text.casefold().split() for e in examples], args.repeat, 5)
    name = f"training the model on {len(examples)} corpus lines"
    print(f"{name:66} {took * 1000:8.1f}ms {base * 1000:8.3f}ms {took / base:7.0f}x")


if __name__ == "__main__":
    main()
