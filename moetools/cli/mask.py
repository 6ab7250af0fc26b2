"""moe-mask: remove experts from a model; write a directory any evaluator loads (logic: ``moetools.mask``)."""

from __future__ import annotations

import click

from .common import output_guard, progress, say, tool

EXAMPLE = """\
moe-mask models/olmoe --experts offensive.json -o masked/
moe-eval models/olmoe masked/ --data validation.jsonl --domain-field domain
lm_eval --model hf --model_args pretrained=masked/ --tasks my_local_task"""


@tool("moe-mask", example=EXAMPLE)
@click.argument("model", type=click.Path(file_okay=False))
@click.option("--experts", "experts_path", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="experts.json (formats/experts.md, ESFT's layout): the experts to mask, per decoder layer.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Output model directory; written under a temporary name beside it and renamed when complete.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True, help="Weights' dtype in the output (auto: as stored).")
@output_guard(directory=True, pass_force=True)
def command(model, experts_path, output, force, dtype):
    """Remove experts from MODEL so that any evaluator measures the effect.

    A masked expert is never selected, and every other gate is what the
    family's router computes when the masked experts' router logits are -inf
    (softmax families: they leave the softmax's denominator too; sigmoid-scored
    DeepSeek-V3: removed from selection and from the normalisation over the
    selected). MONET: composed experts (i, j) are masked at routing level
    (their gate g_ij is 0, the others unchanged); where layers share one
    router (moe_groups > 1) an expert is one choice of that router, masked in
    every layer of its group (a note on stderr says so).

    OUTPUT is a complete model directory (config, safetensors, tokenizer) whose
    config.json records the mask and its provenance (formats/mask.md):

    \b
    pruned  every MoE layer masks as many experts (and, for group-limited
            routers, as many per group): experts and router rows removed, a
            standard checkpoint; AutoModelForCausalLM.from_pretrained(OUTPUT).
    bias    layers of different sizes, and a router bias that -inf removes
            exactly (GPT-OSS, DeepSeek-V3, ERNIE-4.5): every expert kept,
            the masked ones' router bias -inf; standard.
    remote  layers of different sizes in OLMoE, Mixtral, Qwen2/3-MoE,
            DeepSeek-V2, and every MONET mask: weights unchanged plus small
            custom code that reads the family's routing rule from config.json;
            from_pretrained(OUTPUT, trust_remote_code=True), and loading
            without it fails rather than giving the unmasked model.

    Any family with an adapter (moe-trace --list-models), a plugin's too.
    OUTPUT keeps MODEL's dtype and sharding; quantized experts (GPT-OSS MXFP4
    blocks and scales, block-FP8 weights with weight_scale_inv) are written
    sliced in pruned/bias mode, the kept experts' bytes unchanged, so OUTPUT is
    as small as the experts kept.

    Refuses (exit 2) a MODEL whose weights do not belong to its config,
    an experts file scored on another model (fingerprint), ids out of range,
    a layer masked entirely or left with fewer than top-k experts (MONET:
    composed experts), and a group-limited router that could be forced onto
    a masked expert.
    """
    from ..mask import mask_directory

    record = mask_directory(model, experts_path, output, force=force, dtype=dtype, log=say, progress=progress)
    say(f"wrote {output} ({record['mode']})")
main = command.main
