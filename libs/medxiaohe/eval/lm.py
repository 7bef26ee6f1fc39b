"""What a language model learned, measured in process: held-out perplexity, greedy answers to
chat prompts (images allowed), and a short answer as VQA compares it (option answers:
``medxiaohe.rubric.answers``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def perplexity(model: Any, tokenizer: Any, texts: Sequence[str], max_tokens: int = 256) -> float:
    """exp(mean negative log-likelihood per predicted token) over ``texts``, each cut to
    ``max_tokens`` tokens and scored on its own."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)
            if ids["input_ids"].shape[1] < 2:
                continue
            out = model(input_ids=ids["input_ids"], labels=ids["input_ids"])
            predicted = ids["input_ids"].shape[1] - 1
            total += float(out.loss) * predicted
            count += predicted
    return math.exp(total / count) if count else math.inf


def answer(
    model: Any,
    processor: Any,
    messages: list[dict[str, Any]],
    images: Sequence[Any] = (),
    max_new_tokens: int = 16,
) -> str:
    """The model's greedy reply to a chat (images fill its image parts, in order)."""
    import torch

    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if images:
        inputs = processor(text=[text], images=list(images), return_tensors="pt")
    else:
        tokenizer = getattr(processor, "tokenizer", processor)
        inputs = tokenizer([text], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    tokenizer = getattr(processor, "tokenizer", processor)
    return str(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))


def short_answer(reply: str) -> str:
    """A closed answer as VQA scoring compares it: lower case, no surrounding punctuation."""
    return reply.strip().lower().strip(" .!?\"'")


ANSWER_TOKENS = 16  # what an RL completion on these questions gets (rl-small.yaml)


def choice_figures(
    model: Any, processor: Any, rows: Sequence[dict[str, Any]], max_new_tokens: int = ANSWER_TOKENS
) -> dict[str, Any]:
    """Choice questions asked as the model was trained on them (each row's first user turn),
    greedy, read by the one option extractor: accuracy with its bootstrap 95 % interval,
    balanced accuracy, the top answer's share, what a constant answer scores, unparsed."""
    from medxiaohe.eval.harness.scoring import bootstrap
    from medxiaohe.rubric.answers import choice_summary, extract_option, options_from_prompt

    chosen = [
        extract_option(
            answer(model, processor, r["messages"][:1], max_new_tokens=max_new_tokens),
            options_from_prompt(r["messages"][:1]),
        )
        for r in rows
    ]
    gold = [str(r["answer"]) for r in rows]
    right = [float(c == g) for c, g in zip(chosen, gold, strict=True)]
    return {
        **choice_summary(chosen, gold),
        "ci95": bootstrap(right),
        "answer_tokens": max_new_tokens,
    }
