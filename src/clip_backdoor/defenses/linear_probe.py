"""Linear probe: a logistic-regression classifier on the frozen (backdoored) image encoder's features of
the few shots, fitted full-batch by L-BFGS with L2 weight decay. It has no text side, so it cannot take an
attack's text key (TrojVQA): `classifier` then returns None and the evaluation reports "not applicable"."""

import torch
import torch.nn.functional as F


@torch.no_grad()
def image_features(model, images, normalize, batch_size):
    return torch.cat([model.encode_image(x, normalize=normalize) for x in images.split(batch_size)])


def fit_logistic(features, labels, n_classes, weight_decay, steps, lr):
    """(weight [C,D], bias [C], final loss) of multinomial logistic regression, zero-initialised."""
    weight = torch.zeros(n_classes, features.shape[1], device=features.device, requires_grad=True)
    bias = torch.zeros(n_classes, device=features.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=lr, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight.t() + bias, labels) + weight_decay / 2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        loss = F.cross_entropy(features @ weight.t() + bias, labels).item()
    return weight.detach(), bias.detach(), loss


def fit(ctx, params):
    images, labels = ctx.shot_tensors
    features = image_features(ctx.model, images, params["normalize"], params["batch_size"])
    weight, bias, loss = fit_logistic(
        features, labels, len(ctx.classnames), params["weight_decay"], params["steps"], params["lr"]
    )
    with torch.no_grad():
        train_accuracy = (features @ weight.t() + bias).argmax(1).eq(labels).float().mean().item()
    state = {"weight": weight.cpu(), "bias": bias.cpu(), "normalize": bool(params["normalize"])}
    trainable = weight.numel() + bias.numel()
    log = {"trainable_params": trainable, "curve": [loss], "train_accuracy": train_accuracy}
    return state, log


def classifier(ctx, state, text_prefix):
    if text_prefix:
        return None
    weight, bias = state["weight"].to(ctx.device), state["bias"].to(ctx.device)

    def logits(images):
        return ctx.model.encode_image(images, normalize=state["normalize"]) @ weight.t() + bias

    return logits
