"""Can the SAE stand in for its layer? Reconstruction and spliced-model metrics over an image source.

For each SAE (several in one pass over the images), on the tokens it is spliced on:
- reconstruction: FVU, L0, never-fired fraction, ... (`ReconstructionStats`, raw units);
- with the SAE spliced in *without* the error term, and, as baselines, with those tokens zeroed
  (zero-ablation) or set to their mean over the images (mean-ablation): top-1 accuracy (labels),
  agreement with the unspliced model's top-1, mean KL(original || spliced) of the softmax outputs, and
  the mean cosine of the outputs (the measure for embedding models without classes);
- recovered = (spliced - ablated) / (original - ablated), for accuracy and for KL (whose original is 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from vitsae.data.loader import NO_LABEL, ImageBatch
from vitsae.edit.splice import SpliceSite, spliced
from vitsae.errors import VitsaeError
from vitsae.eval.metrics import ReconstructionStats

CONDITIONS = ("spliced", "zero_ablation", "mean_ablation")


class EvalError(VitsaeError):
    """An evaluation that cannot run as asked (no labels for accuracy, ...)."""


@dataclass
class OutputStats:
    """Running sums comparing outputs with the original model's."""

    n: int = 0
    correct: int = 0
    agree: int = 0
    kl_sum: float = 0.0
    cosine_sum: float = 0.0
    labelled: bool = True

    def update(
        self, original: torch.Tensor, changed: torch.Tensor, labels: torch.Tensor, logits: bool
    ) -> None:
        original, changed = original.double(), changed.double()
        self.n += len(original)
        self.cosine_sum += float(torch.nn.functional.cosine_similarity(original, changed, dim=1).sum())
        if not logits:
            return
        log_p, log_q = original.log_softmax(1), changed.log_softmax(1)
        self.kl_sum += float((log_p.exp() * (log_p - log_q)).sum())
        self.agree += int((original.argmax(1) == changed.argmax(1)).sum())
        self.labelled &= bool((labels != NO_LABEL).all())
        self.correct += int((changed.argmax(1) == labels.to(changed.device)).sum())

    def summary(self, logits: bool, accuracy: bool) -> dict:
        out = {"output_cosine": self.cosine_sum / self.n}
        if logits:
            out["agreement"] = self.agree / self.n
            out["kl"] = self.kl_sum / self.n
            if accuracy:
                out["accuracy"] = self.correct / self.n
        return out


@dataclass
class SiteTally:
    site: SpliceSite
    hook: str
    recon: ReconstructionStats = field(default_factory=ReconstructionStats)
    outputs: dict[str, OutputStats] = field(default_factory=lambda: {c: OutputStats() for c in CONDITIONS})
    sum_D: torch.Tensor | None = None
    n_tokens: int = 0


def _replace_tokens(
    model, hook_name: str, mask_of: Callable[[int], torch.Tensor], value: torch.Tensor | None
):
    """A hook setting the selected tokens to `value` [D] (None: zero)."""

    def replace(acts: torch.Tensor, hook) -> torch.Tensor:
        tokens_BTD = model.to_tokens(hook_name, acts).clone()
        mask_T = mask_of(tokens_BTD.shape[1]).to(tokens_BTD.device)
        tokens_BTD[:, mask_T] = 0.0 if value is None else value.to(tokens_BTD)
        return model.from_tokens(hook_name, tokens_BTD, tuple(acts.shape))

    return replace


@torch.no_grad()
def evaluate_spliced(
    model,
    sites: list[SpliceSite],
    batches: Callable[[], Iterable[ImageBatch]],
    logits: bool,
    accuracy: bool,
    progress: bool = True,
    total: int | None = None,
) -> dict:
    """The metrics of the module docstring for every site (each spliced alone), as a JSON-ready dict."""
    device = next(model.parameters()).device
    tallies = []
    for site in sites:
        with spliced(model, [site]) as splice:  # validates the site and resolves its hook and tokens
            (active,) = splice.sites.values()
        tallies.append((SiteTally(site, active.hook_name), active))
    hooks = sorted({t.hook for t, _ in tallies})
    original = OutputStats()
    saved_logits: list[torch.Tensor] = []
    bar = tqdm(total=total, unit="img", desc="eval", disable=not progress)
    for batch in batches():
        pixels, labels = batch.pixels_BCHW.to(device), batch.labels_B
        out, cache = model.run_with_cache(pixels, names_filter=hooks)
        saved_logits.append(out.cpu())
        original.update(out, out, labels, logits)
        for tally, active in tallies:
            tokens_BTD = model.to_tokens(tally.hook, cache[tally.hook])
            mask_T = active.token_mask(tokens_BTD.shape[1]).to(tokens_BTD.device)
            x_ND = tokens_BTD[:, mask_T].reshape(-1, tokens_BTD.shape[-1])
            codes_NF = active.sae.encode(x_ND)
            tally.recon.update(x_ND, active.sae.decode(codes_NF), codes_NF)
            x64 = x_ND.double().sum(0).cpu()
            tally.sum_D = x64 if tally.sum_D is None else tally.sum_D + x64
            tally.n_tokens += len(x_ND)
            with spliced(model, [tally.site], error_term=False):
                tally.outputs["spliced"].update(out, model(pixels), labels, logits)
            zero = _replace_tokens(model, tally.hook, active.token_mask, None)
            tally.outputs["zero_ablation"].update(
                out, model.run_with_hooks(pixels, fwd_hooks=[(tally.hook, zero)]), labels, logits
            )
        bar.update(len(pixels))
    bar.close()
    if original.n == 0:
        raise EvalError("no images to evaluate on (empty source)")
    if accuracy and not original.labelled:
        raise EvalError("accuracy was asked but the source has images without labels (use --accuracy off)")
    bar = tqdm(total=total, unit="img", desc="mean ablation", disable=not progress)
    for batch, out in zip(batches(), saved_logits, strict=True):
        pixels = batch.pixels_BCHW.to(device)
        for tally, active in tallies:
            mean_D = (tally.sum_D / tally.n_tokens).float()
            fill = _replace_tokens(model, tally.hook, active.token_mask, mean_D)
            changed = model.run_with_hooks(pixels, fwd_hooks=[(tally.hook, fill)])
            tally.outputs["mean_ablation"].update(out.to(device), changed, batch.labels_B, logits)
        bar.update(len(pixels))
    bar.close()
    base = original.summary(logits, accuracy)
    rows = [_row(tally, active, base, logits, accuracy) for tally, active in tallies]
    return {
        "n_images": original.n,
        "output": "logits" if logits else "embedding",
        "original": base,
        "saes": rows,
    }


def _recovered(spliced_value, ablated_value, original_value):
    denominator = original_value - ablated_value
    return None if denominator == 0 else (spliced_value - ablated_value) / denominator


def _row(tally: SiteTally, active, base: dict, logits: bool, accuracy: bool) -> dict:
    row = {
        "hook": tally.hook,
        "tokens": sorted(active.kinds),
        "architecture": active.sae.cfg.architecture,
        "d_sae": active.sae.cfg.d_sae,
        "reconstruction": tally.recon.summary(),
    }
    for condition in CONDITIONS:
        row[condition] = tally.outputs[condition].summary(logits, accuracy)
    recovered = {}
    for ablation in ("zero_ablation", "mean_ablation"):
        if logits:
            recovered[f"kl_{ablation}"] = _recovered(row["spliced"]["kl"], row[ablation]["kl"], 0.0)
        if accuracy:
            recovered[f"accuracy_{ablation}"] = _recovered(
                row["spliced"]["accuracy"], row[ablation]["accuracy"], base["accuracy"]
            )
        recovered[f"cosine_{ablation}"] = _recovered(
            row["spliced"]["output_cosine"], row[ablation]["output_cosine"], 1.0
        )
    row["recovered"] = recovered
    return row
