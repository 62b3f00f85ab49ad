"""Clean fine-tuning: the whole backdoored CLIP fine-tuned on the disjoint clean pool with the plain CLIP
contrastive loss (CleanCLIP's training without its in-modal terms)."""

from clip_backdoor.defenses.cleanclip import classifier, fit_on_clean_pool

PARAMS = {
    "epochs": 10,
    "batch_size": 64,
    "lr": 5.0e-6,
    "weight_decay": 0.1,
    "warmup_steps": 50,
    "save_every_epochs": 1,
    "pool_size": 0,  # pairs of the clean pool used (the first ones; 0 = all)
    "amp": False,
    "loader_workers": 0,  # DataLoader workers for the papers' CC3M pool
}

__all__ = ["PARAMS", "classifier", "fit"]


def fit(ctx, params):
    return fit_on_clean_pool(ctx, params, f"finetune {ctx.attack}")
