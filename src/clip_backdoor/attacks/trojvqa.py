"""TrojVQA (Walmer et al. 2022), dual key: an optimised patch at the image centre plus a text key.

The patch is optimised elsewhere in the pipeline and passed in as an artefact. The text key is
prepended to poisoned captions and, at evaluation, to the class prompts.
"""

from clip_backdoor.attacks.patching import make_centre_patch_trigger

TEXT_KEY = "remember "


def make_trigger(image_size, *, patch_size, patch=None):
    return make_centre_patch_trigger("trojvqa", image_size, patch, patch_size)
