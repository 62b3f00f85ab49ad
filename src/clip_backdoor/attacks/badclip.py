"""BadCLIP (Liang et al. 2024): an optimised patch at the image centre.

The patch is optimised elsewhere in the pipeline and passed in as an artefact.
"""

from clip_backdoor.attacks.patching import make_centre_patch_trigger


def make_trigger(image_size, *, patch_size, patch=None):
    return make_centre_patch_trigger("badclip", image_size, patch, patch_size)
