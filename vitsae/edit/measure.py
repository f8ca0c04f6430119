"""Measure what an edit does to a classifier's predictions, against two seeded controls.

Every image goes through the model with the SAEs spliced in and their error terms kept ("before": the
unspliced model's outputs to rounding), then with the edits ("after"). Images where an edit changed at
least one feature activation are the edit's *target* images, the rest *off-target*. Two controls repeat
the edit with a fixed seed:

- `random_features`: each edited feature replaced by a feature of matched firing frequency (drawn among
  the `MATCH_POOL` features whose firing counts on these images are closest, never an edited one);
- `random_directions`: the same activation changes decoded along random directions of the same norm as
  each feature's decoder row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from vitsae.data.loader import NO_LABEL, ImageBatch
from vitsae.edit.edits import FeatureEdit
from vitsae.edit.splice import SpliceSite, spliced

MATCH_POOL = 8


@dataclass
class Tally:
    """Per-image outcomes of one condition, kept whole (images x classes is small)."""

    before: list[torch.Tensor] = field(default_factory=list)
    after: list[torch.Tensor] = field(default_factory=list)
    target: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    indices: list[torch.Tensor] = field(default_factory=list)

    def add(self, before, after, target, labels, indices) -> None:
        self.before.append(before.detach().double().cpu())
        self.after.append(after.detach().double().cpu())
        self.target.append(target.cpu())
        self.labels.append(labels.cpu())
        self.indices.append(indices.cpu())

    def summary(self, class_names: list[str]) -> dict:
        before, after = torch.cat(self.before), torch.cat(self.after)
        target, labels = torch.cat(self.target), torch.cat(self.labels)
        n_classes = before.shape[1]
        pred_before, pred_after = before.argmax(1), after.argmax(1)
        changed = pred_before != pred_after
        d_logit = after - before
        d_prob = after.softmax(1) - before.softmax(1)
        cosine = torch.nn.functional.cosine_similarity(before, after, dim=1)
        out: dict = {"n_images": int(target.numel()), "n_target": int(target.sum())}
        groups = {"all": torch.ones_like(target), "target": target, "off_target": ~target}
        out["prediction_change_rate"] = {g: _rate(changed[m]) for g, m in groups.items()}
        out["n_predictions_changed"] = {g: int(changed[m].sum()) for g, m in groups.items()}
        if (labels != NO_LABEL).all():
            out["accuracy_before"] = {g: _rate(pred_before[m] == labels[m]) for g, m in groups.items()}
            out["accuracy_after"] = {g: _rate(pred_after[m] == labels[m]) for g, m in groups.items()}
        for name, values in (("mean_logit_change", d_logit), ("mean_prob_change", d_prob)):
            out[name] = {
                g: dict(zip(class_names, _mean_rows(values[m], n_classes), strict=True))
                for g, m in groups.items()
                if g != "all"
            }
        out["mean_output_cosine"] = {
            g: float(cosine[m].mean()) if m.any() else None for g, m in groups.items()
        }
        for g in ("target", "off_target"):
            confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
            m = groups[g]
            confusion.index_put_(
                (pred_before[m], pred_after[m]), torch.ones(int(m.sum()), dtype=torch.long), True
            )
            out.setdefault("confusion", {})[g] = confusion.tolist()
            moved = changed & m
            out.setdefault("moved_to", {})[g] = {
                class_names[c]: int((pred_after[moved] == c).sum())
                for c in pred_after[moved].unique().tolist()
            }
        return out


def _rate(flags: torch.Tensor) -> float | None:
    return float(flags.double().mean()) if flags.numel() else None


def _mean_rows(values: torch.Tensor, n_classes: int) -> list[float | None]:
    if values.shape[0] == 0:
        return [None] * n_classes
    return values.mean(0).tolist()


def matched_features(
    counts_F: torch.Tensor, features: list[int], generator: torch.Generator, pool: int = MATCH_POOL
) -> dict[int, int]:
    """For each feature, a different feature whose firing count is among the `pool` closest (not edited)."""
    taken = set(features)
    out = {}
    for feature in features:
        distance = (counts_F - counts_F[feature]).abs().double()
        distance[list(taken)] = float("inf")
        nearest = torch.argsort(distance, stable=True)[:pool]
        nearest = nearest[torch.isfinite(distance[nearest])]
        pick = int(nearest[torch.randint(len(nearest), (1,), generator=generator)])
        out[feature] = pick
        taken.add(pick)
    return out


def random_directions(W_dec_FD: torch.Tensor, features: list[int], generator: torch.Generator) -> dict:
    """For each feature, a uniformly random direction with the norm of its decoder row."""
    out = {}
    for feature in features:
        row = W_dec_FD[feature].detach()
        direction = torch.randn(row.shape, generator=generator, dtype=torch.float64)
        out[feature] = (direction / direction.norm() * row.double().norm()).to(row)
    return out


def _site_hook(site: SpliceSite) -> str:
    return site.hook_name or site.sae.cfg.hook_name


def _edits_by_site(edits: list[FeatureEdit], hooks: list[str]) -> dict[str, list[int]]:
    features: dict[str, list[int]] = {hook: [] for hook in hooks}
    for edit in edits:
        hook = edit.hook_name or hooks[0]
        features[hook].extend(f for f in edit.features if f not in features[hook])
    return features


@torch.no_grad()
def measure_edit(
    model,
    sites: list[SpliceSite],
    edits: list[FeatureEdit],
    batches: Callable[[], Iterable[ImageBatch]],
    class_names: list[str],
    seed: int = 0,
    controls: bool = True,
    donor_pixels: torch.Tensor | None = None,
    progress: bool = True,
    total: int | None = None,
) -> dict:
    """The edit's effect and its controls' (see the module docstring) as a JSON-ready dict.

    `batches()` must yield the same images each time it is called (two passes when `controls`).
    Also returns, under "_tallies", the raw per-condition tallies for pictures.
    """
    device = next(model.parameters()).device
    tallies = {"edit": Tally()}
    before_logits: list[torch.Tensor] = []
    counts: dict[str, torch.Tensor] = {}
    bar = tqdm(total=total, unit="img", desc="edit", disable=not progress)
    for batch in batches():
        pixels = batch.pixels_BCHW.to(device)
        with spliced(model, sites, error_term=True, count_fires=controls) as splice:
            before = model(pixels)
        for hook, site in splice.sites.items():
            if site.fire_counts_F is not None:
                counts[hook] = counts.get(hook, 0) + site.fire_counts_F
        with spliced(model, sites, error_term=True, edits=edits, donor_pixels=donor_pixels) as splice:
            after = model(pixels)
            target = splice.changed_B()
        before_logits.append(before.cpu())
        tallies["edit"].add(before, after, target, batch.labels_B, batch.indices_B)
        bar.update(len(pixels))
    bar.close()
    result = {"edit": tallies["edit"].summary(class_names)}
    if controls:
        generator = torch.Generator().manual_seed(seed)
        hooks = [_site_hook(site) for site in sites]
        by_site = _edits_by_site(edits, hooks)
        swaps = {hook: matched_features(counts[hook], feats, generator) for hook, feats in by_site.items()}
        control_edits = [
            e.with_features(tuple(swaps[e.hook_name or hooks[0]][f] for f in e.features)) for e in edits
        ]
        direction_sites = [
            SpliceSite(
                s.sae,
                s.hook_name,
                s.tokens,
                s.stats_dir,
                random_directions(s.sae.W_dec, by_site[h], generator),
            )
            for s, h in zip(sites, hooks, strict=True)
        ]
        tallies["random_features"], tallies["random_directions"] = Tally(), Tally()
        bar = tqdm(total=total, unit="img", desc="controls", disable=not progress)
        for batch, before in zip(batches(), before_logits, strict=True):
            pixels = batch.pixels_BCHW.to(device)
            with spliced(model, sites, edits=control_edits, donor_pixels=donor_pixels) as splice:
                after = model(pixels)
                tallies["random_features"].add(
                    before, after, splice.changed_B(), batch.labels_B, batch.indices_B
                )
            with spliced(model, direction_sites, edits=edits, donor_pixels=donor_pixels) as splice:
                after = model(pixels)
                tallies["random_directions"].add(
                    before, after, splice.changed_B(), batch.labels_B, batch.indices_B
                )
            bar.update(len(pixels))
        bar.close()
        result["random_features"] = tallies["random_features"].summary(class_names)
        result["random_features"]["features"] = {
            h: {str(k): v for k, v in s.items()} for h, s in swaps.items()
        }
        result["random_directions"] = tallies["random_directions"].summary(class_names)
        result["random_directions"]["seed"] = seed
    result["_tallies"] = tallies
    return result
