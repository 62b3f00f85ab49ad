"""Which tower carries an attack's CA loss: zero-shot CA and target-class accuracy with the image and
text towers taken from the clean and the attacked model in all four combinations (run by hand).

    python benchmarks/tower_swap.py badnet   # after `make run`; writes results/<run>/sweeps/

It scores the validation split only (a diagnosis may inform a choice, so it never reads test).
"""

import argparse
import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from sweep_record import cpu_model, git_commit, resolved_profile, sweep_file  # noqa: E402

from clip_backdoor.data.downstream import load_downstream  # noqa: E402
from clip_backdoor.defenses.interface import EvalContext, zero_shot_classifier  # noqa: E402
from clip_backdoor.evaluation.evaluate import predict_dataset  # noqa: E402
from clip_backdoor.models.factory import load_model  # noqa: E402


def accuracies(image_model, text_model, dataset, classnames, templates, target):
    model = copy.deepcopy(text_model)
    model.clip.visual = copy.deepcopy(image_model.clip.visual)
    ctx = EvalContext(model=model, classnames=classnames, templates=templates, device="cpu")
    pred, labels = predict_dataset(zero_shot_classifier(ctx, ""), dataset, "cpu", 500)
    on_target = labels == target
    return 100 * (pred == labels).float().mean().item(), 100 * (
        pred[on_target] == target
    ).float().mean().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("attack")
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = resolved_profile(args.config)
    run, dataset_cfg = config["run"], config["evaluation"]["datasets"][0]
    dataset, classnames = load_downstream(f"data/{run}", dataset_cfg, "val")
    target = classnames.index(dataset_cfg["target"])
    models = {
        "clean": load_model(f"checkpoints/{run}/clean.pt").eval(),
        args.attack: load_model(f"checkpoints/{run}/attacks/{args.attack}/model.pt").eval(),
    }
    header = f"| image tower | text tower | CA % | {dataset_cfg['target']} accuracy % |"
    lines = [f"# Tower swap, {args.attack} (run `{run}`, validation split)", "",
             f"Commit {git_commit()}, CPU {cpu_model()}.", "", header, "|---|---|---|---|"]  # fmt: skip
    for image_from in models:
        for text_from in models:
            ca, on_target = accuracies(
                models[image_from],
                models[text_from],
                dataset,
                classnames,
                config["evaluation"]["templates"],
                target,
            )
            lines.append(f"| {image_from} | {text_from} | {ca:.1f} | {on_target:.1f} |")
    out = sweep_file(config, f"tower_swap_{args.attack}").with_suffix(".md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
