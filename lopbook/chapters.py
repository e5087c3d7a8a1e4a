"""The runs of every chapter, built from its settings ``P`` (``presets.resolve``).

One function per chapter returns its runs as named lists of configs. The chapters
call them, and so do ``python -m lopbook.record`` (results of record) and
:func:`lopbook.cluster.submit` (a chapter's runs as cluster jobs): the three always
mean the same runs.

>>> from lopbook import presets
>>> P = presets.resolve("06_continual_backprop", "quick")
>>> {name: len(configs) for name, configs in plan("06_continual_backprop", P).items()}
{'backprop': 2, 'continual backprop': 2, 'sweep': 3}
"""

from __future__ import annotations

import dataclasses
import json

from . import presets
from .configs import key_settings, runs

__all__ = ["plan", "PLANS", "configs_of", "record_baselines"]


def what_is_plasticity(P) -> dict[str, list]:
    """Chapter 1: backprop task after task, and fresh networks on one task each."""
    base = presets.permuted_mnist(P, label="Backprop, continually")
    fresh = dataclasses.replace(
        base, tasks=1, metrics_every=0, label="fresh network, one task"
    )
    return {
        "continual": runs(base, P.runs_per_setting),
        "fresh": runs(fresh, P.fresh_runs, first_seed=1000),
    }


def permuted_mnist(P) -> dict[str, list]:
    """Chapter 3: the headline runs and the three robustness sweeps (step size, width,
    rate of change; the last two over ``sweep_tasks`` tasks' worth of examples)."""
    base = presets.permuted_mnist(P)
    sweep = dataclasses.replace(base, tasks=P.sweep_tasks)
    budget = P.sweep_tasks * P.examples_per_task  # examples of every rate-of-change run
    step_sizes = [
        c
        for s in P.step_sizes
        if s != base.step_size
        for c in runs(dataclasses.replace(base, step_size=s), P.sweep_runs)
    ]
    widths = [
        c
        for w in P.widths
        if w != P.width
        for c in runs(dataclasses.replace(sweep, width=w), P.sweep_runs)
    ]
    rates = [
        c
        for e in P.change_every
        if e != P.examples_per_task
        for c in runs(
            dataclasses.replace(sweep, examples_per_task=e, tasks=budget // e),
            P.sweep_runs,
        )
    ]
    return {
        "headline": runs(base, P.runs_per_setting),
        "step sizes": step_sizes,
        "widths": widths,
        "rates of change": rates,
    }


def why_plasticity_is_lost(P) -> dict[str, list]:
    """Chapter 4: chapter 3's step-size sweep, the headline runs included."""
    base = presets.permuted_mnist(P)
    found = {}
    for s in sorted(P.step_sizes, reverse=True):
        n = P.runs_per_setting if s == P.step_size else P.sweep_runs
        label = f"step size {s:g}"
        found[label] = runs(dataclasses.replace(base, step_size=s, label=label), n)
    return found


def mitigations(P) -> dict[str, list]:
    """Chapter 5: backprop and five standard methods."""
    base = presets.permuted_mnist(P)
    methods = {
        "l2": base.with_method(
            "l2",
            weight_decay=P.l2_weight_decay,
            label=f"L2 (λ = {P.l2_weight_decay:g})",
        ),
        "shrink_and_perturb": _shrink_and_perturb(
            base,
            P,
            f"Shrink and Perturb (λ = {P.sp_weight_decay:g}, σ = {P.sp_noise_std:g})",
        ),
        "dropout": dataclasses.replace(
            base, dropout=P.dropout, label=f"Dropout (p = {P.dropout:g})"
        ),
        "layer_norm": dataclasses.replace(base, norm="layer", label="Layer norm"),
        "adam": dataclasses.replace(
            base,
            optimizer="adam",
            step_size=P.adam_step_size,
            betas=(0.9, 0.999),
            label=f"Adam (α = {P.adam_step_size:g})",
        ),
    }
    found = {"backprop": runs(base, P.runs_per_setting)}
    found.update({name: runs(cfg, P.method_runs) for name, cfg in methods.items()})
    return found


def continual_backprop(P) -> dict[str, list]:
    """Chapter 6: backprop against continual backprop, and a sweep of replacement
    rates (one run each; the main rate's run is the comparison's first)."""
    base = presets.permuted_mnist(P)
    cbp = _continual_backprop(
        base, P, f"Continual backprop (ρ = {P.replacement_rate:g})"
    )
    sweep = [
        cbp.with_method(
            "continual_backprop",
            replacement_rate=rate,
            utility=P.utility,
            label=f"ρ = {rate:g}",
        )
        for rate in P.sweep_rates
        if rate != P.replacement_rate
    ]
    return {
        "backprop": runs(base, P.runs_per_setting),
        "continual backprop": runs(cbp, P.runs_per_setting),
        "sweep": sweep,
    }


def _shrink_and_perturb(base, P, label: str):
    """``base`` with Shrink-and-Perturb at ``P``'s shrink and noise."""
    return base.with_method(
        "shrink_and_perturb",
        weight_decay=P.sp_weight_decay,
        noise_std=P.sp_noise_std,
        label=label,
    )


def _continual_backprop(base, P, label: str):
    """``base`` with continual backprop at ``P``'s replacement rate and utility."""
    return base.with_method(
        "continual_backprop",
        replacement_rate=P.replacement_rate,
        utility=P.utility,
        label=label,
    )


def summary(P) -> dict[str, list]:
    """The summary: chapter 6's backprop and continual backprop."""
    base = presets.permuted_mnist(P)
    cbp = _continual_backprop(base, P, "Continual backprop")
    return {
        "backprop": runs(base, P.runs_per_setting),
        "continual backprop": runs(cbp, P.runs_per_setting),
    }


def continual_imagenet(P) -> dict[str, list]:
    """Chapter 2: backprop at each step size (Fig. 1b), then backprop against L2,
    Shrink-and-Perturb and continual backprop over ``remedy_tasks`` tasks (Fig. 1c)."""
    base = presets.continual_imagenet(P)
    found = {}
    for s in P.step_sizes:
        label = f"Backprop, step size {s:g}"
        found[label] = runs(
            dataclasses.replace(base, step_size=s, label=label), P.runs_per_step
        )
    long = dataclasses.replace(base, tasks=P.remedy_tasks)
    remedies = {
        "backprop": dataclasses.replace(
            long,
            step_size=P.cbp_step_size,
            label=f"Backprop (α = {P.cbp_step_size:g})",
        ),
        "l2": dataclasses.replace(long, step_size=P.l2_step_size).with_method(
            "l2",
            weight_decay=P.l2_weight_decay,
            label=f"L2 (λ = {P.l2_weight_decay:g})",
        ),
        "shrink_and_perturb": dataclasses.replace(
            long, step_size=P.sp_step_size
        ).with_method(
            "shrink_and_perturb",
            weight_decay=P.sp_weight_decay,
            noise_std=P.sp_noise_std,
            label=f"Shrink and Perturb (λ = {P.sp_weight_decay:g}, "
            f"σ = {P.sp_noise_std:g})",
        ),
        "continual_backprop": dataclasses.replace(
            long, step_size=P.cbp_step_size
        ).with_method(
            "continual_backprop",
            replacement_rate=P.replacement_rate,
            utility=P.utility,
            label=f"Continual backprop (ρ = {P.replacement_rate:g})",
        ),
    }
    for name, cfg in remedies.items():
        found[f"remedies: {name}"] = runs(cfg, P.remedy_runs)
    return found


def slowly_changing_regression(P) -> dict[str, list]:
    """Chapter 7: backprop with every activation function at every step size
    (Extended Data Fig. 2b), and, for ``method_activations``, L2,
    Shrink-and-Perturb and continual backprop beside it."""
    found = {}
    for act in P.activations:
        for s in P.step_sizes:
            cfg = presets.slowly_changing_regression(
                P, act, label=f"{act}, step size {s:g}", step_size=s
            )
            found[f"backprop: {act}, {s:g}"] = runs(cfg, P.runs_per_setting)
    for act in P.method_activations:
        base = presets.slowly_changing_regression(P, act, label=f"{act}: backprop")
        methods = {
            "l2": base.with_method(
                "l2", weight_decay=P.l2_weight_decay, label=f"{act}: L2"
            ),
            "shrink_and_perturb": _shrink_and_perturb(
                base, P, f"{act}: Shrink and Perturb"
            ),
            "continual_backprop": base.with_method(
                "continual_backprop",
                replacement_rate=P.replacement_rate,
                maturity_threshold=P.maturity_threshold,
                utility=P.utility,
                label=f"{act}: continual backprop",
            ),
        }
        found[f"methods: {act}, backprop"] = runs(base, P.runs_per_setting)
        for name, cfg in methods.items():
            found[f"methods: {act}, {name}"] = runs(cfg, P.runs_per_setting)
    return found


def newer_remedies(P) -> dict[str, list]:
    """Chapter 8: backprop, continual backprop and the methods published since, on
    the shared Permuted MNIST setting; with ``sweep``, each method's strength swept."""
    base = presets.permuted_mnist(P)
    found = {
        "backprop": runs(base, P.runs_per_setting),
        "continual_backprop": runs(
            _continual_backprop(
                base, P, f"Continual backprop (ρ = {P.replacement_rate:g})"
            ),
            P.runs_per_setting,
        ),
    }
    for name, hyperparameters in newer_methods(P).items():
        found[name] = runs(newer_config(P, name, hyperparameters), P.method_runs)
    if P.sweep:
        for name, strengths in newer_sweeps(P).items():
            found[f"sweep: {name}"] = [newer_config(P, name, h) for h in strengths]
    return found


#: each newer method's label from its hyperparameters (each starts as the method's
#: colour in lopbook.plots.METHOD_COLORS)
NEWER_LABELS = {
    "l2_init": lambda h: f"L2 Init (λ = {h['weight_decay']:g})",
    "redo": lambda h: f"ReDo (τ = {h['threshold']:g}, every {h['period']:,} steps)",
    "weight_clipping": lambda h: f"Weight clipping (κ = {h['kappa']:g})",
    "upgd": lambda h: f"UPGD (σ = {h['noise_std']:g}, λ = {h['weight_decay']:g})",
    "normalize_and_project": lambda h: "Normalize-and-Project",
    "spectral_regularization": lambda h: f"Spectral reg. (λ = {h['strength']:g})",
    "self_normalized_resets": lambda h: (
        f"Self-normalized resets (p = {h['percentile']:g})"
    ),
}

#: what a newer method needs of the network: Normalize-and-Project projects the
#: weights of layers followed by layer norm, so its network has layer norm
NEWER_NETWORKS = {"normalize_and_project": dict(norm="layer")}


def newer_config(P, name: str, hyperparameters: dict):
    """The shared Permuted MNIST config with newer method ``name`` (and the network
    it needs), labelled by its hyperparameters."""
    base = dataclasses.replace(
        presets.permuted_mnist(P), **NEWER_NETWORKS.get(name, {})
    )
    label = NEWER_LABELS[name](hyperparameters)
    return base.with_method(name, label=label, **hyperparameters)


def newer_methods(P) -> dict[str, dict]:
    """Each newer method's hyperparameters at settings ``P``."""
    return {
        "l2_init": dict(weight_decay=P.l2_init_weight_decay),
        "redo": dict(threshold=P.redo_threshold, period=P.redo_period),
        "weight_clipping": dict(kappa=P.clip_kappa),
        "upgd": dict(noise_std=P.upgd_noise_std, weight_decay=P.upgd_weight_decay),
        "normalize_and_project": dict(),
        "spectral_regularization": dict(strength=P.spectral_strength),
        "self_normalized_resets": dict(percentile=P.snr_percentile),
    }


def newer_sweeps(P) -> dict[str, list[dict]]:
    """The tuning sweep of each newer method with a strength: its main setting and
    one weaker and one stronger (factors of 10, or the paper's grid)."""
    main = newer_methods(P)
    scaled = {
        "l2_init": "weight_decay",
        "upgd": "noise_std",
        "spectral_regularization": "strength",
    }
    sweeps = {
        name: [dict(main[name], **{key: main[name][key] * f}) for f in (0.1, 10.0)]
        for name, key in scaled.items()
    }
    sweeps["redo"] = [dict(main["redo"], threshold=t) for t in (0.0, 0.025)]
    sweeps["weight_clipping"] = [dict(kappa=k) for k in (1.0, 4.0)]
    sweeps["self_normalized_resets"] = [dict(percentile=p) for p in (0.9, 0.999)]
    return sweeps


#: every chapter's runs, by the chapter's file name
PLANS = {
    "01_what_is_plasticity": what_is_plasticity,
    "02_continual_imagenet": continual_imagenet,
    "03_permuted_mnist": permuted_mnist,
    "04_why_plasticity_is_lost": why_plasticity_is_lost,
    "05_mitigations": mitigations,
    "06_continual_backprop": continual_backprop,
    "07_slowly_changing_regression": slowly_changing_regression,
    "08_newer_remedies": newer_remedies,
    "09_summary": summary,
}


def plan(chapter: str, P) -> dict[str, list]:
    """The runs of ``chapter`` at settings ``P``, as named lists of configs."""
    if chapter not in PLANS:
        raise ValueError(
            f"no runs are planned for {chapter!r}; chapters with runs: "
            f"{', '.join(PLANS)}"
        )
    return PLANS[chapter](P)


def configs_of(chapter: str, P) -> list:
    """Every run of ``chapter``'s plan, each once (a run under two labels is one run),
    in order."""
    found, seen = [], set()
    for configs in plan(chapter, P).values():
        for cfg in configs:
            key = (type(cfg).__name__, json.dumps(key_settings(cfg), sort_keys=True))
            if key not in seen:
                seen.add(key)
                found.append(cfg)
    return found


def record_baselines(
    chapter: str,
    P,
    scale: str,
    data_dir=None,
    write: bool = False,
    root=None,
    recompute: bool = False,
) -> dict:
    """What ``chapter``'s record at ``scale`` (settings ``P``) is drawn against besides
    its runs, shipped with it (:func:`lopbook.record.derived`, which ``write``, ``root``
    and ``recompute`` are passed to) or else computed here: for chapter 2, the linear
    baseline on the class pairs of every seed of the record, ``{seed: per-task test
    accuracy}``. Other chapters: ``{}``."""
    if chapter != "02_continual_imagenet":
        return {}
    import numpy as np

    from . import record as records
    from .data import class_images
    from .experiments import linear_baseline

    configs = configs_of(chapter, P)
    cfg = configs[0]
    source = class_images(cfg.data, root=data_dir)
    tasks = min(P.linear_tasks, cfg.tasks)
    found = {}
    for seed in sorted({c.seed for c in configs}):
        settings = {
            "dataset_id": source.identity,
            "tasks": tasks,
            "train_per_class": cfg.train_per_class,
            "test_per_class": cfg.test_per_class,
            "seed": seed,
            "pairing": cfg.pairing,
        }
        values = records.derived(
            "linear_baseline",
            settings,
            lambda seed=seed: linear_baseline(
                source, tasks, cfg.train_per_class, cfg.test_per_class, seed=seed,
                pairing=cfg.pairing,
            ),
            scale,
            write,
            root,
            recompute,
        )
        found[seed] = np.asarray(values)
    return found
