"""Retrain a finished run's ISSBA encoder and compare it with the run's (research helper, run by hand).

    python benchmarks/issba_encoder_isa.py synthetic              # this CPU's default instruction set
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/issba_encoder_isa.py synthetic

Appends one line per call to benchmarks/issba_encoder_isa.md: the bit accuracy, and whether the encoder is
bit-identical to checkpoints/<run>/attacks/issba/trigger.pt (the same call as the pipeline's make_trigger).
"""

import os
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

from clip_backdoor.attacks import issba
from clip_backdoor.data import corpus
from clip_backdoor.runtime.io import load_checkpoint


def main(run):
    torch.set_num_threads(1)
    config = yaml.safe_load(Path("config.yaml").read_text())
    art = config["attacks"]["methods"]["issba"]["artefact"]
    pool = corpus.attack_pool(f"data/{run}", config["data"]["embedded"]["image_size"])
    started = time.time()
    encoder, _, accuracy = issba.train_stega(
        pool.images, n_bits=art["n_bits"], steps=art["steps"], lr=art["lr"], seed=config["attacks"]["seed"],
        batch_size=art["batch_size"], max_residual=art["max_residual"],
    )  # fmt: skip
    ref = load_checkpoint(f"checkpoints/{run}/attacks/issba/trigger.pt")["tensors"]["encoder"]
    same = all(torch.equal(encoder.state_dict()[k], ref[k]) for k in ref)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "default")
    line = (f"| {time.strftime('%Y-%m-%d')} | {platform.processor() or platform.machine()} | {isa} | "
            f"{accuracy:.3f} | {same} | {time.time() - started:.0f} |\n")  # fmt: skip
    out = Path("benchmarks/issba_encoder_isa.md")
    if not out.exists():
        header = "| date | cpu | ONEDNN_MAX_CPU_ISA | bit accuracy | identical to the run's | seconds |"
        out.write_text(header + "\n|---|---|---|---|---|---|\n")
    with out.open("a") as f:
        f.write(line)
    print(line, end="")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "synthetic")
