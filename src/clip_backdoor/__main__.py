"""`python -m clip_backdoor <stage> --params JSON --key value ...`: the one entry point rules call.

Every stage is a function `run(params, **paths)` in its own module; `--params` carries the
hyperparameters (a JSON object from the rule's `params:`), the other `--key value [value ...]`
pairs are the rule's inputs and outputs. The project's own errors (clip_backdoor.errors.UserError: a bad
file, input or config key) print as one line and exit 2; anything else keeps its traceback.
"""

import importlib
import json
import os
import sys

from clip_backdoor.errors import UserError

STAGES = {
    "prepare_data": "clip_backdoor.data.prepare",
    "pretrain": "clip_backdoor.pretrain",
    "make_trigger": "clip_backdoor.attacks.artefact",
    "poison_data": "clip_backdoor.attacks.poison",
    "poison_finetune": "clip_backdoor.attacks.finetune",
    "asr_gate": "clip_backdoor.attacks.gate",
    "train_oracle": "clip_backdoor.oracle.train",
    "defend": "clip_backdoor.defenses.defend",
    "evaluate": "clip_backdoor.evaluation.evaluate",
    "summarize": "clip_backdoor.report.summarize",
    "report": "clip_backdoor.report.build",
}
USES_GPU = {"pretrain", "evaluate", "make_trigger", "poison_finetune", "defend", "train_oracle"}


def parse_paths(tokens):
    paths, key = {}, None
    for token in tokens:
        if token.startswith("--"):
            key = token[2:].replace("-", "_")
            paths[key] = []
        elif key is None:
            raise SystemExit(f"clip_backdoor: unexpected argument {token!r}")
        else:
            paths[key].append(token)
    empty = [k for k, v in paths.items() if not v]
    if empty:
        raise SystemExit(f"clip_backdoor: --{empty[0]} needs a value")
    return {k: (v[0] if len(v) == 1 else v) for k, v in paths.items()}


def main(argv=None):
    # Busy-waiting OpenMP threads slow a shared CPU by an order of magnitude (measured 6.3 s vs 1.0 s a
    # step with one core taken by another job); passive waiting costs nothing measurable when alone.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STAGES:
        raise SystemExit(f"usage: python -m clip_backdoor <stage> ...; stages: {', '.join(STAGES)}")
    stage, rest = argv[0], parse_paths(argv[1:])
    params = json.loads(rest.pop("params", "{}"))
    threads = int(rest.pop("threads", 0) or 0)
    if stage in USES_GPU:
        from clip_backdoor.runtime.device import claim_gpu_slot

        claim_gpu_slot()
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(threads)
    module = importlib.import_module(STAGES[stage])
    try:
        module.run(params, **rest)
    except UserError as err:
        lines = str(err).strip().splitlines() or [type(err).__name__]
        print(f"clip_backdoor {stage}: error: {lines[0]}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
