"""What the report reads besides the summary: training logs, defense states, trigger records, poison indices.

Files are keyed by their place in the run layout (see rules/common.smk): a defense state or log is
.../<dataset>/<attack>/<defense>/seed<k>.{pt,json}, an attack model or trigger .../attacks/<attack>/*.pt,
a poison index .../poisoned/<attack>/poison_index.json.
"""

import json
from pathlib import Path


def as_list(paths):
    if not paths:
        return []
    return [paths] if isinstance(paths, str) else list(paths)


def defense_key(path):
    """(dataset, attack, defense, seed) of a defense state or log path."""
    dataset, attack, defense, seed = Path(path).parts[-4:]
    return dataset, attack, defense, int(Path(seed).stem.removeprefix("seed"))


def attack_of(path):
    """The attack directory a model, trigger record or poison index lives in."""
    return Path(path).parent.name


def read_logs(train_logs):
    """{"pretrain": {...}, "attacks": {attack: log}, "defenses": {(dataset, attack, defense, seed): log}}."""
    logs = {"pretrain": {}, "attacks": {}, "defenses": {}}
    for path in as_list(train_logs):
        log = json.loads(Path(path).read_text())
        stem = Path(path).stem
        if "defenses" in Path(path).parts:
            logs["defenses"][defense_key(path)] = log
        elif stem.startswith("attack_"):
            logs["attacks"][stem.removeprefix("attack_")] = log
        else:
            logs["pretrain"][stem] = log
    return logs


def curve_groups(logs, defenses):
    """Training curves per panel: pretraining, poisoned fine-tuning, then one panel per defense (first
    dataset and seed of each attack)."""
    groups = {
        "pretraining": {name: log.get("epoch_loss") for name, log in logs["pretrain"].items()},
        "poisoned fine-tuning": {name: log.get("epoch_loss") for name, log in logs["attacks"].items()},
    }
    for defense in defenses:
        series = {}
        for (_, attack, name, _), log in sorted(logs["defenses"].items()):
            if name == defense and attack not in series:
                series[attack] = log.get("curve")
        groups[f"defense: {defense}"] = series
    return groups


def load_states(states):
    """{(dataset, attack, defense, seed): state dict} of the defense states ("report" defaults to {})."""
    from clip_backdoor.runtime.io import load_checkpoint

    found = {}
    for path in as_list(states):
        payload = load_checkpoint(path)
        state = payload.get("state", {}) if isinstance(payload, dict) else {}
        if isinstance(state, dict):
            found[defense_key(path)] = {**state, "report": state.get("report") or {}}
    return found


def test_images(data, dataset, n):
    """The first `n` clean test images of the downstream task whose class is not the target."""
    import torch

    from clip_backdoor.data.downstream import load_downstream

    test, classnames = load_downstream(data, dataset, "test")
    images = []
    for i in range(len(test)):
        image, label = test[i]
        if classnames[label] != dataset["target"]:
            images.append(image)
        if len(images) == n:
            break
    return torch.stack(images)


def inverted_trigger_items(states, triggers, models, data, dataset, n_images):
    """One row per attack with a CBPT-style state: a clean image, its real triggered version, the inverted
    mask and pattern, and (if the CBPT module provides it) the cosine between inverted and real trigger
    effects in the poisoned model's feature space."""
    from clip_backdoor.attacks.record import load_record, trigger_from_record
    from clip_backdoor.defenses.trigger_inversion import trigger_effect_cosine as cosine_fn

    records = {attack_of(p): p for p in as_list(triggers)}
    model_paths = {attack_of(p): p for p in as_list(models)}
    items = []
    images = None
    for (ds, attack, _, _), state in sorted(states.items()):
        if ds != dataset["name"] or "inverted_mask" not in state["report"] or attack not in records:
            continue
        if any(item["attack"] == attack for item in items):
            continue
        if images is None:
            images = test_images(data, dataset, n_images)
        record = load_record(records[attack])
        trigger = trigger_from_record(record, images.shape[-1])
        triggered = trigger(images[:1], [0])
        cosine = None
        if attack in model_paths:
            from clip_backdoor.models.factory import load_model

            model = load_model(model_paths[attack], map_location="cpu").eval()
            cosine = float(cosine_fn(model, state, trigger, images))
        items.append(
            {
                "attack": attack,
                "clean": images[0].numpy(),
                "triggered": triggered[0].numpy(),
                "mask": state["report"]["inverted_mask"].float().numpy(),
                "pattern": state["report"]["inverted_pattern"].float().numpy(),
                "cosine": cosine,
            }
        )
    return items


def resistivity_items(states, triggers, models, data, dataset, n_images):
    """Per attack with a prompt-tuning state (RVPT/VPT: "prompts" and "depth"), the perturbation resistivity
    per block of the undefended poisoned encoder and of each prompted one, on `n_images` clean test images
    and their triggered versions: [{attack, curves: {label: [PR per block]}}]."""
    from clip_backdoor.attacks.record import load_record, trigger_from_record
    from clip_backdoor.defenses.rvpt import perturbation_resistivity as pr_fn

    records = {attack_of(p): p for p in as_list(triggers)}
    model_paths = {attack_of(p): p for p in as_list(models)}
    by_attack = {}
    for (ds, attack, defense, _), state in sorted(states.items()):
        if ds == dataset["name"] and "prompts" in state and "depth" in state and attack in records:
            by_attack.setdefault(attack, {}).setdefault(defense, state)
    if not by_attack:
        return []
    from clip_backdoor.models.factory import load_model

    images = test_images(data, dataset, n_images)
    items = []
    for attack, found in sorted(by_attack.items()):
        if attack not in model_paths:
            continue
        trigger = trigger_from_record(load_record(records[attack]), images.shape[-1])
        triggered = trigger(images, list(range(len(images))))
        model = load_model(model_paths[attack], map_location="cpu").eval()
        first = next(iter(found.values()))
        curves = {"none": pr_fn(model, first, images, triggered, prompts=False)}
        for defense, state in found.items():
            curves[defense] = pr_fn(model, state, images, triggered)
        items.append({"attack": attack, "curves": curves})
    return items


def localisation_items(states, dataset, per_attack):
    """Up to `per_attack` oracle examples per attack (first seed)."""
    items, seen = [], set()
    for (ds, attack, _, _), state in sorted(states.items()):
        if ds != dataset or attack in seen or "examples" not in state["report"]:
            continue
        seen.add(attack)
        for example in state["report"]["examples"][:per_attack]:
            items.append({"attack": attack, **{k: numpy(v) for k, v in example.items()}})
    return items


def numpy(value):
    return value.numpy() if hasattr(value, "numpy") else value


def victim_precision_recall(victims, poison_index_path, probed=None):
    """Precision and recall of the flagged victim corpus indices against the attack's poison index; recall
    is over the poisoned images among `probed` (the corpus indices the defense looked at), if given."""
    poisoned = set(json.loads(Path(poison_index_path).read_text())["indices"])
    reachable = poisoned & set(probed) if probed is not None else poisoned
    hits = len(set(victims) & poisoned)
    return {
        "precision": hits / len(set(victims)) if victims else None,
        "recall": hits / len(reachable) if reachable else None,
        "victims": len(set(victims)),
        "poisoned_probed": len(reachable),
    }


def victim_scores(logs, poison_indices):
    """Precision and recall of the oracle's victim samples against the poison index, per attack and seed:
    ground truth the defense never sees, scored here in the report."""
    indices = {attack_of(p): p for p in as_list(poison_indices)}
    rows = []
    for (dataset, attack, defense, seed), log in sorted(logs["defenses"].items()):
        if "victims" not in log:
            continue
        row = {
            "dataset": dataset,
            "attack": attack,
            "defense": defense,
            "seed": seed,
            "victims": len(log["victims"]),
            "affected_labels": ", ".join(map(str, log.get("affected_labels", []))),
        }
        if attack in indices:
            scores = victim_precision_recall(log["victims"], indices[attack], log.get("probed"))
            row.update({k: scores[k] for k in ("precision", "recall", "poisoned_probed")})
        rows.append(row)
    return rows
