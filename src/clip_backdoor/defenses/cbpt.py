"""CBPT: class-wise backdoor prompt tuning (Kong et al., "Neural Antidote", arXiv 2502.19269).

Both encoders stay frozen. Stage 1 inverts a dummy trigger (mask + pattern) on the clean shots by
contrastive learning (`trigger_inversion`). Stage 2 tunes one CoOp-style context of `n_ctx` token
embeddings per class, initialised from the embedding of `ctx_init` ("a photo of a", copied into each
class), with three losses on the (once computed) image features of the shots:

    L = w_clean·CE(clean shots, y) + w_bd·CE(dummy-triggered shots, y) + w_reg·mean_c(1 − cos(t_c, t⁰_c))
        + w_away·mean_{i: y_i≠k} −log(1 − p_k(dummy-triggered shot i))

t_c the prompted text feature of class c, t⁰_c the feature of the initial prompt "a photo of a {c}." (the
original zero-shot feature of that template). The paper's exact forms and weights are not public: the
first three terms are the reconstruction of DESIGN §5, every weight is a param. The fourth term is this
project's addition (w_away 0 gives the reconstruction alone): k is the class the initial head assigns to
most dummy-triggered shots, i.e. where the backdoor collapses them; CE against the true labels asks the
collapsed features to carry class information they no longer have and bends every class prompt, whereas
leaving k only moves the decision boundary off the backdoor region. Also this project's addition
(w_key 0 disables it): a dual-key backdoor (TrojVQA) needs a text key in front of the prompt as well, so a
soft key of `key_tokens` token embeddings is inverted in front of the initial contexts — behind it, the
dummy-triggered shots must collapse to one class while the clean shots keep their labels — and the two
triggered terms are split between the plain prompts (share 1 − w_key) and the same contexts behind that
fixed soft key (share w_key). SGD with momentum, per-step cosine schedule.
"""

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from clip_backdoor.defenses.trigger_inversion import invert_trigger
from clip_backdoor.training import cosine_lr


class ClassPrompts(nn.Module):
    """Text features of `[SOT] prefix ctx_1..ctx_n classname . [EOT]` with a learnable context per class.

    A non-empty `text_prefix` (an attack's text key) is tokenised in front of the learned context, so its
    token embeddings come before the context, as the key comes before the template at zero-shot evaluation.
    Without `ctx_init` the contexts start from N(0, init_std) and the tokens hold "X" placeholders.
    """

    def __init__(self, model, classnames, n_ctx, ctx_init, text_prefix="", init_std=0.02, generator=None):
        super().__init__()
        clip = model.clip
        init = ctx_init or " ".join(["X"] * n_ctx)
        found = (model.tokenize([init])[0] > 0).sum().item() - 2
        if found != n_ctx:
            raise ValueError(f"cbpt: ctx_init {ctx_init!r} is {found} tokens, param n_ctx is {n_ctx}")
        start = 1 + (model.tokenize([text_prefix])[0] > 0).sum().item() - 2 if text_prefix else 1
        texts = [f"{text_prefix}{init} {name}." for name in classnames]
        tokens = model.tokenize(texts).to(clip.logit_scale.device)
        if clip.attn_mask is not None and clip.text_pool_type == "argmax":
            # causal attention: positions after the last EOT cannot change the pooled feature
            tokens = tokens[:, : int(tokens.argmax(-1).max()) + 1]
        with torch.no_grad():
            embedded = clip.token_embedding(tokens)
        self.clip, self.start, self.n_ctx = clip, start, n_ctx
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("embedded", embedded, persistent=False)
        ctx = embedded[:, start : start + n_ctx].clone()
        if not ctx_init:
            ctx = torch.randn(ctx.shape, generator=generator).to(ctx) * init_std
        self.ctx = nn.Parameter(ctx)
        self.key = None

    def forward(self):
        """Normalised text features [C,D]."""
        clip, s = self.clip, self.start
        head = self.embedded[:, :s]
        if self.key is not None:
            head = torch.cat([head[:, :1], self.key.expand(len(head), -1, -1)], 1)
        x = torch.cat([head, self.ctx, self.embedded[:, s + self.n_ctx :]], 1)
        n = x.shape[1]
        mask = None if clip.attn_mask is None else clip.attn_mask[:n, :n]
        x = clip.transformer(x + clip.positional_embedding[:n], attn_mask=mask)
        from open_clip.transformer import text_global_pool  # after the model is built: no timm import

        x = text_global_pool(
            clip.ln_final(x), self.tokens, clip.text_pool_type, getattr(clip, "text_eos_id", None)
        )
        x = (
            clip.text_projection(x)
            if isinstance(clip.text_projection, nn.Linear)
            else x @ clip.text_projection
        )
        return F.normalize(x, dim=-1)


def soft_key_prompts(model, prompts, classnames, params):
    """`prompts` (sharing its contexts) behind `key_tokens` learnable token embeddings: a soft text key in
    the place an attack's text key takes at evaluation. Starts from the "x" placeholder's embedding."""
    keyed = ClassPrompts(model, classnames, params["n_ctx"], params["ctx_init"], "X " * params["key_tokens"])
    keyed.ctx = prompts.ctx
    keyed.key = nn.Parameter(keyed.embedded[:1, 1 : keyed.start].clone())
    return keyed


def invert_key(keyed, scale, clean, triggered, labels, params):
    """Fit the soft key (contexts fixed) so that, behind it, the dummy-triggered shots collapse to one class
    while the clean shots keep their labels — the text half of a dual-key backdoor. Returns (that class,
    loss per step)."""
    opt = torch.optim.Adam([keyed.key], lr=params["key_lr"])
    curve = []
    for _ in range(params["key_steps"]):
        text = keyed()
        collapse_logp = (scale * triggered @ text.t()).log_softmax(1).mean(0).max()
        loss = F.cross_entropy(scale * clean @ text.t(), labels) - collapse_logp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(loss.item())
    keyed.ctx.grad = None
    keyed.key.requires_grad_(False)
    with torch.no_grad():
        return int((scale * triggered @ keyed().t()).softmax(1).mean(0).argmax()), curve


def fit(ctx, params):
    if not 0 <= params["w_key"] <= 1:
        raise ValueError(f"cbpt: param w_key is a share in [0, 1], got {params['w_key']}")
    model, gen = ctx.model, torch.Generator().manual_seed(int(ctx.seed))
    model.eval().requires_grad_(False)
    images, labels = ctx.shot_tensors
    trigger, inv_curve = invert_trigger(model, images, labels, params, gen)
    with torch.no_grad():
        clean = F.normalize(model.encode_image(images), dim=-1)
        triggered = F.normalize(model.encode_image(trigger(images)), dim=-1)
    prompts = ClassPrompts(
        model, ctx.classnames, params["n_ctx"], params["ctx_init"], "", params["init_std"], gen
    )
    with torch.no_grad():
        original = prompts()
        collapse = int((triggered @ original.t()).argmax(1).mode().values)
    scale = model.logit_scale.detach()
    keyed, key_collapse, key_curve = None, None, []
    if params["w_key"]:
        keyed = soft_key_prompts(model, prompts, ctx.classnames, params)
        key_collapse, key_curve = invert_key(keyed, scale, clean, triggered, labels, params)
    heads = [(prompts, collapse, 1.0 - params["w_key"])] + (
        [(keyed, key_collapse, params["w_key"])] if keyed else []
    )
    curve = tune_prompts(heads, scale, clean, triggered, labels, original, params, gen)
    with torch.no_grad():
        final = prompts()
    mask, pattern = trigger.mask().detach().cpu(), trigger.pattern().detach().cpu()
    state = {
        "ctx": prompts.ctx.detach().cpu(),
        "n_ctx": params["n_ctx"],
        "ctx_init": params["ctx_init"],
        "trigger": {"mask": mask, "pattern": pattern},
        "report": {"inverted_mask": mask, "inverted_pattern": pattern},
    }
    log = {
        "curve": curve,
        "inversion_curve": inv_curve,
        "trainable_params": prompts.ctx.numel()
        + sum(p.numel() for p in trigger.parameters())
        + (keyed.key.numel() if keyed else 0),
        "key_curve": key_curve,
        "key_collapse_class": None if keyed is None else ctx.classnames[key_collapse],
        "mask_mean": mask.mean().item(),
        "collapse_class": ctx.classnames[collapse],
        "text_cos_to_original": F.cosine_similarity(final, original, dim=-1).mean().item(),
    }
    return state, log


def tune_prompts(heads, scale, clean, triggered, labels, original, params, gen):
    """Stage 2 on precomputed normalised image features; returns the mean loss per epoch. `heads`: (prompts,
    collapse class, share of the triggered terms) — the plain prompts first, then optionally the same
    contexts behind the soft key."""
    prompts = heads[0][0]
    opt = torch.optim.SGD(
        [prompts.ctx], lr=params["lr"], momentum=params["momentum"], weight_decay=params["weight_decay"]
    )
    n, bs, epochs = len(labels), params["batch_size"], params["epochs"]
    steps = -(-n // bs)
    curve, step = [], 0
    for _ in tqdm(range(epochs), desc="cbpt prompts", unit="epoch", mininterval=5, leave=False):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).to(labels.device).split(bs):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, epochs * steps, params["lr"], 0)
            text = prompts()
            y = labels[idx]
            loss = params["w_clean"] * F.cross_entropy(scale * clean[idx] @ text.t(), y)
            loss = loss + params["w_reg"] * (1 - (text * original).sum(-1)).mean()
            for head, collapse, weight in heads:
                bd = scale * triggered[idx] @ (text if head is prompts else head()).t()
                loss = loss + weight * params["w_bd"] * F.cross_entropy(bd, y)
                if params["w_away"]:
                    loss = loss + weight * params["w_away"] * away_loss(bd, y, collapse)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            step += 1
        curve.append(total / n)
    return curve


def away_loss(logits, labels, collapse):
    """−log(1 − p_k) over the shots not of class k: leave class k, where the backdoor collapses images."""
    keep = labels != collapse
    if not keep.any():
        return logits.sum() * 0
    log_p = torch.log_softmax(logits[keep], 1)
    return -torch.cat([log_p[:, :collapse], log_p[:, collapse + 1 :]], 1).logsumexp(1).mean()


def load_prompts(ctx, state, text_prefix=""):
    prompts = ClassPrompts(ctx.model, ctx.classnames, int(state["n_ctx"]), state["ctx_init"], text_prefix)
    prompts.ctx.data.copy_(state["ctx"].to(prompts.ctx.device))
    return prompts.requires_grad_(False)


def classifier(ctx, state, text_prefix):
    """images in [0,1] → logits of the frozen image encoder against the class-wise prompted text head.

    With a text key (TrojVQA) its token embeddings are placed before the learned contexts."""
    model = ctx.model.eval()
    with torch.no_grad():
        head = load_prompts(ctx, state, text_prefix)()

    def logits(images):
        return model.logit_scale * F.normalize(model.encode_image(images), dim=-1) @ head.t()

    return logits
