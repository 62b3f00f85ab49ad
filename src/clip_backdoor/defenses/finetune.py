"""Clean fine-tuning: the whole backdoored CLIP fine-tuned on the disjoint clean pool with the plain CLIP
contrastive loss (CleanCLIP's training without its in-modal terms)."""

from clip_backdoor.defenses.cleanclip import classifier, fit_on_clean_pool

__all__ = ["classifier", "fit"]


def fit(ctx, params):
    return fit_on_clean_pool(ctx, params, "finetune")
