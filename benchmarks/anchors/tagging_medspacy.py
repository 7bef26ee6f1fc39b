"""Anchor for `medxiaohe bench tagging`, run in .venv-medspacy: spaCy's PhraseMatcher and
medspaCy's TargetMatcher over the same terms and texts, and medspaCy ConText on given spans."""

import json
import statistics
import sys
import time

import spacy
from medspacy.context import ConText
from medspacy.target_matcher import TargetMatcher, TargetRule
from spacy.matcher import PhraseMatcher


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    with open(sys.argv[1]) as fh:
        job = json.load(fh)
    terms, texts, repeats = job["terms"], job["texts"], job["repeats"]
    total_bytes = sum(len(t.encode()) for t in texts)
    nlp = spacy.blank("en")

    phrase = PhraseMatcher(nlp.vocab, attr="LOWER")
    phrase.add("TERM", [nlp.make_doc(t) for t in terms])
    spacy_s = timed(lambda: [phrase(nlp.make_doc(t)) for t in texts], repeats)

    target = TargetMatcher(nlp)
    target.add([TargetRule(t, "TERM") for t in terms])
    medspacy_s = timed(lambda: [target(nlp.make_doc(t)) for t in texts], repeats)

    # ConText on the spans our tagger found, so only the assertion logic is compared
    ctx_nlp = spacy.blank("en")
    ctx_nlp.add_pipe("sentencizer")
    context = ConText(ctx_nlp)
    verdicts = []
    for item in job["context"]:
        doc = ctx_nlp(item["text"])
        ents = [
            doc.char_span(s, e, label="TERM", alignment_mode="expand") for s, e in item["spans"]
        ]
        doc.ents = [e for e in ents if e is not None]
        context(doc)
        labels = {}
        for ent in doc.ents:
            state = "present"
            if ent._.is_negated:
                state = "negated"
            elif ent._.is_uncertain or ent._.is_hypothetical:
                state = "uncertain"
            elif ent._.is_family:
                state = "family"
            elif ent._.is_historical:
                state = "historical"
            labels[f"{ent.start_char}:{ent.end_char}"] = state
        verdicts.append(labels)

    def rate(seconds):
        return {
            "mb_per_s": round(total_bytes / seconds / 1e6, 3),
            "docs_per_s": round(len(texts) / seconds, 1),
            "seconds": round(seconds, 3),
        }

    print(
        json.dumps(
            {
                "spacy_phrasematcher": rate(spacy_s),
                "medspacy": rate(medspacy_s),
                "context": verdicts,
                "spacy_version": spacy.__version__,
            }
        )
    )


main()
