"""Label-consistent BadNet: the BadNet trigger, unchanged.

The difference lives in the poisoner, not here: only images whose caption already describes the target
class are poisoned, and their captions are kept, so no poisoned pair is mislabelled.
"""

from clip_backdoor.attacks.badnet import make_trigger, patch_location

__all__ = ["make_trigger", "patch_location"]
