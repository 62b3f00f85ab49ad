"""prepare_data stage: build the embedded world, or check and index the papers' datasets."""

from clip_backdoor.data import embedded


def run(params, out):
    if params["kind"] == "embedded":
        embedded.prepare(out, params["embedded"])
    else:
        from clip_backdoor.data import paper

        paper.prepare(out, params["paper"])
