"""The ``eval`` stream (formats/eval.md): what moe-eval measured, per model, domain and task."""

from __future__ import annotations

from ..schema import (
    Schema,
    field_int,
    field_list,
    field_map,
    field_number,
    field_str,
    need,
    register_schema,
    where,
)

#: moe-eval --loss-definition values; a header without the field is ``no-prefix`` (streams before it existed)
LOSS_DEFINITIONS = ("no-prefix", "lm-eval")
#: the domain fields of the ``lm-eval`` definition only
ROLLING_FIELDS = ("loglikelihood", "words", "bytes", "word_perplexity", "byte_perplexity", "bits_per_byte")


def _models_in(header: dict) -> int | None:
    models = header.get("models")
    return len(models) if isinstance(models, list) else None


@register_schema
class EvalSchema(Schema):
    kind = "eval"
    record_types = ("model", "domain", "choice", "document")

    def check_header(self, header: dict) -> None:
        place = "eval header"
        models = field_list(header, "models", place)
        need(bool(models) and all(isinstance(m, str) for m in models), place,
             "'models' must be a non-empty list of model directory names")
        field_str(header, "data", place, optional=True, nullable=True)
        field_str(header, "choices", place, optional=True, nullable=True)
        field_str(header, "domain_field", place, optional=True)
        field_int(header, "max_length", place, minimum=2, optional=True)
        definition = field_str(header, "loss_definition", place, optional=True)
        need(definition is None or definition in LOSS_DEFINITIONS, place,
             f"'loss_definition' must be one of {', '.join(LOSS_DEFINITIONS)}, got {definition!r}")

    def _model_index(self, record, header, place):
        count = _models_in(header)
        return field_int(record, "model", place, minimum=0, maximum=None if count is None else count - 1)

    def check_model(self, record, header, number=None):
        place = where("eval", number, "model")
        self._model_index(record, header, place)
        identity = field_map(record, "identity", place)
        field_str(identity, "fingerprint", place + " identity")
        field_map(record, "masked", place, optional=True, nullable=True)

    def check_domain(self, record, header, number=None):
        place = where("eval", number, "domain")
        position = self._model_index(record, header, place)
        field_str(record, "domain", place)
        field_int(record, "documents", place)
        tokens = field_int(record, "tokens", place)
        loss = field_number(record, "loss", place, nullable=True)
        ppl = field_number(record, "perplexity", place, nullable=True)
        need((loss is None) == (tokens == 0), place, "'loss' is null exactly when 'tokens' is 0")
        need((loss is None) == (ppl is None), place, "'perplexity' is null exactly when 'loss' is")
        need(loss is None or loss >= 0, place, f"'loss' must be >= 0 (nats per token), got {loss!r}")
        delta = field_number(record, "delta_loss", place, optional=True, nullable=True)
        need(not (position == 0 and delta is not None), place, "the first model has no 'delta_loss' (null)")
        interval = record.get("delta_loss_ci95")
        if interval is not None:
            need(isinstance(interval, list) and len(interval) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in interval) and interval[0] <= interval[1],
                 place, f"'delta_loss_ci95' must be [low, high] with low <= high, got {interval!r}")
            need(delta is not None, place, "'delta_loss_ci95' without a 'delta_loss'")
        if header.get("loss_definition") == "lm-eval":
            self._check_rolling(record, tokens, place)
        else:
            extra = [name for name in ROLLING_FIELDS if name in record]
            need(not extra, place, f"{', '.join(repr(n) for n in extra)} belong to loss_definition 'lm-eval' only")

    def check_document(self, record, header, number=None):
        """One document's loss (the bootstrap's unit): its tokens and mean −log p; null exactly when no token."""
        place = where("eval", number, "document")
        self._model_index(record, header, place)
        field_str(record, "doc", place)
        field_str(record, "domain", place)
        field_int(record, "index", place, minimum=0)
        tokens = field_int(record, "tokens", place, minimum=0)
        loss = field_number(record, "loss", place, nullable=True)
        need((loss is None) == (tokens == 0), place, "'loss' is null exactly when 'tokens' is 0")
        need(loss is None or loss >= 0, place, f"'loss' must be >= 0 (nats per token), got {loss!r}")

    @staticmethod
    def _check_rolling(record, tokens, place):
        """lm-eval's loglikelihood_rolling numbers: Σ log p <= 0, word and byte counts, perplexities >= 1."""
        loglikelihood = field_number(record, "loglikelihood", place, nullable=True)
        need((loglikelihood is None) == (tokens == 0), place, "'loglikelihood' is null exactly when 'tokens' is 0")
        need(loglikelihood is None or loglikelihood <= 0, place,
             f"'loglikelihood' must be <= 0 (nats), got {loglikelihood!r}")
        for count, ratios in (("words", ("word_perplexity",)), ("bytes", ("byte_perplexity", "bits_per_byte"))):
            total = field_int(record, count, place)
            for name in ratios:
                value = field_number(record, name, place, nullable=True)
                need((value is None) == (loglikelihood is None or total == 0), place,
                     f"'{name}' is null exactly when 'loglikelihood' is or '{count}' is 0")
                low = 1 if name.endswith("perplexity") else 0
                need(value is None or value >= low, place, f"'{name}' must be >= {low}, got {value!r}")

    def check_choice(self, record, header, number=None):
        place = where("eval", number, "choice")
        position = self._model_index(record, header, place)
        field_str(record, "task", place)
        items = field_int(record, "items", place)
        for name in ("acc", "acc_norm"):
            value = field_number(record, name, place, nullable=True)
            need(value is None or 0 <= value <= 1, place, f"'{name}' must be in [0, 1], got {value!r}")
            need((value is None) == (items == 0), place, f"'{name}' is null exactly when 'items' is 0")
            delta = field_number(record, f"delta_{name}", place, optional=True, nullable=True)
            need(not (position == 0 and delta is not None), place, f"the first model has no 'delta_{name}'")
