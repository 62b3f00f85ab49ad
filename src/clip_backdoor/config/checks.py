"""Constraints between config values that the schema cannot state, checked before any job runs."""

from clip_backdoor.config.ablations import ablation_problems

PAPER_IMAGE_SIZE = 224
PATCH_ATTACKS = ("badnet", "badnet_lc", "trojvqa", "badclip")


def cross_checks(config):
    """One line per problem, naming the key, its value and what is allowed."""
    problems = defense_name_problems(config) + patch_problems(config) + poison_count_problems(config)
    problems += ablation_problems(config) if not defense_name_problems(config) else []
    if config["data"]["kind"] == "embedded":
        problems += embedded_problems(config)
    return problems


def image_size(config):
    if config["data"]["kind"] == "embedded":
        return config["data"]["embedded"]["image_size"]
    return PAPER_IMAGE_SIZE


def defense_name_problems(config):
    methods = config["defenses"]["methods"]
    return [
        f"defenses.enabled: {name!r} is neither a built-in defense nor a defenses.methods block with a module"
        f" (built in: {', '.join(sorted(methods))})"
        for name in config["defenses"]["enabled"]
        if name not in methods
    ]


def patch_problems(config):
    size, problems = image_size(config), []
    for attack in PATCH_ATTACKS:
        patch = config["attacks"]["methods"][attack]["trigger"].get("patch_size")
        if patch is not None and patch > size:
            problems.append(
                f"attacks.methods.{attack}.trigger.patch_size: {patch} is larger than the {size} px image"
            )
    return problems


def poison_count_problems(config):
    if config["data"]["kind"] == "embedded":
        pool, where = config["data"]["embedded"]["n_poison_pool"], "data.embedded.n_poison_pool"
    else:
        pool, where = config["data"]["paper"]["cc3m"]["size"], "data.paper.cc3m.size"
    attacks = config["attacks"]
    counts = {"attacks.n_poison": attacks["n_poison"]}
    for name in attacks["enabled"]:
        if "n_poison" in attacks["methods"][name]:
            counts[f"attacks.methods.{name}.n_poison"] = attacks["methods"][name]["n_poison"]
    return [f"{key}: {n} is more than the {pool} pairs of {where}" for key, n in counts.items() if n > pool]


def embedded_problems(config):
    world = config["data"]["embedded"]
    problems = [
        f"data.embedded.downstream_classes: {name!r} is not in data.embedded.world_classes"
        for name in world["downstream_classes"]
        if name not in world["world_classes"]
    ]
    if config["attacks"]["enabled"] and config["attacks"]["target"] not in world["downstream_classes"]:
        problems.append(
            f"attacks.target: {config['attacks']['target']!r} is not a downstream class"
            f" (data.embedded.downstream_classes: {', '.join(world['downstream_classes'])})"
        )
    for i, dataset in enumerate(config["evaluation"]["datasets"]):
        if dataset["kind"] != "embedded":
            problems.append(f"evaluation.datasets[{i}].kind: {dataset['kind']!r} needs data.kind paper")
        elif dataset.get("target", config["attacks"]["target"]) not in world["downstream_classes"]:
            problems.append(
                f"evaluation.datasets[{i}].target: {dataset['target']!r} is not a downstream class"
            )
    if config["defenses"]["shots"] > world["train_per_class"]:
        problems.append(
            f"defenses.shots: {config['defenses']['shots']} is more than data.embedded.train_per_class"
            f" ({world['train_per_class']})"
        )
    return problems
