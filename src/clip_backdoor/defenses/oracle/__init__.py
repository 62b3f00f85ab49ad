"""Oracle-based rectification (EftCLIP, arXiv 2511.13545): find the trigger with a segmentation oracle,
then fine-tune on a compact set. The paper's thresholds and objective are not public: this is a
reconstruction, every threshold a declared knob (schemas/defenses/oracle.yaml), read in this order:

  probes.py      the probe images drawn from the defender's poisoned corpus, and how labels are read;
  evidence.py    what the segmenter and both CLIPs say about each probe;
  algorithm1.py  Algorithm 1: candidate triggers, the labels the poisoned CLIP asserts that the oracle
                 cannot ground;
  algorithm2.py  Algorithm 2: affected labels, victim samples and the compact set's corrected and clean
                 pairs;
  transplant.py  the victims' trigger regions pasted onto other labels' probes;
  rectify.py     rectification: the CLIP contrastive loss on the compact set;
  defense.py     `fit`, those steps in sequence, and `classifier`.

The schema's defaults are the paper's path. The project's additions are named options, each off by
default and reported under `extensions` in the fit log when it fires: the null test (`null_ratio`), the
matcher-relative thresholds (`thresholds: matcher`), the shared-pixel screen (`screen_clean`) and
transplants (`transplant_region: signature`), the paste test (`localise_window`), the few-shot examples
(`shot_pairs`) and feature preservation (`preserve`).
"""

from clip_backdoor.defenses.oracle.defense import classifier, fit

INPUTS = ("clean_model", "segmenter", "corpus")

__all__ = ["INPUTS", "classifier", "fit"]
