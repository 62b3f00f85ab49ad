"""asr_gate stage: stop the workflow when a poisoned model's ASR is below the floor."""

import json

from clip_backdoor.runtime.io import write_json


class GateError(SystemExit):
    pass


def run(params, metrics, out):
    files = [metrics] if isinstance(metrics, str) else metrics
    failed = []
    for path in files:
        m = json.loads(open(path).read())
        if m["asr"] is None or m["asr"] < params["floor"]:
            failed.append(
                f"{m['attack']} on {m['dataset']} (seed {m['seed']}): ASR {100 * (m['asr'] or 0):.1f}%"
            )
    if failed:
        raise GateError(
            f"asr_gate: the backdoor did not take (floor {100 * params['floor']:.0f}%): "
            + "; ".join(failed)
            + ". A defense result against an attack that never worked is meaningless: strengthen the attack "
            "(attacks.methods.<name>.n_poison or .finetune epochs/lr, attacks.n_poison, attacks.finetune) "
            "or lower attacks.gate_floor."
        )
    write_json(out, {"passed": True, "floor": params["floor"], "metrics": files})
