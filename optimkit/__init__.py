"""optimkit: composable, reference-exact gradient transformations for JAX.

Every name here is an optax `GradientTransformation` (or a helper around one): use it in
`optax.chain`, `flax.nnx.Optimizer(model, tx, wrt=nnx.Param)` or a Flax Linen `TrainState`.
"""

from optimkit._checks import TreeMismatchError
from optimkit.comparison import compare
from optimkit.hyperparams import inject_hyperparams, set_hyperparams
from optimkit.optimizers import (
    adafactor, adagrad, adam, adam_mini, adams, adamw, adamw_4bit, adamw_8bit, adan, lamb, lars,
    lion, lion_8bit, radam, ranger, rmsprop, schedule_free_adamw, schedule_free_sgd, sgd, sophia,
    stable_adamw)
from optimkit.state import StateStorage, compensated_updates
from optimkit.transforms import (
    AdaGradState, AdamMiniState, AdamSState, AdanState, LookaheadState, adam_mini_blocks,
    lookahead, scale_by_adam_mini, scale_by_adams, scale_by_adan, scale_by_radam,
    scale_by_lars, scale_by_stable_adam, AdamState, FactoredRMSState, MomentumState, RelativeStepState, RMSPropState,
    ScheduleFreeState, SignMomentumState, SkipNonFiniteState, SophiaState, TrustRatioState,
    gauss_newton_bartlett, hutchinson, scale_by_adagrad, scale_by_adam, scale_by_factored_rms,
    scale_by_momentum, scale_by_relative_step_size, scale_by_rms, scale_by_sign_momentum,
    scale_by_sophia, scale_by_trust_ratio, schedule_free, schedule_free_eval_params,
    skip_nonfinite, weight_decay_mask)
from optimkit import checkpoint, memory, presets, schedules, sharding
from optimkit import flax  # optimkit.flax: Flax NNX helpers (the flax package is unaffected)
from optimkit.schedules import plot_schedule

__version__ = "0.2.0"
