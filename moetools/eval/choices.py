"""Multiple-choice accuracy by log-likelihood, as lm-evaluation-harness scores a ``multiple_choice`` task.

Each item: ``{"question": str, "choices": [str, ...], "answer": int}`` (JSON lines). For choice c the
score is LL(c) = Σ log p(continuation tokens | context) with context = the question and continuation
= " " + c (lm-eval's ``target_delimiter``), split into tokens as lm-eval's HF model does (the context's
trailing white space moved to the continuation; the continuation's tokens are those of
context+continuation beyond the context's). ``acc`` = mean [argmax_c LL(c) = answer];
``acc_norm`` = mean [argmax_c LL(c) / len(c) = answer] with len in characters (lm-eval's definition).
"""

from __future__ import annotations

from ..errors import EmptyInputError, FormatError


def read_choice_items(path) -> list[dict]:
    """The items of a JSON-lines file (FormatError, exit 2, naming the line of a bad one; no item at all:
    EmptyInputError, exit 3). An empty choice is refused: acc_norm divides by its length."""
    from ..corpus.documents import read_json_objects

    items = []
    for number, item in read_json_objects(path):
        choices, answer = item.get("choices"), item.get("answer")
        if not isinstance(item.get("question"), str) or not isinstance(choices, list) or len(choices) < 2 \
                or not all(isinstance(c, str) for c in choices) or not isinstance(answer, int) \
                or isinstance(answer, bool) or not 0 <= answer < len(choices):
            raise FormatError(f"{path}:{number}: an item needs question (str), choices (>= 2 str) and "
                              f"answer (index into choices)")
        empty = [k for k, choice in enumerate(choices) if not choice]
        if empty:
            raise FormatError(f"{path}:{number}: choice {empty[0]} is empty (acc_norm divides the "
                              "log-likelihood by a choice's length in characters)")
        items.append(item)
    if not items:
        raise EmptyInputError(f"{path}: empty input: no multiple-choice items")
    return items


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) split as lm-eval's HFLM._encode_pair does (tokenizer defaults)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation, context = context[-spaces:] + continuation, context[:-spaces]
    whole = tokenizer(context + continuation)["input_ids"]  # the tokenizer's own special tokens, as lm-eval
    head = tokenizer(context)["input_ids"]
    return head, whole[len(head):]


def loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    import torch

    head, tail = encode_pair(tokenizer, context, continuation)
    if not head:  # lm-eval scores an empty context after its prefix token
        head = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    ids = torch.tensor([head + tail], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()[0, :-1]  # (T-1, V)
    logprobs = torch.log_softmax(logits, dim=-1)[len(head) - 1:]  # rows predicting the continuation
    return float(logprobs.gather(-1, ids[0, len(head):, None]).sum())


def choice_accuracy(model, tokenizer, items: list[dict], delimiter: str = " ", on_item=None) -> dict:
    """{"items", "acc", "acc_norm"} of ``model`` on ``items``; ``on_item()`` (optional) after each item."""
    correct = correct_norm = 0
    for item in items:
        if on_item is not None:
            on_item()
        scores = [loglikelihood(model, tokenizer, item["question"], delimiter + c) for c in item["choices"]]
        normed = [s / len(c) for s, c in zip(scores, item["choices"])]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == item["answer"])
        correct_norm += int(max(range(len(normed)), key=normed.__getitem__) == item["answer"])
    count = len(items)
    return {"items": count, "acc": correct / count if count else None,
            "acc_norm": correct_norm / count if count else None}
